"""Post-hoc EMA (Karras et al. 2024, "Analyzing and improving the training dynamics of diffusion models", EDM2):
choose the EMA length after training, so that one training run yields an EMA-length ablation.

During training (``train_ddpm.py --post_hoc_ema``) ema-pytorch's ``PostHocEMA`` keeps two (or more) power-function
EMA profiles of the UNet, each of a relative length ``sigma_rel`` (the standard deviation of its averaging profile
as a fraction of the training time so far), and every ``--post_hoc_ema_every`` steps this module saves each
profile's weights as ``OUTPUT_DIR/post_hoc_ema/profile-{i}-step-{step}.safetensors``. Each file records its profile's
``sigma_rel``, exponent ``gamma`` and step in its safetensors metadata, so it is read without the run's flags and
without pickle (ema-pytorch's own ``checkpoint()`` uses ``torch.save``; we never call it). The profiles' running
state travels in the accelerate checkpoints (``loop.checkpoint_objects``), so a resumed run continues them; snapshots
newer than the step a run starts from belong to an abandoned trajectory and are removed then.

After training, ``synthesise`` solves ema-pytorch's least-squares problem (``solve_weights``, the paper's Algorithm 3)
for the weights that combine the snapshots into the profile of any ``sigma_rel`` at any step up to the last snapshot,
and ``write_post_hoc_pipelines`` (``scripts/post_hoc_ema.py``) saves each such EMA as an ordinary model folder,
``OUTPUT_DIR/sigma_rel-{value}``. A combination whose weights do not sum to 1 would scale a constant model; such a
``sigma_rel`` is refused rather than written, with its cause: a length outside the tracked profiles' range, a step
without a snapshot, or, for a length between the profiles, snapshots at too few steps (a short run or a long
``--post_hoc_ema_every``: one snapshot step reconstructs only the tracked lengths, 0.1 of the default profiles needs
two, 0.2 three; ``snapshot_steps_needed``).
"""

import os
import re
import shutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from ema_pytorch import PostHocEMA
from ema_pytorch.post_hoc_ema import sigma_rel_to_gamma, solve_weights
from safetensors import safe_open
from safetensors.torch import save_file

from .. import hub
from ..pipelines.loading import load_fundus_pipeline
from .checkpointing import save_folder_atomically

SNAPSHOT_FOLDER = "post_hoc_ema"
SNAPSHOT_RE = re.compile(r"^profile-(\d+)-step-(\d+)\.safetensors$")
DEFAULT_SIGMA_RELS = (0.05, 0.28)  # ema-pytorch's README; EDM2 tracked 0.05 and 0.10
DEFAULT_EVERY = 1000  # ema-pytorch's checkpoint_every_num_steps
# Not ema-pytorch's float16: the combination's weights reach several times 1 with alternating signs and amplify the
# rounding (on the tiny UNet, float16 snapshots put a model that never changed up to 0.01 off itself, 25x float32's).
SNAPSHOT_DTYPE = torch.float32
WEIGHT_SUM_TOLERANCE = 0.01  # |sum of the combination weights - 1| above this: the profile is not reconstructed


def snapshot_folder(run: str) -> str:
    return os.path.join(run, SNAPSHOT_FOLDER)


# The longest power-function EMA profile: sigma_rel(gamma) = sqrt((gamma + 1) / ((gamma + 2) ** 2 (gamma + 3))) peaks at
# gamma = -0.382 (Karras et al. 2024, eq. 3); a longer one maps to another profile's gamma, or to a decay above 1.
MAX_SIGMA_REL = 0.3002


def parse_sigma_rels(text: str) -> Tuple[float, ...]:
    """``"0.05,0.28"`` -> ``(0.05, 0.28)``; a ``ValueError`` naming a value that is not a number in
    (0, ``MAX_SIGMA_REL``], or given twice."""
    values = []
    for part in str(text).split(","):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"sigma_rel {part.strip()!r} is not a number; give e.g. 0.05,0.28.") from None
        if not 0 < value <= MAX_SIGMA_REL:
            raise ValueError(
                f"sigma_rel {value:g} is outside (0, {MAX_SIGMA_REL}]: no power-function EMA is longer than "
                f"{MAX_SIGMA_REL} of the training time (a larger value would stand for a shorter profile). Give e.g. "
                "0.05,0.28."
            )
        if value in values:
            raise ValueError(f"sigma_rel {value:g} is given twice; each profile needs its own length.")
        values.append(value)
    return tuple(values)


