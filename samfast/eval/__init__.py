"""Evaluation: overlap metrics, backend parity against the PyTorch fp32 reference.

Prompt protocols and dataset readers (the bench issue) build on these.
"""
