"""Atomic, verified, rotating training checkpoints on top of ``accelerator.save_state`` / ``load_state``.

A checkpoint is written into ``output_dir/.tmp-checkpoint-{step}``, completed with ``training_state.json`` and a
``manifest.json`` (every file's size and sha256) and only then renamed to ``output_dir/checkpoint-{step}``
(``os.replace`` is atomic on one filesystem). A process killed at any moment therefore leaves complete
``checkpoint-*`` folders plus, at worst, a ``.tmp-*`` folder that the next save removes. Rotation renames an old
checkpoint to ``.tmp-delete-*`` before deleting it, so a half-deleted checkpoint never looks complete either.

Nothing a resume reads can run code. Models are safetensors; the optimizer, RNG and any other accelerate state are
read by accelerate with ``torch.load(weights_only=True)``; the objects the loop passes as ``extra_state`` (the EMA,
the DDPM's LR scheduler) and any object registered with ``accelerator.register_for_checkpointing`` are saved here as
``{name}.safetensors`` (their tensors) plus ``{name}.json`` (everything else), never as accelerate's
``custom_checkpoint_*.pkl`` (which accelerate loads with ``weights_only=False``).

A damaged checkpoint never blocks a run: ``find_checkpoint(..., "latest")`` resumes from the newest checkpoint that
verifies against its manifest, logs why each newer one was skipped and sets it aside as ``checkpoint-N.damaged``;
``save_checkpoint`` sets aside an existing ``checkpoint-N`` that does not verify instead of refusing to save; a named
checkpoint that does not verify is an error naming the file. Weights that hold NaN/inf are never saved.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from accelerate.utils import load as weights_only_load
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .args import NonFiniteLossError

STATE_FILE = "training_state.json"
MANIFEST_FILE = "manifest.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
LEGACY_CUSTOM_RE = re.compile(r"^custom_checkpoint_(\d+)\.pkl$")
TMP_PREFIX = ".tmp-"
DAMAGED_SUFFIX = ".damaged"

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that fails verification or cannot be loaded safely; the message names the file."""


class NonFiniteWeightsError(NonFiniteLossError):
    """The weights hold NaN or inf when a checkpoint is due: the checkpoint is not written."""


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


def _is_main(accelerator) -> bool:
    return accelerator is None or accelerator.is_main_process


def _barrier(accelerator) -> None:
    if accelerator is not None:
        accelerator.wait_for_everyone()


def is_complete(path: str) -> bool:
    return os.path.isfile(os.path.join(path, STATE_FILE))


def list_checkpoints(output_dir: str) -> List[Tuple[int, str]]:
    """Complete ``checkpoint-N`` folders in ``output_dir`` as ``(step, path)``, oldest first (not yet verified)."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = CHECKPOINT_RE.match(name)
        path = os.path.join(output_dir, name)
        if match and is_complete(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


def _files(folder: str) -> List[str]:
    """Every file under ``folder`` but the manifest, as sorted paths relative to it."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), folder)
            if rel != MANIFEST_FILE:
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str) -> None:
    """Record the size and sha256 of every file in ``folder`` in its ``manifest.json``."""
    files = {}
    for rel in _files(folder):
        path = os.path.join(folder, rel)
        files[rel] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
    with open(os.path.join(folder, MANIFEST_FILE), "w") as f:
        json.dump({"format": 1, "files": files}, f, indent=1)


def _file_problem(folder: str, rel: str) -> Optional[str]:
    """What is wrong with one file's structure (truncated, empty, unparsable), or None. Used without a manifest."""
    path = os.path.join(folder, rel)
    try:
        if os.path.getsize(path) == 0:
            return f"{rel} is empty (0 bytes)"
        if rel.endswith(".safetensors"):
            with safe_open(path, "pt") as f:
                list(f.keys())
        elif rel.endswith(".json"):
            with open(path) as f:
                json.load(f)
        elif zipfile.is_zipfile(path):  # what torch.save writes (.bin, .pkl, .pt): check every member's CRC
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
            if bad is not None:
                return f"{rel} is corrupt (its member {bad} fails its CRC)"
        elif rel.endswith((".bin", ".pkl", ".pt")):
            return f"{rel} is not a readable torch file (truncated or overwritten)"
    except Exception as err:  # noqa: BLE001 - any failure to parse is the answer
        return f"{rel} is unreadable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    return None


