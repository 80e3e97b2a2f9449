import csv
import json
import re
import runpy
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, load_dataset
from diffusers import DDPMScheduler, UNet2DModel
from PIL import Image

from fundus_diffusion import FundusGANPipeline, FundusPipeline
from fundus_diffusion.data import NUM_CLASS_EMBEDS, dataset_mask_names, load_fundus_dataset
from fundus_diffusion.data.schema import UNKNOWN_LABEL
from fundus_diffusion.generate import (
    GenerationConfig,
    generate_dataset,
    generating_model,
    interleave_labels,
    local_name,
    parse_label_counts,
    png_name,
    postprocess_masks,
    read_mask_sets,
    regenerate,
    sampler_description,
    synthetic_features,
)
from fundus_diffusion.models.dcgan import DCGANGenerator
from fundus_diffusion.pipelines.loading import load_fundus_pipeline


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny class-conditional DDPM (disc + atrophy) and a tiny unconditional DCGAN (disc), saved."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=5, out_channels=5, block_out_channels=(4, 8), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4, num_class_embeds=NUM_CLASS_EMBEDS,
    )  # fmt: skip
    FundusPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=4), mask_names=["disc", "atrophy"]).save_pretrained(root / "ddpm")
    FundusGANPipeline(gan_generator=DCGANGenerator(sample_size=8, out_channels=4, nz=8, ngf=4)).save_pretrained(root / "gan")
    return {name: str(root / name) for name in ("ddpm", "gan")}


def config(model, **kwargs):
    defaults = dict(num_samples=5, seed=3, shard_size=2, batch_size=2, device="cpu")
    return GenerationConfig(model=model, **{**defaults, **kwargs})


