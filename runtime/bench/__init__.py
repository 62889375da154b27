"""`mslseg bench`: timing models across backends, batch sizes and sizes, and counting their GFLOPs."""
