"""Sampling from given channels with the joint model (issue 15): images from masks, masks from images, replacement
with RePaint resampling in ``FundusPipeline``, ``generate.py --masks_from`` and the benchmark's tiny run."""

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from PIL import Image
from test_generate import assert_same_sample, run_card_snippet
from test_pipeline_fundus import get_dummy_inputs, make_pipe

from fundus_diffusion import FundusGANPipeline
from fundus_diffusion.data import load_fundus_dataset, load_phantom_dataset
from fundus_diffusion.generate import GenerationConfig, generate_dataset, read_mask_sets, regenerate
from fundus_diffusion.models.dcgan import DCGANGenerator
from fundus_diffusion.pipelines.loading import load_fundus_pipeline

REPO = Path(__file__).resolve().parents[1]
DISC = np.zeros((8, 8), np.float32)
DISC[2:6, 3:7] = 1
ATROPHY = np.zeros((8, 8), np.float32)
ATROPHY[4:7, 1:5] = 1


def inputs(**kwargs):
    return {**get_dummy_inputs(), **kwargs}


# One scheduler per row, with the resampling it supports (multistep solvers and Euler: replacement only).
SCHEDULERS = [
    (DDPMScheduler, 0), (DDPMScheduler, 2), (DDIMScheduler, 2),
    (DPMSolverMultistepScheduler, 0), (UniPCMultistepScheduler, 0), (EulerDiscreteScheduler, 0),
]  # fmt: skip


@pytest.mark.parametrize("scheduler_class,resample_steps", SCHEDULERS)
def test_given_channels_come_out_exactly_as_given(scheduler_class, resample_steps):
    pipe = make_pipe(mask_names=("disc", "atrophy"))
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    free = pipe(**inputs())

    # masks -> image: only the disc given; the image and the atrophy are generated
    drawn = pipe(**inputs(masks={"disc": DISC}, resample_steps=resample_steps, guidance_scale=2.0))
    assert drawn.images.shape == (2, 8, 8, 3) and np.isfinite(drawn.images).all()
    assert all(np.array_equal(m["disc"], DISC) and m["atrophy"].shape == (8, 8) for m in drawn.masks)
    assert np.abs(drawn.images - free.images).max() > 1e-3  # the given disc changed what was drawn

    # image -> masks: the real image is kept, both masks are generated
    inferred = pipe(**inputs(image=free.images, resample_steps=resample_steps))
    np.testing.assert_array_equal(inferred.images, free.images)
    assert [sorted(m) for m in inferred.masks] == [["atrophy", "disc"]] * 2


def test_every_input_format_is_kept_exactly_in_every_output_format():
    pipe = make_pipe(mask_names=("disc", "atrophy"))
    photo = pipe(**inputs(output_type="pil")).images[0]
    disc_pil = Image.fromarray((DISC * 255).astype(np.uint8), mode="L")
    given = {"disc": disc_pil, "atrophy": torch.from_numpy(ATROPHY).bool()}
    pil = pipe(**inputs(image=photo, masks=given, output_type="pil"))
    assert all(np.array_equal(np.asarray(im), np.asarray(photo)) for im in pil.images)
    assert all(np.array_equal(np.asarray(m["disc"]), np.asarray(disc_pil)) for m in pil.masks)
    pt = pipe(**inputs(image=torch.from_numpy(np.array(photo)).permute(2, 0, 1), masks={"atrophy": ATROPHY}, output_type="pt"))
    assert pt.images.shape == (2, 3, 8, 8) and torch.equal(pt.masks[1]["atrophy"], torch.from_numpy(ATROPHY))
    np.testing.assert_allclose(pt.images[0].permute(1, 2, 0).numpy(), np.asarray(photo) / 255, atol=1e-6)


def test_per_sample_mask_sets_and_generators_make_each_sample_alone():
    pipe = make_pipe(mask_names=("disc", "atrophy"))
    sets = [{"disc": DISC}, {"atrophy": ATROPHY, "disc": None}]  # None: not given, generated
    generators = lambda seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    batch = pipe(**inputs(masks=sets, generator=generators((3, 4)), resample_steps=1))
    alone = pipe(**inputs(batch_size=1, class_labels="non-PM", masks=sets[1], generator=generators((4,)), resample_steps=1))
    np.testing.assert_allclose(batch.images[1], alone.images[0], atol=1e-5)
    assert np.array_equal(batch.masks[0]["disc"], DISC) and np.array_equal(batch.masks[1]["atrophy"], ATROPHY)


