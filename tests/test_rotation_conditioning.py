"""Rotation conditioning: training turns images (masks with them) by quarter turns and tells the UNet how far; the
pipeline samples upright; the regularising flags parse, train and save."""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from test_train_ddpm import tiny_args

from fundus_diffusion import FundusPipeline
from fundus_diffusion.data import load_phantom_dataset
from fundus_diffusion.models.unet import build_unet
from fundus_diffusion.pipelines.pipeline_fundus import ROTATIONS, check_fundus_config, embedding_ids, orientations
from fundus_diffusion.training import ddpm
from fundus_diffusion.training.augment import random_quarter_turns


def test_quarter_turns_move_image_and_masks_together_and_never_turn_at_probability_zero():
    torch.manual_seed(0)
    x = torch.randn(64, 4, 8, 8)
    same, turns = random_quarter_turns(x, 0.0)
    assert torch.equal(same, x) and not turns.any()
    turned, turns = random_quarter_turns(x, 1.0)
    assert set(turns.tolist()) == {1, 2, 3}  # every sample turned, by each amount somewhere in 64
    for i, k in enumerate(turns.tolist()):
        assert torch.equal(turned[i], torch.rot90(x[i], k, dims=(-2, -1)))  # all channels: masks stay on their image
    _, half = random_quarter_turns(torch.randn(2000, 1, 4, 4), 0.5)
    assert 0.45 < (half > 0).float().mean() < 0.55


def test_embedding_ids_put_each_rotation_after_all_classes():
    rotations = torch.tensor([0, 1, 3])
    assert embedding_ids(None, None, 1) is None
    assert torch.equal(embedding_ids(torch.tensor([2, 1, 0]), None, 3), torch.tensor([2, 1, 0]))
    assert torch.equal(embedding_ids(None, rotations, 1), rotations)  # unconditional: the rotation alone
    assert torch.equal(embedding_ids(torch.tensor([0, 1, 2]), rotations, 3), torch.tensor([0, 4, 11]))


def embedding_ids_given_to_the_unet(*calls):
    """The class-embedding ids ``diffusion_loss`` gives the UNet in each call, ``(args, kwargs)`` after the pixel
    values (three blank 8 px images of 4 channels)."""
    seen = []

    def unet(x, t, class_labels=None):
        seen.append(class_labels.tolist())
        return SimpleNamespace(sample=torch.zeros_like(x))

    scheduler = ddpm.make_noise_scheduler(ddpm.parse_args(["--output_dir", "x", "--resolution", "16"]))
    for args, kwargs in calls:
        ddpm.diffusion_loss(unet, scheduler, torch.zeros(3, 4, 8, 8), *args, **kwargs)
    return seen


def test_the_loss_gives_the_unet_rotation_and_class_with_dropped_labels_made_null_first():
    classes, rotations = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 3])
    seen = embedding_ids_given_to_the_unet(
        ((classes,), dict(orientation_ids=rotations)),
        ((classes,), dict(class_dropout_prob=0.999999, orientation_ids=rotations)),
        ((), dict(orientation_ids=rotations)),
    )
    assert seen == [[0, 4, 11], [2, 5, 11], [0, 1, 3]]


def test_a_rotation_conditioned_unet_needs_rotations_times_classes_embeddings():
    assert build_unet("tiny", 16, 4, class_conditional=False, rotation_conditioning=True).config.num_class_embeds == 4
    assert build_unet("tiny", 16, 4, class_conditional=True, rotation_conditioning=True).config.num_class_embeds == 12
    assert build_unet("tiny", 16, 4, dropout=0.3).config.dropout == 0.3
    channels = {"in": 4, "out": 4}
    for embeddings in (ROTATIONS, 3 * ROTATIONS):  # rotations alone; 2 labels + null class, each in 4 rotations
        check_fundus_config("UNet", channels, embeddings, 3, ["disc"], None, rotation_conditioning=True)
    with pytest.raises(ValueError, match="4 class embeddings per class .* this one has 3"):
        check_fundus_config("UNet", channels, 3, 3, ["disc"], None, rotation_conditioning=True)
    with pytest.raises(ValueError, match="has 8 class embeddings per orientation"):
        check_fundus_config("UNet", channels, 32, 3, ["disc"], None, rotation_conditioning=True)


