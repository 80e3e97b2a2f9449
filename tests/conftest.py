import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def fundus_od_dir():
    """The real fundus-od folder beside the repository; tests that need it skip where it is absent."""
    path = SHARED_DATA / "fundus-od"
    if not path.is_dir():
        pytest.skip("../shared/data/fundus-od is not present")
    return path
