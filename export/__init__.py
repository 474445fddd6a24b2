"""Training toolchain: synthetic data, datasets, training, evaluation, ONNX export and INT8."""