def verify_checkpoint(path: str) -> Optional[str]:
    """Why ``path`` is not a good checkpoint (naming the file), or None when it is.

    With a ``manifest.json``: every file it lists must be there with its size and sha256, and no other file. Checkpoints written before
    manifests existed (no ``manifest.json``) are verified by their structure instead: every file must parse
    (safetensors headers, JSON, the CRCs of torch's zip files) — that catches truncated, empty and missing-tail
    files, not bytes overwritten in place; loading them is still safe (nothing they hold can run code).
    """
    if not os.path.isdir(path):
        return f"{path} is not a folder"
    if not is_complete(path):
        return f"{STATE_FILE} is missing (a save was interrupted, or the file was deleted)"
    manifest_path = os.path.join(path, MANIFEST_FILE)
    if os.path.exists(manifest_path):
        try:
            with open(manifest_path) as f:
                listed = json.load(f)["files"]
            listed = {str(rel): (int(entry["size"]), str(entry["sha256"])) for rel, entry in listed.items()}
        except Exception as err:  # noqa: BLE001
            return f"{MANIFEST_FILE} is unreadable ({type(err).__name__}: {err})"
        if STATE_FILE not in listed:
            return f"{MANIFEST_FILE} does not list {STATE_FILE}"
        unlisted = [rel for rel in _files(path) if rel not in listed]
        if unlisted:
            return f"{unlisted[0]} is not in {MANIFEST_FILE} (it was added after the save)"
        for rel, (size, sha) in sorted(listed.items()):
            file = os.path.join(path, rel)
            if os.path.isabs(rel) or ".." in rel.split("/") or not os.path.isfile(file):
                return f"{rel} is missing"
            if os.path.getsize(file) != size:
                return f"{rel} has {os.path.getsize(file)} bytes, the manifest says {size} (truncated or overwritten)"
            if _sha256(file) != sha:
                return f"{rel} does not match its sha256 in {MANIFEST_FILE} (its bytes were changed)"
    else:
        for rel in _files(path):
            problem = _file_problem(path, rel)
            if problem:
                return problem
    try:
        with open(os.path.join(path, STATE_FILE)) as f:
            int(json.load(f)["step"])
    except Exception as err:  # noqa: BLE001
        return f"{STATE_FILE} is unreadable ({type(err).__name__}: {err})"
    return None


def set_aside(path: str, reason: str) -> str:
    """Rename a checkpoint that failed verification to ``{path}.damaged`` (``.damaged-2``, ... when taken), out of
    the way of ``list_checkpoints`` and later saves but kept for inspection; return the new path."""
    target, n = path + DAMAGED_SUFFIX, 1
    while os.path.exists(target):
        n += 1
        target = f"{path}{DAMAGED_SUFFIX}-{n}"
    os.replace(path, target)
    logger.warning(f"{os.path.basename(path)} does not verify ({reason}); set aside as {os.path.basename(target)}.")
    return target


def _remove_stale_temporaries(output_dir: str) -> None:
    for name in os.listdir(output_dir):
        if name.startswith(TMP_PREFIX + "checkpoint-") or name.startswith(TMP_PREFIX + "delete-checkpoint-"):
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)


