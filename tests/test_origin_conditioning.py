"""Origin conditioning: the UNet is told each training image's camera or collection; each sample is drawn as one
origin, given or drawn in the training proportions without touching the starting noise; models without it refuse
origins and load as before."""

import json
import shutil

import pytest
import torch
from test_pipeline_code import tiny_unet
from test_rotation_conditioning import embedding_ids_given_to_the_unet, sampled_class_labels, spy_on_training_steps
from test_train_ddpm import tiny_args

from fundus_diffusion import FundusPipeline
from fundus_diffusion.data import FundusTrainingView, load_phantom_dataset
from fundus_diffusion.models.unet import build_unet
from fundus_diffusion.pipelines.pipeline_fundus import ROTATIONS, check_fundus_config, draw_origins, embedding_ids
from fundus_diffusion.training import ddpm


def two_origins(n: int = 8, size: int = 32, labelled: bool = True):
    """Phantoms whose source column names two cameras (their ids share no file-name prefix): 3 of ``cam-a``, the
    rest ``cam-b``."""
    phantoms = load_phantom_dataset(n, size=size, seed=3)
    return phantoms.map(
        lambda row, i: {"source": "cam-a" if i < 3 else "cam-b", **({} if labelled else {"label": -1})},
        with_indices=True,
    )


def test_embedding_ids_put_each_origin_inside_its_orientation_and_after_all_classes():
    classes, orientation, origin = torch.tensor([0, 1, 2, 1]), torch.tensor([0, 0, 3, 5]), torch.tensor([0, 1, 1, 0])
    assert embedding_ids(classes, orientation, 3, origin, 2).tolist() == [0, 4, (3 * 2 + 1) * 3 + 2, (5 * 2) * 3 + 1]
    assert embedding_ids(classes, None, 3, origin, 2).tolist() == [0, 4, 5, 1]  # origins alone
    assert embedding_ids(None, None, 1, origin, 2).tolist() == [0, 1, 1, 0]  # an unconditional model: the origin
    assert embedding_ids(classes, None, 3).tolist() == classes.tolist()  # no conditioning: the class ids as given


def test_the_loss_gives_the_unet_origin_orientation_and_class_and_a_dropped_class_keeps_its_origin():
    classes, turns, origins = torch.tensor([0, 1, 1]), torch.tensor([0, 1, 3]), torch.tensor([1, 0, 1])
    seen = embedding_ids_given_to_the_unet(
        ((classes,), dict(orientation_ids=turns, origin_ids=origins, num_origins=2)),
        ((classes,), dict(class_dropout_prob=0.999999, origin_ids=origins, num_origins=2)),
        ((), dict(origin_ids=origins, num_origins=2)),
    )
    assert seen == [[3, 2 * 3 + 1, 7 * 3 + 1], [3 + 2, 2, 3 + 2], [1, 0, 1]]


def test_an_origin_conditioned_unet_needs_origins_times_the_other_embeddings():
    assert build_unet("tiny", 16, 4, class_conditional=True, num_origins=2).config.num_class_embeds == 6
    both = build_unet("tiny", 16, 4, class_conditional=False, rotation_conditioning=True, num_origins=3)
    assert both.config.num_class_embeds == ROTATIONS * 3
    channels, counts = {"in": 4, "out": 4}, {"a": 2, "b": 5}
    check_fundus_config("UNet", channels, 6, 3, ["disc"], None, origin_counts=counts)
    with pytest.raises(ValueError, match="one per orientation and origin.*origin_counts it was trained with"):
        check_fundus_config("UNet", channels, 4, 3, ["disc"], None, origin_counts={"a": 2, "b": 5, "c": 1})
    for bad in ({"a": 4}, {"a": 0, "b": 1}, {"": 1, "b": 1}):
        with pytest.raises(ValueError, match="at least two names with positive counts"):
            check_fundus_config("UNet", channels, 6, 3, ["disc"], None, origin_counts=bad)


