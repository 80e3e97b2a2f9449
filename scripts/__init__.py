"""The command-line scripts, installed as the package ``fundus_diffusion.scripts`` and as console commands.

A pip install has no ``scripts/`` folder, so each script is also a command on the ``PATH`` (``setup.py``'s
``console_scripts``): ``fundus-train-ddpm ...`` runs exactly what ``python scripts/train_ddpm.py ...`` runs, the
script's ``__main__`` block, and ``python -m fundus_diffusion.scripts.train_ddpm`` (also under
``accelerate launch -m``) does the same. Errors and ``--help`` name the command that was typed.
"""

import os
import runpy
import sys
from pathlib import Path
from typing import Callable

# The optional packages the commands import, and the extra of setup.py that brings each: a command run without one
# says so in one line (the package, its extra, the pip command), not with a traceback.
EXTRA_OF_PACKAGE = {
    "accelerate": "train", "datasets": "train", "ema_pytorch": "train", "tensorboard": "train", "openpyxl": "train",
    "torchmetrics": "eval", "scipy": "eval", "matplotlib": "eval",
}  # fmt: skip


def missing_extra_message(err: ModuleNotFoundError, command: str):
    """The one-line error for ``err`` if it is one of ``EXTRA_OF_PACKAGE``'s packages missing, else None. The fix
    installs both extras: every command runs with them (fundus-evaluate needs the two)."""
    package = (err.name or "").split(".")[0]
    if package not in EXTRA_OF_PACKAGE:
        return None
    return (
        f"{command}: error: this command needs the package {package!r} (the {EXTRA_OF_PACKAGE[package]} extra), "
        'which is not installed. Fix: pip install "fundus-diffusion[train,eval]" (from a checkout: '
        'pip install ".[train,eval]").'
    )


def _command(script: str) -> Callable[[], None]:
    """The console command for ``scripts/<script>.py``: its ``__main__`` block, with the command line as typed."""

    def run() -> None:
        try:
            runpy.run_module(f"{__name__}.{script}", run_name="__main__")
        except ModuleNotFoundError as err:
            message = missing_extra_message(err, os.path.basename(sys.argv[0]))
            if message is None:
                raise
            sys.exit(message)

    run.__doc__ = f"Run scripts/{script}.py (its ``__main__`` block) with the command's arguments."
    return run


# fundus_diffusion.scripts:<script>_command for each script of this folder (the console_scripts of setup.py); the
# suffix keeps them apart from the submodules of the same name.
SCRIPTS = sorted(path.stem for path in Path(__file__).parent.glob("*.py") if path.stem != "__init__")
globals().update({f"{script}_command": _command(script) for script in SCRIPTS})
