"""One training run for every model kind: set-up, resume, logging, checkpoints, validation, snapshots, the final
atomic save and the push. A kind (``ddpm.DDPMKind``, ``dcgan.DCGANKind``) supplies only what differs: its flags,
its networks and optimisation step, its validation grid and what its model card says.

The loop, top to bottom: build the accelerator and the data, seed and build the kind, resume, then per optimizer
step: step, count, and at the logging / checkpoint / validation / snapshot steps act; at the end save the model
(EMA weights where the kind keeps them) with its card and push it.
"""

import json
import os
import time
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from ema_pytorch import EMA
from PIL import Image
from tqdm.auto import tqdm

from .. import hub
from ..data.schema import LABEL_NAMES, NULL_CLASS_ID
from .args import check_finite, make_accelerator, model_flags, public_args, seeded_build, write_training_args
from .batches import EpochPlan, load_training_batches
from .checkpointing import (
    checkpoint_batches,
    find_checkpoint,
    load_checkpoint,
    refuse_to_overwrite,
    save_checkpoint,
    save_folder_atomically,
)
from .compile_cache import load_compile_cache, save_compile_cache
from .csv_log import CSVLog
from .post_hoc_ema import save_snapshots, start_snapshots

logger = get_logger(__name__)


class ModelKind:
    """What a model kind plugs into ``train``. Subclasses set the class attributes and implement the methods.

    Class attributes: ``NAME`` (tracker project), ``DESCRIPTION`` (``--help``), ``PRESETS`` / ``DEFAULT_PRESET`` /
    ``PRESET_HELP`` and ``DEFAULTS`` (see ``args.parse_training_args``), ``MODEL_FLAGS`` (the flags that define the
    model: its networks and, for a diffusion model, its noise schedule; checkpoints record them and a resume must
    match them), ``OPTIMIZER_FLAGS`` (the optimiser's and learning-rate schedule's settings: a checkpoint restores the
    optimiser's state, these included, so a resume with other values would silently keep the old ones; recorded and
    compared as the model flags are), ``LOSSES`` (metrics that must stay finite), ``PEAK_METRICS`` (metric name: label, for
    metrics logged as the interval's maximum, not its mean) and ``VALIDATION_LOG`` (a CSV name for ``validate``'s numbers).
    """

    NAME = DESCRIPTION = PRESET_HELP = ""
    PRESETS: Dict = {}
    DEFAULT_PRESET: Optional[str] = None
    DEFAULTS: Dict = {}
    MODEL_FLAGS: Tuple[str, ...] = ()
    OPTIMIZER_FLAGS: Tuple[str, ...] = ("learning_rate", "adam_beta1", "adam_beta2")
    LOSS_FLAGS: Tuple[str, ...] = ()  # how the error is weighted: equal on resume, as the card states it for the run
    DATA_FLAGS: Tuple[str, ...] = ("random_flip", "antialiased_masks")  # which views of the images train: equal on resume, as the card says
    # what a checkpoint from before a flag existed trained with: compared as if it had recorded it
    PREDATING_DEFAULTS: Dict = {"antialiased_masks": False}
    LOSSES: Tuple[str, ...] = ("loss",)
    PEAK_METRICS: Dict[str, str] = {}
    VALIDATION_LOG: Optional[str] = None

    @staticmethod
    def comparable_flags(flags: dict) -> dict:
        """``flags`` (``MODEL_FLAGS`` values, as a checkpoint records them) as a resume compares them: two spellings
        of one model must compare equal."""
        return dict(flags)

    def resume_comparable(self, flags: dict) -> dict:
        """What a resume compares: ``comparable_flags`` of ``flags`` with ``PREDATING_DEFAULTS`` for the flags an
        older checkpoint did not record."""
        return self.comparable_flags({**self.PREDATING_DEFAULTS, **flags})

    def data_settings(self) -> dict:
        """Model settings the dataset decides rather than a flag (by flag name: they replace its value in every
        checkpoint's record, so a resume on data that decides otherwise is refused as a changed flag)."""
        return {}

    @staticmethod
    def add_args(parser) -> None:
        """Add the kind's own flags."""

    @staticmethod
    def check_args(parser, args) -> None:
        """``parser.error`` on a combination of flags that cannot work."""

    def __init__(self, args, accelerator, view, plan: EpochPlan):
        """Build, prepare and register for checkpointing everything the kind trains (called under the seed)."""
        self.args, self.accelerator, self.view, self.plan = args, accelerator, view, plan

    def describe(self) -> str:
        """One line about the run, printed at its start."""
        return ""

    def train_mode(self) -> None:
        """Put the networks in training mode (at the start of every epoch)."""

    def step(self, batch) -> Dict[str, torch.Tensor]:
        """One micro-batch: forward, backward and, once gradients are accumulated, the update (EMA included).
        Returns detached 0-d metric tensors; reading them is left to the loop, which syncs once per log."""
        raise NotImplementedError

    def schedule_logs(self) -> Dict[str, float]:
        """Host-side numbers logged with the metrics (learning rate, EMA decay)."""
        return {}

    def validate(self, step: int) -> Tuple[Image.Image, Dict[str, float]]:
        """A fixed-seed sample grid and any numbers measured on it."""
        raise NotImplementedError

    def pipeline(self):
        """The pipeline to save: the weights to ship (the EMA where kept), detached from training."""
        raise NotImplementedError

    def final_pipeline(self):
        """The pipeline the run ends with (its saved model): ``pipeline`` and whatever ships with the last weights
        only."""
        return self.pipeline()

    def check_resumed(self, step: int) -> None:
        """Refuse, before any training, to resume at ``step`` when the run cannot end well from there."""

    def snapshot_due(self, step: int) -> bool:
        """Whether to save the model as it is at ``step`` under snapshots/ (``--snapshot_steps``)."""
        return bool(self.args.snapshot_steps) and step % self.args.snapshot_steps == 0

    def training_info(self, final: bool = False) -> dict:
        """What the model card says about this kind's settings, beyond what every run records (``final``: for the
        model the run ends with, ``final_pipeline``)."""
        return {}

    def card_metrics(self, validation: Dict[str, float]) -> Optional[Sequence[dict]]:
        """Metrics measured during training for the model card (from the last validation)."""
        return None


