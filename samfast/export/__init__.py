"""Export of registry models to deployable artifacts (ONNX today) with a manifest per set.

``wrappers`` says what the model looks like to an exporter; ``onnx`` writes the files.
"""
