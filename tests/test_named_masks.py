"""Masks named by the data (``--masks disc,cup``) and partial annotation: "not annotated" is not "empty"."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from phantom_layouts import write_folder_tree
from PIL import Image, ImageFilter

from fundus_diffusion.data import FundusTrainingView, build_dataset, load_fundus_dataset, load_phantom_dataset
from fundus_diffusion.evaluation import EvaluationConfig, evaluate, write_report
from fundus_diffusion.evaluation.segmenter import segmentation_loss
from fundus_diffusion.generate import GenerationConfig, generate_dataset
from fundus_diffusion.pipelines.loading import load_fundus_pipeline
from fundus_diffusion.training import ddpm
from fundus_diffusion.training.batches import DeviceBatches
from fundus_diffusion.training.dcgan import refuse_partial_annotation

NUM_IMAGES, WITH_CUP = 12, 7  # images 1..7 have a cup file, 8..12 are not annotated for the cup


@pytest.fixture(scope="module")
def disc_cup_folder(tmp_path_factory):
    """A generic folder with masks/disc for every image and masks/cup for the first WITH_CUP only (the cup: the
    disc shrunk, so it lies inside it); ids prefixed a_ / b_ so that the held-out split takes both kinds."""
    root = write_folder_tree(str(tmp_path_factory.mktemp("raw") / "od"), num_samples=NUM_IMAGES, size=32, labels=False)
    os.makedirs(os.path.join(root, "masks", "cup"))
    for i in range(1, NUM_IMAGES + 1):
        key = f"phantom_{i:03d}"
        if i <= WITH_CUP:
            disc = Image.open(os.path.join(root, "masks", "disc", f"{key}.png"))
            disc.filter(ImageFilter.MinFilter(3)).save(os.path.join(root, "masks", "cup", f"{key}.png"))
        for folder in ("images", "masks/disc", "masks/cup"):  # a_ with a cup, b_ without: source_of strata
            for ext in (".jpg", ".png"):
                path = os.path.join(root, folder, key + ext)
                if os.path.exists(path):
                    os.replace(path, os.path.join(root, folder, ("a_" if i <= WITH_CUP else "b_") + key + ext))
    os.remove(os.path.join(root, "metadata.csv"))
    return root


@pytest.fixture(scope="module")
def built(disc_cup_folder, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("built") / "od")
    report = build_dataset(out, folder_dirs=[disc_cup_folder], progress=False)
    return out, report


def test_a_partially_annotated_folder_builds_with_its_mask_names(built):
    out, report = built
    assert report.mask_names == ["disc", "cup"] and report.annotated == {"disc": NUM_IMAGES, "cup": WITH_CUP}
    assert f"cup {WITH_CUP}" in report.summary()
    dataset = load_fundus_dataset(out)
    assert [c for c in dataset.column_names if "cup" in c] == ["cup_mask", "has_cup_annotation"]
    assert sum(dataset["has_cup_annotation"]) == WITH_CUP and all(dataset["has_disc_annotation"])
    card = open(os.path.join(out, "README.md")).read()
    assert f"| cup | {WITH_CUP} | {NUM_IMAGES - WITH_CUP} |" in card and "`has_cup_annotation`" in card


def test_training_view_carries_per_sample_annotation_flags(built, tmp_path):
    dataset = load_fundus_dataset(built[0])
    view = FundusTrainingView(dataset, 16, "disc,cup", cache_dir=str(tmp_path))
    expected = np.array(["a_" in i for i in dataset["id"]])
    assert (view.mask_annotated[:, 0]).all() and (view.mask_annotated[:, 1] == expected).all()
    items = view.__getitems__(list(range(len(view))))
    assert [bool(item["mask_annotated"][1]) for item in items] == expected.tolist()
    assert view.partially_annotated() == {"cup": (WITH_CUP, NUM_IMAGES)}
    unannotated = items[int(np.flatnonzero(~expected)[0])]["pixel_values"]
    assert (unannotated[4] == -1).all()  # stored as -1 (no mask): only the flag says "not annotated"
    batches = DeviceBatches(view, batch_size=4, device=torch.device("cpu"))
    batch = next(batches.epoch(0))
    assert batch["mask_annotated"].shape == (4, 2) and batch["mask_annotated"].dtype == torch.bool


def test_missing_or_never_annotated_masks_are_errors(built, tmp_path):
    dataset = load_fundus_dataset(built[0])
    with pytest.raises(ValueError, match="(?s)--dataset data/od has no atrophy mask.*its masks: disc, cup.*--masks"):
        FundusTrainingView(dataset, 16, "disc,atrophy", cache_dir=str(tmp_path), name="--dataset data/od")
    none = dataset.map(lambda row: {"has_cup_annotation": False, "cup_mask": None})
    with pytest.raises(ValueError, match="(?s)No image of the dataset is annotated for cup.*leave it out of --masks \\(--masks none for images alone\\)"):
        FundusTrainingView(none, 16, "disc,cup", cache_dir=str(tmp_path))


def test_dcgan_refuses_a_partially_annotated_mask(built, tmp_path):
    view = FundusTrainingView(load_fundus_dataset(built[0]), 16, "disc,cup", cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match=f"(?s)cup \\(annotated on {WITH_CUP} of {NUM_IMAGES} images\\).*--masks disc"):
        refuse_partial_annotation(view, "data/od")
    refuse_partial_annotation(FundusTrainingView(load_fundus_dataset(built[0]), 16, "disc", cache_dir=str(tmp_path)), "x")


class Recorder(torch.nn.Module):
    """A stand-in UNet: a learnable per-channel output, recording the input it was given."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(channels))

    def forward(self, x, t, class_labels=None):
        self.seen = x.detach().clone()
        return SimpleNamespace(sample=x * 0.5 + self.bias[None, :, None, None])


