"""DICOM Segmentation (binary, one segment) out and back in for a mask on a DICOM series (highdicom).

Frames reference their source images, so the mask reads back slice for slice, identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samfast.clinical.dicom_values import (
    MANUFACTURER,
    SOFTWARE_VERSIONS,
    fit,
    save_dataset,
    series_number,
    set_character_set,
)
from samfast.clinical.rtstruct import DEFAULT_COLOR, check_not_empty, check_roi_name
from samfast.errors import InputError

SERIES_NUMBER = 900


def build_segmentation(
    mask: np.ndarray, series, roi_name: str, color=DEFAULT_COLOR, model: str = "", allow_empty: bool = False
):
    """A highdicom Segmentation of ``mask`` (z, y, x) over ``series`` (datasets in z order).

    SEMIAUTOMATIC, the algorithm named after ``model``. An empty mask is refused unless
    ``allow_empty`` (then every frame is written, all zero: highdicom cannot omit them all).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    check_roi_name(roi_name)
    mask = np.asarray(mask, bool)
    if mask.shape != (len(series.datasets), series.datasets[0].Rows, series.datasets[0].Columns):
        raise InputError(f"mask shape {mask.shape} does not match the series")
    check_not_empty(mask, allow_empty)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=fit(f"samfast {model}".strip(), 64),
        version=SOFTWARE_VERSIONS,
        family=codes.cid7162.ArtificialIntelligence,
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=roi_name,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
        algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*color),
    )
    segmentation = hd.seg.Segmentation(
        source_images=series.datasets,
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=series_number(series, SERIES_NUMBER),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="samfast segment",
        software_versions=SOFTWARE_VERSIONS,
        device_serial_number="0",
        series_description=fit(f"samfast SEG {roi_name}", 64),
        # UTF-8 while it is built: highdicom would copy the images' set, which may lack the ROI
        # name's characters, and it refuses valid ISO 2022 sets such as '\\ISO 2022 IR 87'
        specific_character_set="ISO_IR 192",
    )
    set_character_set(segmentation, series.datasets[0])
    return segmentation


def write_dicom_seg(
    mask: np.ndarray, series, path: str | Path, roi_name: str, color=DEFAULT_COLOR, **options
) -> Path:
    """Write the Segmentation to ``path`` atomically; ``options`` go to build_segmentation."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: output folder {path.parent} does not exist")
    segmentation = build_segmentation(mask, series, roi_name, color, **options)
    return save_dataset(segmentation.save_as, path)


def read_dicom_seg(path: str | Path, series) -> np.ndarray:
    """Segment 1 of a DICOM-SEG as a (z, y, x) bool mask on ``series`` (empty frames are zeros)."""
    import highdicom as hd

    segmentation = hd.seg.segread(str(path))
    uids = [str(ds.SOPInstanceUID) for ds in series.datasets]
    referenced = {
        str(item.ReferencedSOPInstanceUID)
        for frame in segmentation.PerFrameFunctionalGroupsSequence
        for item in frame.DerivationImageSequence[0].SourceImageSequence
    }
    mask = np.zeros((len(uids), series.datasets[0].Rows, series.datasets[0].Columns), dtype=bool)
    present = [i for i, uid in enumerate(uids) if uid in referenced]
    if present:
        frames = segmentation.get_pixels_by_source_instance([uids[i] for i in present], segment_numbers=[1])
        mask[present] = frames[..., 0].astype(bool)
    return mask