def test_ddpm_generation_round_trips_through_the_schema(models, tmp_path):
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    cfg = config(
        models["ddpm"], labels={"PM": 3, "non-PM": 2}, scheduler="ddim", num_inference_steps=2, png=True, postprocess=["largest_disc"]
    )
    out = tmp_path / "syn"
    generate_dataset(pipe, cfg, str(out))

    dataset = load_fundus_dataset(str(out))
    assert dataset.features == synthetic_features(["disc", "atrophy"]) and len(dataset) == 5
    assert dataset["seed"] == [3, 4, 5, 6, 7]
    assert dataset["label"] == [1, 0, 1, 0, 1]  # PM=3, non-PM=2, interleaved
    assert set(dataset["source"]) == {"synthetic:ddpm"} and dataset[0]["id"] == "synthetic:ddpm/000000"
    assert all(dataset["has_atrophy_annotation"]) and all(dataset["has_disc_annotation"]) and set(dataset["split"]) == {"train"}
    row = dataset[4]
    assert row["image"].mode == "RGB" and row["image"].size == (8, 8)
    assert set(np.unique(np.asarray(row["disc_mask"]))) <= {0, 255}
    assert not (out / "shards").exists()

    image, masks = regenerate(pipe, cfg, 4)  # alone, not in its batch of origin
    assert np.array_equal(np.asarray(image), np.asarray(row["image"]))
    assert np.array_equal(np.asarray(masks["atrophy"]), np.asarray(row["atrophy_mask"]))

    card = (out / "README.md").read_text()
    for fact in ("DDIMScheduler", "| inference steps | 2 |", "largest_disc", "manual_seed(3 + i)", "PM: 3, non-PM: 2 (`--labels PM=3,non-PM=2`"):
        assert fact in card
    assert "given or drawn" not in card.replace("\n", " ") and "the model draws it for\nevery sample" in card
    assert "plus `seed`." in card and "`origin`" not in card  # a model without origins: no origin column named
    image, masks = run_card_snippet(card, 4, {"ddpm": models["ddpm"]})  # the card's code makes sample 4 (a PM) again
    assert_same_sample(image, masks, row)
    assert Image.open(out / "contact_sheet.png").size[0] > 0
    assert (out / "png" / "masks" / "atrophy" / "000004.png").exists()
    with open(out / "png" / "metadata.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["PM", "non-PM", "PM", "non-PM", "PM"] and rows[2]["id"] == "000002"
    # The PNG layout is the generic folder layout: the data layer finds every image, mask and label.
    from fundus_diffusion.data.folder import scan_folder

    found = scan_folder(str(out / "png")).candidates
    assert [c.label for c in found] == [1, 0, 1, 0, 1] and all(set(c.masks) == {"disc", "atrophy"} for c in found)
    # ... and an imagefolder: the same pixels, ids and labels
    loaded = load_dataset("imagefolder", data_dir=str(out / "png"), split="train", cache_dir=str(tmp_path / "hf"))
    assert_same_samples(loaded, dataset)
    # ... and the folder itself loads with load_dataset (parquet shards and the card's configs), as from the Hub
    parquet = load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf"))
    assert parquet.features == dataset.features and parquet["id"] == dataset["id"]


def run_card_snippet(card: str, i: int, folders: dict):
    """Run the card's "Regenerate one sample" code for sample ``i``, each ``path/to/<name>`` in it being
    ``folders[name]``; return the image and masks it makes."""
    code = card.split("## Regenerate one sample")[1].split("```python\n")[1].split("```")[0]
    for name, folder in folders.items():
        code = code.replace(f'"path/to/{name}"', repr(str(folder)))
    assert "path/to/" not in code and "\ni = 0  #" in code
    namespace = {}
    exec(code.replace("\ni = 0  #", f"\ni = {i}  #"), namespace)
    return namespace["out"].images[0], namespace["masks"]


def assert_same_sample(image, masks, row):
    """``image`` and ``masks`` are the pixels of the dataset row ``row``."""
    assert np.array_equal(np.asarray(image), np.asarray(row["image"]))
    assert masks.keys() == {c[: -len("_mask")] for c in row if c.endswith("_mask")}
    for name, mask in masks.items():
        assert np.array_equal(np.asarray(mask), np.asarray(row[f"{name}_mask"])), name


def assert_same_samples(imagefolder, dataset):
    """An imagefolder read of ``--png`` output holds ``dataset``'s samples: ids, labels, image and mask pixels."""
    assert sorted(imagefolder["source_id"]) == sorted(dataset["id"])
    by_id = {row["source_id"]: row for row in imagefolder}
    label_name = dataset.features["label"].int2str
    for row in dataset:
        back = by_id[row["id"]]
        assert back["label"] == (label_name(row["label"]) if row["label"] >= 0 else UNKNOWN_LABEL)
        for column in ("image", *dataset_mask_names(dataset)):
            column = column if column == "image" else f"{column}_mask"
            assert np.array_equal(np.asarray(back[column]), np.asarray(row[column])), (row["id"], column)


def test_png_names_keep_load_dataset_from_guessing_splits(models, tmp_path):
    # ids with split words: "test_01.png" alone would become a test split and "eye_b.png" would be dropped
    assert [png_name(n) for n in ("test_01", "eye_train", "contest_2", "000004")] == ["test~_01", "eye_train~", "contest_2", "000004"]
    for sample_id in ("test_01", "eye_b"):
        (tmp_path / "sets" / "masks" / "disc").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "sets" / "masks" / "disc" / f"{sample_id}.png")
    sets = read_mask_sets(str(tmp_path / "sets"))
    cfg = config(models["ddpm"], num_samples=2, num_inference_steps=2, png=True, masks_from=sets.name)
    dataset = generate_dataset(load_fundus_pipeline(models["ddpm"], device="cpu"), cfg, str(tmp_path / "syn"), mask_sets=sets)
    assert dataset["id"] == ["synthetic:ddpm/eye_b", "synthetic:ddpm/test_01"]  # the ids themselves are kept
    loaded = load_dataset("imagefolder", data_dir=str(tmp_path / "syn" / "png"), cache_dir=str(tmp_path / "hf"))
    assert list(loaded) == ["train"]
    assert_same_samples(loaded["train"], dataset)


