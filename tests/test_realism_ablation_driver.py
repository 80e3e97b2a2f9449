"""benchmarks/realism_ablation.sh's pack of the compiled trainings' cache: a cache the device can return (at most 16 MiB)
comes back in $OUT; a larger one (a small256 training's on an H200 was 105.7 MiB) stays in WORK, said once, and no
longer lands in $OUT where it would have been left out of every call's answer with a warning at every pack."""

import os
import subprocess
import sys

from conftest import REPO_ROOT

SCRIPT = str(REPO_ROOT / "benchmarks" / "realism_ablation.sh")


def pack(work, out):
    env = {**os.environ, "WORK": str(work), "OUT": str(out), "PYTHON": sys.executable, "STAGE": "pack"}
    return subprocess.run(["bash", SCRIPT], env=env, capture_output=True, text=True, check=True, timeout=120).stdout


def test_compile_cache_packed_only_where_it_can_come_back(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "code").mkdir(parents=True)
    cache = work / "compile_cache.bin"
    with open(cache, "wb") as handle:
        handle.truncate(17 << 20)
    first, second = pack(work, out), pack(work, out)
    assert "over the 16 MiB the device returns: not packed" in first
    assert "not packed" not in second  # said once per WORK
    assert not (out / "compile_cache.bin").exists() and (out / "realism_reports.tgz").exists()
    with open(cache, "wb") as handle:
        handle.truncate(1 << 20)
    pack(work, out)
    assert (out / "compile_cache.bin").stat().st_size == 1 << 20
