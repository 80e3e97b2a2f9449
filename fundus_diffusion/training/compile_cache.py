"""``--compile_cache``: torch.compile's work carried from one machine to the next.

A compiled run spends its first minute or two tracing the networks and generating and compiling kernels. On the same
machine a later run finds most of that in torch's on-disk caches; on a fresh machine (a cloud instance, a lent GPU)
it starts from nothing. PyTorch's portable cache artifacts (``torch.compiler.save_cache_artifacts`` /
``load_cache_artifacts``, the "mega-cache") pack what this process compiled into one file that a run elsewhere loads
before it compiles, with the same torch version and GPU kind; what does not match is compiled afresh.

The file is a pickle of compiled code that runs when used: load only files your own runs wrote, as torch's own
on-disk caches are. It never goes into a saved model, a checkpoint or an upload.
"""

import os
from typing import Optional

import torch
from accelerate.logging import get_logger

logger = get_logger(__name__)


def load_compile_cache(path: str) -> Optional[int]:
    """Hand the artifacts of ``path`` to torch.compile before anything compiles; return how many it took, or None
    when there is no such file yet (the first run writes it) or torch could not read it (then every network is
    compiled afresh, and the run's end writes a new file in its place)."""
    if not os.path.isfile(path):
        logger.info(f"--compile_cache {path}: no file yet; this run compiles afresh and writes it at its end.")
        return None
    with open(path, "rb") as f:
        info = torch.compiler.load_cache_artifacts(f.read())
    if info is None:
        logger.warning(
            f"--compile_cache {path}: torch could not read this file (written by another torch version, or damaged); "
            "compiling afresh, and this run's end replaces it."
        )
        return None
    count = sum(len(keys) for keys in info.artifacts.values())
    logger.info(f"--compile_cache {path}: {count} compiled artifact(s) loaded.")
    return count


def save_compile_cache(path: str) -> Optional[int]:
    """Write what this process compiled (and loaded) to ``path``, through a temporary file so that a run killed
    meanwhile leaves the previous file whole; return the number of artifacts, or None when nothing was compiled."""
    saved = torch.compiler.save_cache_artifacts()
    if saved is None:
        logger.info(f"--compile_cache {path}: nothing was compiled; the file is left as it was.")
        return None
    data, info = saved
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "wb") as f:
        f.write(data)
    os.replace(temporary, path)
    count = sum(len(keys) for keys in info.artifacts.values())
    logger.info(f"--compile_cache {path}: {count} compiled artifact(s) saved ({len(data) / 2**20:.1f} MiB).")
    return count
