"""Write a SimpleITK volume as a DICOM MR/CT image series (one file per slice), with new UIDs.

For demos and tests: it turns a NIfTI case into the kind of series a planning system holds, keeping
the geometry exactly (ImagePositionPatient per slice, ImageOrientationPatient, PixelSpacing).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from samfast.clinical.dicom_values import ds_text as _ds
from samfast.errors import InputError

_SOP_CLASS = {"MR": "1.2.840.10008.5.1.4.1.1.4", "CT": "1.2.840.10008.5.1.4.1.1.2"}


def _stored_values(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    """int16 stored values and (slope, intercept): whole-number data is kept exactly."""
    low, high = float(volume.min()), float(volume.max())
    if np.array_equal(volume, np.round(volume)) and low >= -32768 and high <= 32767:
        return volume.astype(np.int16), 1.0, 0.0
    slope = max(high - low, 1e-6) / 65535.0
    intercept = low + 32768 * slope
    return np.round((volume - intercept) / slope).clip(-32768, 32767).astype(np.int16), slope, intercept


def write_dicom_series(
    image: sitk.Image,
    folder: str | Path,
    modality: str = "MR",
    patient_id: str = "SAMFAST-DEMO",
    patient_name: str = "SAMFAST^DEMO",
    series_description: str = "samfast demo series",
) -> list[Path]:
    """Write ``image`` (3D, one component) as ``folder/slice_0000.dcm`` ...; return the paths in z order."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("a DICOM series needs a 3D single-channel volume")
    if modality not in _SOP_CLASS:
        raise InputError(f"modality must be one of {', '.join(_SOP_CLASS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stored, slope, intercept = _stored_values(sitk.GetArrayFromImage(image).astype(np.float64))
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    today = datetime.date.today().strftime("%Y%m%d")
    paths = []
    for z in range(stored.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = _SOP_CLASS[modality]
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = folder / f"slice_{z:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.Modality, ds.Manufacturer, ds.SeriesDescription = modality, "samfast", series_description
        ds.SeriesNumber, ds.InstanceNumber = 1, z + 1
        ds.PositionReferenceIndicator = ""
        ds.ImageType = ["DERIVED", "SECONDARY"]
        position = image.TransformIndexToPhysicalPoint((0, 0, z))
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing (y), then column spacing (x)
        ds.SliceThickness = ds.SpacingBetweenSlices = _ds(spacing[2])
        ds.SliceLocation = _ds(float(np.dot(position, direction[:, 2])))
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
        if modality == "CT":
            ds.RescaleType = "HU"
        if modality == "MR":
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = (
                "RM",
                "NONE",
                "",
                "3D",
            )
        ds.PixelData = np.ascontiguousarray(stored[z]).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