def _objects(accelerator, extra_state: Optional[Dict]) -> Dict[str, object]:
    """The objects saved beside accelerate's state: ``extra_state`` (in its order) and any object registered with
    ``register_for_checkpointing`` (as ``custom_{i}``), which accelerate itself would pickle."""
    objects = {name: obj for name, obj in (extra_state or {}).items() if obj is not None}
    for i, obj in enumerate(getattr(accelerator, "_custom_objects", [])):
        objects.setdefault(f"custom_{i}", obj)
    return objects


@contextmanager
def _without_custom_objects(accelerator):
    """Hide registered objects from accelerate's ``save_state`` / ``load_state`` (which pickle / unpickle them)."""
    registered = list(getattr(accelerator, "_custom_objects", []))
    if registered:
        accelerator._custom_objects = []
    try:
        yield
    finally:
        if registered:
            accelerator._custom_objects = registered


def _save_object(obj, folder: str, name: str) -> None:
    """``obj.state_dict()`` as ``{name}.safetensors`` (its tensors) and ``{name}.json`` (the rest, exactly)."""
    state = obj.state_dict()
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items() if isinstance(v, torch.Tensor)}
    rest = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
    try:
        text = json.dumps({"tensors": sorted(tensors), "state": rest})
    except TypeError as err:
        raise TypeError(f"Cannot save the state of {name} as JSON ({err}); give it plain values or tensors.") from err
    save_file(tensors, os.path.join(folder, f"{name}.safetensors"))
    with open(os.path.join(folder, f"{name}.json"), "w") as f:
        f.write(text)


KEPT_BY = {"ema": "--use_ema", "post_hoc_ema": "--post_hoc_ema", "lr_scheduler": "a learning-rate schedule"}


def _load_object(obj, folder: str, name: str, legacy_index: int) -> None:
    """The inverse of ``_save_object``. A checkpoint written before it (accelerate's
    ``custom_checkpoint_{legacy_index}.pkl``) is read with ``weights_only=True``: plain state loads, code does not."""
    if os.path.exists(os.path.join(folder, f"{name}.json")):
        files = [f"{name}.json", f"{name}.safetensors"]
        try:
            with open(os.path.join(folder, files[0])) as f:
                saved = json.load(f)
            state = dict(saved["state"])
            tensors = load_file(os.path.join(folder, files[1]))
            if sorted(tensors) != sorted(saved["tensors"]):
                raise ValueError(f"it holds tensors {sorted(tensors)}, {files[0]} lists {sorted(saved['tensors'])}")
            state.update(tensors)
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(f"{folder}: the state of {name} ({' + '.join(files)}) is unreadable: {err}") from err
    else:
        legacy = os.path.join(folder, f"custom_checkpoint_{legacy_index}.pkl")
        if not os.path.exists(legacy):
            raise CheckpointError(
                f"{folder} holds no state for {name} ({name}.json / {name}.safetensors): the run that saved it did "
                f"not keep one (it trained without {KEPT_BY.get(name, 'the flag that keeps it')}). Fix: resume "
                "with that run's flags (its training_args.json), or start a new --output_dir."
            )
        try:
            state = weights_only_load(legacy, map_location="cpu")
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(
                f"{legacy} (the state of {name}) was refused: it is not a plain state dict that loads with "
                f"weights_only=True ({type(err).__name__}: {str(err).splitlines()[0]})."
            ) from err
    expected = set(obj.state_dict())
    if not isinstance(state, dict) or set(state) != expected:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{folder}: the state of {name} does not fit it (keys {found}, expected {sorted(expected)}); it was saved "
            "by another model or version."
        )
    try:
        obj.load_state_dict(state)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{folder}: the state of {name} does not fit it ({err}).") from err


def _weight_tensors(accelerator, objects: Dict[str, object]):
    """``(label, tensor)`` for every floating-point weight and buffer of the prepared models and saved objects."""
    for i, model in enumerate(getattr(accelerator, "_models", [])):
        for key, tensor in model.state_dict().items():
            yield f"model {i}: {key}", tensor
    for name, obj in objects.items():
        if isinstance(obj, torch.nn.Module):
            for key, tensor in obj.state_dict().items():
                yield f"{name}: {key}", tensor


