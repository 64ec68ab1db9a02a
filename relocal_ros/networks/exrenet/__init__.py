"""ExReNet relative pose regression: model.py (networks, weight files), runtime.py (ExReNetRunner), train.py."""
