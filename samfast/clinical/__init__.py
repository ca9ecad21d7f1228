"""Clinical files in and out: DICOM series, prompts in voxel or patient coordinates, volume
segmentation with slice propagation, NIfTI / RTSTRUCT / DICOM-SEG outputs.

Heavy DICOM libraries (pydicom, highdicom, pynetdicom) are imported inside the functions that need them.
"""
