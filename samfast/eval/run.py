"""One evaluation run: every protocol on every target slice of every case, resumable, case by case.

For each slice the primary backend runs each protocol; with a compare backend the very same prompts are
replayed on it (parity). Rows are described in records.py; the summary is built by summary.py.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from samfast.errors import InputError
from samfast.eval import records
from samfast.eval.datasets import Case, Skipped, load_case
from samfast.eval.executors import CaseExecutor, LocalExecutor
from samfast.eval.metrics import bounding_box, dice, hd95, iou, nsd
from samfast.eval.parity import gate_slice
from samfast.eval.prompts import extent_box_3d, jittered_box, margin_box
from samfast.eval.protocols import (
    replay,
    run_box,
    run_box_components,
    run_box_points,
    run_points_mazurowski,
    run_points_putz,
)
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

PROTOCOLS = ("box", "box-jitter", "box-margin", "box-3d", "points-putz", "points-mazurowski", "box-points")
SELECTIONS = ("oracle", "suggested", "previous")


@dataclass
class Settings:
    """Everything that changes results; stored in config.json and the report."""

    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    planes: list[str] = field(default_factory=lambda: ["axial"])
    target: str = "tc"
    min_area: int = 100  # MedSAM drops targets under 100 px
    crop_margin_mm: float | None = None  # Putz: 20 mm around the 3D target extent
    normalization: str = "putz"
    seed: int = 0
    max_points: int = 9
    max_clicks: int = 5
    follow: str = "oracle"  # mask the next Putz point is placed from
    feed_logits: bool = False
    box_per: str = "slice"  # or "component": one box per connected component
    jitter_px: int = 20
    margin_mm: float = 20.0
    tolerance_mm: float = 1.0  # NSD tolerance
    slices_per_case: int | None = None

    def __post_init__(self) -> None:
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown:
            raise InputError(f"protocol {unknown[0]!r}: use {', '.join(PROTOCOLS)} or all")
        if self.follow not in ("oracle", "suggested"):
            raise InputError(f"follow {self.follow!r}: use oracle or suggested")
        if self.box_per not in ("slice", "component"):
            raise InputError(f"box per {self.box_per!r}: use slice or component")


def slice_rng(seed: int, case_id: str, plane: str, z: int) -> np.random.Generator:
    """A generator per slice, so a resumed or reordered run draws exactly the same prompts."""
    return np.random.default_rng((seed, zlib.crc32(case_id.encode()), zlib.crc32(plane.encode()), z))


@dataclass
class SliceTask:
    """What a protocol needs beyond the image: the GT, spacing, the 3D box, the settings."""

    gt: np.ndarray
    spacing: tuple[float, float]  # (row, column) mm
    extent_box: np.ndarray
    rng: np.random.Generator
    settings: Settings


def run_protocol(protocol: str, predictor, task: SliceTask, masks_out: list) -> list[dict]:
    s, gt = task.settings, task.gt
    if protocol == "box":
        if s.box_per == "component":
            return run_box_components(predictor, gt, masks_out)
        return run_box(predictor, gt, bounding_box(gt), masks_out=masks_out)
    if protocol == "box-jitter":
        return run_box(predictor, gt, jittered_box(gt, task.rng, s.jitter_px), masks_out=masks_out)
    if protocol == "box-margin":
        box = margin_box(gt, task.rng, task.spacing, s.margin_mm)
        return run_box(predictor, gt, box, masks_out=masks_out)
    if protocol == "box-3d":
        return run_box(predictor, gt, task.extent_box, masks_out=masks_out)
    if protocol == "points-putz":
        return run_points_putz(predictor, gt, s.max_points, s.feed_logits, s.follow, masks_out)
    if protocol == "points-mazurowski":
        return run_points_mazurowski(predictor, gt, task.rng, s.max_points, masks_out)
    if protocol == "box-points":
        return run_box_points(predictor, gt, bounding_box(gt), s.max_clicks, s.follow, masks_out)
    raise ValueError(f"unknown protocol {protocol!r}")


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
        mask = masks[best][steps[best][name]]
        packed = records.pack_mask(mask)
        if packed not in computed:
            computed[packed] = _mask_metrics(mask, task.gt, task.spacing, task.settings.tolerance_mm)
        selections[name] = {
            "best_step": best + 1,
            "points_at_best": len(steps[best]["points"]),
            **computed[packed],
            "mask": packed,
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
            view[row["slice"]] = records.unpack_mask(entry["mask"], view.shape[1:])
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
        """One case's rows as (result rows, timing rows) per finished slice, then the closing case row.

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
        for plane in s.planes:
            images, gts = plane_view(scaled[crop], plane), plane_view(truth[crop], plane)
            spacing = slice_spacing(spacing_xyz, plane)
            chosen = spread(target_slices(gts, s.min_area), s.slices_per_case)
            order, neighbour = visiting_order(chosen, gts.reshape(gts.shape[0], -1).sum(axis=1))
            extent = extent_box_3d(gts)
            label = f"{case.case_id} {plane}"
            for z in self.progress(order, len(order), label):
                base = {"case": case.case_id, "grade": case.grade, "plane": plane, "slice": int(z)}
                keys = [(case.case_id, plane, int(z), self.primary[0], p) for p in s.protocols]
                if all(k in closed for k in keys):
                    continue
                task = SliceTask(np.asarray(gts[z], bool), spacing, extent, None, s)
                rows, timings = self._slice(images[z], task, base, closed, neighbour[z])
                for row in rows:
                    if row["row"] == "slice":
                        closed[records.slice_key(row)] = row
                        finished.append(row)
                yield rows, [timings]
        mine = [r for r in finished if r["backend"] == self.primary[0]]
        closing = {
            "row": "case",
            "case": case.case_id,
            "grade": case.grade,
            "backend": self.primary[0],
            "spacing_mm": [float(v) for v in spacing_xyz],
            "slices": len({(r["plane"], r["slice"]) for r in mine}),
            "metrics_3d": _case_metrics(mine, truth, crop, spacing_xyz, s),
        }
        yield [closing], []

    def _slice(
        self, image, task: SliceTask, base: dict, closed: dict, neighbour_z
    ) -> tuple[list[dict], dict]:
        s = self.settings
        name, predictor = self.primary
        pixel_mm2 = task.spacing[0] * task.spacing[1]
        timings = {**base, "backend": name}
        started = time.perf_counter()
        predictor.set_image(image)
        timings["encoder_ms"] = 1e3 * (time.perf_counter() - started)
        if self.compare:
            started = time.perf_counter()
            self.compare[1].set_image(image)
            timings["compare_encoder_ms"] = 1e3 * (time.perf_counter() - started)
        rows, decoder = [], {}
        for protocol in s.protocols:
            key = (base["case"], base["plane"], base["slice"], name, protocol)
            if key in closed:
                continue
            task.rng = slice_rng(s.seed, base["case"], base["plane"], base["slice"])
            masks: list[np.ndarray] = []
            started = time.perf_counter()
            steps = run_protocol(protocol, predictor, task, masks)
            decoder[protocol] = {"calls": len(steps), "ms": 1e3 * (time.perf_counter() - started)}
            neighbour_row = closed.get((base["case"], base["plane"], neighbour_z, name, protocol))
            neighbour = None
            if neighbour_row is not None:
                mask = neighbour_row["selections"]["previous"]["mask"]
                neighbour = records.unpack_mask(mask, task.gt.shape)
            _select_previous(steps, masks, neighbour)
            step_rows, closing = _slice_rows(
                {**base, "backend": name, "protocol": protocol}, steps, masks, task, pixel_mm2
            )
            if self.compare:
                ref_masks: list[np.ndarray] = []
                started = time.perf_counter()
                ref_steps = replay(self.compare[1], task.gt, steps, s.feed_logits, ref_masks)
                decoder[protocol]["compare_ms"] = 1e3 * (time.perf_counter() - started)
                closing["compare"] = _parity(steps, masks, ref_steps, ref_masks, self.compare[0])
                closing["compare"]["gate"] = gate_slice(steps, masks, ref_steps, ref_masks, task.gt)
            rows.extend(step_rows + [closing])
        timings["decoder"] = decoder
        return rows, timings
