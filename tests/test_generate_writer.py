"""generate.py's writer (``write_samples``): a pool of threads encodes each batch while the next one is drawn, and
the dataset and PNG files come out byte for byte as with one thread; a failure in a thread names its sample."""

import sys
from pathlib import Path

import pytest

from fundus_diffusion import generate
from fundus_diffusion.generate import generate_dataset
from fundus_diffusion.pipelines.loading import load_fundus_pipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_generate import config, models  # noqa: E402, F401

# 11 samples in shards of 4, batches of 3: each shard ends on a short batch, whose encoding overlaps the drawing of
# the next shard's first batch
SETTINGS = dict(num_samples=11, shard_size=4, batch_size=3, labels={"PM": 6, "non-PM": 5}, num_inference_steps=2, png=True)


def files(folder: Path) -> dict:
    """Every file's bytes under ``folder`` but the save's fingerprint (state.json differs from save to save)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "state.json"}


def test_threads_write_the_same_bytes_as_one(models, tmp_path):  # noqa: F811
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    one = generate_dataset(pipe, config(models["ddpm"], **SETTINGS), str(tmp_path / "one"), threads=1)
    generate_dataset(pipe, config(models["ddpm"], **SETTINGS), str(tmp_path / "three"), threads=3)
    assert one["seed"] == list(range(3, 14))  # in sample order
    written = files(tmp_path / "one")
    assert written == files(tmp_path / "three")  # the Arrow and parquet data, the PNG files, metadata.csv, card, sheet
    assert len([name for name in written if name.startswith("png/masks/atrophy/")]) == 11


def test_a_failing_thread_names_its_sample_and_commits_no_part_of_its_shard(models, tmp_path, monkeypatch):  # noqa: F811
    write_png = generate._write_png

    def fail_on_sample_5(png_dir, name, image, masks):
        if name == "000005":
            raise OSError("No space left on device")
        write_png(png_dir, name, image, masks)

    monkeypatch.setattr(generate, "_write_png", fail_on_sample_5)
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    with pytest.raises(RuntimeError, match=r"sample 5 \(000005, seed 8\) failed: OSError: No space left.*--resume") as raised:
        generate_dataset(pipe, config(models["ddpm"], **SETTINGS), str(tmp_path / "run"), threads=2)
    assert isinstance(raised.value.__cause__, OSError)
    assert sorted(p.name for p in (tmp_path / "run" / "shards").glob("*.arrow")) == ["shard-00000.arrow"]  # samples 0-3
