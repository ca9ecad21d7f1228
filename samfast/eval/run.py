"""One evaluation run: every protocol on every target slice of every case, resumable, case by case.

Each plane's target slices stream through a SliceStreamer (read and prepared on a background
thread), are encoded once per backend, and every protocol runs on them through the one driver in
protocols.py, step k of a batch of slices in one call; with a compare backend the very same prompts
are replayed on it (parity) through the same driver. Rows are described in records.py; the summary
is built by summary.py.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samfast.backends.image_states import STATE_BYTES
from samfast.errors import InputError
from samfast.eval import records
from samfast.eval.datasets import Case, Skipped, load_case
from samfast.eval.executors import CaseExecutor, LocalExecutor
from samfast.eval.metrics import dice, hd95, iou, nsd
from samfast.eval.parity import gate_slice
from samfast.eval.prompts import extent_box_3d
from samfast.eval.protocols import PROTOCOLS, SliceTask, Track, replaying, run_tracks, start
from samfast.eval.settings import SELECTIONS, Settings
from samfast.eval.slicing import (
    crop_to_target,
    from_plane_view,
    grown_extent,
    majority_vote,
    plane_view,
    slice_spacing,
    spread,
    target_slices,
    visiting_order,
)
from samfast.preprocess import normalize
from samfast.runtime.streaming import SliceStreamer

__all__ = ["PROTOCOLS", "SELECTIONS", "Evaluation", "Settings"]


def rows_per_batch(state_bound: int, state_bytes_per_row: int) -> int:
    """Slices a batch holds: as many as the image-state cache keeps (``state_bound`` bytes,
    samfast.backends.image_states). A slice's split-decoder state, computed on its first step, then
    serves every later step and protocol: for a program the cache recomputes rows past its bound
    instead of evicting, so a bigger batch would recompute states on every step. A batch also bounds
    the embeddings held (4 MiB a LiteMedSAM slice and backend) to a batch's, not a volume's."""
    return max(1, state_bound // state_bytes_per_row)


def split_state_bytes(embedding_shape: tuple[int, int, int]) -> int:
    """fp32 bytes of one row's split-decoder image state (samfast.export.split_decoder): the image
    tokens (C a pixel) and three projections of them at half width (SAM's cross attentions
    downsample by 2). 10 MiB for a 256×64×64 embedding, so 12 rows fit the 128 MiB bound."""
    channels, height, width = embedding_shape
    return 4 * height * width * (channels + 3 * (channels // 2))


def slice_rng(seed: int, case_id: str, plane: str, z: int) -> np.random.Generator:
    """A generator per slice, so a resumed or reordered run draws exactly the same prompts."""
    return np.random.default_rng((seed, zlib.crc32(case_id.encode()), zlib.crc32(plane.encode()), z))


def _select_previous(steps: list[dict], masks: list[np.ndarray], neighbour: np.ndarray | None) -> None:
    """Putz's proposal: on each step pick the mask most like the neighbouring slice's final mask."""
    for step, candidates in zip(steps, masks, strict=True):
        if neighbour is None:
            pick = step["suggested"]  # the first slice has no finished neighbour
        else:
            pick = int(np.argmax([dice(m, neighbour) for m in candidates]))
        step["previous"], step["previous_iou"] = pick, step["ious"][pick]


def _mask_metrics(mask: np.ndarray, gt: np.ndarray, spacing, tolerance_mm: float) -> dict:
    distance = hd95(mask, gt, spacing)
    return {
        "iou": iou(mask, gt),
        "dice": dice(mask, gt),
        "nsd": nsd(mask, gt, spacing, tolerance_mm),
        "hd95": distance if np.isfinite(distance) else None,  # None: one of the masks is empty
    }


def _slice_rows(base: dict, steps, masks, task: SliceTask, pixel_mm2: float) -> tuple[list[dict], dict]:
    """Step rows and the closing slice row with per-selection best masks and their metrics."""
    step_rows = []
    for step, candidates in zip(steps, masks, strict=True):
        row = {"row": "step", **base, **step}
        row["area_gt_mm2"] = round(float(task.gt.sum()) * pixel_mm2, 3)
        row["area_chosen_mm2"] = round(float(candidates[step["chosen"]].sum()) * pixel_mm2, 3)
        step_rows.append(row)
    selections, computed = {}, {}
    for name in SELECTIONS:
        values = [s[f"{name}_iou"] for s in steps]
        best = int(np.argmax(values))  # mbIoU: the best the user reaches at any step
        pick = (best, steps[best][name])
        mask = masks[best][pick[1]]
        if pick not in computed:
            computed[pick] = _mask_metrics(mask, task.gt, task.spacing, task.settings.nsd_tolerance_mm)
        selections[name] = {
            "best_step": best + 1,
            "points_at_best": len(steps[best]["points"]),
            **computed[pick],
            "mask": mask,  # an array until records writes it
        }
    closing = {
        "row": "slice",
        **base,
        "area_px": int(task.gt.sum()),
        "area_mm2": round(float(task.gt.sum()) * pixel_mm2, 3),
        "steps": len(steps),
        "selections": selections,
    }
    return step_rows, closing


def _parity(steps, masks, ref_steps, ref_masks, name: str) -> dict:
    """Same prompts on the reference: mask Dice of the followed mask per step and IoU differences."""
    dices = [dice(m[s["chosen"]], r[s["chosen"]]) for s, m, r in zip(steps, masks, ref_masks, strict=True)]
    deltas = [
        abs(a - b)
        for s, r in zip(steps, ref_steps, strict=True)
        for a, b in zip(s["ious"], r["ious"], strict=True)
    ]
    return {
        "backend": name,
        "chosen_ious": [r["ious"][s["chosen"]] for s, r in zip(steps, ref_steps, strict=True)],
        "min_mask_dice": min(dices),
        "max_iou_delta": max(deltas),
    }


def _case_metrics(case_rows: list[dict], truth: np.ndarray, crop, spacing_xyz, settings: Settings) -> dict:
    """3D metrics of the stacked best masks per protocol, plane and selection, and the tri-planar vote."""
    spacing_zyx = tuple(reversed(spacing_xyz))
    cropped_shape = truth[crop].shape
    stacks: dict[tuple[str, str, str], np.ndarray] = {}
    for row in case_rows:
        for name, entry in row["selections"].items():
            key = (row["protocol"], row["plane"], name)
            if key not in stacks:
                stacks[key] = plane_view(np.zeros(cropped_shape, bool), row["plane"]).copy()
            view = stacks[key]
            view[row["slice"]] = records.as_mask(entry["mask"], view.shape[1:])
    result: dict = {}
    for (protocol, plane, name), view in sorted(stacks.items()):
        full = np.zeros_like(truth)
        full[crop] = from_plane_view(view, plane)
        stacks[(protocol, plane, name)] = full
        result.setdefault(protocol, {}).setdefault(plane, {})[name] = _volume_metrics(
            full, truth, spacing_zyx, settings.nsd_tolerance_mm
        )
    if len(settings.planes) == 3:
        for protocol in result:
            for name in SELECTIONS:
                voted = majority_vote([stacks[(protocol, p, name)] for p in settings.planes])
                result[protocol].setdefault("tri", {})[name] = _volume_metrics(
                    voted, truth, spacing_zyx, settings.nsd_tolerance_mm
                )
    return result


def _volume_metrics(mask: np.ndarray, truth: np.ndarray, spacing_zyx, tolerance_mm: float) -> dict:
    # Surface distances only need the region around both masks: crop to it (+1 voxel of background).
    box = grown_extent(mask | truth, (1, 1, 1))
    return _mask_metrics(mask[box], truth[box], spacing_zyx, tolerance_mm)


@dataclass
class Evaluation:
    """Inputs of a run: predictors by role, the cases, where to write and how to show progress."""

    primary: tuple[str, object]  # (backend name, Predictor)
    compare: tuple[str, object] | None
    settings: Settings
    out_dir: Path
    progress: Callable[[Iterable, int, str], Iterable] = lambda items, total, label: items
    log: Callable[[str], None] = lambda message: None

    def run(
        self,
        cases: list[Case],
        skipped: list[Skipped],
        config: dict,
        fresh: bool = False,
        executor: CaseExecutor | None = None,
    ) -> list[dict]:
        """Every case through ``executor`` (default: this process); this driver alone writes the files.

        Rows reach ``results.jsonl`` in case order whatever the executor, so the same data, seed and
        backend give the same bytes however the work was spread.
        """
        config = {**config, "settings": self.settings.record()}
        rows = records.start_run(self.out_dir, config, fresh)
        started = time.perf_counter()
        done_cases = {r["case"] for r in rows if r["row"] in ("case", "skipped")}
        todo = [case for case in cases if case.case_id not in done_cases]
        previous: dict[str, list[dict]] = {case.case_id: [] for case in todo}
        for row in rows:
            if row["row"] == "slice" and row["case"] in previous:
                previous[row["case"]].append(row)
        executor = executor or LocalExecutor()
        with (
            open(self.out_dir / records.RESULTS, "a") as sink,
            open(self.out_dir / records.TIMINGS, "a") as timing,
        ):
            for skip in skipped:
                if skip.case_id not in done_cases:
                    records.append_rows(
                        sink, [{"row": "skipped", "case": skip.case_id, "reason": skip.reason}]
                    )
            for case, batches in executor.map(self, todo, previous):
                try:
                    for result_rows, timing_rows in batches:
                        records.append_rows(sink, result_rows)
                        if timing_rows:
                            timing.write("".join(json.dumps(t) + "\n" for t in timing_rows))
                            timing.flush()
                except InputError as error:
                    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                    self.log(f"skipped {case.case_id}: {reason}")
                    records.append_rows(sink, [{"row": "skipped", "case": case.case_id, "reason": reason}])
        self.wall_s = time.perf_counter() - started
        return records.read_rows(self.out_dir / records.RESULTS)

    def case_rows(self, case: Case, previous: list[dict]) -> Iterator[tuple[list[dict], list[dict]]]:
        """One case's rows as (result rows, timing rows), a batch of slices at a time, then the
        closing case row.

        ``previous`` holds the slice rows a resumed run already has for this case; those slices are
        skipped. Bad input raises InputError (the case is then skipped and counted by the driver).
        """
        s = self.settings
        volume, truth, spacing_xyz = load_case(case, s.target)
        scaled = normalize(volume, s.normalization)
        crop = crop_to_target(truth, spacing_xyz, s.crop_mm) if s.crop_mm is not None else (slice(None),) * 3
        closed = {records.slice_key(r): r for r in previous}
        finished: list[dict] = list(previous)
        name = self.primary[0]
        for plane in s.planes:
            images, gts = plane_view(scaled[crop], plane), plane_view(truth[crop], plane)
            chosen = spread(target_slices(gts, s.min_area), s.slices_per_case)
            order, neighbour = visiting_order(chosen, gts.reshape(gts.shape[0], -1).sum(axis=1))
            view = _Plane(
                case, plane, name, gts, slice_spacing(spacing_xyz, plane), extent_box_3d(gts), neighbour
            )
            todo = [int(z) for z in order if not all(view.key(int(z), p) in closed for p in s.protocols)]
            for batch in self._batches(images, todo, f"{case.case_id} {plane}"):
                rows, timings = self._batch(batch, view, closed)
                finished.extend(row for row in rows if row["row"] == "slice")
                yield rows, timings
        mine = [r for r in finished if r["backend"] == name]
        closing = {
            "row": "case",
            "case": case.case_id,
            "grade": case.grade,
            "backend": name,
            "spacing_mm": [float(v) for v in spacing_xyz],
            "slices": len({(r["plane"], r["slice"]) for r in mine}),
            "metrics_3d": _case_metrics(mine, truth, crop, spacing_xyz, s),
        }
        yield [closing], []

    def _batches(self, images: np.ndarray, todo: list[int], label: str) -> Iterator[_Batch]:
        """``rows_per_batch`` slices at a time, streamed: prepared once, encoded once per backend.

        Batches follow the visiting order, so a slice's neighbour (the previous-slice selection) is
        always finished before it."""
        if not todo:
            return
        others = [self.compare[1]] if self.compare else []
        primary = self.primary[1]
        size = rows_per_batch(STATE_BYTES, split_state_bytes(primary.spec.embedding_shape))
        streamer = SliceStreamer(primary, images, indices=todo, cache=primary.cache, others=others)
        pending = _Batch([], [], [], [], [])
        with streamer:
            for part in self.progress(streamer, -(-len(todo) // streamer.batch_size), label):
                pending.add(part)
                if len(pending.zs) >= size:
                    yield pending.done()
                    pending = _Batch([], [], [], [], [])
        if pending.zs:
            yield pending.done()

    def _batch(self, batch: _Batch, plane: _Plane, closed: dict) -> tuple[list[dict], list[dict]]:
        """Every protocol on a batch of slices; rows slice by slice in visiting order."""
        runs = {p: self._run_protocol(p, batch, plane, closed) for p in self.settings.protocols}
        rows, timings = [], []
        for n, z in enumerate(batch.zs):
            timing = {**plane.base(z), "encoder_ms": batch.encoder_ms[n], "decoder": {}}
            if self.compare:
                timing["compare_encoder_ms"] = batch.compare_encoder_ms[n]
            for protocol, run in runs.items():
                if z in run.tracks:
                    timing["decoder"][protocol] = run.timing(z)
                    rows.extend(self._slice_rows(plane, z, protocol, run.tracks[z], closed))
            timings.append(timing)
        return rows, timings

    def _run_protocol(self, name: str, batch: _Batch, plane: _Plane, closed: dict) -> _ProtocolRun:
        """Protocol ``name`` on the batch's unfinished slices at once, then replayed on the compare
        backend with the very same prompts."""
        s, protocol = self.settings, PROTOCOLS[name]
        todo = [(row, z) for row, z in enumerate(batch.zs) if plane.key(z, name) not in closed]
        tracks = [start(protocol, plane.task(z, s), row) for row, z in todo]
        started = time.perf_counter()
        run_tracks(self.primary[1], batch.embeddings, tracks, protocol, s)
        decoder_ms = {"ms": 1e3 * (time.perf_counter() - started)}
        replays: list[Track | None] = [None] * len(tracks)
        if self.compare:
            replays = [replaying(t.records, t.gt, t.row) for t in tracks]
            started = time.perf_counter()
            run_tracks(self.compare[1], batch.compare, replays, protocol, s)
            decoder_ms["compare_ms"] = 1e3 * (time.perf_counter() - started)
        zs = [z for _, z in todo]
        return _ProtocolRun(dict(zip(zs, zip(tracks, replays, strict=True), strict=True)), decoder_ms)

    def _slice_rows(self, plane: _Plane, z: int, protocol: str, run, closed: dict) -> list[dict]:
        """Slice z's rows under one protocol: its steps, then its closing row (with parity against
        the compare backend), which becomes the next slice's neighbour in ``closed``."""
        track, ref = run
        neighbour_row = closed.get(plane.key(plane.neighbour[z], protocol))
        neighbour = None
        if neighbour_row is not None:
            neighbour = records.as_mask(neighbour_row["selections"]["previous"]["mask"], track.gt.shape)
        _select_previous(track.records, track.masks, neighbour)
        step_rows, closing = _slice_rows(
            {**plane.base(z), "protocol": protocol},
            track.records,
            track.masks,
            plane.task(z, self.settings),
            plane.spacing[0] * plane.spacing[1],
        )
        if ref is not None:
            closing["compare"] = _parity(track.records, track.masks, ref.records, ref.masks, self.compare[0])
            # reduced precisions are judged by task accuracy (eval.parity.TASK_GATE)
            closing["compare"]["gate"] = gate_slice(
                track.records, track.masks, ref.records, ref.masks, track.gt
            )
        closed[plane.key(z, protocol)] = closing
        return [*step_rows, closing]


