"""Output errors of the commands: a read-only folder, an existing file where a folder goes, a full
disk, a read-only file, a malformed CSV -> exit 2, one line on stderr, no file left behind.

Every case but the full disk is refused before a model loads, so these run in-process and fast.
"""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
from conftest import DEMO
from typer.testing import CliRunner

from samfast.cli import app

CASE = "BraTS20_Demo_001"
T1CE = DEMO / CASE / f"{CASE}_t1ce.nii.gz"
SEG = DEMO / CASE / f"{CASE}_seg.nii.gz"
BOX = ("60", "100", "140", "180")


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_exit_2(result, *words: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output + result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def read_only(tmp_path) -> Path:
    """A folder no file can be created in: mode 555, or /sys where root ignores the mode bits."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            (candidate / ".probe").touch()
            (candidate / ".probe").unlink()
        except OSError:
            yield candidate
            break
    else:
        pytest.skip("no read-only folder on this machine (root without a read-only /sys)")
    folder.chmod(0o755)


def test_malformed_csv_is_refused_naming_its_line(tmp_path):
    ok = f"{T1CE},{SEG}"
    for text, words in (
        (f"image,label\n{ok}\n{T1CE}\n", ("line 3", "1 fields, the header has 2")),
        (f"image,label\n{ok},extra\n", ("line 2", "3 fields")),
        (f"image,label\n{ok}\n\n,{SEG}\n", ("line 4", "empty image or label")),
        ("image,label\n", ("no rows",)),
        ("path,mask\nx,y\n", ("columns image,label",)),
    ):
        (tmp_path / "pairs.csv").write_text(text)
        out = tmp_path / "run"
        one_line_exit_2(invoke("eval", "--csv", tmp_path / "pairs.csv", "--out", out), *words)
        assert not out.exists()
    (tmp_path / "pairs.csv").write_bytes(b"image,label\n\xff\xfe,x\n")
    one_line_exit_2(invoke("eval", "--csv", tmp_path / "pairs.csv", "--out", tmp_path / "run"), "UTF-8")


def test_bench_and_eval_out_on_a_file_or_read_only_folder(tmp_path, read_only):
    existing = tmp_path / "results"
    existing.write_text("keep me")
    (tmp_path / "pairs.csv").write_text(f"image,label\n{T1CE},{SEG}\n")
    for command in (("bench", "brats"), ("eval", "--csv", tmp_path / "pairs.csv")):
        one_line_exit_2(invoke(*command, "--out", existing, "--random-weights"), "not a folder")
        assert existing.read_text() == "keep me"
        target = read_only / "run" / "deeper"
        one_line_exit_2(invoke(*command, "--out", target, "--random-weights"), "cannot create")
        assert not (read_only / "run").exists()


def test_predict_and_segment_refuse_unwritable_outputs_before_the_model(tmp_path, read_only):
    common = ("--slice", 94, "--box", *BOX)
    one_line_exit_2(invoke("predict", T1CE, *common, "--out", read_only / "mask.nii.gz"), "not writable")
    missing = tmp_path / "none" / "m.nii.gz"
    one_line_exit_2(invoke("predict", T1CE, *common, "--out", missing), "does not exist")
    kept = tmp_path / "mask.nii.gz"
    kept.write_bytes(b"an earlier mask")
    kept.chmod(0o444)
    one_line_exit_2(invoke("predict", T1CE, *common, "--out", kept), "read-only", "not replaced")
    assert kept.read_bytes() == b"an earlier mask"
    sidecar = tmp_path / "other.json"
    sidecar.write_text("{}")
    sidecar.chmod(0o444)
    one_line_exit_2(invoke("predict", T1CE, *common, "--out", tmp_path / "other.nii.gz"), "other.json")
    assert not (tmp_path / "other.nii.gz").exists()
    box3d = ("--box", *BOX[:2], 90, *BOX[2:], 96)
    one_line_exit_2(invoke("segment", T1CE, *box3d, "--out", read_only / "m.nii.gz"), "not writable")
    one_line_exit_2(invoke("segment", T1CE, *box3d, "--out", kept), "read-only")
    assert kept.read_bytes() == b"an earlier mask"


def test_a_full_disk_is_one_line_and_leaves_no_file(tmp_path):
    out = tmp_path / "mask.nii"  # uncompressed: 8.9 MB, far past the limit
    command = ["predict", T1CE, "--slice", 94, "--box", *BOX, "--out", out]
    command += ["--model", "tiny_vit_test", "--random-weights", "--backend", "torch"]
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limit[1]))  # a full disk: writes past 4 KiB fail
    try:  # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG, as ENOSPC would
        result = invoke(*command)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
    one_line_exit_2(result, "mask.nii", "disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_serve_needs_a_key_from_the_environment_or_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SAMFAST_API_KEY", raising=False)
    one_line_exit_2(invoke("serve"), "SAMFAST_API_KEY", "--api-key-file")
    one_line_exit_2(invoke("serve", "--api-key-file", tmp_path / "none"), "cannot read it")
    (tmp_path / "empty").write_text("\n")
    one_line_exit_2(invoke("serve", "--api-key-file", tmp_path / "empty"), "one line")
    (tmp_path / "key").write_text("k" * 32)
    one_line_exit_2(
        invoke("serve", "--api-key-file", tmp_path / "key", "--allow-root", tmp_path / "x"), "not a folder"
    )