def test_presets_and_flag_checks():
    assert ddpm.parse_args(["--output_dir", "x"]).rotation_conditioning_prob == 0.5  # ours: the 256 px recipe
    for preset in ("paper", "demo"):  # their recorded settings stay as they were
        assert ddpm.parse_args(["--preset", preset, "--output_dir", "x"]).rotation_conditioning_prob == 0.0
    for bad in (["--rotation_conditioning_prob", "1.0"], ["--rotation_conditioning_prob", "-0.1"], ["--dropout", "1.0"]):
        with pytest.raises(SystemExit):
            ddpm.parse_args(["--output_dir", "x", *bad])


def sampled_class_labels(pipe, **kwargs):
    """The class ids the pipeline's UNet is called with."""
    seen = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["class_labels"]), with_kwargs=True)
    pipe(batch_size=2, num_inference_steps=1, output_type="np", **kwargs)
    hook.remove()
    return seen[0].tolist()


@pytest.mark.parametrize("labelled", [True, False])
def test_a_rotation_conditioned_model_trains_saves_and_samples_upright(tmp_path, labelled):
    data = tmp_path / "data"
    phantoms = load_phantom_dataset(8, size=32)
    (phantoms if labelled else phantoms.map(lambda row: {"label": -1})).save_to_disk(str(data))
    out = tmp_path / "run"
    extra = ["--max_train_steps", "2", "--logger", "none", "--rotation_conditioning_prob", "0.5", "--dropout", "0.3"]
    ddpm.train(ddpm.parse_args(tiny_args(out, tmp_path / "cache", *extra) + ["--dataset", str(data)]))
    pipe = FundusPipeline.from_pretrained(out)
    assert pipe.config.rotation_conditioning and pipe.unet.config.dropout == 0.3
    assert pipe.config.training_info["rotation conditioning"] == "0.5 of the images turned by quarter turns"
    assert "Rotation conditioning: the UNet was trained on photographs" in (out / "README.md").read_text()
    if labelled:  # 3 classes x 4 rotations; upright ids are the class ids, the null class first under guidance
        assert pipe.unet.config.num_class_embeds == 12 and pipe.class_conditional
        assert sampled_class_labels(pipe, class_labels="PM") == [1, 1]
        assert sampled_class_labels(pipe, class_labels="PM", guidance_scale=2.0) == [2, 2, 1, 1]
    else:  # the embedding holds the 4 rotations only: not class-conditional, labels refused
        assert pipe.unet.config.num_class_embeds == 4 and not pipe.class_conditional
        assert sampled_class_labels(pipe) == [0, 0]
        with pytest.raises(ValueError, match="This model is unconditional"):
            pipe(batch_size=1, class_labels="PM", num_inference_steps=1)
        # README's snippet on an unconditional model: the cause named first, not the guidance's
        with pytest.raises(ValueError, match="This model is unconditional.*guidance_scale at 1"):
            pipe(batch_size=1, class_labels="PM", guidance_scale=2.0, num_inference_steps=1)
        with pytest.raises(ValueError, match="this model is unconditional: leave guidance_scale at 1"):
            pipe(batch_size=1, guidance_scale=2.0, num_inference_steps=1)


def test_a_training_step_gives_the_loss_the_turned_images_and_their_turns(tmp_path, monkeypatch):
    turned_by_step, seen_by_loss = [], []
    real_turns, real_loss = ddpm.random_quarter_turns, ddpm.diffusion_loss

    def turns(x, prob):
        out = real_turns(x, prob)
        turned_by_step.append((x.clone(), *out))
        return out

    def loss(unet, scheduler, pixel_values, *args):
        seen_by_loss.append((pixel_values, args[4]))  # rotations: after the labels, dropout, gamma and masks
        return real_loss(unet, scheduler, pixel_values, *args)

    monkeypatch.setattr(ddpm, "random_quarter_turns", turns)
    monkeypatch.setattr(ddpm, "diffusion_loss", loss)
    extra = ["--max_train_steps", "1", "--logger", "none", "--rotation_conditioning_prob", "0.999999"]
    ddpm.train(ddpm.parse_args(tiny_args(tmp_path / "run", tmp_path / "cache", *extra)))
    (upright, turned, k), (given, rotations) = turned_by_step[0], seen_by_loss[0]
    assert k.min() >= 1 and torch.equal(rotations, k) and torch.equal(given, turned)
    for i in range(len(k)):
        assert torch.equal(given[i], torch.rot90(upright[i], int(k[i]), dims=(-2, -1)))


