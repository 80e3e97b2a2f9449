import os
import subprocess
import sys

import torch
from accelerate import PartialState

from fundus_diffusion.training.compile_cache import load_compile_cache, save_compile_cache

# One process compiles a small network and saves the cache (or, with "load", loads it first); it prints the number of
# artifacts saved and the inductor's FX graph cache hits, each process with its own empty on-disk inductor cache (a
# fresh machine), so hits can only come from the loaded file.
CHILD = """
import sys, torch
from accelerate import PartialState
from torch._dynamo.utils import counters
from fundus_diffusion.training.compile_cache import load_compile_cache, save_compile_cache
PartialState()
path, mode = sys.argv[1], sys.argv[2]
loaded = load_compile_cache(path) if mode == "load" else None
torch.manual_seed(0)
network = torch.compile(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.SiLU()))
network(torch.randn(1, 3, 8, 8)).sum().backward()
saved = save_compile_cache(path) if mode == "save" else None
print(loaded, saved, counters["inductor"]["fxgraph_cache_hit"])
"""


def run_child(tmp_path, name: str, path, mode: str) -> list:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / f"inductor-{name}"), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-c", CHILD, str(path), mode]
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()[-3:]


def test_a_fresh_process_that_loads_the_cache_finds_the_compiled_graphs_there(tmp_path, inductor):
    """Saved through a temporary file (none left behind); a fresh process with an empty inductor cache that loads the
    file hits the FX graph cache, one that does not load it misses."""
    path = tmp_path / "cache" / "compile.bin"
    loaded, saved, hits = run_child(tmp_path, "first", path, "save")
    assert loaded == "None" and int(saved) > 0 and int(hits) == 0
    assert [p.name for p in path.parent.iterdir()] == ["compile.bin"]
    loaded, _, hits = run_child(tmp_path, "second", path, "load")
    assert int(loaded) == int(saved) and int(hits) > 0
    _, _, hits = run_child(tmp_path, "third", path, "neither")
    assert int(hits) == 0


def test_no_file_a_damaged_file_and_nothing_compiled_are_warnings_not_failures(tmp_path):
    PartialState()  # the training's logging, as a run has it
    path = tmp_path / "compile.bin"
    assert load_compile_cache(str(path)) is None
    path.write_bytes(b"not a cache")
    assert load_compile_cache(str(path)) is None
    torch.compiler.reset()
    unwritable = tmp_path / "file" / "compile.bin"
    (tmp_path / "file").write_text("a file where the folder should be")
    assert save_compile_cache(str(unwritable)) is None  # nothing compiled, or the folder cannot be made: no exception