def _non_finite(accelerator, objects: Dict[str, object]) -> Optional[str]:
    """The first weight holding NaN/inf, or None (one device sync for all of them)."""
    tensors = [(label, t) for label, t in _weight_tensors(accelerator, objects) if t.is_floating_point() and t.numel()]
    if not tensors:
        return None
    device = tensors[0][1].device
    finite = torch.stack([torch.isfinite(t).all().to(device) for _, t in tensors]).tolist()
    return next((label for (label, _), ok in zip(tensors, finite) if not ok), None)


def save_checkpoint(
    accelerator,
    output_dir: str,
    step: int,
    total_limit: Optional[int] = None,
    settings: Optional[dict] = None,
    extra_state: Optional[Dict[str, object]] = None,
    batches: Optional[List[Dict[str, int]]] = None,
) -> str:
    """Save the full training state as ``output_dir/checkpoint-{step}``; every process must call this.

    ``extra_state`` maps names to objects with ``state_dict`` / ``load_state_dict`` saved beside accelerate's state
    (the EMA, an LR scheduler stepped by hand), safely (see the module). Keeps the newest ``total_limit``
    checkpoints (all when None). Raises ``FileExistsError`` rather than replace an existing ``checkpoint-{step}``
    that verifies; one that does not verify is set aside. ``settings`` (the flags that shape the models) go into its
    state file, so that a resume with other ones can say which; so do ``batches`` (``checkpoint_batches``).
    Raises ``NonFiniteWeightsError`` (and writes nothing) when a weight holds NaN or inf.
    """
    objects = _objects(accelerator, extra_state)
    bad = _non_finite(accelerator, objects)
    if bad is not None:
        earlier = [s for s, _ in list_checkpoints(output_dir) if s < step]
        since = f"since step {earlier[-1]} (checkpoint-{earlier[-1]}, the last one saved)" if earlier else "so far"
        raise NonFiniteWeightsError(
            f"The weights hold NaN or inf at step {step} ({bad}): training exploded between the last checkpoint "
            f"and step {step}, {since}. Not saving checkpoint-{step}, so the checkpoints stay good. Try a lower "
            "learning rate, bf16 instead of fp16, or gradient clipping, then --resume_from_checkpoint latest."
        )
    final = os.path.join(output_dir, f"checkpoint-{step}")
    tmp = os.path.join(output_dir, f"{TMP_PREFIX}checkpoint-{step}")
    if os.path.exists(final):
        problem = verify_checkpoint(final)
        if problem is None:
            raise FileExistsError(f"{final} already exists; refusing to overwrite it.")
        _barrier(accelerator)  # every process has looked before it moves
        if accelerator.is_main_process:
            set_aside(final, problem)
    if accelerator.is_main_process:
        os.makedirs(output_dir, exist_ok=True)
        _remove_stale_temporaries(output_dir)  # left by a run killed mid-save
        os.makedirs(tmp)  # before the barrier: the other processes write their RNG states into it
    accelerator.wait_for_everyone()
    with _without_custom_objects(accelerator):
        accelerator.save_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for name, obj in objects.items():
            _save_object(obj, tmp, name)
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            state = {"step": int(step), "settings": settings or {}}
            if batches is not None:
                state["batches"] = batches
            json.dump(state, f, default=str)
        write_manifest(tmp)
        _fsync_tree(tmp)
        os.replace(tmp, final)
        if total_limit is not None and total_limit > 0:
            for _, old in list_checkpoints(output_dir)[:-total_limit]:
                doomed = os.path.join(output_dir, TMP_PREFIX + "delete-" + os.path.basename(old))
                os.replace(old, doomed)
                shutil.rmtree(doomed)
    accelerator.wait_for_everyone()
    return final


