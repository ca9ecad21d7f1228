"""`samfast segment` on a real DICOM series built from a demo case: the three outputs agree, their Dice
equals the predictor's slice by slice, and propagation follows its documented rule."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import CASES, TUMOUR_CORE, load_case
from dicom_fixtures import (
    assert_received,
    build_series,
    dciodvfy_errors,
    demo_images,
    free_port,
    mounted_tmpfs,
    plastimatch_masks,
    storescp,
    tumour_crop,
)
from typer.testing import CliRunner

from samfast import Predictor
from samfast.cli import app
from samfast.clinical.dicom_seg import read_dicom_seg
from samfast.clinical.prompts import SlicePrompt, VolumePrompts, build_prompts
from samfast.clinical.propagate import PropagationRule, next_box, propagate
from samfast.clinical.rtstruct import read_rtstruct_mask, rtstruct_file_name
from samfast.clinical.segment import edit_volume, segment_volume
from samfast.clinical.slice_model import SliceModel
from samfast.clinical.volume import load_volume
from samfast.eval.metrics import bounding_box, dice
from samfast.preprocess import normalize_mr_putz
from samfast.runtime.embedding_cache import EmbeddingCache

# Whole demo cases: the second, smaller one runs in `make test`, the first in `make test-slow` as well
# (each costs ~1 min on 2 cores; the two cases exercise the same code).
WHOLE_CASES = [pytest.param(CASES[0], marks=pytest.mark.slow), *CASES[1:]]


@pytest.fixture(scope="module")
def predictor():
    return Predictor("litemedsam", backend="onnxruntime")


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A 5-slice DICOM series around case 001's tumour core, its label file and the core's 3D box."""
    folder = tmp_path_factory.mktemp("segment")
    image, label = tumour_crop(CASES[0], slices=5, size=128)
    series = build_series(image, folder / "series")
    sitk.WriteImage(label, str(folder / "label.nii.gz"))
    core = np.isin(sitk.GetArrayFromImage(label), TUMOUR_CORE)
    x0, y0, x1, y1 = bounding_box(core.any(axis=0))
    return series, folder / "label.nii.gz", core, [x0, y0, 0, x1, y1, 4]


def test_segment_outputs_agree_and_match_the_predictor_slice_by_slice(case, predictor, tmp_path):
    series, label, core, box = case
    out, rt, seg = tmp_path / "mask.nii.gz", tmp_path / "rt", tmp_path / "seg.dcm"
    args = ["segment", str(series), "--box", *map(str, box), "--per-slice", "--out", str(out)]
    args += ["--rtstruct", str(rt), "--seg", str(seg), "--roi-name", "GTV", "--color", "#00ff00"]
    args += ["--label", str(label)]
    with storescp(tmp_path / "received") as node:
        result = CliRunner().invoke(app, [*args, "--roi-type", "CTV", "--send", node])
    assert result.exit_code == 0, result.stderr
    assert f"sent 2 files to {node}" in result.stdout
    rt_file = rt / rtstruct_file_name("GTV")
    assert_received(tmp_path / "received", [rt_file, seg])
    volume = load_volume(series)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out))).astype(bool)
    assert mask.any(axis=(1, 2)).all()
    # a planning system's reading (plastimatch), samfast's own and the SEG give back the NIfTI mask
    planned = plastimatch_masks(rt_file, series, tmp_path / "pm")["GTV"]
    assert np.array_equal(sitk.GetArrayFromImage(planned).astype(bool), mask)
    assert np.array_equal(read_rtstruct_mask(rt_file, volume.series, "GTV"), mask)
    assert np.array_equal(read_dicom_seg(seg, volume.series), mask)
    assert dciodvfy_errors(rt_file) == [] and dciodvfy_errors(seg) == []
    structure = pydicom.dcmread(rt_file)
    assert structure.RTROIObservationsSequence[0].RTROIInterpretedType == "CTV"
    assert "litemedsam" in structure.StructureSetROISequence[0].ROIGenerationDescription
    # The same predictor, slice by slice, on the same intensities (Putz over the whole volume).
    scaled = normalize_mr_putz(sitk.GetArrayFromImage(volume.image))
    reference = np.zeros_like(mask)
    for z in range(mask.shape[0]):
        predictor.set_image(scaled[z])
        reference[z] = predictor.predict(box=np.array(box[:2] + box[3:5]), multimask_output=False)[0][0]
    assert np.array_equal(mask, reference)
    sidecar = json.loads((tmp_path / "mask.json").read_text())
    assert sidecar["dice_3d"] == pytest.approx(dice(reference, core), abs=1e-12)
    assert f"3D Dice vs label {dice(reference, core):.4f}" in result.stdout


