"""Where the BraTS demo data lives. Its own module, free of SimpleITK, so that finding the folder
works on a machine that reads the demo as exported arrays (the GPU check bundle)."""

from __future__ import annotations

import os
from pathlib import Path

from samfast.errors import InputError


def find_demo_data() -> Path:
    """The BraTS demo data folder: $SAMFAST_DEMO_DATA if set, else the repo's data/brats_demo."""
    override = os.environ.get("SAMFAST_DEMO_DATA")
    if override:
        folder = Path(override).expanduser()
        if not folder.is_dir():
            raise InputError(f"SAMFAST_DEMO_DATA={override} is not a folder")
        return folder
    folder = Path(__file__).resolve().parents[2] / "data" / "brats_demo"
    if not folder.is_dir():
        raise InputError(
            f"demo data not found: expected {folder} (a samfast source checkout ships it; "
            "or set SAMFAST_DEMO_DATA to its folder)"
        )
    return folder