def test_drawn_origins_follow_the_weights_per_sample_and_leave_the_generators_alone():
    weights = [3, 1]
    generators = [torch.Generator().manual_seed(s) for s in range(4000)]
    ids = draw_origins(weights, generators, 4000, "cpu")
    assert 0.72 < (ids == 0).float().mean() < 0.78  # 3 of 4 expected; 4000 draws: std 0.007
    again = draw_origins(weights, [torch.Generator().manual_seed(s) for s in (7, 3)], 2, "cpu")
    assert again.tolist() == [ids[7].item(), ids[3].item()]  # sample i depends on its own generator only
    assert torch.equal(torch.randn(5, generator=generators[0]), torch.randn(5, generator=torch.Generator().manual_seed(0)))
    one = draw_origins([1, 1], torch.Generator().manual_seed(1), 64, "cpu")
    assert torch.equal(one, draw_origins([1, 1], torch.Generator().manual_seed(1), 64, "cpu")) and 0 < one.sum() < 64
    assert draw_origins([0, 5], None, 8, "cpu").tolist() == [1] * 8  # an origin without images is never drawn


def test_each_batch_carries_the_origin_of_each_of_its_images(tmp_path):
    """On both data paths, for each of two processes: undoing a batch's flips finds each image among the stored ones,
    and the batch's origin id is that image's."""
    from test_data_training_view import batch_sources

    from fundus_diffusion.data.transforms import flip_where

    view = FundusTrainingView(two_origins(6), 32, "disc,atrophy", cache_dir=str(tmp_path))
    assert view.origin_names == ["cam-a", "cam-b"] and view.origin_counts() == {"cam-a": 3, "cam-b": 3}
    stored = [view[i]["pixel_values"] for i in range(len(view))]
    seen = []
    for batches in batch_sources(view):
        for epoch in range(2):
            for batch in batches.epoch(epoch):
                for x, origin in zip(flip_where(batch["pixel_values"], batch["flipped"]), batch["origin_ids"]):
                    row = next(i for i, y in enumerate(stored) if torch.equal(x, y))
                    assert origin == view.origin_ids[row]
                    seen.append(int(origin))
    assert set(seen) == {0, 1}


@pytest.mark.parametrize("labelled", [True, False])
def test_an_origin_conditioned_model_trains_records_its_origins_and_samples_each_as_asked(tmp_path, labelled):
    data = tmp_path / "data"
    two_origins(labelled=labelled).save_to_disk(str(data))
    out = tmp_path / "run"
    extra = ["--max_train_steps", "2", "--logger", "none", "--origin_conditioning", "--rotation_conditioning_prob", "0.5"]
    ddpm.train(ddpm.parse_args(tiny_args(out, tmp_path / "cache", *extra) + ["--dataset", str(data)]))
    pipe = FundusPipeline.from_pretrained(out)
    assert pipe.config.origin_counts == {"cam-a": 3, "cam-b": 5} and pipe.origin_names == ["cam-a", "cam-b"]
    assert pipe.config.training_info["origin conditioning"].startswith("the UNet told each image's origin (cam-a: 3 images")
    card = (out / "README.md").read_text()
    assert "Origin conditioning: the UNet was told" in card and "`cam-b` (5 training images)" in card
    classes = 3 if labelled else 1
    assert pipe.unet.config.num_class_embeds == classes * ROTATIONS * 2 and pipe.class_conditional == labelled
    label = "PM" if labelled else None
    # upright (orientation 0): the embedding id is origin * classes + class; guidance's halves keep the origin
    assert sampled_class_labels(pipe, class_labels=label, origins=["cam-b", "cam-a"]) == [classes + labelled, labelled]
    if labelled:  # the null class first; each sample's origin in both halves
        guided = sampled_class_labels(pipe, class_labels="PM", origins=["cam-b", "cam-a"], guidance_scale=2.0)
        assert guided == [3 + 2, 2, 3 + 1, 1]
    out_given = pipe(batch_size=2, origins="cam-a", num_inference_steps=1, output_type="np")
    assert out_given.origins == ["cam-a", "cam-a"]
    seeds = [torch.Generator().manual_seed(s) for s in range(2)]
    drawn = pipe(batch_size=2, generator=seeds, num_inference_steps=1, output_type="np")
    as_drawn = pipe(
        batch_size=2, generator=[torch.Generator().manual_seed(s) for s in range(2)], origins=drawn.origins,
        num_inference_steps=1, output_type="np",
    )  # fmt: skip
    assert set(drawn.origins) <= {"cam-a", "cam-b"}
    assert (drawn.images == as_drawn.images).all()  # drawing the origin leaves the starting noise as given
    with pytest.raises(ValueError, match="Unknown origin 'drions': this model was trained on cam-a, cam-b"):
        pipe(batch_size=1, origins="drions", num_inference_steps=1)
    with pytest.raises(ValueError, match="Got 3 origins for a batch of 2"):
        pipe(batch_size=2, origins=["cam-a"] * 3, num_inference_steps=1)