def refuse_to_overwrite(output_dir: str, resume_from: Optional[str], resume_path: Optional[str]) -> None:
    """A run must not start afresh over an earlier run: over its checkpoints (without ``--resume_from_checkpoint``),
    nor over its saved model when there is no checkpoint to continue from (``resume_path`` None: none given, or
    'latest' found none, e.g. after the checkpoints were deleted to save disk), which the new run's final save would
    replace, card and measured metrics included."""
    if not resume_from and list_checkpoints(output_dir):
        raise FileExistsError(
            f"{output_dir} already holds checkpoints from an earlier run. Continue it with "
            "--resume_from_checkpoint latest, or choose a new --output_dir."
        )
    if resume_path is None and os.path.isfile(os.path.join(output_dir, "model_index.json")):
        raise FileExistsError(
            f"{output_dir} already holds a saved model (model_index.json) and no checkpoint to continue it from: "
            "this run would replace it, card and metrics included. Fix: choose a new --output_dir (a DDPM can start "
            f"from its weights with --init_from {output_dir}), or move the saved model away first."
        )


def find_checkpoint(output_dir: str, resume_from: Optional[str], accelerator=None) -> Optional[str]:
    """The checkpoint to resume from: None when ``resume_from`` is empty or is "latest" with nothing saved yet.

    ``resume_from`` is "latest" (the newest complete checkpoint in ``output_dir`` that verifies: each newer one is
    logged with the reason and set aside as ``checkpoint-N.damaged``; None, with a warning, when none verifies), a
    path, or a checkpoint name inside ``output_dir`` (``checkpoint-500``), which must verify (``CheckpointError``
    naming the file otherwise). Every process must call it; ``accelerator`` None means a single process.
    """
    if not resume_from:
        return None
    if resume_from == "latest":
        found, skipped = None, []
        for _, candidate in reversed(list_checkpoints(output_dir)):
            problem = verify_checkpoint(candidate)
            if problem is None:
                found = candidate
                break
            skipped.append((candidate, problem))
        if skipped:
            _barrier(accelerator)  # every process has verified before the main one moves folders
            if _is_main(accelerator):
                for candidate, problem in skipped:
                    set_aside(candidate, problem)  # logs the reason
                logger.warning(
                    f"Skipped {len(skipped)} damaged checkpoint(s); resuming from {os.path.basename(found)}."
                    if found
                    else f"No checkpoint in {output_dir} verifies; starting from scratch."
                )
            _barrier(accelerator)
        return found
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
    problem = verify_checkpoint(path)
    if problem is not None:
        raise CheckpointError(
            f"--resume_from_checkpoint {resume_from!r}: {path} is damaged: {problem}. Use 'latest' (it skips "
            "damaged checkpoints) or another checkpoint-* folder."
        )
    _refuse_later_checkpoints(output_dir, path, resume_from)
    return path


def checkpoint_batches(path: str) -> Optional[List[Dict[str, int]]]:
    """The batches a checkpoint's run took (``loop.batch_history``'s list), or None where the checkpoint predates
    the record."""
    with open(os.path.join(path, STATE_FILE)) as f:
        return json.load(f).get("batches")


def _refuse_later_checkpoints(output_dir: str, path: str, resume_from: str) -> None:
    """A checkpoint resumed in an ``output_dir`` that holds checkpoints of later steps (an earlier checkpoint of the
    same folder, or one from elsewhere) would train another path past those steps and stop at the first of them (a
    checkpoint is never overwritten), with snapshots and grids of two paths mixed in one folder: refused before
    anything runs."""
    with open(os.path.join(path, STATE_FILE)) as f:  # verified by the caller
        here = int(json.load(f)["step"])
    checkpoints = list_checkpoints(output_dir)
    later = [os.path.basename(c) for step, c in checkpoints if step > here]
    if later:
        inside = any(os.path.samefile(c, path) for _, c in checkpoints)
        whose = "later checkpoints of this run" if inside else "checkpoints of later steps (of another run)"
        raise ValueError(
            f"--resume_from_checkpoint {resume_from!r}: {output_dir} also holds {whose} ({', '.join(later)}); "
            f"training on from step {here} there would reach {later[0]} and stop, since a checkpoint is never "
            f"overwritten. Fix: pass a new --output_dir (the checkpoint path still resumes: "
            f"--resume_from_checkpoint {path}), or use 'latest'."
        )


