"""The one flag vocabulary of every trainer (names follow diffusers' example scripts) and how a run's flags are parsed.

A model kind (``ddpm.DDPMKind``, ``dcgan.DCGANKind``) adds its own flags, its defaults and its presets;
``parse_training_args`` applies a ``--preset`` under the flags given explicitly, keeps the spellings of earlier
releases working for one release (with a deprecation message), and checks the combination.
"""

import argparse
import copy
import difflib
import json
import math
import os
import sys
import tempfile
from typing import Optional, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed

from ..data.schema import parse_mask_names
from ..model_cards import portable_name


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


# Set on the namespace of the first parse that a preset function reads, so that flags there do not speak twice.
QUIET_PARSE = "_first_parse_for_preset"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` with the description's lines as written and each flag's default appended, where it has one and its
    help does not already give it (a default of None, False or empty means "not set" and is left unsaid)."""

    @staticmethod
    def _unset(action) -> bool:
        return action.default is None or action.default is False or action.default in ("", [], argparse.SUPPRESS)

    def _format_action(self, action):
        if action.help is None and action.option_strings and not self._unset(action):  # argparse skips help-less flags
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or self._unset(action) or "default" in text.lower():
            return text
        return f"{text} (default: %(default)s)"


class CommandParser(argparse.ArgumentParser):
    """Every script's parser: ``--help`` as ``HelpFormatter`` writes it; a command line refused while it is read ends
    with one line (not the usage text of every flag before it) that points at ``--help``, and an unknown flag is
    answered with the closest known ones (``--epochs``: did you mean --num_epochs?); a flag's prefix is no flag, so
    that a flag added later cannot change what an abbreviation meant."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # `--num_sample` is refused with a hint, not read as --num_samples
        super().__init__(*args, **kwargs)

    def error(self, message):
        if message.startswith("unrecognized arguments:"):
            known = [flag for action in self._actions for flag in action.option_strings if flag.startswith("--")]
            given = [word.split("=")[0] for word in message.split(":", 1)[1].split() if word.startswith("--")]
            hints = [
                f"{flag}: did you mean {' or '.join(close)}?"
                for flag in given
                if (close := difflib.get_close_matches(flag, known, n=2, cutoff=0.6))
            ]
            message += "".join(f" ({hint})" for hint in hints)
        full_stop = "" if message.endswith(".") else "."
        self.exit(2, f"{self.prog}: error: {message}{full_stop} All flags: {self.prog} --help\n")


class RenamedFlag(argparse.Action):
    """An earlier release's spelling of a flag: sets the new one (and ``also``) and says so once on stderr."""

    def __init__(self, option_strings, dest, new: str, also: Optional[dict] = None, **kwargs):
        self.new, self.also = new, also or {}
        super().__init__(option_strings, dest, help=f"Deprecated: use {new}.", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if not getattr(namespace, QUIET_PARSE, False):  # a preset's first look at the flags says nothing
            print(f"{parser.prog}: warning: {option_string} is deprecated; use {self.new}.", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        for name, value in self.also.items():
            setattr(namespace, name, value)


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags every model kind takes; each kind sets its own defaults for them with ``parser.set_defaults``."""
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        default="phantom",
        help="A folder saved by fundus-build-dataset, a raw PALM/ADAM/generic folder, a Hub dataset id, 'phantom' "
        "or 'phantom:N' (N built-in phantoms).",
    )
    data.add_argument("--resolution", type=int, default=None, help="Square training resolution in pixels.")
    data.add_argument(
        "--masks",
        default="disc",
        help="Mask channels after RGB, in this order, named as the dataset's masks: 'disc' (4 channels), 'disc,cup' "
        "(5), 'disc,atrophy,detachment' (6) or 'none'.",
    )
    data.add_argument(
        "--data_on_device",
        choices=["auto", "yes", "no"],
        default="auto",
        help="Keep the whole uint8 training array on the GPU and batch there ('auto': on CUDA when it takes under a "
        "quarter of free memory); 'no': a DataLoader over the memory-mapped cache.",
    )
    data.add_argument("--dataloader_num_workers", type=int, default=0, help="DataLoader workers (--data_on_device no).")
    data.add_argument(
        "--random_flip",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Flip half the training images left-right each epoch (masks with them; drawn from the data seed). "
        "--no-random_flip shows every image as photographed, for data whose sides differ in what a sample should "
        "show (a camera's number stamp, text), at the cost of the mirrored views; the epochs' order stays the same.",
    )
    data.add_argument(
        "--antialiased_masks",
        action="store_true",
        help="Resample the masks as the photographs (Lanczos) when framing them for training: edges of grey levels "
        "instead of a pixel staircase. Generated discs carried pixel-scale speckle on their masks' edges (RESULTS.md "
        "session 34); not yet trained on real data. Samples' masks are read back as channel > 0 either way.",
    )
    data.add_argument(
        "--training_cache_dir",
        default=None,
        help="Where the training arrays preprocessed per resolution are cached (default $FUNDUS_CACHE or "
        "~/.cache/fundus_diffusion). Not diffusers' --cache_dir, the Hub download cache.",
    )
    data.add_argument("--cache_dir", dest="training_cache_dir", action=RenamedFlag, new="--training_cache_dir")

    run = parser.add_argument_group("run")
    run.add_argument("--output_dir", required=True, help="Checkpoints, validation grids, logs and the final model.")
    run.add_argument(
        "--seed", type=int, default=None, help="Seeds the initial weights, and the rest unless --data_seed."
    )
    run.add_argument(
        "--data_seed",
        type=int,
        default=None,
        help="Seeds the data order, noise, timesteps and latents (default: --seed): same weights, other randomness.",
    )
    run.add_argument("--train_batch_size", type=int, default=None, help="Per-device batch size.")
    run.add_argument("--num_epochs", type=int, default=None)
    run.add_argument(
        "--max_train_steps", type=int, default=None, help="Optimizer steps in total; overrides --num_epochs."
    )
    run.add_argument("--gradient_accumulation_steps", type=int, default=1)
    run.add_argument(
        "--mixed_precision",
        choices=["no", "fp16", "bf16"],
        default=None,
        help="Default: the value chosen with `accelerate config` (bf16 needs an Ampere or newer GPU).",
    )

    model = parser.add_argument_group("conditioning")
    model.add_argument(
        "--class_conditional",
        action=argparse.BooleanOptionalAction,
        help="Condition on PM / non-PM (unknown labels train as the null class).",
    )
    model.add_argument(
        "--class_dropout_prob",
        type=float,
        default=0.1,
        help="Share of labels trained as the null class, so that sampling without labels (and classifier-free "
        "guidance) works.",
    )
    model.add_argument("--unconditional", dest="class_conditional", action=RenamedFlag, nargs=0, const=False,
                       new="--no-class_conditional")  # fmt: skip
    model.add_argument("--label_dropout", dest="class_dropout_prob", type=float, action=RenamedFlag,
                       new="--class_dropout_prob")  # fmt: skip

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--learning_rate", type=float)
    opt.add_argument("--adam_beta1", type=float, default=0.9)
    opt.add_argument("--adam_beta2", type=float, default=0.999)
    opt.add_argument(
        "--use_ema",
        action=argparse.BooleanOptionalAction,
        help="Keep an exponential moving average of the weights (ema-pytorch; it also averages BatchNorm statistics) "
        "and save that as the model.",
    )
    opt.add_argument(
        "--ema_max_decay", type=float, default=0.9999, help="Largest EMA decay, reached after the warm-up."
    )
    opt.add_argument("--ema_power", type=float, default=2 / 3, help="EMA warm-up: decay = 1 - (1 + step) ** -power.")
    opt.add_argument("--ema_update_after_step", type=int, default=0, help="Copy the weights until this step.")
    opt.add_argument("--ema_decay", dest="ema_max_decay", type=float, action=RenamedFlag, new="--ema_max_decay")
    opt.add_argument("--ema_beta", dest="ema_max_decay", type=float, action=RenamedFlag,
                     new="--use_ema --ema_max_decay", also={"use_ema": True})  # fmt: skip

    perf = parser.add_argument_group("performance")
    perf.add_argument("--compile", action="store_true", help="torch.compile the networks (a minute or two of warm-up).")
    perf.add_argument(
        "--compile_mode",
        default="default",
        choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune"],
        help="torch.compile mode with --compile: reduce-overhead replays CUDA graphs (for hosts whose CPU cannot keep "
        "up with the GPU; no gradient accumulation; untried on several GPUs); the max-autotune modes search kernels "
        "for many minutes.",
    )
    perf.add_argument(
        "--compile_cache",
        default=None,
        metavar="FILE",
        help="With --compile: load torch.compile's portable cache artifacts from FILE before compiling, and write "
        "what this run compiled there after its first step and at its end, so a run on a fresh machine with the same "
        "torch and GPU kind need not compile again what matches (benchmarks/compile_cache.py measures the saving). "
        "Only a file your own runs wrote: it holds compiled code that runs. Not inside --output_dir (uploaded).",
    )
    perf.add_argument(
        "--channels_last",
        action="store_true",
        help="NHWC memory format. Slower in eager mode on CUDA where GroupNorm has no NHWC kernel; try it with --compile.",
    )
    perf.add_argument("--torch_compile", dest="compile", action=RenamedFlag, nargs=0, const=True, new="--compile")

    log = parser.add_argument_group("checkpoints, validation and logging")
    log.add_argument("--checkpointing_steps", type=int, default=500, help="Save a resumable checkpoint every N steps.")
    log.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep only the newest N checkpoints.")
    log.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="'latest', a checkpoint folder, or a checkpoint-N name in --output_dir.",
    )
    log.add_argument(
        "--validation_steps", type=int, default=500, help="Write a fixed-seed sample grid (validation/) every N steps."
    )
    log.add_argument("--num_validation_images", type=int, default=16, help="Samples in each validation grid.")
    log.add_argument("--num_fixed_samples", dest="num_validation_images", type=int, action=RenamedFlag,
                     new="--num_validation_images")  # fmt: skip
    log.add_argument(
        "--logging_steps", type=int, default=10, help="Log (and check the losses are finite) every N steps."
    )
    log.add_argument(
        "--snapshot_steps",
        type=int,
        default=None,
        help="Also save the model as OUTPUT_DIR/snapshots/step-NNNNNNN (the step in 7 digits) every N steps (quality-against-time curves).",
    )
    log.add_argument("--logger", choices=["tensorboard", "none"], default="tensorboard")
    log.add_argument(
        "--logging_dir", default="logs", help="TensorBoard folder and metrics CSVs, relative to --output_dir."
    )

    hub = parser.add_argument_group("hub")
    hub.add_argument("--push_to_hub", action="store_true", help="Upload the final model (not the checkpoints).")
    hub.add_argument("--hub_model_id", default=None, help="Repository id; default: the name of --output_dir.")
    hub.add_argument("--hub_token", default=None, help="Default: the token saved by `hf auth login`.")
    hub.add_argument("--hub_private_repo", action="store_true", help="Create the Hub repository as private.")
    return parser


def parse_training_args(kind, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse a trainer's flags: ``kind.DEFAULTS``, then ``kind.PRESETS[--preset]`` (a dict, or a function of the
    first parse's flags giving one), then the flags given explicitly; then ``kind.check_args``.

    Also sets ``args.mask_names``.
    """
    preset_parser = CommandParser(add_help=False)
    preset_parser.add_argument(
        "--preset", choices=sorted(kind.PRESETS), default=kind.DEFAULT_PRESET, help=kind.PRESET_HELP
    )
    preset = preset_parser.parse_known_args(argv)[0].preset
    parser = CommandParser(description=kind.DESCRIPTION, parents=[preset_parser])
    add_common_args(parser)
    kind.add_args(parser)
    parser.set_defaults(**kind.DEFAULTS)
    if preset is not None:
        values = kind.PRESETS[preset]
        if callable(values):
            first = list(sys.argv[1:] if argv is None else argv)
            if any(flag in ("-h", "--help") for flag in first):  # --help shows the defaults the preset gives
                first = [flag for flag in first if flag not in ("-h", "--help")]
                if not any(flag == "--output_dir" or flag.startswith("--output_dir=") for flag in first):
                    first += ["--output_dir", "unused"]  # required, and no part of any preset
            try:  # a preset that reads the flags (e.g. the masks) refuses them as the parse below would
                values = values(parser.parse_args(first, namespace=argparse.Namespace(**{QUIET_PARSE: True})))
            except ValueError as err:
                parser.error(str(err))
        parser.set_defaults(**values)
    args = parser.parse_args(argv)
    if isinstance(args.masks, str) and not args.masks.strip():
        parser.error("--masks is empty (an unset shell variable?): name the masks, e.g. --masks disc, or give --masks none for an image-only model.")
    try:
        args.mask_names = parse_mask_names(args.masks)
    except ValueError as err:
        parser.error(str(err))
    if args.max_train_steps is None and args.num_epochs is None:
        parser.error("Give --max_train_steps or --num_epochs.")
    if args.compile and args.compile_mode == "reduce-overhead" and args.gradient_accumulation_steps > 1:
        # A replayed backward graph writes the gradients into its own buffers: accumulating over micro-batches would
        # overwrite them (pytorch/pytorch#169545).
        parser.error("--compile_mode reduce-overhead cannot accumulate gradients: use --gradient_accumulation_steps 1.")
    if args.compile_cache:
        check_compile_cache(parser, args)
    if not 0.0 <= args.class_dropout_prob < 1.0:
        parser.error("--class_dropout_prob must be in [0, 1).")
    check_common_args(parser, args)
    kind.check_args(parser, args)
    return args


# Far above any fundus model here (256-512 px): 4096 px would already cache 64 MiB per 4-channel sample.
MAX_RESOLUTION = 2048
_POSITIVE_FLAGS = (
    "resolution", "train_batch_size", "num_epochs", "max_train_steps", "gradient_accumulation_steps",
    "checkpointing_steps", "validation_steps", "logging_steps", "snapshot_steps", "checkpoints_total_limit",
    "num_validation_images",
)  # fmt: skip


def check_common_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse, before anything is loaded, the values of the common flags that cannot work: counts and sizes below 1,
    an absurd ``--resolution``, and an ``--output_dir`` that is a file or cannot be written."""
    for name in _POSITIVE_FLAGS:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            hint = " (leave it out to train --num_epochs)" if name == "max_train_steps" else ""
            parser.error(f"--{name} must be a positive number; got {value}{hint}.")
    if args.dataloader_num_workers < 0:
        parser.error(f"--dataloader_num_workers must be 0 or more; got {args.dataloader_num_workers}.")
    if args.resolution is None:
        parser.error("Give --resolution (a square size in pixels, e.g. 64 or 256).")
    if args.resolution > MAX_RESOLUTION:
        parser.error(
            f"--resolution {args.resolution} is above the {MAX_RESOLUTION} px this package trains at (fundus models "
            "here use 64-512 px; the training cache holds every sample at this size). Use e.g. --resolution 256."
        )
    problem = output_dir_problem(args.output_dir)
    if problem:
        parser.error(f"--output_dir {args.output_dir}: {problem}")


def check_compile_cache(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a ``--compile_cache`` without ``--compile`` or inside ``--output_dir`` (uploaded whole by
    ``--push_to_hub``: the file holds compiled code and this machine's paths); expand its ``~``."""
    if not args.compile:
        parser.error("--compile_cache keeps what torch.compile compiled: add --compile, or leave --compile_cache out.")
    args.compile_cache = os.path.expanduser(args.compile_cache)
    cache, output_dir = os.path.abspath(args.compile_cache), os.path.abspath(os.path.expanduser(args.output_dir))
    if os.path.commonpath([cache, output_dir]) == output_dir:
        parser.error(
            f"--compile_cache {args.compile_cache} is inside --output_dir, which --push_to_hub uploads whole, and the "
            "file holds compiled code and this machine's paths. Put it elsewhere, e.g. "
            "~/.cache/fundus_diffusion/compile_cache.bin."
        )


def output_dir_problem(output_dir: str) -> Optional[str]:
    """Why a run could not write into ``output_dir`` (None when it can): a file in its place, or a folder (itself or
    the nearest existing parent) where no file can be created."""
    path = os.path.abspath(os.path.expanduser(output_dir))
    if os.path.exists(path) and not os.path.isdir(path):
        return "is a file, not a folder. Fix: choose a folder path (or move the file away)."
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is a file, so no folder can be made under it. Fix: choose another --output_dir."
    try:
        probe_writable(existing)
    except OSError as err:
        return (
            f"cannot write into {existing} ({err.strerror or type(err).__name__}). Fix: choose a writable "
            "--output_dir, or make that folder writable."
        )
    return None


def probe_writable(folder: str) -> None:
    """Create and remove a file in ``folder`` (raises ``OSError`` when that is not possible: permissions, a
    read-only file system). Stricter than ``os.access``, which knows nothing of read-only mounts."""
    with tempfile.TemporaryFile(dir=folder, prefix=".write-probe-"):
        pass


def launched_without_gpu() -> bool:
    """Whether ``accelerate launch`` started several processes on a machine without a GPU: accelerate joins them in
    one gloo group only when told ``cpu=True``; otherwise each runs as a lone process."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def make_accelerator(args, **kwargs) -> Accelerator:
    """The ``Accelerator`` the common flags describe (TensorBoard under ``output_dir/logging_dir``)."""
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convolution algorithms once
    elif launched_without_gpu():
        kwargs.setdefault("cpu", True)
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.logger == "none" else args.logger,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
        **kwargs,
    )


def public_args(args, scalars_only: bool = False) -> dict:
    """The run's arguments without the Hub token, for trackers (``scalars_only``) and ``training_args.json``."""
    return {
        k: v
        for k, v in vars(args).items()
        if k != "hub_token" and (not scalars_only or isinstance(v, (int, float, str, bool)))
    }


def model_flags(args, names) -> dict:
    """The run's values of the flags ``names`` that it has (a kind's ``MODEL_FLAGS``: those that define its model)."""
    return {k: getattr(args, k) for k in names if hasattr(args, k)}


PATH_ARGS = ("dataset", "output_dir", "training_cache_dir", "resume_from_checkpoint", "init_from", "compile_cache")


def write_training_args(args, folder: str) -> None:
    """``training_args.json`` beside a saved model: how it was trained, without the Hub token and with local paths
    reduced to their last component (it is uploaded with the model; folder names can carry patient or site names)."""
    values = public_args(args)
    values.update({name: portable_name(values[name]) for name in PATH_ARGS if values.get(name)})
    with open(os.path.join(folder, "training_args.json"), "w") as f:
        json.dump(values, f, indent=2, default=str)


def data_seed(args) -> int:
    """The seed of everything random after the models are built (``--data_seed``, else ``--seed``, else 0)."""
    return next((s for s in (args.data_seed, args.seed) if s is not None), 0)


def seeded_build(seed, build, stream_seed=None):
    """``build()`` the models from ``seed`` alone, then seed each process's own random stream from ``stream_seed``
    (default ``seed``) and its rank.

    The initial weights then do not depend on the number of processes (accelerate's data-loader preparation draws
    from the global generator only when there are several), while the noise, timesteps and latents of the processes
    differ: with one shared stream every GPU would draw the same ones and the effective batch would shrink.
    """
    if seed is not None:
        set_seed(seed)
    built = build()
    stream_seed = seed if stream_seed is None else stream_seed
    if stream_seed is not None:
        set_seed(stream_seed, device_specific=True)
    return built


def check_finite(loss, step: int, detail: str = "") -> None:
    """Raise ``NonFiniteLossError`` if ``loss`` (a tensor or a number) is NaN or infinite; ``detail`` joins the
    message (e.g. the recent gradient norms)."""
    value = float(loss.detach().float().sum()) if hasattr(loss, "detach") else float(loss)
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"The training loss became {value} at or before step {step}{f' ({detail})' if detail else ''}. Stopping "
            "without saving, so the last checkpoint stays good. Try a lower learning rate, bf16 instead of fp16, or "
            "gradient clipping, then --resume_from_checkpoint latest."
        )
