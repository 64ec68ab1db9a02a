"""SANet scene-agnostic scene coordinate regression: model.py (network, geometry helpers, weight files), runtime.py
(scene pyramids, ONNX export, SanetRunner), train.py."""
