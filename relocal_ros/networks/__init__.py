"""Learned parts of the pipeline: ExReNet relative pose regression, SANet and DSAC++ scene coordinate regression,
their shared layers, and the runtimes they are exported to (backends.py)."""