@pytest.mark.parametrize("snr_gamma", [None, 5.0])
def test_an_unannotated_channel_contributes_no_loss_and_no_gradient(snr_gamma):
    scheduler = DDPMScheduler(num_train_timesteps=50, prediction_type="v_prediction")
    x = (torch.rand(3, 5, 8, 8) * 2 - 1).requires_grad_(True)  # RGB + disc + cup
    annotated = torch.tensor([[True, True], [True, False], [True, True]])  # sample 1 has no cup annotation
    unet = Recorder(5)

    def loss_for(pixels):
        torch.manual_seed(0)
        return ddpm.diffusion_loss(unet, scheduler, pixels, snr_gamma=snr_gamma, mask_annotated=annotated)

    loss = loss_for(x)
    loss.backward()
    assert x.grad[1, 4].abs().sum() == 0  # the unannotated cup channel: no gradient at all
    assert x.grad[1, :4].abs().sum() > 0 and x.grad[0, 4].abs().sum() > 0  # its image, disc and others' cups train
    changed = x.detach().clone()
    changed[1, 4] = torch.rand(8, 8) * 2 - 1  # whatever the unannotated channel holds, the loss is the same
    assert torch.equal(loss_for(changed), loss.detach())
    torch.manual_seed(0)
    noise = torch.randn_like(x)  # loss_for's first draw: the unannotated channel enters the UNet as pure noise
    assert torch.equal(unet.seen[1, 4], noise[1, 4])
    assert unet.bias.grad[4] != 0  # the cup output still trains on the annotated samples


def test_fully_annotated_loss_is_the_plain_mse():
    scheduler = DDPMScheduler(num_train_timesteps=50)
    unet = lambda x, t, class_labels=None: SimpleNamespace(sample=x * 0.3)  # noqa: E731
    x = torch.rand(4, 5, 8, 8) * 2 - 1
    torch.manual_seed(1)
    flagged = ddpm.diffusion_loss(unet, scheduler, x, mask_annotated=torch.ones(4, 2, dtype=torch.bool))
    torch.manual_seed(1)
    noise = torch.randn_like(x)
    timesteps = torch.randint(0, 50, (4,))
    expected = torch.nn.functional.mse_loss(scheduler.add_noise(x, noise, timesteps) * 0.3, noise)
    assert torch.allclose(flagged, expected)