def make_ema(model, args, accelerator) -> EMA:
    """An ema-pytorch EMA of ``model`` (weights and buffers, BatchNorm statistics included) as the EMA flags say.
    Checkpoints save it as safetensors through ``extra_state`` (``checkpoint_objects``), not accelerate's pickle,
    so it is not registered with accelerate. Its step counters stay on the CPU (reading them would otherwise sync with the GPU
    every step); only the averaged model moves to the device, where a foreach lerp updates it."""
    ema = EMA(
        model,
        beta=args.ema_max_decay,
        power=args.ema_power,
        update_after_step=args.ema_update_after_step,
        update_every=1,
        include_online_model=False,
        allow_different_devices=True,
        use_foreach=True,
    )
    ema.ema_model.to(accelerator.device).eval()
    return ema


def checkpoint_objects(kind: "ModelKind") -> Dict[str, object]:
    """What checkpoints save beside the models, optimizers and RNG states (safely: see ``checkpointing``): the EMA,
    an LR scheduler stepped by the kind and the post-hoc EMA profiles (``post_hoc_ema``), where it keeps them. The
    order is the one the first two were once registered with accelerate in, so that checkpoints of that time still
    load."""
    found = {name: getattr(kind, name, None) for name in ("ema", "lr_scheduler", "post_hoc_ema")}
    return {name: obj for name, obj in found.items() if obj is not None}


