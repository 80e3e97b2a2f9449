"""How the scripts end on a user's mistake: one line naming the problem and the fix, not a traceback."""

import os
import sys
from typing import Callable

# What the package raises for bad input (a missing or malformed file, an argument value that cannot work); its
# messages name the file or argument and the fix. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, FloatingPointError)


def run_script(main: Callable, parse_args: Callable):
    """``main(parse_args())``, with a user error turned into ``script.py: error: message`` and exit status 1
    (``FUNDUS_DEBUG=1`` keeps the traceback)."""
    args = parse_args()
    try:
        return main(args)
    except USER_ERRORS as err:
        if os.environ.get("FUNDUS_DEBUG"):
            raise
        print(f"{os.path.basename(sys.argv[0])}: error: {err}", file=sys.stderr)
        print("(FUNDUS_DEBUG=1 shows the traceback)", file=sys.stderr)
        raise SystemExit(1) from None
