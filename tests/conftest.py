import contextlib
import os
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="session")
def palm224_dir():
    """The real PALM 2019 training images (224 px, no masks) beside the repository; skips where absent."""
    path = SHARED_DATA / "palm-224"
    if not (path / "PALM-Training400").is_dir():
        pytest.skip("../shared/data/palm-224/PALM-Training400 is not present")
    return path


@pytest.fixture(scope="session")
def phantom_trees(tmp_path_factory):
    """Small phantom trees in each official layout, written once per session; tests must not modify them."""
    pytest.importorskip("openpyxl")
    from phantom_layouts import (
        write_adam_tree,
        write_folder_tree,
        write_palm2019_tree,
        write_palm2024_tree,
    )

    root = tmp_path_factory.mktemp("phantom_trees")
    return {
        "palm2019": Path(write_palm2019_tree(str(root / "palm2019"), skip_disc=("N0002",))),
        "palm2024": Path(write_palm2024_tree(str(root / "palm2024"))),
        "adam": Path(write_adam_tree(str(root / "adam"))),
        "folder": Path(write_folder_tree(str(root / "folder"), atrophy=True)),
    }


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's intra-op threads set to ``count`` for the block, then put back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine they oversubscribe it (3-5x
    slower). Subprocess tests set OMP_NUM_THREADS=1 themselves."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def inductor():
    """Skip where torch.compile's default backend cannot build kernels here (it needs a C++ compiler on the CPU)."""
    try:
        torch.compile(lambda x: x + 1, dynamic=False)(torch.ones(2))
    except Exception as err:  # the backend's own failure types differ between torch versions
        pytest.skip(f"torch.compile (inductor) does not work on this machine: {type(err).__name__}: {err}")
