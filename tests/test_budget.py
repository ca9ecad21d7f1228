"""samfast.io.budget on its own (the check the service runs and a CLI can reuse): the header is
read without the voxels, gzip inflates only as far as the header allows, external data is named."""

from __future__ import annotations

import gzip
import struct

import pytest
import SimpleITK as sitk

from samfast.errors import InputError
from samfast.io.budget import BudgetExceeded, check_volume_budget, data_files, read_header


def _nifti(tmp_path, size, body: bytes = b"", name: str = "v.nii") -> object:
    sitk.WriteImage(sitk.Image([2, 2, 2], sitk.sitkInt16), str(tmp_path / "small.nii"))
    header = bytearray((tmp_path / "small.nii").read_bytes()[:352])
    struct.pack_into("<4h", header, 40, 3, *size)
    path = tmp_path / name
    data = bytes(header) + body
    path.write_bytes(gzip.compress(data, 1) if name.endswith(".gz") else data)
    return path


def test_a_header_that_declares_billions_of_voxels_is_refused_from_the_header(tmp_path):
    path = _nifti(tmp_path, (4000, 4000, 100))
    header = read_header(path)
    assert header.size == (4000, 4000, 100) and header.pixel_bytes == 2
    with pytest.raises(BudgetExceeded, match="1600000000 voxels"):
        check_volume_budget(path, 512 * 512 * 1000, 4 * 2**30)
    with pytest.raises(BudgetExceeded, match="MiB of voxel data"):
        check_volume_budget(_nifti(tmp_path, (64, 64, 64), name="w.nii"), 10**9, 2**18)


def test_gzip_that_inflates_past_its_header_is_refused(tmp_path):
    honest = _nifti(tmp_path, (8, 8, 8), bytes(2 * 8**3), "honest.nii.gz")
    assert check_volume_budget(honest, 10**6, 2**20).voxels == 512
    padded = _nifti(tmp_path, (8, 8, 8), bytes(4 * 2**20), "padded.nii.gz")
    with pytest.raises(BudgetExceeded, match="inflates past the 1024 bytes"):
        check_volume_budget(padded, 10**6, 2**30)


def test_headers_that_point_at_other_files_are_named(tmp_path):
    mhd = tmp_path / "a.mhd"
    mhd.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_UCHAR\nElementDataFile = a.raw\n"
    )
    assert data_files(mhd) == [(tmp_path / "a.raw").resolve()]
    with pytest.raises(InputError, match="data file elsewhere"):
        check_volume_budget(mhd, 10**6, 2**20, local_only=True)
    nrrd = tmp_path / "b.nrrd"
    nrrd.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n\n" + bytes(64))
    assert data_files(nrrd) == [] and check_volume_budget(nrrd, 64, 64, local_only=True).voxels == 64