def test_conditioning_errors_say_what_and_how_to_fix():
    pipe = make_pipe(mask_names=("disc", "atrophy"))
    with pytest.raises(ValueError, match=r"Mask 'disc' of sample 0 is 4x4 px; .* 8x8 px .* resize it to 8x8"):
        pipe(**inputs(masks={"disc": np.zeros((4, 4))}))
    with pytest.raises(ValueError, match=r"Unknown mask name\(s\) \['cup'\] .* this model's masks are \['disc', 'atrophy'\]"):
        pipe(**inputs(masks={"cup": DISC}))
    with pytest.raises(ValueError, match=r"image of sample 1 is 4x4 px"):
        pipe(**inputs(image=[np.zeros((8, 8, 3)), np.zeros((4, 4, 3))]))
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        pipe(**inputs(masks={"disc": DISC * 255}))
    with pytest.raises(ValueError, match="Got 3 mask sets for a batch of 2"):
        pipe(**inputs(masks=[{"disc": DISC}] * 3))
    with pytest.raises(ValueError, match="images only .* no mask channels"):
        make_pipe(mask_names=())(**inputs(image=np.zeros((8, 8, 3))))
    with pytest.raises(ValueError, match="pass image= or masks="):
        pipe(**inputs(resample_steps=2))
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="DPMSolverMultistepScheduler keeps .* DDPMScheduler.from_config"):
        pipe(**inputs(masks={"disc": DISC}, resample_steps=1))


def test_a_model_trained_without_labels_refuses_class_labels():
    unconditional = make_pipe(num_class_embeds=None)
    with pytest.raises(ValueError, match="trained without class labels .* leave class_labels as None"):
        unconditional(**inputs(class_labels="PM"))


# ------------------------------------------------------------------------------------ generate.py --masks_from


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("conditional_models")
    make_pipe(mask_names=("disc", "atrophy")).save_pretrained(root / "ddpm")
    FundusGANPipeline(gan_generator=DCGANGenerator(sample_size=8, out_channels=4, nz=8, ngf=4)).save_pretrained(root / "gan")
    return {name: str(root / name) for name in ("ddpm", "gan")}