MISMATCH_SIGNS = ("size mismatch", "Missing key", "Unexpected key")


def _diagnose(path: str) -> Optional[str]:
    """After a failed load: the first file that does not parse, or that ``weights_only=True`` refuses."""
    for rel in _files(path):
        problem = _file_problem(path, rel)
        if problem is None and zipfile.is_zipfile(os.path.join(path, rel)):
            try:
                weights_only_load(os.path.join(path, rel), map_location="cpu")
            except Exception as err:  # noqa: BLE001
                problem = f"{rel} was refused ({type(err).__name__}: {str(err).splitlines()[0]})"
        if problem:
            return problem
    return None


@contextmanager
def _accelerate_view(path: str):
    """``path``, or, when it holds accelerate's ``custom_checkpoint_*.pkl`` (which ``load_state`` would unpickle
    with ``weights_only=False``), a temporary folder of links to every other file."""
    hidden = [name for name in os.listdir(path) if LEGACY_CUSTOM_RE.match(name)]
    if hidden and os.path.exists(os.path.join(path, MANIFEST_FILE)):  # saved by this version, which never reads them
        logger.warning(f"Ignoring {', '.join(sorted(hidden))} in {path}: this version never reads such pickles.")
    if not hidden:
        yield path
        return
    view = tempfile.mkdtemp(prefix="checkpoint-view-")
    try:
        for name in os.listdir(path):
            if name not in hidden:
                os.symlink(os.path.abspath(os.path.join(path, name)), os.path.join(view, name))
        yield view
    finally:
        shutil.rmtree(view, ignore_errors=True)


def _warn_if_rng_unreadable(accelerator, path: str) -> None:
    """accelerate only logs (at INFO) when it cannot restore this process's RNG state; say it louder."""
    name = f"random_states_{accelerator.process_index}.pkl"
    saved_by = len([n for n in os.listdir(path) if re.fullmatch(r"random_states_\d+\.pkl", n)])
    if not os.path.exists(os.path.join(path, name)) and 0 < saved_by <= accelerator.process_index:
        logger.warning(  # not damage: a resume on more processes than saved the checkpoint
            f"{path} was saved by {saved_by} process(es), so process {accelerator.process_index} has no random state "
            "to restore (expected when a run resumes on more processes); it continues with its own random numbers."
        )
        return
    try:
        states = weights_only_load(os.path.join(path, name))
        missing = {"random_state", "numpy_random_seed", "torch_manual_seed"} - set(states)
        if missing:
            raise KeyError(f"it lacks {', '.join(sorted(missing))}")
    except Exception as err:  # noqa: BLE001
        logger.warning(
            f"Could not restore the random state from {os.path.join(path, name)} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); the run continues with other random numbers than an "
            "uninterrupted run would have drawn."
        )


def _as_given(flag: str, now, saved) -> str:
    """A flag that differs from the checkpoint's, as the user gives it: a switch as with / without it."""
    if isinstance(now, bool) and isinstance(saved, bool):
        return f"{'with' if now else 'without'} --{flag} (checkpoint: {'with' if saved else 'without'} it)"
    def shown(value):  # argparse's None is a flag left out (or given as its "off" value, e.g. --snr_gamma 0)
        return "not set" if value is None else value

    return f"--{flag} {shown(now)} (checkpoint: {shown(saved)})"


