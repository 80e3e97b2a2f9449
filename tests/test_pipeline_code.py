"""Saved models load with diffusers alone (a process that cannot import fundus_diffusion), the pipeline files stay
self-contained, and this package's loader runs no code from a folder and refuses what it did not save."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from diffusers import DDPMScheduler, UNet2DModel
from huggingface_hub import ModelCard

from fundus_diffusion import DCGANGenerator, FundusGANPipeline, FundusPipeline
from fundus_diffusion.hub import add_model_card_metrics, save_model
from fundus_diffusion.models import dcgan
from fundus_diffusion.pipelines import dcgan_generator, pipeline_fundus_gan
from fundus_diffusion.pipelines.loading import load_fundus_pipeline
from fundus_diffusion.pipelines.pipeline_fundus import split_mask_names

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
SELF_CONTAINED = ("pipeline_fundus.py", "dcgan_generator.py")  # a saved folder's pipeline.py or a component's module
PIPELINE_FILES = (*SELF_CONTAINED, "pipeline_fundus_gan.py")  # ... which also imports those two, relatively
ALLOWED_IMPORTS = {"torch", "diffusers", "numpy", "PIL"} | set(sys.stdlib_module_names)

# Run in a fresh interpreter whose import system refuses fundus_diffusion: whatever loads there, loads without us.
REFUSE_FUNDUS_DIFFUSION = """
import importlib.abc, json, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "fundus_diffusion":
            raise ImportError("fundus_diffusion is not installed here")
sys.meta_path.insert(0, Refuse())
try:
    import fundus_diffusion
    sys.exit("fundus_diffusion was importable")
except ImportError:
    pass
"""
WITHOUT_FUNDUS_DIFFUSION = REFUSE_FUNDUS_DIFFUSION + """
import numpy as np, torch
from diffusers import DiffusionPipeline
folder, how = sys.argv[1], sys.argv[2]
extra = {"auto": {}, "folder": {"custom_pipeline": folder}, "file": {"custom_pipeline": folder + "/pipeline.py"}}[how]
pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True, **extra)
pipe.set_progress_bar_config(disable=True)
out = pipe(batch_size=2, class_labels=json.loads(sys.argv[3]), generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
           num_inference_steps=2, output_type="np", **json.loads(sys.argv[4]))
np.save(folder + f"/alone-{how}.npy", out.images)
print(json.dumps([type(pipe).__module__, type(pipe).__name__, sorted(out.masks[0]),
                  sorted(m for m in sys.modules if m.split(".")[0] == "fundus_diffusion")]))
"""

# The Hub path, without a network: tests/hub_stand_in.py serves the folder as the Hub repo "me/model".
FROM_THE_HUB = REFUSE_FUNDUS_DIFFUSION + """
import os
import numpy as np, torch
from diffusers import DiffusionPipeline
repo, snapshot, out, labels = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
sys.path.insert(0, sys.argv[5])
import hub_stand_in
hub_stand_in.install(repo, snapshot)
pipe = DiffusionPipeline.from_pretrained("me/model", trust_remote_code=True)
pipe.set_progress_bar_config(disable=True)
result = pipe(batch_size=2, class_labels=labels, generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
              num_inference_steps=2, output_type="np")
np.save(out, result.images)
print(json.dumps([type(pipe).__module__, type(pipe).__name__, sorted(result.masks[0]), sorted(os.listdir(snapshot)),
                  sorted(m for m in sys.modules if m.split(".")[0] == "fundus_diffusion")]))