def test_masks_from_reads_masks_as_the_dataset_builder_does(models, tmp_path):
    """A 0 / 1 mask (as some tools save them) is its structure, not an empty mask; a mask with pixels above 0 but
    none at 128 or more is refused before anything is written, naming the file."""
    disc = np.zeros((8, 8), np.uint8)
    disc[2:6, 3:7] = 1
    (tmp_path / "sets" / "masks" / "disc").mkdir(parents=True)
    Image.fromarray(disc).save(tmp_path / "sets" / "masks" / "disc" / "a.png")  # 0 / 1
    Image.fromarray(disc * 255).save(tmp_path / "sets" / "masks" / "disc" / "b.png")  # 0 / 255
    sets = read_mask_sets(str(tmp_path / "sets"))
    assert [np.asarray(sets.load(i)["disc"]).tolist() for i in range(2)] == [(disc * 255).tolist()] * 2
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    cfg = config(models["ddpm"], num_samples=2, num_inference_steps=2, masks_from=sets.name)
    dataset = generate_dataset(pipe, cfg, str(tmp_path / "syn"), mask_sets=sets)
    assert [np.asarray(mask).tolist() for mask in dataset["disc_mask"]] == [(disc * 255).tolist()] * 2

    (tmp_path / "faint" / "masks" / "disc").mkdir(parents=True)
    Image.fromarray(disc * 100).save(tmp_path / "faint" / "masks" / "disc" / "a.png")
    faint = read_mask_sets(str(tmp_path / "faint"))
    message = r"faint/masks/disc/a.png has pixels above 0 but none at 128 or more.*Fix: save it with 255"
    with pytest.raises(ValueError, match=message):
        generate_dataset(pipe, replace(cfg, num_samples=1, masks_from=faint.name), str(tmp_path / "out"), mask_sets=faint)
    assert not (tmp_path / "out").exists()


class CountingPipeline:
    """Records, before each batch, how many generated samples are not yet in a finished shard file."""

    def __init__(self, pipe, shards_dir):
        self.pipe, self.shards_dir, self.generated, self.held, self.batches = pipe, shards_dir, 0, [], []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):
        on_disk = sum(len(Dataset.from_file(str(p))) for p in self.shards_dir.glob("shard-*.arrow"))
        self.held.append(self.generated - on_disk)
        self.batches.append(kwargs["batch_size"])
        self.generated += kwargs["batch_size"]
        return self.pipe(**kwargs)


def test_samples_stream_to_disk_shard_by_shard(models, tmp_path):
    """Flat host memory (module docstring): samples are drawn a batch at a time, and a shard reaches the disk while
    the batch after its last one is drawn (its rows are encoded meanwhile), so at most one shard of rows is ever
    waiting; the count does not grow with the run."""
    pipe = CountingPipeline(load_fundus_pipeline(models["gan"], device="cpu"), tmp_path / "run" / "shards")
    cfg = config(models["gan"], num_samples=11, shard_size=3, batch_size=2)
    assert len(generate_dataset(pipe, cfg, str(tmp_path / "run"))) == 11
    assert max(pipe.batches) <= cfg.batch_size and sum(pipe.batches) == 11
    # before the last batch (samples 9-10): shards 0-1 on disk, shard 2's last batch (sample 8) still being encoded
    assert max(pipe.held) <= cfg.shard_size and pipe.held[-1] == 3


def test_unconditional_gan_generation(models, tmp_path):
    pipe = load_fundus_pipeline(models["gan"], device="cpu")
    dataset = generate_dataset(pipe, config(models["gan"], num_samples=3), str(tmp_path / "gan"))
    assert dataset["label"] == [-1, -1, -1]
    assert dataset_mask_names(dataset) == ("disc",) and all(dataset["has_disc_annotation"])  # the model's masks only
    assert dataset[0]["disc_mask"].size == (8, 8)
    with pytest.raises(ValueError, match="no scheduler"):
        load_fundus_pipeline(models["gan"], scheduler="ddim", device="cpu")
    with pytest.raises(ValueError, match="class-conditional"):
        generate_dataset(pipe, config(models["gan"], num_samples=2, labels={"PM": 2}), str(tmp_path / "gan2"))


class Interrupted(Exception):
    pass


class InterruptingPipeline:
    """Passes ``calls`` batches through, then fails like a killed job."""

    def __init__(self, pipe, calls):
        self.pipe, self.calls = pipe, calls

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):
        if self.calls == 0:
            raise Interrupted
        self.calls -= 1
        return self.pipe(**kwargs)


