"""Learned parts of the pipeline, one package per method, each model.py (the networks and their weight files),
runtime.py (what runs at inference) and train.py (the trainer): exrenet (relative pose regression), sanet and
dsacpp (scene coordinate regression), netvlad (global descriptor; its runtime is relocal_ros/retrieval/netvlad.py).
Shared: layers.py (ResBlock, the frozen XFeat backbone), correlation.py (ExReNet's correlation layers) and
backends.py (the runtimes the networks are exported to)."""
