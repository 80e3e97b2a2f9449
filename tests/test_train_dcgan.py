import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "--resolution", "12", "--train_batch_size", "4", "--nz", "8", "--ngf", "2", "--ndf", "2",
    "--validation_steps", "2", "--num_validation_images", "4", "--seed", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Eight phantoms saved as a dataset folder, so that no process pays for drawing them."""
    from fundus_diffusion.data import load_phantom_dataset

    path = tmp_path_factory.mktemp("data") / "phantoms"
    load_phantom_dataset(8, size=48).save_to_disk(str(path))
    return str(path)


@pytest.fixture
def train_in_process(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT / "scripts"))
    from train_dcgan import main, parse_args

    return lambda *argv: main(parse_args([*TINY, *argv]))


def launch(*argv):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu"]
    command += [str(REPO_ROOT / "scripts" / "train_dcgan.py"), *TINY, *argv]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_resume_rotate_and_load(tmp_path, dataset, train_in_process):
    out, cache = tmp_path / "run", str(tmp_path / "cache")
    common = ["--dataset", dataset, "--output_dir", str(out), "--training_cache_dir", cache, "--masks", "disc,atrophy", "--checkpointing_steps", "1",
              "--checkpoints_total_limit", "2", "--class_conditional", "--diffaugment", "color,translation,cutout",
              "--use_ema", "--ema_max_decay", "0.9", "--spectral_norm"]  # fmt: skip
    train_in_process(*common, "--max_train_steps", "3")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    assert any((out / "logs" / "train_dcgan").glob("events.out.tfevents.*"))

    result = launch(*common, "--max_train_steps", "5", "--resume_from_checkpoint", "latest")  # a fresh process
    assert "Resumed from" in result.stderr and "checkpoint-3" in result.stderr
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]
    rows = read_csv(out / "logs" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]  # the step count continued, nothing repeated
    assert all(np.isfinite([float(r[k]) for k in ("d_loss", "g_loss", "d_real", "d_fake")]).all() for r in rows)
    diversity = read_csv(out / "logs" / "diversity.csv")
    assert [int(r["step"]) for r in diversity] == [2, 3, 4, 5] and float(diversity[0]["real_diversity"]) > 0
    assert (out / "validation" / "step-0000004.png").exists()

    card = (out / "README.md").read_text()
    assert "library_name: diffusers" in card and "Research use only" in card and "atrophy mask" in card

    from fundus_diffusion import FundusGANPipeline

    pipe = FundusGANPipeline.from_pretrained(out)
    images = pipe(batch_size=2, class_labels=["PM", None], generator=torch.Generator().manual_seed(0)).images
    assert images[0].size == (12, 12) and pipe.config.mask_names == ["disc", "atrophy"]


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, dataset, train_in_process):
    from fundus_diffusion.training import NonFiniteLossError
    from fundus_diffusion.training.dcgan import DCGANStep

    calls, step = [], DCGANStep.__call__

    def failing_step(self, *args):
        calls.append(1)
        metrics = step(self, *args)
        return metrics * float("nan") if len(calls) >= 3 else metrics

    monkeypatch.setattr(DCGANStep, "__call__", failing_step)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="step 3"):
        train_in_process("--dataset", dataset, "--output_dir", str(out), "--training_cache_dir", str(tmp_path / "cache"),
                         "--max_train_steps", "6", "--checkpointing_steps", "1", "--logger", "none")  # fmt: skip
    assert sorted(os.listdir(out / ".")) == ["checkpoint-1", "checkpoint-2", "logs", "validation"]
    assert [int(r["step"]) for r in read_csv(out / "logs" / "metrics.csv")] == [1, 2]


def test_push_to_hub_uploads_the_saved_folder(tmp_path, monkeypatch, dataset, train_in_process):
    import fundus_diffusion.hub

    pushed = []
    monkeypatch.setattr(fundus_diffusion.hub, "push_folder", lambda *a, **k: pushed.append((a, k)) or "url")
    out = tmp_path / "run"
    train_in_process("--dataset", dataset, "--output_dir", str(out), "--training_cache_dir", str(tmp_path / "cache"),
                     "--max_train_steps", "1", "--logger", "none", "--push_to_hub", "--hub_model_id", "me/dcgan",
                     "--hub_token", "secret", "--hub_private_repo")  # fmt: skip
    assert pushed == [((str(out), "me/dcgan"), {"token": "secret", "private": True})]
    assert 'from_pretrained("me/dcgan")' in (out / "README.md").read_text()
    assert "secret" not in (out / "training_args.json").read_text()
    assert str(tmp_path) not in (out / "training_args.json").read_text()  # local paths by their last component only
    assert str(tmp_path) not in (out / "model_index.json").read_text() + (out / "README.md").read_text()


def test_snapshot_cards_count_their_own_epochs_and_show_only_their_own_validation(tmp_path, dataset, train_in_process):
    """8 images in batches of 4: 2 steps an epoch; validation every 3 steps, snapshots every 2. The step-4 snapshot
    trained 2 epochs (its card said the run's 3) and was not validated (its card showed step 3's diversity ratio)."""
    from fundus_diffusion import FundusGANPipeline

    out = tmp_path / "run"
    train_in_process("--dataset", dataset, "--output_dir", str(out), "--training_cache_dir", str(tmp_path / "cache"),
                     "--max_train_steps", "6", "--validation_steps", "3", "--snapshot_steps", "2")  # fmt: skip
    info = {step: FundusGANPipeline.from_pretrained(out / "snapshots" / f"step-{step:07d}").config.training_info for step in (2, 4, 6)}
    assert [info[step]["epochs"] for step in (2, 4, 6)] == [1, 2, 3]
    cards = {step: (out / "snapshots" / f"step-{step:07d}" / "README.md").read_text() for step in (2, 4, 6)}
    assert "diversity ratio" not in cards[2] and "diversity ratio" not in cards[4] and "diversity ratio" in cards[6]


def test_ema_settings_without_the_ema_are_refused(capsys):
    from fundus_diffusion.training import dcgan

    with pytest.raises(SystemExit):
        dcgan.parse_args([*TINY, "--output_dir", "x", "--max_train_steps", "1", "--ema_max_decay", "0.99"])
    assert "--ema_max_decay set(s) the generator's EMA, which is off: add --use_ema" in capsys.readouterr().err
    assert dcgan.parse_args([*TINY, "--output_dir", "x", "--max_train_steps", "1", "--use_ema", "--ema_max_decay", "0.99"]).use_ema


def test_labelled_data_without_class_conditional_trains_unconditional_and_says_so(tmp_path, dataset, train_in_process, caplog):
    """The DDPM takes a dataset's PM labels by default and the DCGAN (the paper's, unconditional) does not: that
    difference was silent (new-user pass, session 30)."""
    args = ["--dataset", dataset, "--training_cache_dir", str(tmp_path / "cache"), "--masks", "disc", "--max_train_steps", "1"]
    with caplog.at_level("WARNING"):
        train_in_process(*args, "--output_dir", str(tmp_path / "default"))
    assert "has PM / non-PM labels, and the DCGAN trains without them" in caplog.text and "--class_conditional" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        train_in_process(*args, "--output_dir", str(tmp_path / "meant"), "--no-class_conditional")
    assert "trains without them" not in caplog.text
    from fundus_diffusion.models import DCGANGenerator

    assert DCGANGenerator.from_pretrained(tmp_path / "default" / "gan_generator").config.num_class_embeds is None