def make_post_hoc_ema(model, sigma_rels: Sequence[float], run: str, device) -> PostHocEMA:
    """ema-pytorch's ``PostHocEMA`` of ``model`` with one profile per ``sigma_rel``, updated every step (its default,
    every 100th, would average with the per-step decay at a hundredth of the steps: not the power-function profile
    that ``synthesise`` assumes). Snapshots are ours (``save_snapshots``), not its pickled checkpoints. As with
    ``loop.make_ema``, only the averaged models move to the device; the step counters, read every update, stay on
    the CPU."""
    tracker = PostHocEMA(
        model,
        sigma_rels=tuple(sigma_rels),
        checkpoint_every_num_steps="manual",
        checkpoint_folder=snapshot_folder(run),
        checkpoint_dtype=SNAPSHOT_DTYPE,
        update_every=1,
        allow_different_devices=True,
    )
    for profile in tracker.ema_models:
        profile.ema_model.to(device).eval()
    return tracker


def save_snapshots(tracker: PostHocEMA, run: str, sigma_rels: Sequence[float]) -> List[str]:
    """Save every profile's weights at the tracker's current step as safetensors (written to a temporary name, then
    renamed: a killed run never leaves a half-written snapshot). Returns the paths."""
    step = int(tracker.step)
    folder = snapshot_folder(run)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index, (profile, sigma_rel) in enumerate(zip(tracker.ema_models, sigma_rels)):
        tensors = {
            key: value.detach().to("cpu", SNAPSHOT_DTYPE if value.is_floating_point() else value.dtype).contiguous()
            for key, value in profile.ema_model.state_dict().items()
        }
        metadata = {"sigma_rel": repr(float(sigma_rel)), "gamma": repr(float(profile.gamma)), "step": str(step)}
        path = os.path.join(folder, f"profile-{index}-step-{step:07d}.safetensors")
        save_file(tensors, path + ".tmp", metadata=metadata)
        os.replace(path + ".tmp", path)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class Snapshot:
    """One profile's saved weights: the file, the step it was taken at and the profile's exponent and length."""

    path: str
    step: int
    gamma: float
    sigma_rel: float


def list_snapshots(run: str) -> List[Snapshot]:
    """The run's post-hoc EMA snapshots, by step then profile; a file whose metadata is unreadable is an error
    naming it."""
    folder = snapshot_folder(run)
    found = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if not SNAPSHOT_RE.match(name):
            continue
        path = os.path.join(folder, name)
        try:
            with safe_open(path, "pt") as f:
                meta = f.metadata() or {}
            found.append(Snapshot(path, int(meta["step"]), float(meta["gamma"]), float(meta["sigma_rel"])))
        except Exception as err:  # noqa: BLE001 - any failure to read is the answer
            raise ValueError(
                f"{path} is not a readable post-hoc EMA snapshot ({type(err).__name__}: {err}). Fix: delete it "
                "(the other snapshots still synthesise), or re-run the training from a checkpoint before its step."
            ) from err
    return sorted(found, key=lambda s: (s.step, s.path))


def start_snapshots(run: str, step: int, sigma_rels: Sequence[float]) -> List[str]:
    """Before a run trains from ``step`` (0, or the checkpoint it resumes from): remove the snapshots (and temporary
    files) newer than ``step``, written by a run that went on past its last checkpoint (the resumed run writes its
    own), and refuse to continue snapshots taken with other profiles. Returns the names removed."""
    folder = snapshot_folder(run)
    removed = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        match = SNAPSHOT_RE.match(name.removesuffix(".tmp"))
        if match and (name.endswith(".tmp") or int(match.group(2)) > step):
            os.remove(os.path.join(folder, name))
            removed.append(name)
    for snapshot in list_snapshots(run):
        profile = int(SNAPSHOT_RE.match(os.path.basename(snapshot.path)).group(1))
        if profile >= len(sigma_rels) or snapshot.sigma_rel != float(sigma_rels[profile]):
            raise ValueError(
                f"{snapshot.path} is a snapshot of a profile of sigma_rel {snapshot.sigma_rel:g}, but this run's "
                f"--post_hoc_ema_sigma_rels are {','.join(f'{s:g}' for s in sigma_rels)}. Fix: resume with the "
                "sigma_rels the run started with (its training_args.json), or start a new --output_dir."
            )
    return removed