def load_checkpoint(
    accelerator,
    path: str,
    flags: Optional[dict] = None,
    extra_state: Optional[Dict[str, object]] = None,
    comparable: Callable[[dict], dict] = dict,
    shaping: Optional[Sequence[str]] = None,
) -> int:
    """Restore everything ``save_checkpoint`` saved (``extra_state`` as passed to it) and return the step it was
    taken at. ``flags`` (those that define the model: its networks and how it is trained to denoise) must equal the
    checkpoint's where it recorded them, both as ``comparable`` puts them (two spellings of one model alike): a
    ``ValueError`` naming those that differ, before anything is loaded. When
    the weights do not fit the models built now, the error also names flags the checkpoint's run predates, of those
    in ``shaping`` (the flags that shape the weights; default all of ``flags``). A file that
    cannot be read, or that would need code to load, is a ``CheckpointError`` naming it; restored weights that hold
    NaN/inf are one too."""
    try:
        with open(os.path.join(path, STATE_FILE)) as f:
            state = json.load(f)
        int(state["step"])
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"Could not load {path}: {STATE_FILE} is unreadable ({type(err).__name__}).") from err
    saved, now = (json.loads(json.dumps(f or {}, default=str)) for f in (state.get("settings"), flags))
    saved_model, this_model = comparable(saved), comparable(now)
    changed = [
        _as_given(k, this_model[k], saved_model[k])
        for k in sorted(saved_model)
        if k in this_model and this_model[k] != saved_model[k]
    ]
    if changed:
        raise ValueError(
            f"{path} was trained with other model, optimiser or loss flags than these: {', '.join(changed)}. Resume with "
            "the checkpoint's flags (a resume restores the optimiser's state, learning rate included, so a changed "
            "one would not take effect; a flag left out takes this version's default, which may not be the one the "
            "checkpoint's run had), or start a new --output_dir (--init_from a saved model starts from its weights)."
        )
    objects = _objects(accelerator, extra_state)
    _warn_if_rng_unreadable(accelerator, path)
    try:
        with _without_custom_objects(accelerator), _accelerate_view(path) as view:
            accelerator.load_state(view)
    except RuntimeError as err:
        detail = next((line.strip() for line in str(err).splitlines() if any(s in line for s in MISMATCH_SIGNS)), None)
        if detail is None:
            problem = _diagnose(path)
            if problem is None:
                raise  # not a model / checkpoint mismatch
            raise CheckpointError(f"Could not load {path}: {problem}.") from err
        unrecorded = [  # a flag added after the checkpoint's run, set now: that run trained without it
            f"--{k} {now[k]} (checkpoint: not recorded, its run predates the flag)"
            for k in sorted(now)
            if k not in saved and now[k] not in (None, False, 0, "") and (shaping is None or k in shaping)
        ]
        hint = f" Flags that differ from the checkpoint's run: {', '.join(unrecorded)}." if unrecorded else ""
        raise ValueError(
            f"{path} does not fit the models these flags build ({detail[:200].rstrip('.')}).{hint} Resume with the checkpoint's "
            "model flags, or start a new --output_dir."
        ) from err
    except Exception as err:  # noqa: BLE001 - safetensors, zip and weights_only refusals: name the file
        problem = _diagnose(path) or f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise CheckpointError(f"Could not load {path}: {problem}.") from err
    for index, (name, obj) in enumerate(objects.items()):
        _load_object(obj, path, name, index)
    bad = _non_finite(accelerator, objects)
    if bad is not None:
        raise CheckpointError(f"{path} holds NaN or inf weights ({bad}); resume from an earlier checkpoint.")
    return int(state["step"])


def save_folder_atomically(save_fn: Callable[[str], None], output_dir: str) -> None:
    """Run ``save_fn(tmp)`` into ``output_dir/.tmp-save``, then move what it wrote into ``output_dir``.

    For a model folder a run saves (its final model, a snapshot): an earlier model in ``output_dir`` is only replaced,
    entry by entry (the ``model_index.json`` or config file last), once the new one is complete on disk; a save that
    fails leaves it untouched.
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
