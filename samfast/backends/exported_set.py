"""The shared base of backends over an exported ONNX set (ONNX Runtime, OpenVINO).

Polygraphy's infer / infer_impl split: the public methods here do the common work (the prompt
convention, the decoder split at the prompt with its image-state cache, row batching, releasing
graphs), and a backend supplies one hook, ``_run(graph, feeds, outputs)``, plus the graphs it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from samfast.backends.base import BackendInfo, Prompts, decode_each_row
from samfast.backends.image_states import ImageStateCache

SPLIT_GRAPHS = ("decoder_image", "decoder_prompt")
MASKS_AND_IOU = ("low_res_masks", "iou_predictions")  # outputs of both decoder graphs, in this order
# Rows per split-decoder call in decode_rows. On the CPU a batch gains nothing (time grows with the
# rows) and multiplies the activations the runtime's arena keeps; one row also needs no stacking.
STATE_ROWS_PER_CALL = 1


def has_split_decoder(folder: Path) -> bool:
    """Whether a set holds the decoder split at the prompt (sets exported before it do not)."""
    return all((Path(folder) / f"{name}.onnx").is_file() for name in SPLIT_GRAPHS)


class ExportedSetBackend:
    """encode / decode / decode_rows / release over encoder.onnx, decoder.onnx and, where the set
    has them, the split decoder's decoder_image.onnx / decoder_prompt.onnx; describe() is each
    backend's own (its versions and settings)."""

    name: str

    def __init__(self, folder: Path, low_res_size: int, device: str, precision: str) -> None:
        self.folder = Path(folder)
        self.low_res_size = low_res_size
        # Looked up once, not on every click.
        self.info = BackendInfo(
            self.name, device, precision, split_decoder=has_split_decoder(self.folder), releases_graphs=True
        )
        self.image_states = ImageStateCache(lambda embeddings: self.image_state(embeddings))
        self._graphs: dict[str, object] = {}  # graph name -> what the runtime holds for it

    # -- the hook ---------------------------------------------------------------------------

    def _run(self, graph: str, feeds: dict[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        """Run one graph of the set (opened on first use, kept in ``self._graphs``): ``outputs``
        by name, float32 arrays the caller may keep."""
        raise NotImplementedError

    # -- the contract -------------------------------------------------------------------------

    def encode(self, images: np.ndarray) -> np.ndarray:
        (embeddings,) = self._run(
            "encoder", {"images": np.ascontiguousarray(images, np.float32)}, ["image_embeddings"]
        )
        return embeddings

    def decode(self, embedding: np.ndarray, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        """Prompts without a mask input take the split decoder where the set has it: after the
        first prompt on an embedding, a click costs only the decoder's prompt side."""
        if prompts.mask_input is None and self.info.split_decoder:
            return self.decode_state(self.image_states.states(embedding, [0], evict=True), prompts)
        return self.decode_full(embedding, prompts)

    def decode_rows(
        self, embeddings: np.ndarray, rows: Sequence[int], prompts: Prompts
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = list(rows)
        if prompts.mask_input is not None or not self.info.split_decoder:
            return decode_each_row(self.decode_full, embeddings, rows, prompts)
        # A program scans its rows every call: rows past the state bound are recomputed, not
        # evicted (see ImageStateCache).
        parts = [slice(s, s + STATE_ROWS_PER_CALL) for s in range(0, len(rows), STATE_ROWS_PER_CALL)]
        outs = [
            self.decode_state(
                self.image_states.states(embeddings, rows[part], evict=False), prompts.take(part)
            )
            for part in parts
        ]
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])

    def release(self, *graphs: str) -> None:
        """Close the named graphs (all when none is named), handing their weights and arenas back;
        a later call reopens them. E.g. the encoder, once a volume has streamed."""
        for graph in graphs or list(self._graphs):
            self._graphs.pop(graph, None)

    # -- the set's graphs, one by one (benches and parity checks time or compare them) ---------

    def decode_full(self, embedding: np.ndarray, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        """The whole decoder graph, image side included, on every call."""
        feeds = prompts.to_sam_onnx(self.low_res_size)
        feeds["image_embeddings"] = np.ascontiguousarray(embedding, np.float32)
        masks, iou = self._run("decoder", feeds, MASKS_AND_IOU)
        return masks, iou

    def image_state(self, embeddings: np.ndarray) -> dict[str, np.ndarray]:
        """(B, C, h, w) embeddings -> the split decoder's prompt-independent state, B rows."""
        from samfast.artifacts.graphs import STATE_NAMES

        feeds = {"image_embeddings": np.ascontiguousarray(embeddings, np.float32)}
        return dict(zip(STATE_NAMES, self._run("decoder_image", feeds, STATE_NAMES), strict=True))

    def decode_state(self, state: dict[str, np.ndarray], prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        """``decode`` from an image_state (1 row shared by all prompt sets, or one row per set);
        prompts without a mask input only (a mask changes the image side: use ``decode_full``)."""
        if prompts.mask_input is not None:
            raise ValueError("decode_state takes no mask_input; decode() handles mask prompts")
        feeds = prompts.to_sam_onnx(self.low_res_size)
        feeds = {"point_coords": feeds["point_coords"], "point_labels": feeds["point_labels"], **state}
        masks, iou = self._run("decoder_prompt", feeds, MASKS_AND_IOU)
        return masks, iou