def _segment(*args):
    result = CliRunner().invoke(app, ["segment", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def test_an_empty_mask_is_refused_and_allow_empty_writes_conformant_files(case, predictor, tmp_path):
    # (the predictor fixture builds the engine first, so the CLI prints no build log)
    series = case[0]
    out = tmp_path / "out"
    out.mkdir()
    # one background click in the middle of a slice: LiteMedSAM answers with an empty mask
    prompt = ["--point", "64,64,2,0", "--out", out / "m.nii.gz", "--rtstruct", out / "rt"]
    prompt += ["--seg", out / "s.dcm"]
    code, _, stderr = _segment(series, *prompt)
    assert code == 2 and stderr.count("\n") == 1 and "the mask is empty" in stderr
    assert "--allow-empty" in stderr and list(out.iterdir()) == []
    # allowed, and sent to a node that is not there: exit 3, one line, the files stay
    node = f"PLANNING@127.0.0.1:{free_port()}"
    code, _, stderr = _segment(series, *prompt, "--allow-empty", "--send", node)
    error = [line for line in stderr.splitlines() if line.startswith("error")]
    assert code == 3 and len(error) == 1 and f"cannot reach {node}" in error[0], stderr
    assert "the files stay written" in error[0] and "ROI without contours" in stderr
    rt = out / "rt" / rtstruct_file_name("SAMFAST")
    assert "ContourSequence" not in pydicom.dcmread(rt).ROIContourSequence[0]
    assert dciodvfy_errors(rt) == [] and dciodvfy_errors(out / "s.dcm") == []
    assert not sitk.GetArrayFromImage(sitk.ReadImage(str(out / "m.nii.gz"))).any()
    code, _, stderr = _segment(series, "--box", 1, 1, 0, 9, 9, 0, "--out", out / "n.nii.gz", "--send", node)
    assert code == 2 and "--send sends the RTSTRUCT and SEG" in stderr  # refused before the model runs


def test_a_full_disk_is_one_line_and_leaves_nothing(case, predictor, tmp_path):
    series, _, _, box = case
    with mounted_tmpfs(tmp_path / "full", "size=64k") as full:
        filler = full / "someone-elses.dat"  # leave room for the NIfTI, not for the RTSTRUCT
        filler.write_bytes(b"\0" * 40960)
        outputs = ["--out", full / "m.nii.gz", "--rtstruct", full / "rt", "--seg", full / "s.dcm"]
        code, _, stderr = _segment(series, "--box", *box[:2], 1, *box[3:5], 2, *outputs)
        assert code == 2 and stderr.count("\n") == 1 and "No space left on device" in stderr, stderr
        assert "Traceback" not in stderr
        assert list(full.iterdir()) == [filler]


def test_propagation_walks_from_the_box_slice_and_says_why_it_stopped(case, predictor):
    series, _, core, box = case
    volume = load_volume(series)
    predictor.cache = EmbeddingCache(max_bytes=5 * (4 << 20))  # five LiteMedSAM embeddings
    model = SliceModel(predictor, volume.normalised())
    one_slice = build_prompts(volume.image, box[:2] + [2] + box[3:5] + [2])
    result = segment_volume(model, one_slice, (1.0, 1.0))
    assert result.start_slice == 2 and set(result.stops) == {"down", "up"}
    walked = sorted(result.scores)
    assert walked == list(range(walked[0], walked[-1] + 1)) and len(walked) >= 3
    for z in walked[1:]:  # every kept slice overlaps its neighbour towards the start
        neighbour = z - 1 if z > 2 else z + 1
        assert (result.mask[z] & result.mask[neighbour]).any()
    assert dice(result.mask, core) > 0.6


def test_cli_propagates_from_an_lps_prompts_file(case, predictor, tmp_path):
    series, _, _, box = case
    volume = load_volume(series)
    corners = [
        volume.image.TransformContinuousIndexToPhysicalPoint((float(b[0]), float(b[1]), 2.0))
        for b in (box[:2], box[3:5])
    ]
    (tmp_path / "prompts.json").write_text(json.dumps({"frame": "lps", "box": [*corners[0], *corners[1]]}))
    out = tmp_path / "mask.nii.gz"
    args = [
        "segment",
        str(series),
        "--prompts",
        str(tmp_path / "prompts.json"),
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert "3D walk from slice 2" in result.stdout
    recorded = json.loads((tmp_path / "mask.json").read_text())["segmentation"]
    assert recorded["mode"] == "3d" and recorded["anchors"] == [2]
    assert set(recorded["stops"]) == {"down", "up"} and recorded["rule"]["name"] == PropagationRule.name
    assert all(len(entry["box"]) == 4 for entry in recorded["slices"].values())
    prompts = build_prompts(volume.image, box[:2] + [2] + box[3:5] + [2])
    expected = segment_volume(SliceModel(predictor, volume.normalised()), prompts, (1.0, 1.0)).mask
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out))).astype(bool), expected)


