import torch
from accelerate import PartialState

from fundus_diffusion.training.compile_cache import load_compile_cache, save_compile_cache


def test_what_one_process_compiled_is_saved_whole_and_loaded_back(tmp_path, inductor):
    """Nothing to load before the first save; a compiled network's artifacts written through a temporary file (none
    left behind) and loaded back; a damaged file is reported and left for the run's end to replace, never fatal."""
    PartialState()  # the training's logging, as a run has it
    path = tmp_path / "cache" / "compile.bin"
    assert load_compile_cache(str(path)) is None
    network = torch.compile(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.SiLU()))
    network(torch.randn(1, 3, 8, 8)).sum().backward()
    saved = save_compile_cache(str(path))
    assert saved and saved > 0
    assert [p.name for p in path.parent.iterdir()] == ["compile.bin"]
    assert load_compile_cache(str(path)) == saved
    path.write_bytes(b"not a cache")
    assert load_compile_cache(str(path)) is None
