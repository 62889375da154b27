"""The `mslseg` command line (Typer). Commands are thin: build inputs, call the library, print."""