def _disk(radius: float, centre=(40, 40), shape=(80, 80)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[1]) ** 2 + (xx - centre[0]) ** 2 <= radius**2


def test_walk_stops_where_the_structure_vanishes():
    radii = {z: 20 - 4 * abs(z - 5) for z in range(11)}  # a sphere-like blob, gone beyond 4 slices

    def predict(z, box):
        return (_disk(radii[z]) if radii[z] > 0 else np.zeros((80, 80), bool)), 0.9

    walk = propagate(predict, 5, _disk(20), None, (0, 10), (1.0, 1.0), PropagationRule(min_pixels=10))
    assert sorted(walk.masks) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert "vanished" in walk.stops["down"] and "slice 0" in walk.stops["down"]


def test_walk_stops_when_the_mask_jumps_elsewhere():
    def predict(z, box):
        return (_disk(8) if z < 7 else _disk(8, centre=(12, 12))), 0.9

    walk = propagate(predict, 5, _disk(8), None, (0, 10), (1.0, 1.0))
    assert max(walk.masks) == 6 and "stopped overlapping" in walk.stops["up"]


def test_walk_stops_below_a_share_of_the_start_slice_predicted_iou():
    """The same disk everywhere, the model's confidence falling off with distance from the start slice:
    the floor is 0.8 × the start score when that is above the absolute 0.6, else 0.6."""
    scores = {z: 0.9 - 0.04 * abs(z - 5) for z in range(11)}  # 0.90 at the start, 0.70 at slices 0 and 10

    def predict(z, box):
        return _disk(10), scores[z]

    rule = PropagationRule()
    walk = propagate(predict, 5, _disk(10), None, (0, 10), (1.0, 1.0), rule, start_score=0.9)
    # floor 0.72: slices 1 and 9 score 0.74 and are kept, slices 0 and 10 (0.70) stop the walk
    assert sorted(walk.masks) == list(range(1, 10))
    assert "slice 0: predicted IoU 0.700 below 0.720" in walk.stops["down"]
    assert "slice 10" in walk.stops["up"]
    # a poorly scored start slice: 0.8 × 0.7 = 0.56 is below the absolute floor, which applies
    assert rule.score_floor(0.7) == pytest.approx(0.6) and rule.score_floor(None) == pytest.approx(0.6)
    # without a start score only the absolute floor applies: the walk reaches both ends
    walk = propagate(predict, 5, _disk(10), None, (0, 10), (1.0, 1.0), rule)
    assert sorted(walk.masks) == list(range(11))


def test_next_box_adds_the_margin_in_pixels_and_stays_inside():
    mask = np.zeros((50, 60), bool)
    mask[10:20, 2:30] = True
    np.testing.assert_allclose(next_box(mask, (3.0, 2.0)), [0, 8, 32, 21])
    np.testing.assert_allclose(next_box(mask, (3.0, 2.0), np.array([5, 5, 25, 40])), [5, 8, 25, 21])
    previous = np.array([0, 0, 40, 41], np.float32)
    np.testing.assert_allclose(next_box(mask, (3.0, 2.0), None, previous, 0.75), [0, 2, 38, 36])


def test_boxes_on_two_slices_are_two_anchors_and_the_walk_between_uses_both(case, predictor):
    series, _, core, box = case
    volume = load_volume(series)
    flat = [[*box[:2], z, *box[3:5], z] for z in (0, 4)]
    prompts = build_prompts(volume.image, slice_boxes=flat)
    result = segment_volume(SliceModel(predictor, volume.normalised()), prompts, (1.0, 1.0))
    assert result.anchors == [0, 4] and set(result.stops) == {"down", "up"}
    # slices 1-3 lie between the anchors: walked from both ends, boxes inside both anchors' boxes
    assert {1, 2, 3} <= set(result.scores) and dice(result.mask, core) > 0.6
    for z in (1, 2, 3):
        x0, y0, x1, y1 = result.boxes[z]
        assert x0 >= box[0] - 5 and y0 >= box[1] - 5 and x1 <= box[3] + 5 and y1 <= box[4] + 5