class MetricMeter:
    """Sums (or, for ``peaks``, maxima) of the step metrics on the device, read once per log interval."""

    def __init__(self, peaks: Sequence[str]):
        self.peaks, self.values, self.count = set(peaks), {}, 0

    def add(self, metrics: Dict[str, torch.Tensor]) -> None:
        for name, value in metrics.items():
            if value is None:
                continue
            value = value.detach().float()
            if name not in self.values:
                self.values[name] = value.clone()
            elif name in self.peaks:
                self.values[name] = torch.maximum(self.values[name], value)
            else:
                self.values[name] = self.values[name] + value
        self.count += 1

    def read(self, accelerator) -> Dict[str, float]:
        """Means (maxima for peaks) over the interval, averaged over processes; then start a new interval."""
        names = list(self.values)
        stacked = torch.stack([self.values[n] if n in self.peaks else self.values[n] / self.count for n in names])
        values = accelerator.reduce(stacked, reduction="mean").tolist() if names else []
        self.values, self.count = {}, 0
        return dict(zip(names, values))


def label_counts(view) -> str:
    labels = view.class_labels.tolist()
    counts = {name: labels.count(i) for i, name in enumerate(LABEL_NAMES)}
    counts["unknown"] = labels.count(NULL_CLASS_ID)
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def source_counts(view) -> str:
    """``"PALM 400, ADAM 311"``: the training images of each source (the dataset's ``source`` column)."""
    sources = view.dataset["source"]
    return ", ".join(f"{name} {sources.count(name)}" for name in dict.fromkeys(sources))


def annotation_counts(view) -> str:
    """``"disc 400 of 400, atrophy 311 of 400"``: the training images annotated for each mask."""
    counts = view.mask_annotated.sum(axis=0)
    return ", ".join(f"{name} {int(n)} of {len(view)}" for name, n in zip(view.mask_names, counts)) or "none"


def run_info(args, view, accelerator, steps: int, epochs: float, seconds: float) -> dict:
    """What every model card records about the run (the kind adds its own settings); the card shows the data keys
    (``model_cards.DATA_KEYS``) as its training-data section."""
    info = {
        "run": os.path.basename(os.path.abspath(args.output_dir)),  # the card's name (it is written in a temporary folder)
        "dataset": args.dataset,
        "images": len(view),
        "sources": source_counts(view),
        "labels": label_counts(view),
        "masks": ", ".join(args.mask_names) or "none",
        "annotated": annotation_counts(view),
        "resolution": args.resolution,
        "preset": args.preset,
        "steps": steps,
        "epochs": epochs,
        "batch_size": args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps,
        "learning_rate": args.learning_rate,
        "weights": f"EMA, decay up to {args.ema_max_decay}" if args.use_ema else "last step",
        "class_conditional": bool(args.class_conditional),
        "mixed_precision": accelerator.mixed_precision,
        "seed": args.seed if args.seed is not None else "not set (not reproducible)",
        "device": torch.cuda.get_device_name() if accelerator.device.type == "cuda" else accelerator.device.type,
        "session_time_s": round(seconds),
    }
    if args.class_conditional:
        info["class_dropout_prob"] = args.class_dropout_prob
    if not args.random_flip:
        info["left-right flips"] = "none (--no-random_flip): every image as photographed"
    if args.antialiased_masks:
        info["mask edges"] = "antialiased (--antialiased_masks): grey levels, not a pixel staircase"
    if not (args.dataset.startswith("phantom") or os.path.exists(args.dataset)):
        info["hub_dataset"] = args.dataset
    return info


class RunLogs:
    """The CSV logs of a run (main process only), the tracker and the validation grids under ``output_dir``."""

    def __init__(self, kind: ModelKind, resume_step: Optional[int]):
        args, self.accelerator, self.kind = kind.args, kind.accelerator, kind
        self.folder = os.path.join(args.output_dir, args.logging_dir)
        self.grids = os.path.join(args.output_dir, "validation")
        self.started = time.time()
        self.metrics = self.validation = None
        self.resume_step = resume_step
        if self.accelerator.is_main_process:
            self.accelerator.init_trackers(kind.NAME, config=public_args(args, scalars_only=True))

    def _csv(self, name: str, row: dict) -> CSVLog:
        return CSVLog(os.path.join(self.folder, name), list(row), self.resume_step)

    def metric_row(self, step: int, epoch: int, values: Dict[str, float]) -> None:
        self.accelerator.log(values, step=step)
        if self.accelerator.is_main_process:
            row = {"step": step, "epoch": epoch, **values, "wall_s": round(time.time() - self.started, 3)}
            self.metrics = self.metrics or self._csv("metrics.csv", row)
            self.metrics.write(row)

    def validation_result(self, step: int, sheet: Image.Image, values: Dict[str, float]) -> None:
        os.makedirs(self.grids, exist_ok=True)
        sheet.save(os.path.join(self.grids, f"step-{step:07d}.png"))
        if self.kind.args.logger == "tensorboard":
            writer = self.accelerator.get_tracker("tensorboard", unwrap=True)
            writer.add_image("validation", np.asarray(sheet), step, dataformats="HWC")
        if values:
            self.accelerator.log(values, step=step)
        if values and self.kind.VALIDATION_LOG:
            row = {"step": step, **values}
            self.validation = self.validation or self._csv(self.kind.VALIDATION_LOG, row)
            self.validation.write(row)


