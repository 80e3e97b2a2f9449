import json
import math
import os
import shutil

import pytest
import torch
from accelerate import Accelerator

from fundus_diffusion.hub import push_folder, render_model_card
from fundus_diffusion.training import (
    NonFiniteLossError,
    check_finite,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    save_folder_atomically,
)


class Counter:
    """A plain object with a state dict, as trainers register an EMA."""

    def __init__(self):
        self.value = 0

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


@pytest.fixture
def accelerated():
    accelerator = Accelerator()
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    counter = Counter()
    accelerator.register_for_checkpointing(counter)
    return accelerator, model, optimizer, counter


def test_save_rotates_and_load_restores(tmp_path, accelerated):
    accelerator, model, optimizer, counter = accelerated
    for step in range(1, 5):
        counter.value = step
        with torch.no_grad():
            model.weight.fill_(step)
        path = save_checkpoint(accelerator, str(tmp_path), step, total_limit=2)
        assert path == str(tmp_path / f"checkpoint-{step}")
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-3", "checkpoint-4"]
    assert json.loads((tmp_path / "checkpoint-4" / "training_state.json").read_text()) == {"step": 4, "settings": {}}
    assert (tmp_path / "checkpoint-4" / "model.safetensors").exists()

    with torch.no_grad():
        model.weight.zero_()
    counter.value = 0
    # Resuming the earlier one in the same folder would train until checkpoint-4 and stop there: refused up front.
    with pytest.raises(ValueError, match=r"later checkpoints of this run \(checkpoint-4\).*Fix: pass a new --output_dir"):
        find_checkpoint(str(tmp_path), "checkpoint-3")
    # So would a checkpoint of step 3 from another folder (session 33's new-user pass: it trained until step 4, then
    # stopped with "already exists"); one from a folder that holds only earlier steps resumes.
    elsewhere = tmp_path.parent / f"{tmp_path.name}-other" / "checkpoint-3"
    shutil.copytree(tmp_path / "checkpoint-3", elsewhere)
    with pytest.raises(ValueError, match=r"checkpoints of later steps \(of another run\) \(checkpoint-4\).*from step 3"):
        find_checkpoint(str(tmp_path), str(elsewhere))
    assert find_checkpoint(str(elsewhere.parent), str(tmp_path / "checkpoint-4")) == str(tmp_path / "checkpoint-4")
    assert load_checkpoint(accelerator, str(tmp_path / "checkpoint-3")) == 3
    assert counter.value == 3 and torch.all(model.weight == 3)
    with pytest.raises(FileExistsError):
        save_checkpoint(accelerator, str(tmp_path), 4)


def test_interrupted_saves_never_look_complete(tmp_path, accelerated):
    accelerator = accelerated[0]
    save_checkpoint(accelerator, str(tmp_path), 10)
    # What a SIGKILL can leave behind: a half-written save and a half-deleted old checkpoint.
    (tmp_path / ".tmp-checkpoint-20").mkdir()
    (tmp_path / ".tmp-checkpoint-20" / "model.safetensors").write_bytes(b"partial")
    (tmp_path / ".tmp-delete-checkpoint-5").mkdir()
    (tmp_path / "checkpoint-30").mkdir()  # not ours / incomplete: no training_state.json
    (tmp_path / "notes.txt").write_text("keep me")

    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [10]
    assert find_checkpoint(str(tmp_path), "latest") == str(tmp_path / "checkpoint-10")
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        find_checkpoint(str(tmp_path), "checkpoint-30")
    with pytest.raises(FileNotFoundError, match="no such checkpoint.*Checkpoints in .*: checkpoint-10 "):
        find_checkpoint(str(tmp_path), str(tmp_path / "checkpoint-99"))
    assert find_checkpoint(str(tmp_path / "empty"), "latest") is None
    assert find_checkpoint(str(tmp_path), None) is None

    save_checkpoint(accelerator, str(tmp_path), 20, total_limit=1)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-20", "checkpoint-30", "notes.txt"]


def test_save_folder_atomically_replaces_only_after_success(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "weights").write_text("old")
    (tmp_path / "model_index.json").write_text("old")

    def failing(folder):
        os.makedirs(os.path.join(folder, "unet"))
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_folder_atomically(failing, str(tmp_path))
    assert (tmp_path / "unet" / "weights").read_text() == "old" and sorted(os.listdir(tmp_path)) == [
        "model_index.json",
        "unet",
    ]

    def good(folder):
        os.makedirs(os.path.join(folder, "unet"))
        with open(os.path.join(folder, "unet", "weights"), "w") as f:
            f.write("new")
        with open(os.path.join(folder, "model_index.json"), "w") as f:
            f.write("new")

    save_folder_atomically(good, str(tmp_path))
    assert (tmp_path / "unet" / "weights").read_text() == "new" and (tmp_path / "model_index.json").read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["model_index.json", "unet"]