def test_two_boxes_on_one_slice_contradict_each_other(case, tmp_path):
    series, _, _, box = case
    first = [float(v) for v in (*box[:2], 2, *box[3:5], 2)]
    (tmp_path / "p.json").write_text(json.dumps({"boxes": [first, [1, 1, 2, 9, 9, 2]]}))
    code, _, stderr = _segment(series, "--prompts", tmp_path / "p.json", "--out", tmp_path / "m.nii.gz")
    assert code == 2 and stderr.count("\n") == 1 and "two boxes on slice 2" in stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "p.json"]


@pytest.mark.parametrize(
    "bad, message",
    [
        ([10, 10, 0, 500, 60, 4], "outside"),
        ([60, 10, 0, 60, 60, 4], "empty in-plane"),
        ([60, 60, 0, 10, 10, 4], "inverted"),
        ([10, 10, 4, 60, 60, 0], "inverted"),
    ],
)
def test_a_3d_box_outside_empty_or_inverted_is_one_line_and_nothing_written(case, tmp_path, bad, message):
    code, _, stderr = _segment(case[0], "--box", *bad, "--out", tmp_path / "m.nii.gz")
    assert code == 2 and stderr.count("\n") == 1 and message in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


def test_the_3d_mode_walks_the_box_and_records_each_slice(case, predictor, tmp_path):
    series, _, core, box = case
    out = tmp_path / "m.nii.gz"
    code, stdout, stderr = _segment(series, "--box", *box, "--out", out)
    assert code == 0, stderr
    recorded = json.loads((tmp_path / "m.json").read_text())["segmentation"]
    # the walk starts from the box's middle slice and reaches both of its ends
    assert recorded["mode"] == "3d" and recorded["anchors"] == [2]
    assert recorded["stops"] == {"down": "reached slice 0", "up": "reached slice 4"}
    assert sorted(int(z) for z in recorded["slices"]) == [0, 1, 2, 3, 4]
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out))).astype(bool)
    x0, y0, x1, y1 = (int(v) for v in (box[0], box[1], box[3], box[4]))
    assert not mask[:, :y0].any() and not mask[:, y1 + 1 :].any() and not mask[:, :, :x0].any()
    assert dice(mask, core) > 0.6


def tight_box(mask: np.ndarray) -> np.ndarray:
    box = bounding_box(mask)
    box[2:] = np.maximum(box[2:], box[:2] + 1)
    return box


@pytest.mark.parametrize("case_id", WHOLE_CASES)
def test_the_3d_mode_beats_the_challenge_baseline_and_an_edit_costs_few_slices(case_id, predictor):
    """On a whole demo case from its core's 3D box: the 3D mode against the challenge baseline rule
    and the same box on every slice (samfast.clinical.volume_bench), then an edit mid-volume."""
    from samfast.clinical.volume_bench import bench_case, target_box

    volume, core = load_case(case_id)
    scaled = normalize_mr_putz(volume)
    predictor.cache = EmbeddingCache(max_bytes=volume.shape[0] * (4 << 20))
    model = SliceModel(predictor, scaled)
    row = bench_case(model, core, (1.0, 1.0, 1.0))
    print(
        f"\n{case_id}: "
        + ", ".join(f"{m} {row[m]['dice']:.4f}" for m in ("3d", "same-box", "baseline", "tight"))
    )
    assert row["3d"]["dice"] >= row["baseline"]["dice"] - 0.01
    assert row["3d"]["dice"] > row["same-box"]["dice"]
    assert row["tight"]["dice"] > row["3d"]["dice"] - 0.1  # the tight boxes stay the yardstick
    # an edit in the middle: a tight box on the middle slice, re-walked until it meets the old result
    footprint, z0, z1 = target_box(core)
    prompts = VolumePrompts(
        {z: SlicePrompt(box=footprint) for z in range(z0, z1 + 1)}, (z0, z1), (footprint, z0, z1)
    )
    first = segment_volume(model, prompts, (1.0, 1.0))
    middle = z0 + (z1 - z0) // 2 + 3
    edited, rerun = edit_volume(model, first, middle, SlicePrompt(box=tight_box(core[middle])), (1.0, 1.0))
    print(f"edit on slice {middle}: {len(rerun)} of {z1 - z0 + 1} slices run again; {edited.stops}")
    assert middle in rerun and len(rerun) <= 0.3 * (z1 - z0 + 1)
    predictor.set_image(scaled[middle])
    own = predictor.predict(box=tight_box(core[middle]), multimask_output=False)[0][0]
    assert np.array_equal(edited.mask[middle], first.bounds.clip_mask(own))
    untouched = [z for z in range(z0, z1 + 1) if z not in rerun]
    assert all(np.array_equal(edited.mask[z], first.mask[z]) for z in untouched)