def _other_metrics(values: Dict[str, float], kind: ModelKind) -> str:
    """The logged numbers beside the losses, for the message of a NaN stop."""
    peaks = [f"largest {label} since the last log: {values[name]:.4g}" for name, label in kind.PEAK_METRICS.items()]
    rest = [f"{name} {value:.4g}" for name, value in values.items() if name not in kind.LOSSES + tuple(kind.PEAK_METRICS)]
    return "; ".join(peaks + rest)


def snapshot_folder(output_dir: str, step: int) -> str:
    """Where the snapshot of ``step`` is saved (``--snapshot_steps``)."""
    return os.path.join(output_dir, "snapshots", f"step-{step:07d}")


def save_model_folder(
    kind, view, plan, batch_record, step: int, started: float, validation, folder: str, repo_id=None, final: bool = False
) -> None:
    """The model as it is at ``step`` (the kind's weights to ship; ``final``: its ``final_pipeline``) with its card,
    metrics and training arguments: the final save and every snapshot are the same kind of folder. The card counts the
    passes over the data step by step in epochs of the batch each step took (``batch_record``, ``batch_history``'s; whole
    epochs as a whole number, an unfinished one to two decimals: 30 steps of a 33-step epoch are 0.91) and shows
    ``validation`` only when it was measured at ``step`` (a snapshot between validations shows none)."""
    args = kind.args
    ends = [later["from_step"] for later in batch_record[1:]] + [step]
    passes = round(
        sum(max(min(end, step) - b["from_step"], 0) / b["steps_per_epoch"] for b, end in zip(batch_record, ends)), 2
    )
    epochs = int(passes) if passes == int(passes) else passes
    info = {**run_info(args, view, kind.accelerator, step, epochs, time.time() - started), **kind.training_info(final)}
    if len(batch_record) > 1:  # the batch changed at a resume
        info["batch_size"] = ", then ".join(f"{b['images_per_step']} from step {b['from_step']}" for b in batch_record)
    pipeline = kind.final_pipeline() if final else kind.pipeline()
    hub.save_model(pipeline, folder, training_info=info, metrics=kind.card_metrics(validation), repo_id=repo_id)
    write_training_args(args, folder)


def hub_repo_id(args) -> str:
    """The Hub repository a run is pushed to (``--push_to_hub``): ``--hub_model_id``, else the output folder's name."""
    return args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))


def push_run(args) -> None:
    """Upload the run's saved folder to ``hub_repo_id(args)`` and log where."""
    url = hub.push_folder(args.output_dir, hub_repo_id(args), token=args.hub_token, private=args.hub_private_repo)
    logger.info(f"Uploaded to {url}")


def finished_here(output_dir: str, resume_path: str, step: int, plan) -> bool:
    """Whether resuming ``resume_path`` at ``step`` has nothing to train and its own run's final model is saved:
    the checkpoint is one of ``output_dir``'s, and the model saved there was trained to ``step``, its last."""
    if step < plan.max_train_steps or os.path.dirname(os.path.abspath(resume_path)) != os.path.abspath(output_dir):
        return False
    try:
        with open(os.path.join(output_dir, "model_index.json")) as f:
            return int(json.load(f)["training_info"]["steps"]) == step
    except (OSError, ValueError, KeyError, TypeError):
        return False