def _combination(run: str, sigma_rels: Sequence[float], step: Optional[int]):
    """``(used, step, weights)``: the snapshots up to ``step`` (default: the last snapshot's), the step, and for each
    of ``sigma_rels`` the weights (float64 ``[len(used)]``) that combine them into its EMA; refuses ``sigma_rels``
    whose weights do not sum to 1 (one error naming all of them, the cause and the fix)."""
    folder = snapshot_folder(run)
    snapshots = list_snapshots(run)
    if not snapshots:
        raise FileNotFoundError(
            f"{folder}: no post-hoc EMA snapshots (profile-*-step-*.safetensors) in this run. Fix: train with "
            "train_ddpm.py --post_hoc_ema (it saves them every --post_hoc_ema_every steps and at the last step)."
        )
    last = snapshots[-1].step
    step = last if step is None else int(step)
    used = [s for s in snapshots if s.step <= step]
    if step > last or not used:
        raise ValueError(
            f"--step {step}: the snapshots in {folder} span steps {snapshots[0].step} to {last}. Fix: choose a step "
            "in that range (an EMA can only be synthesised from snapshots taken before it)."
        )
    weights = solve_weights(
        torch.tensor([s.step for s in used], dtype=torch.float64),
        torch.tensor([s.gamma for s in used], dtype=torch.float64),
        torch.tensor([step], dtype=torch.float64),
        torch.tensor([sigma_rel_to_gamma(s) for s in sigma_rels], dtype=torch.float64),
    )
    refused = [(s, float(w.sum())) for s, w in zip(sigma_rels, weights.T) if abs(float(w.sum()) - 1) > WEIGHT_SUM_TOLERANCE]
    if refused:
        raise ValueError(_why_not_reconstructed(folder, used, step, refused))
    return used, step, list(weights.T)


def synthesise(run: str, sigma_rel: float, step: Optional[int] = None) -> Tuple[Dict[str, torch.Tensor], dict]:
    """The float32 weights of the EMA of relative length ``sigma_rel`` at ``step`` (default: the last snapshot's),
    combined from the run's snapshots up to ``step``, and what it was made of (for the model card)."""
    used, step, (weights,) = _combination(run, [sigma_rel], step)
    return _combine(used, step, sigma_rel, weights)


