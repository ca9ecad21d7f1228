"""The shared base of backends over an exported ONNX set (ONNX Runtime, OpenVINO).

Polygraphy's infer / infer_impl split: the public methods here do the common work (the prompt
convention, the decoder split at the prompt with its image-state cache, row batching, running calls
side by side, releasing graphs), and a backend supplies two hooks, ``_run(graph, feeds, outputs)``
and ``_run_side_by_side(graph, feeds_list, outputs)``, plus the graphs it holds.

Side by side: on the CPU, one call of a graph with two threads spends part of every layer waiting on
the slower thread; calls on one thread each, one per core, keep both cores busy. Decoder rows of a
program step (many slices' prompts) and slices of an encoder batch run faster that way on two cores
where the runtime's own threading leaves the cores idle part of the time (bench/side_by_side.py,
bench/README.md: OpenVINO bf16 decoder rows 1.7x, encoder slices 1.1x), bit for bit the same
outputs. One call alone keeps all threads (a person's click).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from samfast.backends.base import BackendInfo, Prompts
from samfast.backends.cpu import cores
from samfast.backends.image_states import ImageStateCache

SPLIT_GRAPHS = ("decoder_image", "decoder_prompt")
MASKS_AND_IOU = ("low_res_masks", "iou_predictions")  # outputs of both decoder graphs, in this order
# Rows per split-decoder call in decode_rows. On the CPU a batch gains nothing (time grows with the
# rows) and multiplies the activations the runtime's arena keeps; one row also needs no stacking.
STATE_ROWS_PER_CALL = 1
# Calls side by side at most: two one-thread calls fill two cores; with more cores each of the two
# gets half of them (more, smaller calls at once would multiply the activations held).
MAX_SIDE_BY_SIDE = 2
SIDE_BY_SIDE = ":side-by-side"  # suffix of a graph's key in ``_graphs`` when opened for side-by-side calls


def side_by_side(device: str, threads: int | None) -> int:
    """Calls a backend on ``device`` runs at once: on the CPU one per core, two at most."""
    return min(cores(threads), MAX_SIDE_BY_SIDE) if device == "cpu" else 1


def has_split_decoder(folder: Path) -> bool:
    """Whether a set holds the decoder split at the prompt (sets exported before it do not)."""
    return all((Path(folder) / f"{name}.onnx").is_file() for name in SPLIT_GRAPHS)


class ExportedSetBackend:
    """encode / decode / decode_rows / release over encoder.onnx, decoder.onnx and, where the set
    has them, the split decoder's decoder_image.onnx / decoder_prompt.onnx; describe() is each
    backend's own (its versions and settings)."""

    name: str
    # Whether a batch of slices runs side by side (True) or as one call on all threads: each
    # backend's own measure (bench/side_by_side.py); decoder rows always run side by side.
    encoder_side_by_side: bool = True

    def __init__(
        self, folder: Path, low_res_size: int, device: str, precision: str, threads: int | None = None
    ) -> None:
        self.folder = Path(folder)
        self.low_res_size = low_res_size
        self.threads = threads
        # Looked up once, not on every click.
        self.info = BackendInfo(
            self.name,
            device,
            precision,
            split_decoder=has_split_decoder(self.folder),
            releases_graphs=True,
            side_by_side=side_by_side(device, threads),
        )
        self.image_states = ImageStateCache(lambda embeddings: self.image_state(embeddings))
        self._graphs: dict[str, object] = {}  # graph name -> what the runtime holds for it
        self._callers: ThreadPoolExecutor | None = None  # the threads side-by-side calls run on

    # -- the hooks --------------------------------------------------------------------------

    def _run(self, graph: str, feeds: dict[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
        """Run one graph of the set (opened on first use, kept in ``self._graphs``): ``outputs``
        by name, float32 arrays the caller may keep."""
        raise NotImplementedError

    def _run_side_by_side(
        self, graph: str, feeds_list: Sequence[dict[str, np.ndarray]], outputs: Sequence[str]
    ) -> list[list[np.ndarray]]:
        """``_run`` once per feeds, ``info.side_by_side`` calls at once, each on its share of the
        cores (the graph opened for that under ``graph + SIDE_BY_SIDE``); results in feeds order."""
        raise NotImplementedError

    def _run_all(
        self, graph: str, feeds_list: Sequence[dict[str, np.ndarray]], outputs: Sequence[str]
    ) -> list[list[np.ndarray]]:
        """Several calls of one graph: side by side where the backend runs calls so, else in turn."""
        if len(feeds_list) >= 2 and self.info.side_by_side >= 2:
            return self._run_side_by_side(graph, feeds_list, outputs)
        return [self._run(graph, feeds, outputs) for feeds in feeds_list]

    def _side_by_side_callers(self) -> ThreadPoolExecutor:
        """The threads side-by-side calls are made from (the runtimes release the GIL while they run)."""
        if self._callers is None:
            self._callers = ThreadPoolExecutor(
                self.info.side_by_side, thread_name_prefix="samfast-side-by-side"
            )
        return self._callers

    def _threads_per_call(self) -> int:
        return max(1, cores(self.threads) // self.info.side_by_side)

    # -- the contract -------------------------------------------------------------------------

    def encode(self, images: np.ndarray) -> np.ndarray:
        """A batch of two or more slices runs them side by side, one a call, where the backend's
        ``encoder_side_by_side``; one slice alone takes all the threads."""
        images = np.ascontiguousarray(images, np.float32)
        if len(images) >= 2 and self.info.side_by_side >= 2 and self.encoder_side_by_side:
            feeds = [{"images": images[i : i + 1]} for i in range(len(images))]
            return np.concatenate(
                [out for (out,) in self._run_side_by_side("encoder", feeds, ["image_embeddings"])]
            )
        (embeddings,) = self._run("encoder", {"images": images}, ["image_embeddings"])
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
        """Rows run side by side where ``info.side_by_side`` says so, a wave of calls at a time (the
        image states of one wave are held at once, not the whole step's)."""
        rows = list(rows)
        if prompts.mask_input is not None or not self.info.split_decoder:
            graph = "decoder"
            parts = [slice(n, n + 1) for n in range(len(rows))]  # the full graph repeats one embedding

            def feeds(part: slice) -> dict[str, np.ndarray]:
                return self._full_feeds(
                    embeddings[rows[part.start] : rows[part.start] + 1], prompts.take(part)
                )
        else:
            graph = "decoder_prompt"
            parts = [slice(s, s + STATE_ROWS_PER_CALL) for s in range(0, len(rows), STATE_ROWS_PER_CALL)]

            def feeds(part: slice) -> dict[str, np.ndarray]:
                # A program scans its rows every call: rows past the state bound are recomputed,
                # not evicted (see ImageStateCache). The cache is used from this thread only.
                state = self.image_states.states(embeddings, rows[part], evict=False)
                return self._prompt_feeds(state, prompts.take(part))

        wave = self.info.side_by_side
        outs = []
        for start in range(0, len(parts), wave):
            outs += self._run_all(graph, [feeds(part) for part in parts[start : start + wave]], MASKS_AND_IOU)
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])

    def release(self, *graphs: str) -> None:
        """Close the named graphs (all when none is named), handing their weights and arenas back;
        a later call reopens them. E.g. the encoder, once a volume has streamed."""
        for graph in graphs or list(self._graphs):
            self._graphs.pop(graph, None)
            self._graphs.pop(graph + SIDE_BY_SIDE, None)

    # -- the set's graphs, one by one (benches and parity checks time or compare them) ---------

    def decode_full(self, embedding: np.ndarray, prompts: Prompts) -> tuple[np.ndarray, np.ndarray]:
        """The whole decoder graph, image side included, on every call."""
        masks, iou = self._run("decoder", self._full_feeds(embedding, prompts), MASKS_AND_IOU)
        return masks, iou

    def _full_feeds(self, embedding: np.ndarray, prompts: Prompts) -> dict[str, np.ndarray]:
        feeds = prompts.to_sam_onnx(self.low_res_size)
        feeds["image_embeddings"] = np.ascontiguousarray(embedding, np.float32)
        return feeds

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
        masks, iou = self._run("decoder_prompt", self._prompt_feeds(state, prompts), MASKS_AND_IOU)
        return masks, iou

    def _prompt_feeds(self, state: dict[str, np.ndarray], prompts: Prompts) -> dict[str, np.ndarray]:
        feeds = prompts.to_sam_onnx(self.low_res_size)
        return {"point_coords": feeds["point_coords"], "point_labels": feeds["point_labels"], **state}