"""


def run_without_package(folder, how, labels=None, **call):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_FUNDUS_DIFFUSION, str(folder), how, json.dumps(labels), json.dumps(call)],
        capture_output=True, text=True, timeout=300, cwd=folder, env=env,
    )  # fmt: skip


def tiny_unet(channels: int = 5, num_class_embeds: int = 3) -> UNet2DModel:
    """An 8 px two-level UNet of ``channels`` in and out and ``num_class_embeds`` class embeddings, seeded."""
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8, in_channels=channels, out_channels=channels, block_out_channels=(4, 8), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4, num_class_embeds=num_class_embeds,
    )  # fmt: skip


def tiny_ddpm():
    unet = tiny_unet()
    pipe = FundusPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=4), mask_names=["disc", "atrophy"])
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_guided_ddpm():
    """tiny_ddpm saved with a guide (fundus-train-ddpm --guide_step), sampled with it."""
    pipe = tiny_ddpm()
    torch.manual_seed(1)
    pipe.register_modules(guide_unet=UNet2DModel.from_config(pipe.unet.config))
    return pipe


def tiny_space_to_depth_guided_ddpm():
    """tiny_guided_ddpm on 2 x 2 pixel blocks (the small256_s2d kind): 5 channels per pixel, 20 per cell, 16 px."""
    unet = tiny_unet(channels=20)
    pipe = FundusPipeline(
        unet=unet, scheduler=DDPMScheduler(num_train_timesteps=4), mask_names=["disc", "atrophy"], space_to_depth=2
    )
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(1)
    pipe.register_modules(guide_unet=UNet2DModel.from_config(pipe.unet.config))
    return pipe


def tiny_gan():
    torch.manual_seed(0)
    generator = DCGANGenerator(sample_size=8, out_channels=4, nz=8, ngf=4, num_class_embeds=3).eval()  # as loaded
    return FundusGANPipeline(gan_generator=generator)


def samples(pipe, labels, **call):
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    return pipe(batch_size=2, class_labels=labels, generator=generators, num_inference_steps=2, output_type="np", **call).images


@pytest.mark.parametrize(
    "make,labels,call",
    [
        (tiny_ddpm, ["PM", "non-PM"], {}),
        (tiny_guided_ddpm, [None, None], {"autoguidance_scale": 1.5}),
        (tiny_space_to_depth_guided_ddpm, [None, None], {"autoguidance_scale": 1.5}),
        (tiny_gan, ["PM", None], {}),
    ],
)
def test_a_saved_folder_loads_and_samples_with_diffusers_alone(tmp_path, make, labels, call):
    pipe = make()
    save_model(pipe, tmp_path, training_info={"steps": 1})
    expected = samples(pipe, labels, **call)
    if call:  # else the comparison below could not tell whether the guide was used
        assert np.abs(expected - samples(pipe, labels)).max() > 1e-4
    for how in ("auto", "folder", "file"):
        result = run_without_package(tmp_path, how, labels, **call)
        assert result.returncode == 0, result.stderr[-3000:]
        module, name, masks, imported = json.loads(result.stdout.splitlines()[-1])
        assert module.startswith("diffusers_modules.") and name == type(pipe).__name__, result.stdout
        assert masks == sorted(pipe.config.mask_names) and imported == []
        np.testing.assert_allclose(np.load(tmp_path / f"alone-{how}.npy"), expected, atol=1e-5)
    assert "Expected types" not in result.stderr  # the generator's copy is accepted by the pipeline's copy


def from_the_hub(tmp_path, script, *args):
    """Run ``script`` with tests/hub_stand_in.py serving ``tmp_path / "repo"`` as the Hub repo "me/model"."""
    (tmp_path / "snapshot").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "HF_HOME": str(tmp_path / "hf-home")}
    args = [tmp_path / "repo", tmp_path / "snapshot", *args, Path(__file__).parent]
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env=env,
    )  # fmt: skip


@pytest.mark.parametrize("make,labels", [(tiny_ddpm, ["PM", "non-PM"]), (tiny_gan, ["PM", None])])
def test_a_saved_folder_loads_from_the_hub_with_diffusers_alone(tmp_path, make, labels):
    """diffusers takes every list in model_index.json for a component to download: the pipeline's settings must not
    be lists there (mask_names was), and each component's code must be its one file (the snapshot holds no other)."""
    pipe = make()
    save_model(pipe, tmp_path / "repo", training_info={"steps": 1})
    result = from_the_hub(tmp_path, FROM_THE_HUB, tmp_path / "images.npy", json.dumps(labels))
    assert result.returncode == 0, result.stderr[-3000:]
    module, name, masks, downloaded, imported = json.loads(result.stdout.splitlines()[-1])
    assert module.startswith("diffusers_modules.") and name == type(pipe).__name__, result.stdout
    assert masks == sorted(pipe.config.mask_names) and imported == [] and "README.md" not in downloaded
    np.testing.assert_allclose(np.load(tmp_path / "images.npy"), samples(pipe, labels), atol=1e-5)


