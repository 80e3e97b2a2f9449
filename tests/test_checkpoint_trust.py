"""Checkpoints are untrusted input: no file in one can run code on a resume, and a damaged one never blocks a run.

A crafted pickle (``__reduce__`` -> a command that creates a marker file) is planted in every file of a checkpoint in
turn; the marker must never appear. Truncated, empty and missing files make ``latest`` fall back to the newest
checkpoint that verifies and set the damaged one aside; a named one is an error naming the file.
"""

import json
import logging
import os
import pickle
import shlex
import shutil
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from ema_pytorch import EMA

from fundus_diffusion.training import ddpm, list_checkpoints
from fundus_diffusion.training.checkpointing import (
    MANIFEST_FILE,
    CheckpointError,
    NonFiniteWeightsError,
    _warn_if_rng_unreadable,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
    write_manifest,
)


class Payload:
    """What a hostile checkpoint holds: unpickling it runs a shell command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


def make_run(seed: int = 0):
    """A prepared model and optimizer, an EMA and an LR scheduler stepped by hand, as the trainers have them."""
    torch.manual_seed(seed)
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EMA(model, beta=0.9, update_after_step=0, update_every=1, include_online_model=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 3))
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer, {"ema": ema, "lr_scheduler": scheduler}


def train_steps(run, steps: int) -> None:
    _, model, optimizer, objects = run
    for _ in range(steps):
        model(torch.randn(8, 3)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        objects["lr_scheduler"].step()
        objects["ema"].update()


@pytest.fixture
def two_checkpoints(tmp_path):
    """``run/checkpoint-1`` and ``run/checkpoint-2``, both good; returns (output_dir, a pristine copy of checkpoint-2)."""
    out = tmp_path / "run"
    run = make_run()
    for step in (1, 2):
        train_steps(run, 1)
        save_checkpoint(run[0], str(out), step, extra_state=run[3])
    pristine = tmp_path / "pristine-2"
    shutil.copytree(out / "checkpoint-2", pristine)
    return out, pristine


def test_a_checkpoint_holds_no_pickle_a_resume_would_run_and_resumes_exactly(tmp_path):
    run = make_run()
    train_steps(run, 3)
    path = save_checkpoint(run[0], str(tmp_path), 3, extra_state=run[3])
    names = sorted(os.listdir(path))
    assert "ema.safetensors" in names and "lr_scheduler.json" in names and MANIFEST_FILE in names
    assert not [n for n in names if n.startswith("custom_checkpoint_")]  # accelerate's weights_only=False pickles
    manifest = json.loads((tmp_path / "checkpoint-3" / MANIFEST_FILE).read_text())["files"]
    assert sorted(manifest) == [n for n in names if n != MANIFEST_FILE]

    fresh = make_run(seed=1)
    assert load_checkpoint(fresh[0], path, extra_state=fresh[3]) == 3
    for name in ("ema", "lr_scheduler"):
        saved, loaded = run[3][name].state_dict(), fresh[3][name].state_dict()
        assert sorted(saved) == sorted(loaded)
        for key in saved:
            if isinstance(saved[key], torch.Tensor):
                assert torch.equal(saved[key].cpu(), loaded[key].cpu()), key
            else:
                assert saved[key] == loaded[key], key
    assert int(fresh[3]["ema"].step) == 3
    assert torch.equal(run[1].state_dict()["0.weight"], fresh[1].state_dict()["0.weight"])


def plant(path, kind: str, marker) -> None:
    with open(path, "wb") as f:
        if kind == "torch.save":
            torch.save({"state": Payload(marker)}, f)
        else:
            pickle.dump(Payload(marker), f)


def test_the_payload_runs_where_accelerate_loads_a_registered_object(two_checkpoints, tmp_path):
    """The control: the hole the next test guards against is real (accelerate: weights_only=False)."""
    out, _ = two_checkpoints
    run = make_run()
    run[0].register_for_checkpointing(run[3]["ema"])
    run[0].save_state(str(tmp_path / "plain"))
    plant(tmp_path / "plain" / "custom_checkpoint_0.pkl", "torch.save", tmp_path / "PWNED")
    with pytest.raises(RuntimeError, match="Missing key"):  # the payload is no state dict, but it ran first
        run[0].load_state(str(tmp_path / "plain"))
    assert (tmp_path / "PWNED").exists()

    (tmp_path / "PWNED").unlink()  # our load of the same folder, with the same object registered: refused
    with pytest.raises(CheckpointError, match="custom_checkpoint_0.pkl"):
        (tmp_path / "plain" / "training_state.json").write_text(json.dumps({"step": 2}))
        load_checkpoint(run[0], str(tmp_path / "plain"))
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("kind", ["torch.save", "pickle"])
def test_a_payload_in_any_file_of_a_checkpoint_never_runs(two_checkpoints, tmp_path, kind, caplog):
    out, pristine = two_checkpoints
    marker = tmp_path / "PWNED"
    names = sorted(os.listdir(pristine))
    # Each file in turn, plus .bin weights in place of the safetensors and accelerate's legacy custom-object pickles.
    cases = [(name, None) for name in names] + [("model.bin", "model.safetensors")]
    cases += [("custom_checkpoint_0.pkl", None), ("custom_checkpoint_1.pkl", None)]
    for name, replaces in cases:
        for forge_manifest in (False, True):  # an attacker may rewrite the manifest to match
            shutil.rmtree(out / "checkpoint-2", ignore_errors=True)
            shutil.rmtree(out / "checkpoint-2.damaged", ignore_errors=True)
            shutil.copytree(pristine, out / "checkpoint-2")
            target = out / "checkpoint-2" / name
            plant(target, kind, marker)
            if replaces:
                (out / "checkpoint-2" / replaces).unlink()
            if forge_manifest and name != MANIFEST_FILE:
                write_manifest(str(out / "checkpoint-2"))
            case = f"{name} ({'forged' if forge_manifest else 'original'} manifest)"
            run = make_run(seed=1)
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                try:
                    found = find_checkpoint(str(out), "latest", run[0])
                    step = load_checkpoint(run[0], found, extra_state=run[3])
                except Exception as err:  # a refusal must name the planted file
                    assert name in str(err) or (replaces and replaces in str(err)), f"{case}: {err}"
                    assert isinstance(err, CheckpointError), f"{case}: {type(err).__name__}: {err}"
                else:
                    if found.endswith("checkpoint-1"):  # fell back: the damaged one was set aside, saying why
                        assert step == 1 and (out / "checkpoint-2.damaged").is_dir(), case
                        assert name in caplog.text or (replaces and replaces in caplog.text), case
                    else:  # loaded: only the planted file was ignored or refused, with a warning naming it
                        assert step == 2 and name in caplog.text, f"{case}: {caplog.text}"
            assert not marker.exists(), f"the payload in {case} ran"


@pytest.mark.parametrize(
    "damage",
    [
        "truncate model.safetensors",
        "empty optimizer.bin",
        "delete ema.safetensors",
        "truncate random_states_0.pkl",
        "overwrite lr_scheduler.json",
        "delete training_state.json",
    ],  # fmt: skip
)
def test_a_damaged_latest_checkpoint_falls_back_and_never_blocks_a_save(two_checkpoints, damage, caplog):
    out, _ = two_checkpoints
    how, name = damage.split()
    target = out / "checkpoint-2" / name
    if how == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif how == "empty":
        target.write_bytes(b"")
    elif how == "overwrite":
        target.write_text(target.read_text().replace("0", "1"))
    else:
        target.unlink()

    if name != "training_state.json":  # without it, it is not a complete checkpoint: the older error stands
        with pytest.raises(CheckpointError, match=rf"checkpoint-2 is damaged: {name}"):
            find_checkpoint(str(out), "checkpoint-2")
    run = make_run(seed=1)
    with caplog.at_level(logging.WARNING):
        found = find_checkpoint(str(out), "latest", run[0])
    assert found == str(out / "checkpoint-1")
    assert load_checkpoint(run[0], found, extra_state=run[3]) == 1
    if name != "training_state.json":
        assert f"checkpoint-2 does not verify ({name}" in caplog.text and "resuming from checkpoint-1" in caplog.text
        assert (out / "checkpoint-2.damaged").is_dir()
    train_steps(run, 1)
    with caplog.at_level(logging.WARNING):
        save_checkpoint(run[0], str(out), 2, extra_state=run[3])  # never "already exists; refusing to overwrite"
    assert [s for s, _ in list_checkpoints(str(out))] == [1, 2]
    assert (out / "checkpoint-2.damaged").is_dir()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):  # a good one is never replaced
        save_checkpoint(run[0], str(out), 2, extra_state=run[3])


def test_an_old_checkpoint_without_manifest_or_with_legacy_pickles_still_loads_safely(
    two_checkpoints, tmp_path, caplog
):
    out, _ = two_checkpoints
    # The format before: accelerate's custom_checkpoint_{i}.pkl (EMA, then the LR scheduler), no manifest.
    legacy = make_run()
    train_steps(legacy, 2)
    for obj in legacy[3].values():
        legacy[0].register_for_checkpointing(obj)
    old = tmp_path / "old" / "checkpoint-2"
    legacy[0].save_state(str(old))
    (old / "training_state.json").write_text(json.dumps({"step": 2}))
    assert (old / "custom_checkpoint_1.pkl").exists() and not (old / MANIFEST_FILE).exists()

    run = make_run(seed=1)
    assert load_checkpoint(run[0], find_checkpoint(str(tmp_path / "old"), "latest"), extra_state=run[3]) == 2
    assert int(run[3]["ema"].step) == 2 and run[3]["lr_scheduler"].last_epoch == 2

    plant(old / "custom_checkpoint_0.pkl", "torch.save", tmp_path / "PWNED")
    with pytest.raises(CheckpointError, match=r"custom_checkpoint_0.pkl \(the state of ema\) was refused"):
        load_checkpoint(make_run()[0], str(old), extra_state=make_run()[3])
    assert not (tmp_path / "PWNED").exists()

    # Without a manifest, the structure is checked: a truncated RNG state is a damaged checkpoint for 'latest', and
    # a load that cannot restore it warns.
    (out / "checkpoint-2" / MANIFEST_FILE).unlink()
    rng = out / "checkpoint-2" / "random_states_0.pkl"
    rng.write_bytes(rng.read_bytes()[:100])
    run = make_run(seed=1)
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(run[0], str(out / "checkpoint-2"), extra_state=run[3]) == 2
    assert "Could not restore the random state" in caplog.text and "random_states_0.pkl" in caplog.text
    assert find_checkpoint(str(out), "latest") == str(out / "checkpoint-1")
    # A second process resuming a one-process checkpoint has no state of its own: expected, and said so, not as damage.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _warn_if_rng_unreadable(SimpleNamespace(process_index=1), str(out / "checkpoint-1"))
    assert "was saved by 1 process(es), so process 1 has no random state to restore (expected" in caplog.text
    assert "Could not restore" not in caplog.text


@pytest.mark.parametrize("where", ["model", "ema"])
def test_weights_that_hold_nan_or_inf_are_never_saved(tmp_path, where):
    run = make_run()
    train_steps(run, 1)
    save_checkpoint(run[0], str(tmp_path), 1, extra_state=run[3])
    train_steps(run, 1)
    holder = run[1] if where == "model" else run[3]["ema"].ema_model
    with torch.no_grad():
        next(holder.parameters())[0, 0] = float("inf" if where == "model" else "nan")
    with pytest.raises(NonFiniteWeightsError, match=r"NaN or inf at step 2 .*since step 1 \(checkpoint-1"):
        save_checkpoint(run[0], str(tmp_path), 2, extra_state=run[3])
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-1"]


def test_a_training_run_resumes_past_a_checkpoint_that_lost_its_state_file(tmp_path):
    """The issue's case: deleting training_state.json used to make every rerun die with 'already exists'."""
    cache = tmp_path / "cache"
    common = ["--model_config", "tiny", "--dataset", "phantom:8", "--resolution", "16", "--train_batch_size", "4",
              "--output_dir", str(tmp_path / "run"), "--training_cache_dir", str(cache), "--seed", "0", "--logger", "none",
              "--checkpointing_steps", "2", "--validation_steps", "100", "--num_validation_images", "2",
              "--validation_inference_steps", "2", "--lr_warmup_steps", "0"]  # fmt: skip
    ddpm.train(ddpm.parse_args(common + ["--max_train_steps", "4"]))
    (tmp_path / "run" / "checkpoint-4" / "training_state.json").unlink()
    ema = tmp_path / "run" / "checkpoint-2" / "ema.safetensors"
    ddpm.train(ddpm.parse_args(common + ["--max_train_steps", "6", "--resume_from_checkpoint", "latest"]))
    assert [s for s, _ in list_checkpoints(str(tmp_path / "run"))] == [2, 4, 6]
    assert (tmp_path / "run" / "checkpoint-4.damaged").is_dir() and ema.exists()