def test_a_model_without_origins_refuses_them_and_one_of_one_origin_is_refused(tmp_path):
    out = tmp_path / "run"
    ddpm.train(ddpm.parse_args(tiny_args(out, tmp_path / "cache", "--max_train_steps", "1", "--logger", "none")))
    pipe = FundusPipeline.from_pretrained(out)
    assert pipe.config.get("origin_counts") is None and pipe.origin_names == []
    with pytest.raises(ValueError, match="trained without origin conditioning"):
        pipe(batch_size=1, origins="cam-a", num_inference_steps=1)
    index_path = out / "model_index.json"  # a model saved before origin conditioning existed loads as before
    index = json.loads(index_path.read_text())
    index.pop("origin_counts")
    index_path.write_text(json.dumps(index))
    assert FundusPipeline.from_pretrained(out).origin_names == []
    shutil.rmtree(out)
    argv = tiny_args(out, tmp_path / "cache", "--max_train_steps", "1", "--logger", "none", "--origin_conditioning")
    with pytest.raises(ValueError, match="has one origin \\(phantom\\), so there is nothing to tell the UNet"):
        ddpm.train(ddpm.parse_args(argv))


@pytest.mark.parametrize("extra", [[], ["--patch_diffusion"]])
def test_a_training_step_tells_the_unet_each_images_origin(tmp_path, monkeypatch, extra):
    """The loss gets the batch's origin ids (Patch Diffusion's crops keep their image's) and the number of origins."""
    data = tmp_path / "data"
    two_origins().save_to_disk(str(data))
    # the loss's origin ids and count: after labels, dropout, gamma, masks, orientations, coordinates and weighting
    record = spy_on_training_steps(monkeypatch, "origin_ids", slice(7, 9))
    batches, sources, seen = record.batches, record.sources, record.loss
    argv = tiny_args(tmp_path / "run", tmp_path / "cache", "--max_train_steps", "4", "--logger", "none",
                     "--origin_conditioning", *extra)  # fmt: skip
    ddpm.train(ddpm.parse_args(argv + ["--dataset", str(data)]))
    for i, (origin_ids, num_origins) in enumerate(seen):
        assert num_origins == 2 and torch.equal(origin_ids, batches[i][sources[i]] if sources else batches[i])
    assert set(torch.cat(batches).tolist()) == {0, 1}


@pytest.fixture(scope="module")
def origin_model(tmp_path_factory):
    """A tiny saved unconditional DDPM (disc) conditioned on two origins, cam-b three times as common."""
    from diffusers import DDPMScheduler

    folder = tmp_path_factory.mktemp("origin-model") / "ddpm"
    unet = tiny_unet(channels=4, num_class_embeds=2)
    scheduler = DDPMScheduler(num_train_timesteps=4)
    FundusPipeline(unet=unet, scheduler=scheduler, mask_names=["disc"], origin_counts={"cam-a": 1, "cam-b": 3}).save_pretrained(folder)
    return str(folder)


