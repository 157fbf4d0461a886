"""Weights out and in: the original's files (weight_files.py, convert_weights.py), ONNX
(onnx_model.py), the static chat page (site.py) and the sampler saved compiled."""
