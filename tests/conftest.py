"""Fixtures shared by every layer of the test suite."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("BUTTERFLYSITE_SHARED_DIR", ROOT.parent / "shared"))
DATA_DIR = SHARED_DIR / "data" / "butterflies50"
WEIGHTS_DIR = SHARED_DIR / "weights"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the team's ../shared folder, absent from a fresh checkout)")
    return path


@pytest.fixture(scope="session")
def butterflies_dir() -> Path:
    """../shared/data/butterflies50: real photos, train/ and test/ in ImageFolder layout."""
    return _require(DATA_DIR)


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """../shared/weights: real pretrained backbone weights in Keras form."""
    return _require(WEIGHTS_DIR)