def test_segmentation_loss_ignores_unannotated_masks():
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    targets = (torch.rand(2, 2, 8, 8) > 0.5).float()
    annotated = torch.tensor([[True, True], [True, False]])
    loss = segmentation_loss(logits, targets, annotated)
    loss.backward()
    assert logits.grad[1, 1].abs().sum() == 0 and logits.grad[1, 0].abs().sum() > 0
    other = targets.clone()
    other[1, 1] = 1 - other[1, 1]
    assert torch.equal(segmentation_loss(logits, other, annotated), loss)
    assert torch.allclose(segmentation_loss(logits, targets), segmentation_loss(logits, targets, torch.ones(2, 2, dtype=torch.bool)))


def test_disc_cup_round_trip_build_train_generate_evaluate(built, tmp_path):
    """build -> train (tiny UNet, 2 steps) -> generate -> evaluate with masks disc,cup on a partly cup-annotated set."""
    data, _ = built
    out = tmp_path / "ddpm"
    args = ddpm.parse_args([
        "--model_config", "tiny", "--dataset", data, "--masks", "disc,cup", "--resolution", "16",
        "--train_batch_size", "4", "--max_train_steps", "2", "--output_dir", str(out), "--training_cache_dir", str(tmp_path / "c"),
        "--seed", "0", "--num_validation_images", "2", "--validation_inference_steps", "2", "--lr_warmup_steps", "0",
        "--logger", "none",
    ])  # fmt: skip
    model = ddpm.train(args)
    pipe = load_fundus_pipeline(model, scheduler="ddim", device="cpu")
    assert list(pipe.config.mask_names) == ["disc", "cup"]
    assert "disc" in open(os.path.join(model, "README.md")).read() and "cup" in open(os.path.join(model, "README.md")).read()
    sample = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert set(sample.masks[0]) == {"disc", "cup"}

    synthetic = generate_dataset(
        pipe, GenerationConfig(model=model, num_samples=4, num_inference_steps=2, batch_size=4, device="cpu"), str(tmp_path / "syn")
    )
    assert all(synthetic["has_cup_annotation"]) and synthetic[0]["cup_mask"].size == (16, 16)

    real = load_fundus_dataset(data)
    config = EvaluationConfig(
        resolution=16, seeds=1, segmenter_steps=2, realism_steps=1, realism_folds=2, device="cpu", holdout_fraction=0.4,
    )  # fmt: skip  (no masks given: both are scored, where the disc alone was and the cup silently not)
    report, figures = evaluate(real, synthetic, config=config)
    assert report["config"]["masks"] == ["disc", "cup"] and report["masks_left_out"] == []
    downstream = report["downstream"]
    held_out = downstream["n_holdout"]
    assert downstream["n_holdout_annotated"]["disc"] == held_out and 0 < downstream["n_holdout_annotated"]["cup"] < held_out
    assert downstream["n_train_annotated"]["synthetic"] == {"disc": 4, "cup": 4}
    assert set(downstream["results"]["real"]) == {"disc", "cup"} and set(report["agreement"]["results"]) == {"disc", "cup"}
    assert "cup_inside_disc_real" in report["plausibility"] and report["plausibility"]["n_with_cup_real"] <= WITH_CUP
    assert {"dice_bars", "disc_histograms", "cup_to_disc"} <= set(figures)
    paths = write_report(report, figures, str(tmp_path / "report"))
    markdown = open(paths["markdown"]).read()
    assert "| cup Dice | cup IoU |" in markdown and "scored on the held-out images annotated for it" in markdown
    assert "Cup inside its disc" in markdown
    assert json.load(open(paths["json"]))["downstream"]["n_holdout_annotated"]["cup"] == downstream["n_holdout_annotated"]["cup"]