@pytest.mark.parametrize("make", [tiny_ddpm, tiny_gan])
@pytest.mark.parametrize("mask_names", ["as saved", "a list, as saved before"])
def test_a_saved_folder_loads_from_the_hub_with_our_loader(tmp_path, make, mask_names):
    pipe = make()
    pipe.save_pretrained(tmp_path / "repo")
    if mask_names != "as saved":
        index = json.loads((tmp_path / "repo" / "model_index.json").read_text())
        index["mask_names"] = list(pipe.config.mask_names)
        (tmp_path / "repo" / "model_index.json").write_text(json.dumps(index))
    script = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[-1])\n"
        "import hub_stand_in\n"
        "from fundus_diffusion.pipelines import loading\n"
        "hub_stand_in.install(sys.argv[1], sys.argv[2], loading)\n"
        "pipe = loading.load_fundus_pipeline('me/model', device='cpu')\n"
        "print(json.dumps([type(pipe).__module__, pipe.config.mask_names]))\n"
    )
    result = from_the_hub(tmp_path, script)
    assert result.returncode == 0, result.stderr[-3000:]
    module, names = json.loads(result.stdout.splitlines()[-1])
    assert module == type(pipe).__module__ and names == pipe.config.mask_names


def test_without_the_saved_code_diffusers_alone_cannot_load_it(tmp_path):
    """The control for the test above: a folder as saved before the pipelines shipped their code fails there."""
    save_model(tiny_ddpm(), tmp_path)
    (tmp_path / "pipeline.py").unlink()
    index = json.loads((tmp_path / "model_index.json").read_text())
    (tmp_path / "model_index.json").write_text(json.dumps({**index, "_class_name": "FundusPipeline"}))
    result = run_without_package(tmp_path, "auto", ["PM", "PM"])
    assert result.returncode != 0 and "FundusPipeline" in result.stderr
    assert type(FundusPipeline.from_pretrained(tmp_path)) is FundusPipeline  # while our own loader still reads it