@pytest.fixture(scope="module")
def unrotated_run(tmp_path_factory):
    """A labelled tiny run trained without rotation conditioning, with a checkpoint at step 2."""
    root = tmp_path_factory.mktemp("unrotated")
    extra = ["--max_train_steps", "2", "--checkpointing_steps", "2", "--logger", "none", "--rotation_conditioning_prob", "0"]
    ddpm.train(ddpm.parse_args(tiny_args(root / "run", root / "cache", *extra)))
    return root


def test_a_resume_names_a_changed_or_unrecorded_rotation_setting(unrotated_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(unrotated_run / "run", run)
    resume = tiny_args(run, unrotated_run / "cache", "--max_train_steps", "4", "--logger", "none")
    resume += ["--resume_from_checkpoint", "latest", "--rotation_conditioning_prob", "0.5"]
    with pytest.raises(ValueError, match=r"--rotation_conditioning_prob 0.5 \(checkpoint: 0.0\)"):
        ddpm.train(ddpm.parse_args(resume))
    # A checkpoint written before the flag existed records no rotation setting.
    old = tmp_path / "old"
    flags_then = tuple(f for f in ddpm.DDPMKind.MODEL_FLAGS if f not in ("dropout", "rotation_conditioning_prob"))
    with monkeypatch.context() as then:
        then.setattr(ddpm.DDPMKind, "MODEL_FLAGS", flags_then)
        ddpm.train(ddpm.parse_args(tiny_args(old, tmp_path / "cache", "--max_train_steps", "2", "--checkpointing_steps",
                                             "2", "--logger", "none", "--rotation_conditioning_prob", "0")))  # fmt: skip
    resume_old = tiny_args(old, tmp_path / "cache", "--max_train_steps", "4", "--logger", "none")
    with pytest.raises(ValueError, match=r"--rotation_conditioning_prob 0.5 \(checkpoint: not recorded, its run predates"):
        ddpm.train(ddpm.parse_args(resume_old + ["--resume_from_checkpoint", "latest"]))


def test_init_from_ignores_dropout_and_names_the_rotation_flag(unrotated_run, tmp_path):
    source = str(unrotated_run / "run")
    common = ["--max_train_steps", "1", "--logger", "none", "--init_from", source]
    ddpm.train(ddpm.parse_args(tiny_args(tmp_path / "a", tmp_path / "cache", *common, "--rotation_conditioning_prob",
                                         "0", "--dropout", "0.3")))  # fmt: skip
    assert FundusPipeline.from_pretrained(tmp_path / "a").unet.config.dropout == 0.3
    with pytest.raises(ValueError, match=r"num_class_embeds \(3 there, 12 here\).*--rotation_conditioning_prob"):
        ddpm.train(ddpm.parse_args(tiny_args(tmp_path / "b", tmp_path / "cache", *common)))


def test_a_model_saved_before_rotation_conditioning_loads_and_samples_as_before(unrotated_run, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(unrotated_run / "run", folder, ignore=shutil.ignore_patterns("checkpoint-*"))
    index = json.loads((folder / "model_index.json").read_text())
    index.pop("rotation_conditioning")
    index.pop("flip_conditioning")
    (folder / "model_index.json").write_text(json.dumps(index))
    pipe = FundusPipeline.from_pretrained(folder)
    assert not pipe.config.rotation_conditioning and not pipe.config.flip_conditioning and pipe.class_conditional
    assert "Rotation conditioning" not in (folder / "README.md").read_text()
    assert sampled_class_labels(pipe, class_labels="PM") == [1, 1]


def test_flip_conditioning_doubles_the_embeddings_per_orientation():
    assert orientations() == 1 and orientations(True) == ROTATIONS and orientations(True, True) == 2 * ROTATIONS
    assert build_unet("tiny", 16, 4, class_conditional=False, flip_conditioning=True).config.num_class_embeds == 2
    both = build_unet("tiny", 16, 4, class_conditional=True, rotation_conditioning=True, flip_conditioning=True)
    assert both.config.num_class_embeds == 3 * 2 * ROTATIONS
    channels = {"in": 4, "out": 4}
    check_fundus_config("UNet", channels, 24, 3, ["disc"], None, rotation_conditioning=True, flip_conditioning=True)
    with pytest.raises(ValueError, match="rotations and flips has 8 class embeddings per class .* this one has 12"):
        check_fundus_config("UNet", channels, 12, 3, ["disc"], None, rotation_conditioning=True, flip_conditioning=True)
    # a mirrored sample turned by k quarter turns: orientation k + 4, after all classes of each orientation before it
    assert torch.equal(embedding_ids(torch.tensor([1, 2]), torch.tensor([0 + ROTATIONS, 3 + ROTATIONS]), 3), torch.tensor([13, 23]))



def test_flip_conditioning_needs_the_flips(capsys):
    with pytest.raises(SystemExit):
        ddpm.parse_args(["--output_dir", "x", "--flip_conditioning", "--no-random_flip"])
    assert "--flip_conditioning tells the UNet which images are flipped" in capsys.readouterr().err


def spy_on_training_steps(monkeypatch, batch_key: str, loss_args):
    """Record, per training step, the batch's ``batch_key`` (``batches``), Patch Diffusion's crop sources where it
    crops (``sources``) and ``diffusion_loss``'s positional arguments after the pixel values at ``loss_args``, an
    index or slice (``loss``)."""
    record = SimpleNamespace(batches=[], sources=[], loss=[])
    real_step, real_loss, real_patches = ddpm.DDPMKind.step, ddpm.diffusion_loss, ddpm.patches.random_patches

    def step(self, batch):
        record.batches.append(batch[batch_key].clone())
        return real_step(self, batch)

    def patches(x, size):
        out = real_patches(x, size)
        record.sources.append(out[2])
        return out

    def loss(unet, scheduler, pixel_values, *args):
        record.loss.append(args[loss_args])
        return real_loss(unet, scheduler, pixel_values, *args)

    monkeypatch.setattr(ddpm.DDPMKind, "step", step)
    monkeypatch.setattr(ddpm.patches, "random_patches", patches)
    monkeypatch.setattr(ddpm, "diffusion_loss", loss)
    return record


@pytest.mark.parametrize("extra", [["--rotation_conditioning_prob", "0"], ["--rotation_conditioning_prob", "0.5"], ["--rotation_conditioning_prob", "0.5", "--patch_diffusion"]])
def test_a_training_step_tells_the_unet_each_images_flip_and_turn(tmp_path, monkeypatch, extra):
    """The orientation the loss gets is the image's quarter turns plus ROTATIONS where its batch flipped it (the flip
    alone without rotation conditioning), and Patch Diffusion's crops keep their image's."""
    turns_by_step, real_turns = [], ddpm.random_quarter_turns

    def turns(x, prob):
        out = real_turns(x, prob)
        turns_by_step.append(out[1])
        return out

    monkeypatch.setattr(ddpm, "random_quarter_turns", turns)
    record = spy_on_training_steps(monkeypatch, "flipped", 4)  # the orientation ids: after labels, dropout, gamma, masks
    flips_by_step, sources_by_step, seen_by_loss = record.batches, record.sources, record.loss
    argv = ["--max_train_steps", "4", "--logger", "none", "--flip_conditioning", *extra]
    ddpm.train(ddpm.parse_args(tiny_args(tmp_path / "run", tmp_path / "cache", *argv)))
    for i, flips in enumerate(flips_by_step):
        expected = flips.long() * (ROTATIONS if turns_by_step else 1) + (turns_by_step[i] if turns_by_step else 0)
        if sources_by_step:
            expected = expected[sources_by_step[i]]
        assert torch.equal(seen_by_loss[i], expected)
    flips = torch.cat(flips_by_step)
    assert flips.any() and not flips.all()  # 16 draws: both kinds
    if turns_by_step:
        assert torch.cat(turns_by_step).any() and torch.cat(seen_by_loss).max() >= ROTATIONS  # a turned, mirrored image


def test_a_flip_conditioned_model_trains_saves_and_samples_unmirrored(tmp_path):
    out = tmp_path / "run"
    extra = ["--max_train_steps", "2", "--logger", "none", "--rotation_conditioning_prob", "0.5", "--flip_conditioning"]
    ddpm.train(ddpm.parse_args(tiny_args(out, tmp_path / "cache", *extra)))
    pipe = FundusPipeline.from_pretrained(out)
    assert pipe.config.flip_conditioning and pipe.config.rotation_conditioning
    assert pipe.unet.config.num_class_embeds == 24 and pipe.class_conditional  # 3 classes x 4 turns x 2
    assert "mirrored" in pipe.config.training_info["flip conditioning"]
    assert "Flip conditioning: the UNet was told" in (out / "README.md").read_text()
    assert sampled_class_labels(pipe, class_labels="PM") == [1, 1]  # orientation 0: upright, unmirrored
    assert sampled_class_labels(pipe, class_labels="PM", guidance_scale=2.0) == [2, 2, 1, 1]
