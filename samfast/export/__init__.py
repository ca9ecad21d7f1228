"""Export of registry models to ONNX, TorchScript and TensorRT sets, each with a manifest.

``wrappers`` says what the model looks like to an exporter; ``onnx`` writes the files.
"""