def test_shards_stream_and_resume_gives_the_uninterrupted_result(models, tmp_path):
    pipe = load_fundus_pipeline(models["gan"], device="cpu")
    cfg = config(models["gan"], num_samples=7, shard_size=3, batch_size=2)
    with pytest.raises(Interrupted):
        generate_dataset(InterruptingPipeline(pipe, calls=3), cfg, str(tmp_path / "run"))  # shard 0 = 2 batches
    shards = sorted(p.name for p in (tmp_path / "run" / "shards").iterdir())
    assert shards[0] == "shard-00000.arrow" and "shard-00001.arrow" not in shards  # a half shard is never committed

    with pytest.raises(FileExistsError, match="--resume"):
        generate_dataset(pipe, cfg, str(tmp_path / "run"))
    with pytest.raises(ValueError, match="seed"):
        generate_dataset(pipe, config(models["gan"], num_samples=7, shard_size=3, seed=4), str(tmp_path / "run"), resume=True)
    # a batch rounds its samples within one 8-bit level of another batch size's: the run's batch size is kept
    with pytest.raises(ValueError, match=r"batch_size 2 \(now 3\).*one 8-bit level.*Fix: --batch_size 2\."):
        generate_dataset(pipe, replace(cfg, batch_size=3), str(tmp_path / "run"), resume=True)
    resumed = generate_dataset(pipe, replace(cfg, device="cpu:0"), str(tmp_path / "run"), resume=True)
    fresh = generate_dataset(pipe, cfg, str(tmp_path / "fresh"))
    assert resumed["id"] == fresh["id"] and resumed["seed"] == list(range(3, 10))
    for a, b in zip(resumed["image"], fresh["image"]):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert json.loads((tmp_path / "run" / "generation_config.json").read_text())["device"] == "cpu:0"  # resumable
    assert generate_dataset(pipe, cfg, str(tmp_path / "run"), resume=True)["seed"] == resumed["seed"]  # finished: kept


def test_generate_script(models, tmp_path):
    script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "generate.py"))
    out = tmp_path / "cli"
    script["main"](script["parse_args"](["--model", models["gan"], "--num_samples", "2", "--output_dir", str(out), "--device", "cpu", "--postprocess", "binarize,fill_holes"]))
    assert len(load_fundus_dataset(str(out))) == 2 and "binarize, fill_holes" in (out / "README.md").read_text()