@pytest.mark.parametrize("case_id", WHOLE_CASES)
def test_segment_on_a_whole_demo_case_as_dicom(case_id, predictor, tmp_path):
    """The whole case as a DICOM series, its tumour core's 3D box: NIfTI, RTSTRUCT and DICOM-SEG agree."""
    image, label = demo_images(case_id)
    series = build_series(image, tmp_path / "series")
    sitk.WriteImage(label, str(tmp_path / "label.nii.gz"))
    core = np.isin(sitk.GetArrayFromImage(label), TUMOUR_CORE)
    zs = np.flatnonzero(core.any(axis=(1, 2)))
    x0, y0, x1, y1 = (float(v) for v in tight_box(core.any(axis=0)))
    out, rt, seg = tmp_path / "mask.nii.gz", tmp_path / "rt", tmp_path / "seg.dcm"
    args = ["segment", str(series), "--box", *map(str, [x0, y0, zs[0], x1, y1, zs[-1]])]
    args += [
        "--out",
        str(out),
        "--rtstruct",
        str(rt),
        "--seg",
        str(seg),
        "--label",
        str(tmp_path / "label.nii.gz"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.stderr
    volume = load_volume(series)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out))).astype(bool)
    rt_dice = dice(read_rtstruct_mask(rt / rtstruct_file_name("SAMFAST"), volume.series, "SAMFAST"), mask)
    seg_same = np.array_equal(read_dicom_seg(seg, volume.series), mask)
    model = SliceModel(predictor, normalize_mr_putz(sitk.GetArrayFromImage(volume.image)))
    # the library's 3D mode on the same box gives the CLI's mask
    prompts = build_prompts(volume.image, [x0, y0, int(zs[0]), x1, y1, int(zs[-1])])
    reference = segment_volume(model, prompts, (1.0, 1.0)).mask
    print(
        f"\n{case_id}: segment --box (3D mode) over slices {zs[0]}-{zs[-1]}: 3D Dice vs tumour core "
        f"{dice(mask, core):.4f} (library API {dice(reference, core):.4f}); "
        f"RTSTRUCT round trip Dice {rt_dice:.4f}; DICOM-SEG identical {seg_same}"
    )
    assert rt_dice == 1.0 and seg_same and np.array_equal(mask, reference)
    assert dciodvfy_errors(rt / rtstruct_file_name("SAMFAST")) == [] and dciodvfy_errors(seg) == []


def test_serve_rtstruct_export_sends_to_a_dicom_node(case, predictor, tmp_path):
    from fastapi.testclient import TestClient

    from samfast.serve.app import create_app

    series, _, _, box = case
    headers = {"X-API-Key": "k" * 24}
    client = TestClient(create_app(predictor, headers["X-API-Key"]))
    session = client.post("/sessions", json={"path": str(series)}, headers=headers).json()["session"]
    prompt = {"slice": 2, "box": [float(v) for v in box[:2] + box[3:5]]}
    assert client.post(f"/sessions/{session}/prompt", json=prompt, headers=headers).status_code == 200
    url, request = f"/sessions/{session}/rtstruct", {"roi_name": "GTV", "roi_type": "ORGAN"}
    with storescp(tmp_path / "received") as node:
        exported = client.post(url, json={**request, "send": node}, headers=headers)
    assert exported.status_code == 200, exported.text
    (tmp_path / "rt.dcm").write_bytes(exported.content)
    assert_received(tmp_path / "received", [tmp_path / "rt.dcm"])
    assert pydicom.dcmread(tmp_path / "rt.dcm").RTROIObservationsSequence[0].RTROIInterpretedType == "ORGAN"
    assert dciodvfy_errors(tmp_path / "rt.dcm") == []
    unreachable = client.post(
        url, json={**request, "send": f"PLANNING@127.0.0.1:{free_port()}"}, headers=headers
    )
    assert unreachable.status_code == 502 and "cannot reach" in unreachable.json()["detail"]