def test_generated_datasets_record_each_samples_origin_drawn_or_chosen(origin_model, tmp_path):
    from fundus_diffusion.data import load_fundus_dataset
    from fundus_diffusion.generate import GenerationConfig, check_sampling, generate_dataset
    from fundus_diffusion.pipelines.loading import load_fundus_pipeline

    pipe = load_fundus_pipeline(origin_model, device="cpu")
    settings = dict(model=origin_model, num_samples=6, seed=0, shard_size=4, batch_size=4, device="cpu", png=True)
    generate_dataset(pipe, GenerationConfig(**settings, num_inference_steps=2), str(tmp_path / "drawn"))
    drawn = load_fundus_dataset(str(tmp_path / "drawn"))
    alone = [pipe(generator=[torch.Generator("cpu").manual_seed(i)], num_inference_steps=1).origins[0] for i in range(6)]
    assert list(drawn["origin"]) == alone  # sample i's origin comes from its seed, whatever its batch
    assert set(alone) == {"cam-a", "cam-b"}  # seeds 0-5 draw both (cam-a at seed 1)
    card = (tmp_path / "drawn" / "README.md").read_text()
    assert "| origins | " in card and "drawn in the training images' proportions, cam-a 1, cam-b 3" in card
    assert "and `origin` (the\ncamera or collection each sample was drawn as)" in card  # the Columns section names it
    assert "origin" in (tmp_path / "drawn" / "png" / "metadata.csv").read_text().splitlines()[0].split(",")
    generate_dataset(pipe, GenerationConfig(**settings, num_inference_steps=2, origin="cam-a"), str(tmp_path / "chosen"))
    assert set(load_fundus_dataset(str(tmp_path / "chosen"))["origin"]) == {"cam-a"}
    assert 'origins="cam-a"' in (tmp_path / "chosen" / "README.md").read_text()  # the card's snippet redraws sample i
    with pytest.raises(ValueError, match="--origin drions: this model was trained on the origins cam-a, cam-b"):
        check_sampling(pipe, GenerationConfig(**settings, origin="drions"))


def test_a_resume_on_other_origins_and_an_init_from_other_conditions_are_refused(tmp_path):
    data, other = tmp_path / "data", tmp_path / "other"
    two_origins().save_to_disk(str(data))
    two_origins().map(lambda row: {"source": row["source"].replace("cam-b", "cam-c")}).save_to_disk(str(other))
    run = tmp_path / "run"
    common = ["--logger", "none", "--origin_conditioning"]
    first = tiny_args(run, tmp_path / "cache", "--max_train_steps", "2", "--checkpointing_steps", "2", *common)
    ddpm.train(ddpm.parse_args(first + ["--dataset", str(data)]))
    resume = tiny_args(run, tmp_path / "cache", "--max_train_steps", "4", "--resume_from_checkpoint", "latest", *common)
    with pytest.raises(ValueError, match=r"--origin_conditioning on the origins cam-a,cam-c \(checkpoint: on the origins cam-a,cam-b\)"):
        ddpm.train(ddpm.parse_args(resume + ["--dataset", str(other)]))
    ddpm.train(ddpm.parse_args(resume + ["--dataset", str(data)]))  # the same origins resume
    # class + flips and class + two origins: as many embeddings (6), which mean other things
    flipped = tmp_path / "flipped"
    ddpm.train(ddpm.parse_args(tiny_args(flipped, tmp_path / "cache", "--max_train_steps", "1", "--logger", "none",
                                         "--flip_conditioning", "--rotation_conditioning_prob", "0")))  # fmt: skip
    start = tiny_args(tmp_path / "b", tmp_path / "cache", "--max_train_steps", "1", *common, "--init_from", str(flipped))
    with pytest.raises(ValueError, match=r"flip_conditioning \(True there, False here\); origins \(\[\] there, \['cam-a', 'cam-b'\] here\)"):
        ddpm.train(ddpm.parse_args(start + ["--rotation_conditioning_prob", "0", "--dataset", str(data)]))
