"""``accelerate launch scripts/generate.py`` on two CPU processes (gloo): one dataset, the same sample for sample as
one process writes, and a run interrupted on one process resumes on two."""

import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import load_dataset

from fundus_diffusion.data import dataset_mask_names, load_fundus_dataset
from fundus_diffusion.generate import generate_dataset
from fundus_diffusion.pipelines.loading import load_fundus_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import torch_threads  # noqa: E402
from test_generate import Interrupted, InterruptingPipeline, assert_same_samples, config, models  # noqa: E402, F401
from test_multiprocess import launch  # noqa: E402

# 7 samples in 4 shards of 2: split 2 + 2 between the processes, the last shard short
SETTINGS = dict(labels={"PM": 3, "non-PM": 4}, num_samples=7, shard_size=2, batch_size=2, num_inference_steps=2, png=True)
ARGS = ["--labels", "PM=3,non-PM=4", "--shard_size", "2", "--batch_size", "2", "--num_inference_steps", "2",
        "--scheduler", "ddim", "--seed", "3", "--device", "cpu", "--png"]  # fmt: skip


def assert_same_dataset(a, b):
    assert a["id"] == b["id"] and a["label"] == b["label"] and a["seed"] == b["seed"]
    assert dataset_mask_names(a) == dataset_mask_names(b) == ("disc", "atrophy")
    for column in ("image", "disc_mask", "atrophy_mask"):
        for x, y in zip(a[column], b[column]):
            assert np.array_equal(np.asarray(x), np.asarray(y)), column


@pytest.fixture
def one_thread():
    """The launched processes run with OMP_NUM_THREADS=1: the reference in this process is drawn the same way."""
    with torch_threads(1):
        yield


def test_two_processes_write_the_single_process_dataset_and_resume_it(models, tmp_path, one_thread):  # noqa: F811
    pipe = load_fundus_pipeline(models["ddpm"], scheduler="ddim", device="cpu")
    cfg = config(models["ddpm"], scheduler="ddim", **SETTINGS)
    single = generate_dataset(pipe, cfg, str(tmp_path / "one"))

    result = launch(2, "generate.py", "--model", models["ddpm"], "--output_dir", str(tmp_path / "two"), *ARGS)
    assert "Generating (process 0 of 2)" in result.stderr  # one gloo group, not two lone processes
    two = load_fundus_dataset(str(tmp_path / "two"))
    assert_same_dataset(two, single)
    assert not (tmp_path / "two" / "shards").exists() and (tmp_path / "two" / "README.md").is_file()
    png = load_dataset("imagefolder", data_dir=str(tmp_path / "two" / "png"), split="train", cache_dir=str(tmp_path / "hf"))
    assert_same_samples(png, single)

    # stopped after shard 0 on one process (written while the next batch is drawn), finished on two (shards 1-3 split 2 + 1)
    with pytest.raises(Interrupted):
        generate_dataset(InterruptingPipeline(pipe, calls=2), cfg, str(tmp_path / "resumed"))
    assert sorted(p.name for p in (tmp_path / "resumed" / "shards").glob("*.arrow")) == ["shard-00000.arrow"]
    launch(2, "generate.py", "--model", models["ddpm"], "--output_dir", str(tmp_path / "resumed"), "--resume", *ARGS)
    assert_same_dataset(load_fundus_dataset(str(tmp_path / "resumed")), single)
