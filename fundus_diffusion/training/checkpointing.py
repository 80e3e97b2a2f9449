"""Atomic, rotating training checkpoints on top of ``accelerator.save_state`` / ``load_state``.

A checkpoint is written into ``output_dir/.tmp-checkpoint-{step}``, completed with ``training_state.json`` and only
then renamed to ``output_dir/checkpoint-{step}`` (``os.replace`` is atomic on one filesystem). A process killed at
any moment therefore leaves complete ``checkpoint-*`` folders plus, at worst, a ``.tmp-*`` folder that the next save
removes. Rotation renames an old checkpoint to ``.tmp-delete-*`` before deleting it, so a half-deleted checkpoint
never looks complete either. Models, optimizers, LR schedulers, RNG states and every object registered with
``accelerator.register_for_checkpointing`` (e.g. the EMA) are saved by accelerate.
"""

import json
import os
import re
import shutil
from typing import Callable, List, Optional, Tuple

STATE_FILE = "training_state.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
TMP_PREFIX = ".tmp-"


def _fsync_tree(folder: str) -> None:
    """Flush the files and the folder itself to disk, so that the rename cannot outrun the data on power loss."""
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, STATE_FILE))


def list_checkpoints(output_dir: str) -> List[Tuple[int, str]]:
    """Complete ``checkpoint-N`` folders in ``output_dir`` as ``(step, path)``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = CHECKPOINT_RE.match(name)
        path = os.path.join(output_dir, name)
        if match and is_complete(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


def _remove_stale_temporaries(output_dir: str) -> None:
    for name in os.listdir(output_dir):
        if name.startswith(TMP_PREFIX + "checkpoint-") or name.startswith(TMP_PREFIX + "delete-checkpoint-"):
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)


def save_checkpoint(
    accelerator, output_dir: str, step: int, total_limit: Optional[int] = None, settings: Optional[dict] = None
) -> str:
    """Save the full training state as ``output_dir/checkpoint-{step}``; every process must call this.

    Keeps the newest ``total_limit`` checkpoints (all when None). Raises ``FileExistsError`` rather than replace an
    existing ``checkpoint-{step}``. ``settings`` (the flags that shape the models) go into its state file, so that
    a resume with other ones can say which.
    """
    final = os.path.join(output_dir, f"checkpoint-{step}")
    tmp = os.path.join(output_dir, f"{TMP_PREFIX}checkpoint-{step}")
    if os.path.exists(final):
        raise FileExistsError(f"{final} already exists; refusing to overwrite it.")
    if accelerator.is_main_process:
        os.makedirs(output_dir, exist_ok=True)
        _remove_stale_temporaries(output_dir)  # left by a run killed mid-save
        os.makedirs(tmp)  # before the barrier: the other processes write their RNG states into it
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            json.dump({"step": int(step), "settings": settings or {}}, f, default=str)
        _fsync_tree(tmp)
        os.replace(tmp, final)
        if total_limit is not None and total_limit > 0:
            for _, old in list_checkpoints(output_dir)[:-total_limit]:
                doomed = os.path.join(output_dir, TMP_PREFIX + "delete-" + os.path.basename(old))
                os.replace(old, doomed)
                shutil.rmtree(doomed)
    accelerator.wait_for_everyone()
    return final


def refuse_to_overwrite(output_dir: str, resume_from: Optional[str]) -> None:
    """A fresh run (no ``--resume_from_checkpoint``) must not start over an earlier run's checkpoints."""
    if not resume_from and list_checkpoints(output_dir):
        raise FileExistsError(
            f"{output_dir} already holds checkpoints from an earlier run. Continue it with "
            "--resume_from_checkpoint latest, or choose a new --output_dir."
        )


def find_checkpoint(output_dir: str, resume_from: Optional[str]) -> Optional[str]:
    """The checkpoint to resume from: None when ``resume_from`` is empty or is "latest" with nothing saved yet.

    ``resume_from`` is "latest" (the newest complete checkpoint in ``output_dir``), a path, or a checkpoint name
    inside ``output_dir`` (``checkpoint-500``).
    """
    if not resume_from:
        return None
    if resume_from == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1][1] if checkpoints else None
    path = resume_from
    if not os.path.exists(path) and os.path.exists(os.path.join(output_dir, resume_from)):
        path = os.path.join(output_dir, resume_from)
    if not os.path.isdir(path):
        found = ", ".join(os.path.basename(c) for _, c in list_checkpoints(output_dir)) or "none"
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume_from!r}: no such checkpoint folder. Checkpoints in {output_dir}: "
            f"{found} (or pass latest)."
        )
    if not is_complete(path):
        raise ValueError(
            f"--resume_from_checkpoint {resume_from!r}: {path} has no {STATE_FILE}, so it is not a complete "
            "checkpoint (a save was interrupted, or it is not a fundus-diffusion checkpoint). Use 'latest' or "
            "another checkpoint-* folder."
        )
    return path


MISMATCH_SIGNS = ("size mismatch", "Missing key", "Unexpected key")


def load_checkpoint(accelerator, path: str, flags: Optional[dict] = None) -> int:
    """Restore everything ``save_checkpoint`` saved and return the step it was taken at. When the weights do not fit
    the models built now, the error names those of ``flags`` (the flags that shape the models) that differ from the
    checkpoint's run."""
    with open(os.path.join(path, STATE_FILE)) as f:
        state = json.load(f)
    try:
        accelerator.load_state(path)
    except RuntimeError as err:
        detail = next((line.strip() for line in str(err).splitlines() if any(s in line for s in MISMATCH_SIGNS)), None)
        if detail is None:
            raise  # not a model / checkpoint mismatch
        saved, now = (json.loads(json.dumps(f or {}, default=str)) for f in (state.get("settings"), flags))
        changed = [f"--{k} {now[k]} (checkpoint: {saved[k]})" for k in sorted(saved) if k in now and now[k] != saved[k]]
        hint = f" Flags that differ from the checkpoint's run: {', '.join(changed)}." if changed else ""
        raise ValueError(
            f"{path} does not fit the models these flags build ({detail[:200].rstrip('.')}).{hint} Resume with the checkpoint's "
            "model flags, or start a new --output_dir."
        ) from err
    return int(state["step"])


def save_folder_atomically(save_fn: Callable[[str], None], output_dir: str) -> None:
    """Run ``save_fn(tmp)`` into ``output_dir/.tmp-save``, then move what it wrote into ``output_dir``.

    For the final ``save_pretrained`` of a run: an earlier model in ``output_dir`` is only replaced, entry by entry
    (the ``model_index.json`` or config file last), once the new one is complete on disk; a save that fails leaves
    it untouched.
    """
    tmp = os.path.join(output_dir, f"{TMP_PREFIX}save")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        save_fn(tmp)
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    names = sorted(os.listdir(tmp), key=lambda n: n in ("model_index.json", "config.json"))
    for name in names:
        target = os.path.join(output_dir, name)
        if os.path.isdir(target):
            old = os.path.join(output_dir, f"{TMP_PREFIX}old-{name}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(os.path.join(tmp, name), target)
            shutil.rmtree(old)
        else:
            os.replace(os.path.join(tmp, name), target)
    os.rmdir(tmp)