def _combine(used: Sequence[Snapshot], step: int, sigma_rel: float, weights: torch.Tensor):
    """``synthesise``'s result from ``_combination``'s snapshots and one length's weights."""
    profiles = sorted({s.sigma_rel for s in used})
    combined = None
    for snapshot, weight in zip(used, weights.tolist()):
        with safe_open(snapshot.path, "pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
        if combined is None:
            combined = {k: v.double() * weight if v.is_floating_point() else v for k, v in tensors.items()}
            reference = snapshot.path
            continue
        if set(tensors) != set(combined) or any(tensors[k].shape != combined[k].shape for k in tensors):
            raise ValueError(
                f"{snapshot.path} holds other weights than {reference} (another model was trained into this "
                "run folder). Fix: remove the snapshots of the other run."
            )
        for key, value in tensors.items():
            if value.is_floating_point():
                combined[key] += value.double() * weight
    state = {k: v.float() if v.is_floating_point() else v for k, v in combined.items()}
    info = {"sigma_rel": sigma_rel, "step": step, "snapshots": len(used), "profiles": profiles}
    return state, info


def _weight_sum(steps: Sequence[int], gammas: Sequence[float], step: int, sigma_rel: float) -> float:
    """The sum of ``solve_weights``'s combination of every profile (``gammas``) at every one of ``steps`` into the
    EMA of ``sigma_rel`` at ``step``: 1 where that EMA is reconstructed."""
    steps_i = torch.tensor([s for s in steps for _ in gammas], dtype=torch.float64)
    gammas_i = torch.tensor([g for _ in steps for g in gammas], dtype=torch.float64)
    target = torch.tensor([sigma_rel_to_gamma(sigma_rel)], dtype=torch.float64)
    return float(solve_weights(steps_i, gammas_i, torch.tensor([float(step)], dtype=torch.float64), target).sum())


def snapshot_steps_needed(gammas: Sequence[float], sigma_rel: float, limit: int = 64) -> Optional[int]:
    """The fewest evenly spaced snapshot steps (the last one the step synthesised at) from which the profiles
    ``gammas`` reconstruct the EMA of ``sigma_rel`` within ``WEIGHT_SUM_TOLERANCE``; None if more than ``limit``.
    The answer does not depend on the spacing (the profiles are power functions of the step)."""
    for count in range(1, limit + 1):
        if abs(_weight_sum(range(1, count + 1), gammas, count, sigma_rel) - 1) <= WEIGHT_SUM_TOLERANCE:
            return count
    return None


def _ranges(values: Sequence[float], grid: Sequence[float]) -> str:
    """``values`` (a subset of the sorted ``grid``) as runs of neighbours on it: ``0.05-0.1, 0.28``."""
    runs, index = [], {v: i for i, v in enumerate(grid)}
    for value in values:
        if runs and index[value] == index[runs[-1][-1]] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ", ".join(f"{r[0]:g}" if len(r) == 1 else f"{r[0]:g}-{r[-1]:g}" for r in runs)


def _why_not_reconstructed(folder: str, used: Sequence[Snapshot], step: int, refused) -> str:
    """Why the EMAs of ``refused`` (``(sigma_rel, weight sum)`` pairs) at ``step`` cannot be synthesised from ``used``,
    and the fix: ``step`` has no snapshot, a length lies outside the tracked profiles' lengths, or (a length inside
    them) the run has too few snapshots: a short run, or a long ``--post_hoc_ema_every``."""
    profiles = sorted({s.sigma_rel for s in used})
    gammas = sorted({s.gamma for s in used})
    steps = sorted({s.step for s in used})
    shown = ", ".join(str(s) for s in steps) if len(steps) <= 6 else f"{steps[0]}, {steps[1]}, ..., {steps[-1]}"
    names = lambda pairs: ", ".join(f"{s:g}" for s, _ in pairs)  # noqa: E731
    many = len(refused) > 1
    text = (
        f"sigma_rel {names(refused)} at step {step} cannot be reconstructed from the snapshots in {folder} (profiles "
        f"sigma_rel {', '.join(f'{p:g}' for p in profiles)}, taken at {len(steps)} step{'s' if len(steps) > 1 else ''}: "
        f"{shown}): the combination's weights sum to {', '.join(f'{t:.3f}' for _, t in refused)}, not 1, so "
        f"{'they' if many else 'it'} would scale the weights."
    )
    if step != steps[-1]:
        return text + (
            f" Cause: no snapshot was taken at step {step} (the last before it: {steps[-1]}), and an EMA up to a step "
            "cannot be rebuilt without the weights of the steps just before it. Fix: choose a --step with a snapshot "
            f"({shown}), or leave --step out (the last snapshot's)."
        )
    outside = [(s, t) for s, t in refused if not profiles[0] <= s <= profiles[-1]]
    inside = [(s, t) for s, t in refused if profiles[0] <= s <= profiles[-1]]
    if outside:
        text += (
            f" Cause: sigma_rel {names(outside)} lie{'' if len(outside) > 1 else 's'} outside the tracked lengths, and the "
            f"synthesis only interpolates between them. Fix: choose a sigma_rel between {profiles[0]:g} and "
            f"{profiles[-1]:g}, or train with --post_hoc_ema_sigma_rels spanning it."
        )
    if inside:
        counts = [snapshot_steps_needed(gammas, s) for s, _ in inside]
        needed = None if None in counts else max(counts)
        lo, hi = int(round(profiles[0] * 100)), int(round(profiles[-1] * 100))
        grid = sorted({*profiles, *(k / 100 for k in range(lo, hi + 1) if profiles[0] <= k / 100 <= profiles[-1])})
        fits = [v for v in grid if abs(_weight_sum(steps, gammas, step, v) - 1) <= WEIGHT_SUM_TOLERANCE]
        if needed is not None and needed <= len(steps):  # enough steps, but not evenly spread
            return text + (
                f" Cause: the snapshot steps are unevenly spread ({shown}) to combine into sigma_rel {names(inside)}: "
                "a short last interval (the last step is always saved, so a last step that is not a multiple of "
                "--post_hoc_ema_every leaves one) or a missing snapshot. Fix: train with --max_train_steps a "
                "multiple of --post_hoc_ema_every, or a smaller --post_hoc_ema_every; or choose among the lengths "
                f"these snapshots do reconstruct: sigma_rel {_ranges(fits, grid)}."
            )
        if needed is None:
            target = "snapshots at many more steps, or a profile nearer the length (--post_hoc_ema_sigma_rels)"
        else:
            target = (
                f"snapshots at {needed} or more evenly spaced steps (for {step} steps: --post_hoc_ema_every "
                f"{max(step // needed, 1)} or less)"
            )
        text += (
            f" Cause: too few snapshots (a short run, or a long --post_hoc_ema_every), not the length{'s' if len(inside) > 1 else ''}"
            f": a length between the tracked ones is combined from snapshots at several steps, and sigma_rel "
            f"{names(inside)} need{'' if len(inside) > 1 else 's'} {needed or 'more than 64'} such steps where this "
            f"run has {len(steps)}. Fix: train longer or save snapshots more often, to have {target}; or choose among "
            f"the lengths these snapshots do reconstruct: sigma_rel {_ranges(fits, grid)} (the tracked lengths are "
            "exact at any snapshot step)."
        )
    return text

def output_folders(output_dir: str, sigma_rels: Sequence[float]) -> List[str]:
    """``output_dir/sigma_rel-{value}`` for each ``sigma_rel``, one length or several: the layout does not depend on
    how many lengths one call writes, so lengths added by a later call land beside the earlier ones."""
    return [os.path.join(output_dir, f"sigma_rel-{value:g}") for value in sigma_rels]


def write_post_hoc_pipelines(
    run: str, sigma_rels: Sequence[float], output_dir: str, step: Optional[int] = None
) -> List[str]:
    """Save the post-hoc EMA of each ``sigma_rel`` as a model folder like the run's own (its pipeline, scheduler and
    card, ``training_args.json``; the card's weights line names the ``sigma_rel``), loadable by ``generate.py``.
    Every EMA is synthesised before anything is written. Returns the folders."""
    if len(set(sigma_rels)) != len(sigma_rels):
        raise ValueError(f"--sigma_rel {','.join(f'{s:g}' for s in sigma_rels)} repeats a value; give each once.")
    index = os.path.join(run, "model_index.json")
    if not os.path.isfile(index):
        raise FileNotFoundError(
            f"{index} is missing: {run} holds no saved model, whose pipeline and card the synthesised EMA reuses. "
            "Fix: finish the training (train_ddpm.py ... --resume_from_checkpoint latest) and run this again."
        )
    if os.path.isfile(os.path.join(output_dir, "model_index.json")):
        raise FileExistsError(
            f"{output_dir} is itself a saved model (one length, written straight into --output_dir by an older "
            "version); the post-hoc EMA models now go into its sigma_rel-VALUE sub-folders. Fix: choose another "
            "--output_dir."
        )
    folders = output_folders(output_dir, sigma_rels)
    for folder in folders:
        if os.path.exists(os.path.join(folder, "model_index.json")):
            raise FileExistsError(f"{folder} already holds a saved model. Fix: choose another --output_dir.")
    used, at, weights = _combination(run, sigma_rels, step)  # every length refused at once, before any weights are read
    synthesised = [_combine(used, at, sigma_rel, w) for sigma_rel, w in zip(sigma_rels, weights)]
    pipeline = load_fundus_pipeline(run, device="cpu", dtype="fp32")
    pipeline.register_modules(guide_unet=None)  # the run's guide (--guide_step) was chosen for its ordinary EMA
    run_info = dict(pipeline.config.get("training_info") or {})
    for key in ("hub_model_id", "autoguidance guide"):  # the run's upload and guide, not this model's
        run_info.pop(key, None)
    run_steps = run_info.get("steps")
    for folder, (state, made_of) in zip(folders, synthesised):
        try:
            pipeline.unet.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"The snapshots in {snapshot_folder(run)} do not fit the UNet saved in {run} "
                f"({str(err).splitlines()[0]}). Fix: use the run folder the snapshots were trained in."
            ) from err
        info = {
            **{k: v for k, v in run_info.items() if k != "epochs" or made_of["step"] == run_steps},  # the run's count
            "steps": made_of["step"],
            "weights": f"post-hoc EMA, sigma_rel {made_of['sigma_rel']:g} (Karras et al. 2024), synthesised from "
            f"{made_of['snapshots']} snapshots of the profiles sigma_rel "
            f"{', '.join(f'{p:g}' for p in made_of['profiles'])}",
            "post_hoc_ema_sigma_rel": made_of["sigma_rel"],
        }
        os.makedirs(folder, exist_ok=True)
        save_folder_atomically(lambda tmp, info=info: _save(pipeline, tmp, info, run), folder)
    return folders


def _save(pipeline, folder: str, info: dict, run: str) -> None:
    """The model folder: what ``hub.save_model`` writes, plus the run's ``training_args.json``."""
    hub.save_model(pipeline, folder, training_info=info)
    args = os.path.join(run, "training_args.json")
    if os.path.isfile(args):
        shutil.copyfile(args, os.path.join(folder, "training_args.json"))


def describe_profiles(sigma_rels: Sequence[float], every: int) -> str:
    """The model card's line about a run that tracked post-hoc EMA profiles."""
    return (
        f"sigma_rel {', '.join(f'{s:g}' for s in sigma_rels)}, snapshots every {every} steps in {SNAPSHOT_FOLDER}/ "
        "(fundus-post-hoc-ema synthesises other lengths)"
    )
