"""What the exported graphs look like from outside: versions, file names, the split decoder's state.

Bump a version when its graphs' inputs/outputs change, so cached sets made before are rebuilt.
"""

from __future__ import annotations

DEFAULT_OPSET = 17
# manifest.json layout of a set
EXPORT_SCHEMA = 1
# The decoder split at the prompt (samfast.export.split_decoder): a click on a cached embedding
# runs only the prompt side.
SPLIT_DECODER = 1
# 2: TinyViT's q/k/v as three Linears. 3: its local convolutions' layout changes as 4-D permutes.
ENCODER_GRAPH = 3

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
IMAGE_SIDE_FILE = "decoder_image.onnx"
PROMPT_SIDE_FILE = "decoder_prompt.onnx"
# The split decoder's image state, output of the image side and input of the prompt side.
# image_tokens: (B, HW, C) embedding + no-mask embedding; the others (B, heads, HW, C/heads/2).
STATE_NAMES = ["image_tokens", "t2i_keys", "t2i_values", "i2t_queries"]
