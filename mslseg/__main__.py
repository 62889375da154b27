from mslseg.cli.app import main

main()
