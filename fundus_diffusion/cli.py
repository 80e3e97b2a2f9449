"""How every script starts and ends: CPU threads chosen for the machine's free cores, and a user's mistake ended
with one line naming the problem and the fix, not a traceback (also under ``accelerate launch``)."""

import argparse
import logging
import math
import os
import sys
import traceback
from typing import Callable

import torch

from .training.args import RenamedFlag

logger = logging.getLogger(__name__)

# The kinds of error this project raises for bad input (a missing or malformed file, a flag value that cannot work,
# a NaN stop); their messages name the file or flag and the fix.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, FloatingPointError)
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
OWN_CODE = (PACKAGE_DIR,) + tuple(
    os.path.join(os.path.dirname(PACKAGE_DIR), name) for name in ("pipelines", "scripts", "benchmarks")
)


def raised_by_project(err: BaseException) -> bool:
    """Whether the innermost Python frame of ``err`` is this project's code: a ValueError from inside torch or numpy
    is a bug, and keeps its traceback."""
    frames = traceback.extract_tb(err.__traceback__)
    filename = os.path.abspath(frames[-1].filename) if frames else ""
    return any(filename.startswith(folder + os.sep) for folder in OWN_CODE)


class _PushToHub(argparse.Action):
    """``--push_to_hub`` switches the upload on; the earlier ``--push_to_hub REPO`` still works, with a warning."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.push_to_hub = True
        if values is not None:
            print(f"{parser.prog}: warning: --push_to_hub REPO is deprecated; use --push_to_hub --hub_model_id REPO.", file=sys.stderr)
            namespace.hub_model_id = values


def add_dataset_push_args(parser: argparse.ArgumentParser) -> None:
    """The trainers' push flags (``--push_to_hub``, ``--hub_model_id``, ``--hub_private_repo``, ``--hub_token``, as
    in diffusers' scripts) for the scripts that upload a dataset; ``--private`` and ``--push_to_hub REPO`` of the
    previous release still work for one release. ``dataset_repo_id`` turns them into the repository id."""
    hub = parser.add_argument_group("hub (the same flags as the trainers')")
    hub.add_argument("--push_to_hub", nargs="?", default=False, metavar="REPO", action=_PushToHub,
                     help="Upload the dataset and its card to the Hub.")  # fmt: skip
    hub.add_argument("--hub_model_id", default=None, help="The Hub (dataset) repository id; default: the name of --output_dir.")
    hub.add_argument("--hub_private_repo", action="store_true", help="Create the Hub repository as private.")
    hub.add_argument("--private", dest="hub_private_repo", action=RenamedFlag, nargs=0, const=True, new="--hub_private_repo")
    hub.add_argument("--hub_token", default=None, help="Default: the token saved by `hf auth login`.")


def dataset_repo_id(args: argparse.Namespace) -> str:
    """The repository a dataset script uploads to: ``--hub_model_id``, else the name of ``--output_dir``."""
    return args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))


def load_average() -> float:
    """The machine's load: the 1-minute average of runnable processes (0 where the system does not say)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def free_cpu_cores() -> int:
    """The cores this process may run on (its affinity, a container's cpuset) minus ``load_average``, at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, cores - math.floor(load_average())))


def choose_cpu_threads() -> int:
    """Set torch's intra-op threads to the free cores, unless ``OMP_NUM_THREADS`` says otherwise; return the count.

    torch takes every core by default, and threads that find their cores busy wait on each other: sampling the tiny
    UNet on this project's 2-core machine while other jobs ran took 20.8 s with 2 threads against 1.2 s with one,
    and the ``paper`` UNet at 64 px 35.2 s against 8.7 s (``benchmarks/cpu_threads.py``). On an idle machine the
    free cores are all of them, torch's own default. ``OMP_NUM_THREADS`` (which torch reads itself, and which
    ``accelerate launch`` / torchrun set per process) always wins.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    threads = min(free_cpu_cores(), torch.get_num_threads())
    if threads != torch.get_num_threads():
        logger.info(
            f"Using {threads} CPU threads of {torch.get_num_threads()}: the machine's 1-minute load average, "
            f"{load_average():.1f}, counts the other cores as busy (it lags: work that ended in the last minute still "
            "counts); set OMP_NUM_THREADS to choose."
        )
        torch.set_num_threads(threads)
    return threads


def run_script(main: Callable, parse_args: Callable):
    """``main(parse_args())`` with INFO logging to stderr and CPU threads chosen (``choose_cpu_threads``), a user error
    turned into ``script.py: error: message`` and exit status 1 (printed by the first process only;
    ``FUNDUS_DEBUG=1`` keeps the traceback; under ``accelerate launch`` the line also names ``--quiet``)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("accelerate.checkpointing").setLevel(logging.WARNING)  # seven lines per checkpoint otherwise
    args = parse_args()
    choose_cpu_threads()
    try:
        return main(args)
    except USER_ERRORS as err:
        if os.environ.get("FUNDUS_DEBUG") or not raised_by_project(err):
            raise
        if os.environ.get("RANK", "0") == "0":
            print(f"{os.path.basename(sys.argv[0])}: error: {err}", file=sys.stderr)
            print(f"(FUNDUS_DEBUG=1 shows the traceback{LAUNCHER_HINT if launched_by_accelerate() else ''})", file=sys.stderr)
        raise SystemExit(1) from None


# accelerate's launcher raises its own traceback for any non-zero exit of the script unless given --quiet, and
# nothing the launched script does can stop it (exiting 0 would hide the failure from shells and CI).
LAUNCHER_HINT = "; `accelerate launch --quiet ...` leaves out the launcher's traceback that may follow"


def launched_by_accelerate() -> bool:
    """Whether ``accelerate launch`` started this process (its launchers set ACCELERATE_DYNAMO_BACKEND)."""
    return "ACCELERATE_DYNAMO_BACKEND" in os.environ
