"""The command-line scripts, installed as the package ``fundus_diffusion.scripts`` and as console commands.

A pip install has no ``scripts/`` folder, so each script is also a command on the ``PATH`` (``setup.py``'s
``console_scripts``): ``fundus-train-ddpm ...`` runs exactly what ``python scripts/train_ddpm.py ...`` runs, the
script's ``__main__`` block, and ``python -m fundus_diffusion.scripts.train_ddpm`` (also under
``accelerate launch -m``) does the same. Errors and ``--help`` name the command that was typed.
"""

import runpy
from pathlib import Path
from typing import Callable


def _command(script: str) -> Callable[[], None]:
    """The console command for ``scripts/<script>.py``: its ``__main__`` block, with the command line as typed."""

    def run() -> None:
        runpy.run_module(f"{__name__}.{script}", run_name="__main__")

    run.__doc__ = f"Run scripts/{script}.py (its ``__main__`` block) with the command's arguments."
    return run


# fundus_diffusion.scripts:<script>_command for each script of this folder (the console_scripts of setup.py); the
# suffix keeps them apart from the submodules of the same name.
SCRIPTS = sorted(path.stem for path in Path(__file__).parent.glob("*.py") if path.stem != "__init__")
globals().update({f"{script}_command": _command(script) for script in SCRIPTS})
