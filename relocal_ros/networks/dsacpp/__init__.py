"""DSAC++ per-map scene coordinate head: model.py (encoder, head, checkpoint files), runtime.py (DsacppRunner),
train.py (per-map training, `relocal train-scene`)."""
