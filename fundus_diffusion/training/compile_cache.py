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
    when there is no such file yet (the first run writes it) or it could not be used (then every network is compiled
    afresh, and the run writes a new file in its place): a cache never stops a training."""
    if not os.path.isfile(path):
        logger.info(f"--compile_cache {path}: no file yet; this run compiles afresh and writes it.")
        return None
    try:
        with open(path, "rb") as f:
            info = torch.compiler.load_cache_artifacts(f.read())
    except Exception as err:  # torch's own failure types while filling its caches vary between versions
        info, why = None, f"{type(err).__name__}: {err}"
    else:
        why = "written by another torch version, or damaged"
    if info is None:
        logger.warning(f"--compile_cache {path}: not usable ({why}); compiling afresh, and this run replaces it.")
        return None
    return reported(path, info, "loaded")


def save_compile_cache(path: str) -> Optional[int]:
    """Write to ``path`` what this process has compiled so far, or taken from the cache and used (artifacts it loaded
    but never used are not kept: the last run to write the file decides what it holds), through a temporary file so
    that a run killed meanwhile leaves the previous file whole; return the number of artifacts, or None when there was
    nothing to write or it could not be written (a warning; the training goes on)."""
    try:
        saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            logger.info(f"--compile_cache {path}: nothing to write (nothing compiled, or torch could not pickle it).")
            return None
        data, info = saved
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        temporary = f"{path}.tmp-{os.getpid()}"
        with open(temporary, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except OSError as err:
        logger.warning(f"--compile_cache {path}: could not be written ({err}); the next run compiles afresh.")
        return None
    return reported(path, info, f"saved ({len(data) / 2**20:.1f} MiB)")


def reported(path: str, info, what: str) -> int:
    """Log how many artifacts ``info`` (torch's ``CacheInfo``) names, and what was done with them; return the count."""
    count = sum(len(keys) for keys in info.artifacts.values())
    logger.info(f"--compile_cache {path}: {count} compiled artifact(s) {what}.")
    return count