def test_unannotated_masks_are_not_drawn(tmp_path):
    from fundus_diffusion.visualization import contact_sheet, mask_colour, overlay_masks

    phantom = load_phantom_dataset(1, size=32)[0]
    plain = overlay_masks(phantom["image"], {})
    assert overlay_masks(phantom["image"], {"cup": None}).tobytes() == plain.tobytes()
    assert contact_sheet([phantom["image"]], [{"disc": phantom["disc_mask"], "cup": None}], tile=32).size == (32, 32)
    assert mask_colour("cup") != mask_colour("disc") and mask_colour("hard_exudates") == mask_colour("hard_exudates")


def test_masks_no_real_image_is_annotated_for_are_left_out_by_default_and_refused_when_asked(built):
    """A cup set judged against held-out photographs none of which has a cup annotation gave "n/a" cup rows without
    a word (new-user pass, session 31); a mask the real training images lack trained nothing and was scored."""
    from fundus_diffusion.evaluation.protocol import masks_to_score

    real = load_fundus_dataset(built[0])
    no_cup = real.map(lambda row: {"has_cup_annotation": False, "cup_mask": None})
    inputs = {"real": "data/train", "holdout": "data/test-drions"}
    names, notes = masks_to_score(None, real, no_cup, real, inputs)
    assert names == ("disc",) and notes == ["cup: not scored, no image of --holdout data/test-drions is annotated for cup"]
    with pytest.raises(ValueError, match=r"^no image of --holdout data/test-drions is annotated for cup: .*Fix: leave it out of --masks"):
        masks_to_score("disc,cup", real, no_cup, real, inputs)
    assert masks_to_score("disc", real, no_cup, real, inputs) == (("disc",), [])
    assert masks_to_score(None, no_cup, real, real, inputs)[1] == ["cup: not scored, no image of --real data/train is annotated for cup"]
    disc_only = real.remove_columns(["cup_mask", "has_cup_annotation"])
    assert masks_to_score(None, real, disc_only, real) == (("disc",), ["cup: not scored, the held-out part of --real has no cup masks"])
    images_only = disc_only.remove_columns(["disc_mask", "has_disc_annotation"])
    with pytest.raises(ValueError, match=r"No mask of the synthetic set can be scored: disc: not scored, .*--masks none for an image-only"):
        masks_to_score(None, real, images_only, real)  # a held-out set without masks: refused, not judged image-only
    assert masks_to_score(None, real, real, images_only) == ((), [])  # an images-only synthetic set: image-only


def test_per_source_tables_leave_out_a_source_none_of_whose_held_out_images_is_scored_for_a_mask():
    """A camera without cup annotations (DRIONS-DB in fundus-od) gets no cup column of "n/a", but a line saying so."""
    from fundus_diffusion.evaluation.report import _per_source_lines

    dice = {"dice": {"mean": 0.91, "std": 0.01, "n": 2}}  # summarise()'s form
    downstream = {
        "holdout_sources": ["drions", "drishti"],
        "per_source_scored": {"disc": {"drions": 18, "drishti": 15}, "cup": {"drions": 0, "drishti": 15}},
        "per_source": {"real": {"disc": {"drions": dice, "drishti": dice}, "cup": {"drions": {"dice": {"mean": float("nan"), "std": float("nan"), "n": 0}}, "drishti": dice}}},
    }
    text = "\n".join(_per_source_lines(downstream, ["disc", "cup"], "256 px"))
    assert "disc Dice, drions (n=18) | disc Dice, drishti (n=15) | cup Dice, drishti (n=15) |" in text
    assert "cup Dice, drions" not in text and "n/a" not in text
    assert "No column for cup on drions: no held-out image of that source is annotated for the mask" in text
    assert text.count("| 0.910 ± 0.010 ") == 3  # the real row: one value per column kept