def batch_history(args, accelerator, plan, resume_path: Optional[str], step: int) -> List[Dict[str, int]]:
    """The batches the run's steps took, oldest first, as ``{"from_step", "images_per_step", "steps_per_epoch"}``
    (what the checkpoints record and the card counts its epochs by): the resumed checkpoint's, and this run's batch
    from ``step`` on where it differs (another ``--train_batch_size`` or number of processes), which is logged."""
    now = {
        "from_step": 0,
        "images_per_step": args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps,
        "steps_per_epoch": plan.steps_per_epoch,
    }
    saved = checkpoint_batches(resume_path) if resume_path else None
    if saved is None:
        if resume_path:
            logger.info(f"{resume_path} predates the record of a run's batches: the card counts its steps as this batch's.")
        return [now]
    last = saved[-1]
    if (last["images_per_step"], last["steps_per_epoch"]) == (now["images_per_step"], now["steps_per_epoch"]):
        return saved
    length = (
        f"--max_train_steps {args.max_train_steps}" if args.max_train_steps
        else f"--num_epochs {args.num_epochs}, counted in steps of the new batch"
    )
    logger.warning(
        f"The batch changes at this resume: {last['images_per_step']} images a step to step {step}, "
        f"{now['images_per_step']} from here (--train_batch_size {args.train_batch_size} x {accelerator.num_processes} "
        f"process(es) x {args.gradient_accumulation_steps} accumulation steps); the learning rate is not rescaled, and "
        f"the run ends at step {plan.max_train_steps} ({length}). The card counts the epochs by each step's batch."
    )
    return saved + [{**now, "from_step": step}]