@pytest.mark.parametrize("terminal", [False, True])
def test_the_denoising_bar_sits_beneath_on_a_terminal_and_on_the_line_in_a_log(terminal, models, tmp_path, capsys, monkeypatch):
    """On a terminal the batch's denoising bar sits beneath the samples' bar (tqdm moves the cursor up to it); in a
    log (stderr not a terminal, as under pytest) it shares their line, so the log holds no cursor-up escape codes."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "generate.py"))
    script["main"](script["parse_args"](["--model", models["ddpm"], "--num_samples", "2", "--scheduler", "ddim", "--num_inference_steps", "2", "--output_dir", str(tmp_path / "set"), "--device", "cpu"]))
    err = capsys.readouterr().err
    assert "denoising the batch" in err and "Generating" in err
    assert ("\x1b[A" in err) == terminal


def save_weaker_copy(model: str, folder: Path, mask_names=None, sample_size=None, **scheduler_changes) -> str:
    """``model``'s pipeline with other UNet weights (a stand-in for an earlier snapshot of the same training), its
    masks, UNet size or noise schedule changed when given, saved in ``folder``."""
    pipe = load_fundus_pipeline(model, device="cpu")
    torch.manual_seed(1)
    unet = UNet2DModel.from_config(pipe.unet.config, **({"sample_size": sample_size} if sample_size else {}))
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config, **scheduler_changes)
    FundusPipeline(unet=unet, scheduler=scheduler, mask_names=mask_names or pipe.config.mask_names).save_pretrained(folder)
    return str(folder)


def test_autoguidance_by_a_weaker_model_through_the_script(models, tmp_path):
    weak = save_weaker_copy(models["ddpm"], tmp_path / "weak")
    script = runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "generate.py"))
    common = ["--model", models["ddpm"], "--num_samples", "3", "--scheduler", "ddim", "--num_inference_steps", "2",
              "--seed", "5", "--device", "cpu"]  # fmt: skip
    script["main"](script["parse_args"]([*common, "--output_dir", str(tmp_path / "plain")]))
    argv = [*common, "--autoguidance_model", weak, "--autoguidance_scale", "2", "--output_dir", str(tmp_path / "guided")]
    script["main"](script["parse_args"](argv))
    plain, guided = (load_fundus_dataset(str(tmp_path / name)) for name in ("plain", "guided"))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(plain["image"], guided["image"]))

    recorded = json.loads((tmp_path / "guided" / "generation_config.json").read_text())
    assert recorded["autoguidance_model"] == weak and recorded["autoguidance_scale"] == 2.0
    assert sampler_description(str(tmp_path / "guided")) == "ddim, 2 steps, autoguidance by weak at 2.0"
    card = (tmp_path / "guided" / "README.md").read_text()
    assert "guided away from the weaker model `weak` with weight 2.0" in card and str(tmp_path) not in card
    image, masks = run_card_snippet(card, 2, {"ddpm": models["ddpm"], "weak": weak})  # the card's code, sample 2
    assert_same_sample(image, masks, guided[2])
    cfg = config(models["ddpm"], num_samples=3, seed=5, scheduler="ddim", num_inference_steps=2, autoguidance_model=weak, autoguidance_scale=2.0)
    assert_same_sample(*regenerate(load_fundus_pipeline(models["ddpm"], device="cpu"), cfg, 1), guided[1])


def test_autoguidance_by_the_guide_saved_with_the_model(models, tmp_path):
    """--autoguidance_scale alone guides with the model's own guide_unet (fundus-train-ddpm --guide_step): the same
    samples as naming that guide with --autoguidance_model; a model saved without one is refused, nothing written."""
    weak = save_weaker_copy(models["ddpm"], tmp_path / "weak")
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    pipe.register_modules(guide_unet=load_fundus_pipeline(weak, device="cpu").unet)
    pipe.save_pretrained(tmp_path / "guided-model")
    common = dict(num_samples=3, seed=5, scheduler="ddim", num_inference_steps=2, autoguidance_scale=2.0)
    own = config(str(tmp_path / "guided-model"), **common)
    generate_dataset(load_fundus_pipeline(own.model, device="cpu"), own, str(tmp_path / "own"))
    named = config(models["ddpm"], autoguidance_model=weak, **common)
    generate_dataset(load_fundus_pipeline(models["ddpm"], device="cpu"), named, str(tmp_path / "named"))
    for a, b in zip(load_fundus_dataset(str(tmp_path / "own")), load_fundus_dataset(str(tmp_path / "named"))):
        assert_same_sample(a["image"], {k: a[f"{k}_mask"] for k in ("disc", "atrophy")}, b)
    assert sampler_description(str(tmp_path / "own")) == "ddim, 2 steps, autoguidance by its own guide at 2.0"
    card = (tmp_path / "own" / "README.md").read_text()
    assert "guided away from the guide saved with the model (its `guide_unet`) with weight 2.0" in card
    image, masks = run_card_snippet(card, 2, {"guided-model": str(tmp_path / "guided-model")})  # the card's code, sample 2
    assert_same_sample(image, masks, load_fundus_dataset(str(tmp_path / "own"))[2])

    with pytest.raises(ValueError, match="has none .* trained without --guide_step"):
        generate_dataset(load_fundus_pipeline(models["ddpm"], device="cpu"), config(models["ddpm"], **common), str(tmp_path / "none"))
    assert not (tmp_path / "none").exists() or not list((tmp_path / "none").iterdir())


def test_autoguidance_refusals(models, tmp_path):
    for model, scale in (("weak", None), ("weak", 1.0), (None, 1.0)):
        with pytest.raises(ValueError, match="Autoguidance needs --autoguidance_scale, a weight other than 1"):
            config(models["ddpm"], autoguidance_model=model, autoguidance_scale=scale)
    with pytest.raises(ValueError, match="not both"):
        config(models["ddpm"], labels={"PM": 5}, guidance_scale=2.0, autoguidance_model="weak", autoguidance_scale=2.0)
    pipe = load_fundus_pipeline(models["ddpm"], device="cpu")
    guides = {  # each differs from the ddpm model in one way; refused before anything is written (no --resume needed)
        "another prediction type": (dict(prediction_type="v_prediction"), r"another noise schedule or prediction type.*epsilon"),
        "another chain length": (dict(num_train_timesteps=8), r"another noise schedule or prediction type.*4\)"),
        "other masks, as many channels": (dict(mask_names=["disc", "cup"]), r"mask_names"),
        "another size": (dict(sample_size=16), r"sample_size"),
    }
    for k, (changes, message) in enumerate(guides.values()):
        guide = save_weaker_copy(models["ddpm"], tmp_path / f"guide{k}", **changes)
        cfg = config(models["ddpm"], num_samples=2, num_inference_steps=2, autoguidance_model=guide, autoguidance_scale=2.0)
        with pytest.raises(ValueError, match=message):
            generate_dataset(pipe, cfg, str(tmp_path / f"out{k}"))
        assert not (tmp_path / f"out{k}").exists() or not list((tmp_path / f"out{k}").iterdir())
    gan = load_fundus_pipeline(models["gan"], device="cpu")
    with pytest.raises(ValueError, match="apply to diffusion models"):
        generate_dataset(gan, config(models["gan"], num_samples=2, autoguidance_model=models["ddpm"], autoguidance_scale=2.0), str(tmp_path / "gan"))
    with pytest.raises(ValueError, match="apply to diffusion models"):  # w = 0 (the guide alone) is autoguidance too
        generate_dataset(gan, config(models["gan"], num_samples=2, autoguidance_scale=0.0), str(tmp_path / "gan0"))


def test_records_name_a_local_model_by_its_folder_even_once_it_is_gone():
    assert local_name("/data/people/alice/runs/weak") == "weak" and local_name("~/runs/weak/") == "weak"
    assert local_name("./runs/weak") == "weak" and local_name("owner/fundus-ddpm") == "owner/fundus-ddpm"  # a Hub id


def test_postprocessing():
    disc = np.zeros((12, 12), np.uint8)
    disc[1:4, 1:4] = 255  # small component
    disc[6:11, 6:11] = 255  # large component with a hole
    disc[8, 8] = 0
    out = postprocess_masks({"disc": Image.fromarray(disc)}, ["largest_disc"])["disc"]
    assert not np.asarray(out)[1:4, 1:4].any() and np.asarray(out)[6, 6] == 255 and np.asarray(out)[8, 8] == 0
    filled = postprocess_masks({"disc": out}, ["fill_holes"])["disc"]
    assert np.asarray(filled)[8, 8] == 255 and np.asarray(filled).sum() == 25 * 255
    with pytest.raises(ValueError, match="--postprocess smooth: unknown post-processing step; choose from binarize"):
        postprocess_masks({"disc": out}, ["smooth"])
    with pytest.raises(ValueError, match=r"^--postprocess largest_cup: unknown post-processing step\(s\); choose from"):
        GenerationConfig(model="any", num_samples=1, postprocess=["largest_disc", "largest_cup"])  # the flag, named
    cup = np.zeros((12, 12), np.uint8)
    cup[7:10, 7:10] = 255  # inside the disc
    cup[0, 11] = 255  # a stray speck outside it
    kept = postprocess_masks({"disc": filled, "cup": Image.fromarray(cup)}, ["cup_in_disc"])
    assert np.asarray(kept["cup"]).sum() == 9 * 255 and np.asarray(kept["disc"]).sum() == 25 * 255
    disc_only = postprocess_masks({"disc": out}, ["cup_in_disc"])  # a model without a cup: nothing to do
    assert list(disc_only) == ["disc"] and np.array_equal(np.asarray(disc_only["disc"]), np.asarray(out))


def test_labels_and_bad_settings(tmp_path):
    assert parse_label_counts("PM=3, non-PM=1") == {"PM": 3, "non-PM": 1}
    assert interleave_labels({"PM": 3, "non-PM": 1}) == ["PM", "PM", "non-PM", "PM"]
    with pytest.raises(ValueError, match="unknown class 'AMD'; the classes are non-PM, PM"):
        parse_label_counts("AMD=3")
    with pytest.raises(ValueError, match="unknown class '1'"):  # ids are the pipeline's, names the command line's
        parse_label_counts("1=2,0=2")
    with pytest.raises(ValueError, match="PM given twice"):
        parse_label_counts("PM=2,PM=2")
    with pytest.raises(ValueError, match="NAME=COUNT"):
        parse_label_counts("PM")
    with pytest.raises(ValueError, match="add up"):
        GenerationConfig(model="m", num_samples=5, labels={"PM": 3})
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    with pytest.raises(ValueError, match="DDPMPipeline"):
        load_fundus_pipeline(str(tmp_path))


def test_measured_metrics_reach_the_model_card_without_rewriting_weights(models, tmp_path, capsys):
    import shutil

    from fundus_diffusion.hub import add_model_card_metrics

    model = tmp_path / "ddpm"
    shutil.copytree(models["ddpm"], model)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    before = (weights.read_bytes(), weights.stat().st_mtime_ns)
    synthetic = tmp_path / "syn"
    generate_dataset(load_fundus_pipeline(str(model), device="cpu"), config(str(model), num_inference_steps=2), str(synthetic))
    assert generating_model(str(synthetic)) == str(model)
    assert sampler_description(str(synthetic)) == "dpmsolver++, 2 steps"  # goes into the metric names
    recorded = json.loads((synthetic / "generation_config.json").read_text())
    (synthetic / "generation_config.json").write_text(json.dumps({**recorded, "guidance_scale": 2.0}))
    assert sampler_description(str(synthetic)) == "dpmsolver++, 2 steps, classifier-free guidance 2"
    # what changes what a card row measures names it apart (new-user pass, session 31: post-processed rows replaced
    # the model's own, and rows of images drawn for given masks read as unconditional ones)
    conditioned = {**recorded, "masks_from": "held-out-masks", "resample_steps": 2, "postprocess": ["largest_disc", "fill_holes"]}
    (synthetic / "generation_config.json").write_text(json.dumps(conditioned))
    assert sampler_description(str(synthetic)) == (
        "dpmsolver++, 2 steps, for the masks of held-out-masks, resampled 2 times, masks post-processed: largest_disc+fill_holes"
    )
    full_chain = {**recorded, "scheduler": "ddpm", "num_inference_steps": None, "masks_from": "held-out-masks", "resample_steps": 2}
    (synthetic / "generation_config.json").write_text(json.dumps(full_chain))  # the RePaint default: the whole chain
    assert sampler_description(str(synthetic)) == "ddpm, its whole chain, for the masks of held-out-masks, resampled 2 times"
    gan = {"model": "runs/gan", "num_samples": 4, "postprocess": ["largest_disc"]}
    (synthetic / "generation_config.json").write_text(json.dumps(gan))  # a GAN's post-processed set is named too
    assert sampler_description(str(synthetic)) == "masks post-processed: largest_disc"
    (synthetic / "generation_config.json").write_text(json.dumps({**gan, "postprocess": []}))
    assert sampler_description(str(synthetic)) is None
    (synthetic / "generation_config.json").write_text(json.dumps({**recorded, "guidance_scale": 2.0}))

    add_model_card_metrics(str(model), [{"name": "held-out disc Dice", "value": "0.5 ± 0.1", "notes": "first"}])
    add_model_card_metrics(str(model), [{"name": "held-out disc Dice", "value": "0.7 ± 0.1"}, {"name": "FID", "value": 9}])
    card = (model / "README.md").read_text()
    assert "| held-out disc Dice | 0.7 ± 0.1 |" in card and "| FID | 9 |" in card and "0.5 ± 0.1" not in card
    assert [m["name"] for m in json.loads((model / "metrics.json").read_text())] == ["held-out disc Dice", "FID"]
    assert (weights.read_bytes(), weights.stat().st_mtime_ns) == before
    with pytest.raises(ValueError, match="names no local model folder"):
        generating_model(str(tmp_path / "nowhere"))

    from fundus_diffusion.evaluation.model_card import warn_if_other_data

    index = json.loads((model / "model_index.json").read_text())
    trained_on = str(tmp_path / "train-split")  # what a trainer records in training_info
    (model / "model_index.json").write_text(json.dumps({**index, "training_info": {"dataset": trained_on}}))
    capsys.readouterr()
    warn_if_other_data(str(model), trained_on)  # the same data: silent
    assert capsys.readouterr().err == ""
    warn_if_other_data(str(model), "/data/other")
    assert re.search(r"^\S+: warning: .* was trained on .* but the evaluation's real data is /data/other", capsys.readouterr().err)
    from fundus_diffusion.evaluation.model_card import holdout_seen_by_generator  # new-user pass, session 34

    seen = holdout_seen_by_generator(str(model), {"real": trained_on, "holdout": None})
    assert seen.startswith("the generator trained on train-split, the held-out images included")
    assert holdout_seen_by_generator(str(model), {"real": trained_on, "holdout": str(tmp_path / "test-split")}) is None
    assert holdout_seen_by_generator(str(model), {"real": "/data/other", "holdout": None}) is None