def test_pipeline_files_import_only_torch_diffusers_numpy_pil_and_the_standard_library():
    """...and the GAN pipeline the two self-contained files, relatively: diffusers fetches a relative import of
    pipeline.py from the Hub, but nothing a component's module (gan_generator/dcgan_generator.py) imports so."""
    for name in PIPELINE_FILES:
        tree = ast.parse((PIPELINES / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert name not in SELF_CONTAINED, f"{name}: relative import of {node.module}"
                assert node.level == 1 and f"{node.module}.py" in SELF_CONTAINED, f"{name} imports .{node.module}"
                continue
            if isinstance(node, ast.ImportFrom):
                roots = [node.module.split(".")[0]]
            elif isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            else:
                continue
            assert set(roots) <= ALLOWED_IMPORTS, f"{name} imports {roots}"


def test_the_pipeline_files_define_each_name_once():
    """No copies: the GAN pipeline imports what it shares with pipeline_fundus.py and its generator."""
    defined = {}
    for name in PIPELINE_FILES:
        for node in ast.parse((PIPELINES / name).read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node] if hasattr(node, "name") else []
            for target in targets:
                key = getattr(target, "id", getattr(target, "name", None))
                assert key not in defined, f"{key} is defined in {defined.get(key)} and {name}"
                defined[key] = name
    assert {"check_fundus_config", "DCGANGenerator", "FundusGANPipeline"} <= set(defined)


def test_the_generator_has_one_definition():
    assert dcgan.DCGANGenerator is dcgan_generator.DCGANGenerator is pipeline_fundus_gan.DCGANGenerator
    assert "class DCGANGenerator" not in Path(dcgan.__file__).read_text()


@pytest.mark.parametrize("class_name,module", [("FundusGANPipeline", "fundus_diffusion.models.dcgan"),
                                               (["pipeline", "FundusGANPipeline"], "pipeline_fundus_gan")])
def test_old_folders_load_through_our_loader(tmp_path, class_name, module):
    """Folders saved before the pipelines shipped their code (a plain class name, the generator in our package) and
    before the generator had a module of its own (gan_generator/pipeline_fundus_gan.py, a list of mask names)."""
    pipe = tiny_gan()
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    index.update(_class_name=class_name, gan_generator=[module, "DCGANGenerator"], mask_names=["disc"])
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    for name in ("pipeline.py", "pipeline_fundus.py", "dcgan_generator.py", "gan_generator/dcgan_generator.py"):
        (tmp_path / name).unlink()
    loaded = load_fundus_pipeline(str(tmp_path), device="cpu")
    assert type(loaded) is FundusGANPipeline
    np.testing.assert_array_equal(samples(loaded, ["PM", None]), samples(pipe, ["PM", None]))


def test_mask_names_are_one_string_in_model_index_and_folders_with_a_list_still_load(tmp_path):
    assert [split_mask_names(v) for v in ("disc,atrophy", "disc", "", ["disc"])] == [["disc", "atrophy"], ["disc"], [], ["disc"]]
    tiny_ddpm().save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["mask_names"] == "disc,atrophy"  # a list there is a component to diffusers' Hub download
    (tmp_path / "model_index.json").write_text(json.dumps({**index, "mask_names": ["disc", "atrophy"]}))  # as before
    for loaded in (FundusPipeline.from_pretrained(tmp_path), load_fundus_pipeline(str(tmp_path), device="cpu")):
        assert type(loaded) is FundusPipeline and loaded.config.mask_names == ["disc", "atrophy"]
    with pytest.raises(ValueError, match="without ','"):
        FundusPipeline(unet=tiny_ddpm().unet, scheduler=DDPMScheduler(), mask_names=["disc,cup", "atrophy"])


def test_our_loader_runs_no_code_from_the_folder_and_refuses_foreign_modules(tmp_path):
    pipe = tiny_gan()
    pipe.save_pretrained(tmp_path)
    for name in ("pipeline.py", "pipeline_fundus.py", "dcgan_generator.py", "gan_generator/dcgan_generator.py"):
        (tmp_path / name).write_text("raise SystemExit('the folder code ran')\n")
    assert type(load_fundus_pipeline(str(tmp_path), device="cpu")) is FundusGANPipeline
    assert type(FundusGANPipeline.from_pretrained(tmp_path)) is FundusGANPipeline

    index = json.loads((tmp_path / "model_index.json").read_text())
    for entry in (["os", "DCGANGenerator"], ["dcgan_generator", "system"], ["pipeline_fundus", "DCGANGenerator"]):
        (tmp_path / "model_index.json").write_text(json.dumps({**index, "gan_generator": entry}))
        with pytest.raises(ValueError, match="refusing to load it"):
            load_fundus_pipeline(str(tmp_path), device="cpu")
    ddpm = tmp_path / "ddpm"
    tiny_ddpm().save_pretrained(ddpm)
    index = json.loads((ddpm / "model_index.json").read_text())
    for forged in ({"scheduler": ["evil_module", "DDPMScheduler"]}, {"guide_unet": ["evil_module", "UNet2DModel"]}):
        (ddpm / "model_index.json").write_text(json.dumps({**index, **forged}))
        with pytest.raises(ValueError, match="refusing to load it"):
            load_fundus_pipeline(str(ddpm), device="cpu")


def test_uploaded_files_hold_no_local_paths(tmp_path):
    secret = tmp_path / "St-Elsewhere-clinic" / "patients-2024"
    secret.mkdir(parents=True)
    first = tmp_path / "first"
    save_model(tiny_gan(), first, training_info={"dataset": str(secret), "steps": 3}, repo_id="me/gan")
    reloaded = FundusGANPipeline.from_pretrained(first)  # registers where it came from (_name_or_path)
    second = tmp_path / "second"
    save_model(reloaded, second, training_info=reloaded.config.training_info)
    for folder in (first, second):
        for path in folder.rglob("*"):
            if path.suffix in (".json", ".md"):
                text = path.read_text()
                assert str(tmp_path) not in text and "St-Elsewhere" not in text, path
    assert json.loads((second / "model_index.json").read_text())["training_info"]["dataset"] == "patients-2024"


@pytest.mark.parametrize("make", [tiny_ddpm, tiny_gan])
def test_a_loaded_pipeline_saved_again_keeps_no_local_path(tmp_path, make):
    """diffusers writes where each component was loaded from (``_name_or_path``) into its config when a loaded
    pipeline is saved: save_pretrained itself drops it, not only hub.save_model."""
    make().save_pretrained(tmp_path / "first")
    loaded = type(make()).from_pretrained(tmp_path / "first")
    loaded.save_pretrained(tmp_path / "second")
    configs = sorted((tmp_path / "second").rglob("*.json"))
    components = ["scheduler/scheduler_config.json", "unet/config.json"] if make is tiny_ddpm else ["gan_generator/config.json"]
    assert [p.relative_to(tmp_path / "second").as_posix() for p in configs] == sorted(["model_index.json", *components])
    for path in configs:
        text = path.read_text()
        assert str(tmp_path) not in text and "_name_or_path" not in text, path
    assert type(loaded).from_pretrained(tmp_path / "second").config.mask_names == loaded.config.mask_names


def test_model_card_metadata_comes_from_the_card_data_classes(tmp_path):
    save_model(
        tiny_ddpm(), tmp_path, training_info={"dataset": "pm", "hub_dataset": "me/pm"}, repo_id="me/ddpm",
        metrics=[{"name": "FID", "value": 41.2}, {"name": "held-out disc Dice", "value": "0.71 ± 0.02"},
                 {"name": "samples flagged as copies", "value": "3 of 100"}, {"name": "cup Dice", "value": "0.600 (n = 1)"}],
    )  # fmt: skip
    card = ModelCard.load(tmp_path / "README.md")
    data = card.data
    assert data.license == "other" and data.license_name and data.library_name == "diffusers"
    assert data.datasets == ["me/pm"] and "fundus-diffusion" in data.tags and "atrophy-mask" in data.tags
    expected = {("FID", 41.2), ("held-out disc Dice", 0.71), ("cup Dice", 0.6)}  # one seed's "(n = 1)" too
    assert {(r.metric_name, r.metric_value) for r in data.eval_results} == expected
    assert 'DiffusionPipeline.from_pretrained("me/ddpm", trust_remote_code=True)' in card.text
    assert 'class_labels="PM"' in card.text and 'out.masks[0]["atrophy"]' in card.text
    data = card.text.split("## Training data")[1].split("## Training\n")[0]
    assert "[`me/pm`](https://huggingface.co/datasets/me/pm)" in data and "| dataset | pm |" in data


def test_rewriting_a_card_reads_no_weights(tmp_path, monkeypatch):
    save_model(tiny_gan(), tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("weights were read")

    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(safetensors.torch, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    add_model_card_metrics(str(tmp_path), [{"name": "FID", "value": 7}])
    assert "| FID | 7 |" in (tmp_path / "README.md").read_text()


def test_an_images_only_model_and_its_samples_claim_no_masks(tmp_path):
    """A model trained without masks (``--images_only`` data) has a card, and its synthetic set a card, that promise
    images only: no mask in the title, the tags, the Use snippet or the columns."""
    from fundus_diffusion.generate import GenerationConfig, generate_dataset

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(4, 8), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )  # fmt: skip
    pipe = FundusPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=4), mask_names=[])
    save_model(pipe, tmp_path / "model", training_info={"dataset": "palm-images", "masks": "none"})
    card = ModelCard.load(tmp_path / "model" / "README.md")
    title = next(line for line in card.text.splitlines() if line.startswith("# "))
    assert title == "# Fundus image DDPM (8 px, image only)" and not any(t.endswith("-mask") for t in card.data.tags)
    assert "out.masks" not in card.text and "mask" not in card.text.split("## Use")[1].split("## Training data")[0]
    config = GenerationConfig(model=str(tmp_path / "model"), num_samples=2, num_inference_steps=2, device="cpu")
    synthetic = generate_dataset(load_fundus_pipeline(str(tmp_path / "model"), device="cpu"), config, str(tmp_path / "syn"))
    assert not [c for c in synthetic.column_names if "mask" in c]
    text = (tmp_path / "syn" / "README.md").read_text()
    assert "without masks (an images-only model)" in text.replace("\n", " ") and "_mask`" not in text
    assert "# Synthetic fundus images from model" in text and "image-segmentation" not in text