def train(args, kind_class) -> str:
    """Train the model kind ``kind_class`` as ``args`` say (``args.parse_training_args``); return the folder holding
    the saved model."""
    accelerator = make_accelerator(args)
    if args.seed is not None:
        set_seed(args.seed)
    resume_path = find_checkpoint(args.output_dir, args.resume_from_checkpoint, accelerator)  # before the build
    refuse_to_overwrite(args.output_dir, args.resume_from_checkpoint, resume_path)

    view, batches = load_training_batches(accelerator, args, args.mask_names)
    if args.class_conditional and not view.labelled:
        raise ValueError(
            f"--class_conditional: no image of {args.dataset} has a PM / non-PM label, so the model would learn no "
            "class and its card would offer labels it never saw. Leave the flag out for an unconditional model, or "
            "give the labels (build_dataset.py --labels FILE)."
        )
    plan = EpochPlan.for_run(batches, args)
    if args.compile_cache:  # before the first compiled call, which is the first step's
        load_compile_cache(args.compile_cache)
    kind = seeded_build(args.seed, lambda: kind_class(args, accelerator, view, plan), args.data_seed)
    flags = model_flags(args, kind.MODEL_FLAGS + kind.OPTIMIZER_FLAGS + kind.LOSS_FLAGS + kind.DATA_FLAGS)  # in every checkpoint, equal on resume
    flags.update(kind.data_settings())
    saved_objects = checkpoint_objects(kind)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    logger.info(
        f"{len(view)} samples at {args.resolution} px, masks {', '.join(args.mask_names) or 'none'}; "
        f"{plan.max_train_steps} steps ({plan.num_epochs} epochs of {plan.steps_per_epoch}), batch "
        f"{args.train_batch_size} x {accelerator.num_processes} process(es). {kind.describe()}"
    )

    global_step = 0
    if resume_path:
        global_step = load_checkpoint(
            accelerator, resume_path, flags, saved_objects, kind.resume_comparable, shaping=kind.MODEL_FLAGS
        )
        logger.info(f"Resumed from {resume_path} at step {global_step}")
        kind.check_resumed(global_step)
        if finished_here(args.output_dir, resume_path, global_step, plan):
            logger.info(  # a requeued job: saving again would only rewrite the card and reset metrics.json
                f"{args.output_dir} is finished: its saved model was trained to step {global_step} and "
                f"--max_train_steps is {plan.max_train_steps}; nothing to train (raise --max_train_steps to go on)."
            )
            if args.push_to_hub and accelerator.is_main_process:  # the upload that failed the first time, say
                push_run(args)
            accelerator.end_training()
            return args.output_dir
    elif args.resume_from_checkpoint:
        logger.info(f"No checkpoint in {args.output_dir} yet; starting from scratch.")
    batch_record = batch_history(args, accelerator, plan, resume_path, global_step)
    logs = RunLogs(kind, global_step if resume_path else None)
    post_hoc = getattr(kind, "post_hoc_ema", None)  # ema-pytorch's PostHocEMA, where the kind keeps one
    if post_hoc is not None and accelerator.is_main_process:
        removed = start_snapshots(args.output_dir, global_step, args.post_hoc_ema_sigma_rels)
        if removed:
            logger.info(f"Removed {len(removed)} post-hoc EMA snapshot(s) newer than step {global_step}: {removed}")

    def validate(step: int) -> Dict[str, float]:
        sheet, values = kind.validate(step)
        logs.validation_result(step, sheet, values)
        return values

    progress = tqdm(
        total=plan.max_train_steps, initial=global_step, desc="Steps", disable=not accelerator.is_local_main_process
    )
    meter, validation, validated_at = MetricMeter(kind.PEAK_METRICS), {}, None
    first_step = global_step + 1
    for epoch, epoch_batches in plan.epochs(batches, global_step):
        kind.train_mode()
        for batch in epoch_batches:
            if global_step >= plan.max_train_steps:
                break
            meter.add(kind.step(batch))
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            progress.update(1)
            if args.compile_cache and global_step == first_step and accelerator.is_main_process:
                save_compile_cache(args.compile_cache)  # the training's graphs, kept by a run stopped before its end
            last = global_step == plan.max_train_steps
            save_now = global_step % args.checkpointing_steps == 0 or last
            validate_now = global_step % args.validation_steps == 0 or last
            if global_step % args.logging_steps == 0 or save_now or validate_now:
                values = meter.read(accelerator)  # one device sync per log interval; a NaN survives the mean
                losses = sum(values[name] for name in kind.LOSSES)
                check_finite(losses, global_step, _other_metrics(values, kind))
                values.update(kind.schedule_logs())
                progress.set_postfix({name: f"{values[name]:.4f}" for name in kind.LOSSES}, refresh=False)
                logs.metric_row(global_step, epoch, values)
            # All a step saves comes before its checkpoint: a run killed in between resumes from the previous
            # checkpoint and writes it again (a resume never starts past a snapshot that is missing).
            profiles_due = post_hoc is not None and (last or global_step % args.post_hoc_ema_every == 0)
            if profiles_due and accelerator.is_main_process:
                save_snapshots(post_hoc, args.output_dir, args.post_hoc_ema_sigma_rels)
            if validate_now and accelerator.is_main_process:
                validation, validated_at = validate(global_step), global_step
            if kind.snapshot_due(global_step) and accelerator.is_main_process:
                measured = validation if validated_at == global_step else {}  # not another step's numbers
                save_folder_atomically(
                    partial(save_model_folder, kind, view, plan, batch_record, global_step, logs.started, measured),
                    snapshot_folder(args.output_dir, global_step),
                )
            if save_now:
                save_checkpoint(
                    accelerator, args.output_dir, global_step, args.checkpoints_total_limit, flags, saved_objects,
                    batch_record,
                )
    progress.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if validated_at != global_step:  # resumed at the end: nothing ran, but the card reports a validation
            validation = validate(global_step)
        save_folder_atomically(
            lambda folder: save_model_folder(
                kind, view, plan, batch_record, global_step, logs.started, validation, folder,
                hub_repo_id(args) if args.push_to_hub else None, final=True,
            ),
            args.output_dir,
        )
        logger.info(f"Saved the model and its card to {args.output_dir}")
        if args.compile_cache:  # again, with the validation's graphs
            save_compile_cache(args.compile_cache)
        if args.push_to_hub:
            push_run(args)
    accelerator.end_training()
    return args.output_dir