@dataclass
class _ProtocolRun:
    """One protocol on a batch: slice -> (its track, its replay on the compare backend or None),
    and the batch's decoder time per backend ("ms", "compare_ms")."""

    tracks: dict[int, tuple[Track, Track | None]]
    decoder_ms: dict[str, float]

    def timing(self, z: int) -> dict:
        """Slice z's decoder calls, and the batch's decoder time shared out evenly over its slices."""
        share = {k: v / len(self.tracks) for k, v in self.decoder_ms.items()}
        return {"calls": len(self.tracks[z][0].records), **share}


@dataclass
class _Plane:
    """One case's plane: what every slice's task is made of."""

    case: Case
    name: str
    backend: str  # the primary backend's name, which the rows carry
    gts: np.ndarray
    spacing: tuple[float, float]
    extent_box: np.ndarray
    neighbour: dict

    def key(self, z: int, protocol: str) -> records.SliceKey:
        return records.SliceKey(self.case.case_id, self.name, z, self.backend, protocol)

    def base(self, z: int) -> dict:
        """What every row of slice z starts with."""
        return {
            "case": self.case.case_id,
            "grade": self.case.grade,
            "plane": self.name,
            "slice": z,
            "backend": self.backend,
        }

    def task(self, z: int, settings: Settings) -> SliceTask:
        rng = slice_rng(settings.seed, self.case.case_id, self.name, z)  # fresh for every protocol
        return SliceTask(np.asarray(self.gts[z], bool), self.spacing, self.extent_box, rng, settings)


@dataclass
class _Batch:
    """Slices streamed so far for one batch: their positions, embeddings per backend, encoder times."""

    zs: list[int]
    parts: list
    compare_parts: list
    encoder_ms: list[float]
    compare_encoder_ms: list[float]

    def add(self, part) -> None:
        self.zs.extend(int(z) for z in part.indices)
        self.parts.append(part.embeddings)
        per_slice = [None if t is None else t / len(part.indices) for t in part.encode_ms] or [None]
        self.encoder_ms.extend([per_slice[0]] * len(part.indices))
        if part.others:
            self.compare_parts.append(part.others[0])
            self.compare_encoder_ms.extend([per_slice[1]] * len(part.indices))

    def done(self) -> _Batch:
        self.embeddings = np.concatenate(self.parts)
        self.compare = np.concatenate(self.compare_parts) if self.compare_parts else None
        self.parts = self.compare_parts = []
        return self
