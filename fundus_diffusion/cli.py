"""How the scripts end on a user's mistake: one line naming the problem and the fix, not a traceback."""

import logging
import os
import sys
import traceback
from typing import Callable

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


def run_script(main: Callable, parse_args: Callable):
    """``main(parse_args())`` with INFO logging to stderr, a user error turned into ``script.py: error: message`` and exit status 1
    (printed by the first process only; ``FUNDUS_DEBUG=1`` keeps the traceback)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("accelerate.checkpointing").setLevel(logging.WARNING)  # seven lines per checkpoint otherwise
    args = parse_args()
    try:
        return main(args)
    except USER_ERRORS as err:
        if os.environ.get("FUNDUS_DEBUG") or not raised_by_project(err):
            raise
        if os.environ.get("RANK", "0") == "0":
            print(f"{os.path.basename(sys.argv[0])}: error: {err}", file=sys.stderr)
            print("(FUNDUS_DEBUG=1 shows the traceback)", file=sys.stderr)
        raise SystemExit(1) from None
