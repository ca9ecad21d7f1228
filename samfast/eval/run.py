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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from samfast.errors import InputError
from samfast.eval import records
from samfast.eval.datasets import Case, Skipped, load_case
from samfast.eval.executors import CaseExecutor, LocalExecutor
from samfast.eval.metrics import dice, hd95, iou, nsd
from samfast.eval.parity import gate_slice
from samfast.eval.prompts import extent_box_3d
from samfast.eval.protocols import PROTOCOLS, SliceTask, replaying, run_tracks, start
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
# Slices a batch: their split-decoder image states fit the Predictor's 128 MiB bound (~10.5 MB a
# LiteMedSAM slice), so none is recomputed, and only a batch's embeddings (4 MiB a slice and
# backend), not a volume's, are held. Batches follow the visiting order, so a slice's neighbour
# (the previous-slice selection) is always finished before it.
SLICES_PER_BATCH = 12


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
            computed[pick] = _mask_metrics(mask, task.gt, task.spacing, task.settings.tolerance_mm)
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
            full, truth, spacing_zyx, settings.tolerance_mm
        )
    if len(settings.planes) == 3:
        for protocol in result:
            for name in SELECTIONS:
                voted = majority_vote([stacks[(protocol, p, name)] for p in settings.planes])
                result[protocol].setdefault("tri", {})[name] = _volume_metrics(
                    voted, truth, spacing_zyx, settings.tolerance_mm
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
        config = {**config, "settings": asdict(self.settings)}
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
        crop = (
            crop_to_target(truth, spacing_xyz, s.crop_margin_mm)
            if s.crop_margin_mm is not None
            else (slice(None),) * 3
        )
        closed = {records.slice_key(r): r for r in previous}
        finished: list[dict] = list(previous)
        name = self.primary[0]
        for plane in s.planes:
            images, gts = plane_view(scaled[crop], plane), plane_view(truth[crop], plane)
            chosen = spread(target_slices(gts, s.min_area), s.slices_per_case)
            order, neighbour = visiting_order(chosen, gts.reshape(gts.shape[0], -1).sum(axis=1))
            todo = [
                int(z)
                for z in order
                if not all((case.case_id, plane, int(z), name, p) in closed for p in s.protocols)
            ]
            plane_info = _Plane(
                case, plane, gts, slice_spacing(spacing_xyz, plane), extent_box_3d(gts), neighbour
            )
            for batch in self._batches(images, todo, f"{case.case_id} {plane}"):
                rows, timings = self._batch(batch, plane_info, closed)
                for row in rows:
                    if row["row"] == "slice":
                        closed[records.slice_key(row)] = row
                        finished.append(row)
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
        """SLICES_PER_BATCH slices at a time, streamed: prepared once, encoded once per backend."""
        if not todo:
            return
        others = [self.compare[1]] if self.compare else []
        primary = self.primary[1]
        streamer = SliceStreamer(primary, images, indices=todo, cache=primary.cache, others=others)
        pending = _Batch([], [], [], [], [])
        with streamer:
            for part in self.progress(streamer, -(-len(todo) // streamer.batch_size), label):
                pending.add(part)
                if len(pending.zs) >= SLICES_PER_BATCH:
                    yield pending.done()
                    pending = _Batch([], [], [], [], [])
        if pending.zs:
            yield pending.done()

    def _batch(self, batch: _Batch, plane: _Plane, closed: dict) -> tuple[list[dict], list[dict]]:
        """Every protocol on a batch of slices; rows slice by slice in visiting order."""
        s, (name, predictor) = self.settings, self.primary
        case = plane.case.case_id
        base = {
            z: {"case": case, "grade": plane.case.grade, "plane": plane.name, "slice": z} for z in batch.zs
        }
        runs: dict[str, dict[int, tuple]] = {}
        decoder: dict[str, dict] = {}
        for protocol in s.protocols:
            record = PROTOCOLS[protocol]
            todo = [
                (row, z)
                for row, z in enumerate(batch.zs)
                if (case, plane.name, z, name, protocol) not in closed
            ]
            tracks = [start(record, plane.task(z, s), row) for row, z in todo]
            started = time.perf_counter()
            run_tracks(predictor, batch.embeddings, tracks, record, s)
            decoder[protocol] = {"ms": 1e3 * (time.perf_counter() - started)}
            replays = [None] * len(tracks)
            if self.compare:
                replays = [replaying(t.records, t.gt, t.row) for t in tracks]
                started = time.perf_counter()
                run_tracks(self.compare[1], batch.compare, replays, record, s)
                decoder[protocol]["compare_ms"] = 1e3 * (time.perf_counter() - started)
            runs[protocol] = {
                z: pair for (_, z), pair in zip(todo, zip(tracks, replays, strict=True), strict=True)
            }
        rows, timings = [], []
        pixel_mm2 = plane.spacing[0] * plane.spacing[1]
        for n, z in enumerate(batch.zs):
            timing = {**base[z], "backend": name, "encoder_ms": batch.encoder_ms[n], "decoder": {}}
            if self.compare:
                timing["compare_encoder_ms"] = batch.compare_encoder_ms[n]
            for protocol in s.protocols:
                if z not in runs[protocol]:
                    continue
                track, ref = runs[protocol][z]
                # Decoder time of the batch's call, shared out evenly over its slices.
                share = {k: v / len(runs[protocol]) for k, v in decoder[protocol].items()}
                timing["decoder"][protocol] = {"calls": len(track.records), **share}
                neighbour_row = closed.get((case, plane.name, plane.neighbour[z], name, protocol))
                neighbour = None
                if neighbour_row is not None:
                    neighbour = records.as_mask(
                        neighbour_row["selections"]["previous"]["mask"], track.gt.shape
                    )
                _select_previous(track.records, track.masks, neighbour)
                task = plane.task(z, s)
                step_rows, closing = _slice_rows(
                    {**base[z], "backend": name, "protocol": protocol},
                    track.records,
                    track.masks,
                    task,
                    pixel_mm2,
                )
                if ref is not None:
                    closing["compare"] = _parity(
                        track.records, track.masks, ref.records, ref.masks, self.compare[0]
                    )
                    # reduced precisions are judged by task accuracy (eval.parity.TASK_GATE)
                    closing["compare"]["gate"] = gate_slice(
                        track.records, track.masks, ref.records, ref.masks, track.gt
                    )
                closed[(case, plane.name, z, name, protocol)] = closing  # the next slice's neighbour
                rows.extend(step_rows + [closing])
            timings.append(timing)
        return rows, timings


@dataclass
class _Plane:
    """One case's plane: what every slice's task is made of."""

    case: Case
    name: str
    gts: np.ndarray
    spacing: tuple[float, float]
    extent_box: np.ndarray
    neighbour: dict

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