@pytest.mark.parametrize("bad", [math.nan, math.inf, torch.tensor(float("nan")), torch.tensor([1.0, -math.inf])])
def test_check_finite_raises(bad):
    with pytest.raises(NonFiniteLossError, match="at or before step 7"):
        check_finite(bad, 7)


def test_check_finite_passes_finite_losses():
    check_finite(torch.tensor(0.5), 1)
    check_finite(2.0, 1)


def test_push_folder_leaves_checkpoints_out(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    for name in ("model_index.json", "unet/model.safetensors", "checkpoint-5/optimizer.bin", ".tmp-save/x", "logs/ev"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    uploaded = {}

    def fake_upload_folder(repo_id, folder_path, ignore_patterns, **kwargs):
        files = [p.relative_to(folder_path).as_posix() for p in folder_path.rglob("*") if p.is_file()]
        uploaded[repo_id] = sorted(filter_repo_objects(files, ignore_patterns=ignore_patterns))

    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kw: type("R", (), {"repo_id": repo_id}))
    monkeypatch.setattr(huggingface_hub, "upload_folder", fake_upload_folder)
    assert push_folder(tmp_path, "me/fundus") == "https://huggingface.co/me/fundus"
    assert uploaded["me/fundus"] == ["model_index.json", "unet/model.safetensors"]


def test_model_card_needs_every_variable():
    with pytest.raises(Exception, match="undefined"):
        render_model_card("ddpm", resolution=64)


def test_a_resume_with_other_model_flags_names_them_before_loading(tmp_path):
    saved_with = {"masks": "disc,atrophy", "model_config": "tiny", "mask_names": ("disc", "atrophy"), "dropout": 0.1}
    accelerator = Accelerator()
    accelerator.prepare(torch.nn.Linear(3, 2))
    path = save_checkpoint(accelerator, str(tmp_path), 1, settings=saved_with)
    assert (
        json.loads((tmp_path / "checkpoint-1" / "training_state.json").read_text())["settings"]["masks"]
        == "disc,atrophy"
    )

    fits = Accelerator()
    model = fits.prepare(torch.nn.Linear(3, 2))
    before = model.weight.detach().clone()
    now = {**saved_with, "dropout": 0.3, "mask_names": ["disc", "atrophy"]}  # a tuple is saved as a list: the same
    with pytest.raises(ValueError, match=r"checkpoint-1 was trained with other model, optimiser or loss flags than these: --dropout 0\.3 "
                       r"\(checkpoint: 0\.1\)\. Resume with the checkpoint's flags \(a resume restores the optimiser's state"):  # fmt: skip
        load_checkpoint(fits, path, now)  # the weights would fit: refused all the same
    assert torch.equal(model.weight, before)  # nothing loaded
    as_built = lambda flags: {**flags, "dropout": 0.1 if flags["dropout"] in (None, 0.1) else flags["dropout"]}  # noqa: E731
    assert load_checkpoint(fits, path, {**saved_with, "dropout": None}, comparable=as_built) == 1  # one model, two spellings

    other = Accelerator()
    other.prepare(torch.nn.Linear(4, 2))  # the weights no longer fit
    with pytest.raises(ValueError, match=r"--masks disc \(checkpoint: disc,atrophy\)\. ") as e:
        load_checkpoint(other, path, {**saved_with, "masks": "disc"})
    assert "model_config" not in str(e.value) and "mask_names" not in str(e.value)

    (tmp_path / "checkpoint-1" / "training_state.json").write_text(json.dumps({"step": 1}))  # an older checkpoint
    with pytest.raises(
        ValueError, match=r"size mismatch.*--masks disc \(checkpoint: not recorded, its run predates the flag\).* Resume "
        "with the checkpoint's model flags"
    ) as e:  # fmt: skip
        load_checkpoint(other, path, {"masks": "disc", "learning_rate": 1e-4}, shaping=("masks",))
    assert "learning_rate" not in str(e.value)  # recorded now, but it cannot make weights misfit


def test_other_load_errors_keep_their_message(tmp_path, monkeypatch):
    accelerator = Accelerator()
    path = save_checkpoint(accelerator, str(tmp_path), 1)

    def broken(_):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(accelerator, "load_state", broken)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        load_checkpoint(accelerator, path, {"masks": "disc"})


def test_a_missing_ema_state_names_the_flag_that_keeps_it(tmp_path):
    """A DCGAN checkpoint saved without --use_ema, resumed with it: the message names --use_ema (it named
    --post_hoc_ema whatever was missing)."""
    from fundus_diffusion.training.checkpointing import CheckpointError, _load_object

    with pytest.raises(CheckpointError, match=r"holds no state for ema .*it trained without --use_ema\)\. Fix: resume"):
        _load_object(torch.nn.Linear(1, 1), str(tmp_path), "ema", 0)