def write_mask_sets(root: Path, sets: dict) -> Path:
    """``{id: {name: array}}`` -> ``root/masks/<name>/<id>.png`` (255 = structure)."""
    for sample_id, masks in sets.items():
        for name, mask in masks.items():
            (root / "masks" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray((np.asarray(mask) * 255).astype(np.uint8)).save(root / "masks" / name / f"{sample_id}.png")
    return root


def test_masks_from_round_trip_with_a_partial_mask_set(saved_models, tmp_path):
    masks_dir = write_mask_sets(tmp_path / "patient-site-A", {"eye_b": {"disc": DISC}, "eye_a": {"disc": DISC, "atrophy": ATROPHY}})
    script = runpy.run_path(str(REPO / "scripts" / "generate.py"))
    out = tmp_path / "syn"
    argv = ["--model", saved_models["ddpm"], "--masks_from", str(masks_dir), "--num_inference_steps", "3",
            "--resample_steps", "1", "--output_dir", str(out), "--device", "cpu", "--batch_size", "2", "--png",
            "--postprocess", "fill_holes"]  # fmt: skip
    script["main"](script["parse_args"](argv))

    dataset = load_fundus_dataset(str(out))
    assert dataset["id"] == ["synthetic:ddpm/eye_a", "synthetic:ddpm/eye_b"]  # ids kept, in id order
    rows = {row["id"].rsplit("/", 1)[-1]: row for row in dataset}
    assert np.array_equal(np.asarray(rows["eye_a"]["disc_mask"]) > 0, DISC > 0)
    assert np.array_equal(np.asarray(rows["eye_a"]["atrophy_mask"]) > 0, ATROPHY > 0)
    assert np.array_equal(np.asarray(rows["eye_b"]["disc_mask"]) > 0, DISC > 0)
    assert rows["eye_b"]["atrophy_mask"].size == (8, 8)  # not given: generated
    assert (out / "png" / "images" / "eye_b.png").exists() and (out / "png" / "masks" / "atrophy" / "eye_b.png").exists()
    config = json.loads((out / "generation_config.json").read_text())
    assert config["masks_from"] == "patient-site-A" and str(tmp_path) not in json.dumps(config)

    # a sample is made again alone from its mask set, as stored
    generation = GenerationConfig(**config)
    image, masks = regenerate(make_pipe_from(saved_models["ddpm"]), generation, 1, read_mask_sets(str(masks_dir)))
    assert np.array_equal(np.asarray(masks["disc"]), np.asarray(rows["eye_b"]["disc_mask"]))
    assert np.array_equal(np.asarray(image), np.asarray(rows["eye_b"]["image"]))

    # the card names the folder (not its path) and the resampling, says which masks were given, and its code
    # makes eye_b again: the disc as given, the atrophy drawn and post-processed
    card = (out / "README.md").read_text()
    assert str(tmp_path) not in card and "| mask sets | `patient-site-A`: " in card
    assert "| resample_steps | 1 (RePaint" in card
    assert "| disc | 2 | 0 |" in card and "| atrophy | 1 | 1 |" in card and "| fill_holes (drawn masks only) |" in card
    assert "True: every sample has it, given\nor drawn" in card and "the model draws it for" not in card
    image, masks = run_card_snippet(card, 1, {"ddpm": saved_models["ddpm"], "patient-site-A": masks_dir})
    assert_same_sample(image, masks, rows["eye_b"])


def make_pipe_from(folder):
    pipe = load_fundus_pipeline(folder, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_masks_from_errors(saved_models, tmp_path):
    pipe = make_pipe_from(saved_models["ddpm"])

    def run(masks_dir, model_pipe=pipe, **kwargs):
        sets = read_mask_sets(str(masks_dir))
        config = GenerationConfig(model=saved_models["ddpm"], num_samples=len(sets.ids), masks_from=sets.name, **kwargs)
        generate_dataset(model_pipe, config, str(tmp_path / "out" / masks_dir.name), mask_sets=sets)

    with pytest.raises(ValueError, match=r"masks/cup/ names no mask of the model \(its masks: disc, atrophy\)"):
        run(write_mask_sets(tmp_path / "cup", {"a": {"cup": DISC}}))
    with pytest.raises(ValueError, match=r"big/masks/disc/a.png is 16x16 px; the model generates 8x8 px"):
        run(write_mask_sets(tmp_path / "big", {"a": {"disc": np.zeros((16, 16))}}))
    with pytest.raises(ValueError, match="a GAN cannot be conditioned"):
        run(write_mask_sets(tmp_path / "for_gan", {"a": {"disc": DISC}}), make_pipe_from(saved_models["gan"]))
    with pytest.raises(Exception, match="Mask folder .*empty/masks does not exist"):
        (tmp_path / "empty").mkdir()
        read_mask_sets(str(tmp_path / "empty"))


def test_benchmark_tiny_run(tmp_path, capsys):
    splits = {}
    for split, seed in (("train", 0), ("test", 100)):
        dataset = load_phantom_dataset(num_samples=3, size=32, seed=seed, split=split)
        if split == "test":  # the first held-out image is not annotated for atrophy (as DRIONS-DB for the cup)
            unannotated = lambda row, i: {"atrophy_mask": None, "has_atrophy_annotation": False} if i == 0 else row  # noqa: E731
            dataset = dataset.map(unannotated, with_indices=True)
        dataset.save_to_disk(str(tmp_path / split))
        splits[split] = str(tmp_path / split)
    pipe = make_pipe(mask_names=("disc", "atrophy"))
    pipe.unet.register_to_config(sample_size=16)  # convolutional: the tiny UNet samples 16 px too
    pipe.save_pretrained(tmp_path / "model")
    benchmark = runpy.run_path(str(REPO / "benchmarks" / "conditional_sampling.py"))
    argv = ["--model", str(tmp_path / "model"), "--real", splits["train"], "--holdout", splits["test"],
            "--output_dir", str(tmp_path / "out"), "--num_inference_steps", "2",
            "--timestep_spacing", "linspace", "--resample_steps", "1", "--segmenter_steps", "2", "--batch_size", "2", "--device", "cpu"]  # fmt: skip
    results = benchmark["main"](benchmark["parse_args"](argv))

    assert json.loads((tmp_path / "out" / "conditional_sampling.json").read_text()) == results
    assert results["n_holdout"] == 3 and results["unet_passes_per_image"] == 3
    assert results["timestep_spacing"] == "linspace"  # the tiny model's scheduler was saved with leading spacing
    assert results["masks"] == ["disc", "atrophy"] and results["n_holdout_annotated"] == {"disc": 3, "atrophy": 2}
    given = tmp_path / "out" / "given_masks" / "masks"
    assert len(list((given / "disc").iterdir())) == 3 and len(list((given / "atrophy").iterdir())) == 2
    for section, key in (("mask_to_image", "dice_segmenter_on_generated_vs_given"), ("image_to_mask", "dice_vs_experts")):
        assert all(0 <= results[section][key][m] <= 1 for m in ("disc", "atrophy"))
        assert results[section]["seconds_per_image"] > 0
    generated = load_fundus_dataset(str(tmp_path / "out" / "mask_to_image"))  # a synthetic set evaluate.py reads
    assert generated["id"] == ["synthetic:model/phantom_test_000100", "synthetic:model/phantom_test_000101", "synthetic:model/phantom_test_000102"]
    assert "| image → mask (drawn mask vs the experts') | disc |" in capsys.readouterr().out
