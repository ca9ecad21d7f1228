"""Pictures (PNG, JPEG, TIFF, BMP) are sized from their own header and checked against the voxel
budget before any codec decodes them, and the codecs' messages stay off the terminal.

The deflate bomb is the real thing: 389 KB of valid zlib data for 20000 x 20000 grey pixels, which
libpng would inflate into 400 MB (and samfast then into float32 copies). `samfast predict` runs in a
child process whose peak RSS is measured, against the same command on a file refused at once.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO
from PIL import Image

from samfast.errors import InputError
from samfast.io import read_image
from samfast.io.budget import BudgetExceeded, read_header
from samfast.io.image_budget import DEFAULT_MAX_VOXELS, MAX_VOXELS_ENV, check_picture, picture_size

RSS_BOUND = 300 * 2**20
# Runs a command and prints its exit status, output and peak RSS: this wrapper is a small fresh
# process, so the child's ru_maxrss (which Linux carries over fork + exec) is not pytest's.
PEAK_OF_CHILD = """
import json, resource, subprocess, sys
run = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=300)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"rc": run.returncode, "stdout": run.stdout, "stderr": run.stderr, "peak": peak}))
"""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png(path: Path, width: int, height: int, rows: int | None = None) -> Path:
    """A grey 8-bit PNG of zero rows, its IDAT compressed 100 rows at a time (the test never holds
    the inflated image); ``rows`` fewer than ``height`` leaves it short."""
    rows = height if rows is None else rows
    compressor = zlib.compressobj(9)
    with open(path, "wb") as out:
        header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # grey, 8 bits
        out.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header))
        for start in range(0, rows, 100):
            data = compressor.compress(bytes(width + 1) * min(100, rows - start))
            if data:
                out.write(_chunk(b"IDAT", data))
        out.write(_chunk(b"IDAT", compressor.flush()) + _chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    path = write_png(tmp_path_factory.mktemp("bomb") / "bomb.png", 20000, 20000)
    assert path.stat().st_size < 400_000
    return path


def predict_peak(image: Path, out: Path) -> dict:
    command = [sys.executable, "-m", "samfast", "predict", str(image), "--box", "1", "1", "9", "9"]
    command += ["--out", str(out), "--random-weights"]
    run = subprocess.run(
        [sys.executable, "-c", PEAK_OF_CHILD, *command], capture_output=True, text=True, cwd=REPO, timeout=320
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


def test_the_deflate_bomb_is_refused_by_predict_in_one_line_without_inflating(bomb, tmp_path):
    empty = write_png(tmp_path / "empty.png", 0, 0, rows=0)
    baseline = predict_peak(empty, tmp_path / "m.png")
    refused = predict_peak(bomb, tmp_path / "m.png")
    growth = refused["peak"] - baseline["peak"]
    print(f"\npredict bomb.png: peak RSS {refused['peak'] / 2**20:.0f} MB, +{growth / 2**20:.0f} MB")
    assert refused["rc"] == 2 and refused["stdout"] == ""
    lines = refused["stderr"].splitlines()
    assert len(lines) == 1, refused["stderr"]
    assert lines[0] == (
        "error: bomb.png: PNG of 20000x20000 = 400000000 values, "
        f"more than the limit of {DEFAULT_MAX_VOXELS} voxels"
    )
    assert growth <= RSS_BOUND
    assert not (tmp_path / "m.png").exists()


def test_a_0x0_png_is_refused_in_one_line_without_libpng_warnings(tmp_path):
    empty = write_png(tmp_path / "empty.png", 0, 0, rows=0)
    run = predict_peak(empty, tmp_path / "m.png")
    assert run["rc"] == 2 and run["stdout"] == ""
    expected = f"error: {empty}: not a readable image (PNG header declares 0x0 pixels)"
    assert run["stderr"].splitlines() == [expected]


def test_the_budget_comes_from_the_environment_and_counts_channels(tmp_path, monkeypatch):
    picture = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(picture)
    assert read_image(picture).GetSize() == (30, 20)  # 1800 values: under the default
    monkeypatch.setenv(MAX_VOXELS_ENV, "1799")
    with pytest.raises(BudgetExceeded, match=r"PNG of 30x20 with 3 channels = 1800 values, .* 1799 voxels"):
        read_image(picture)
    assert read_image(picture, max_voxels=1800).GetSize() == (30, 20)
    monkeypatch.setenv(MAX_VOXELS_ENV, "lots")
    with pytest.raises(InputError, match="must be a positive whole number"):
        read_image(picture)


def _pictures(folder: Path) -> dict[str, Path]:
    grey = (np.arange(50 * 70) % 251).astype(np.uint8).reshape(50, 70)
    rgb = np.stack([grey, grey[::-1], grey[:, ::-1]], axis=-1)
    paths = {}
    for name, array in (("grey.jpg", grey), ("rgb.jpg", rgb), ("rgb.bmp", rgb), ("palette.png", None)):
        paths[name] = folder / name
        image = Image.fromarray(rgb).convert("P") if array is None else Image.fromarray(array)
        image.save(paths[name])
    pages = [Image.fromarray(grey) for _ in range(4)]
    paths["pages.tif"] = folder / "pages.tif"
    pages[0].save(paths["pages.tif"], save_all=True, append_images=pages[1:])
    paths["itk.tif"] = folder / "itk.tif"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 20, 30), np.int16)), str(paths["itk.tif"]))
    return paths


def test_header_sizes_match_what_simpleitk_decodes(tmp_path):
    for name, path in _pictures(tmp_path).items():
        size, image = picture_size(path), sitk.ReadImage(str(path))
        shape = (size.width, size.height) + ((size.pages,) if size.pages > 1 else ())
        assert shape == image.GetSize(), name
        assert size.channels == image.GetNumberOfComponentsPerPixel(), name
        assert size.values == image.GetNumberOfPixels() * image.GetNumberOfComponentsPerPixel(), name
    volume = REPO / "data" / "brats_demo" / "BraTS20_Demo_001" / "BraTS20_Demo_001_t1ce.nii.gz"
    assert picture_size(volume) is None
    with pytest.raises(BudgetExceeded, match=r"TIFF of 70x50x4 = 14000 values"):
        check_picture(tmp_path / "pages.tif", 13999)


def test_broken_pictures_are_refused_in_one_line_with_nothing_on_the_terminal(tmp_path, capfd):
    ok = write_png(tmp_path / "ok.png", 64, 48)
    data = ok.read_bytes()
    broken_crc = bytearray(data)
    broken_crc[29] ^= 0xFF
    (tmp_path / "crc.png").write_bytes(bytes(broken_crc))
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(np.full((48, 64), 7, np.uint8)).save(tmp_path / "ok.jpg")
    jpeg = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])
    (tmp_path / "nosof.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    entries = [struct.pack("<HHIHH", tag, 3, 1, 10, 0) for tag in (256, 257)]  # 10 x 10, SHORT
    looped = b"II*\x00" + struct.pack("<IH", 8, 2) + b"".join(entries) + struct.pack("<I", 8)
    (tmp_path / "loop.tif").write_bytes(looped)  # its one directory names itself as the next
    (tmp_path / "flat.tif").write_bytes(b"II*\x00" + struct.pack("<IHI", 8, 0, 0))
    expected = {
        "crc.png": "PNG header fails its CRC check",
        "cut.png": "Error while reading file",
        "cut.jpg": "Premature end of JPEG file",
        "nosof.jpg": "JPEG without a frame header",
        "loop.tif": "TIFF directories form a loop",
        "flat.tif": "TIFF page 1 declares 0x0 pixels",
    }
    for name, words in expected.items():
        with pytest.raises(InputError) as caught:
            read_image(tmp_path / name)
        assert "\n" not in str(caught.value) and words in str(caught.value), name
    with pytest.raises(InputError, match="PNG header declares 0x0"):
        read_header(write_png(tmp_path / "empty.png", 0, 0, rows=0))  # the service's header check
    assert read_image(tmp_path / "ok.jpg").GetSize() == (64, 48)
    assert capfd.readouterr() == ("", "")
