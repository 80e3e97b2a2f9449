import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from fundus_diffusion.models.dcgan import DCGANDiscriminator, DCGANGenerator, upsampling_plan
from fundus_diffusion.training.augment import DiffAugment, color, cutout, translation

NZ = 8


def tiny_generator(resolution=12, channels=4, num_class_embeds=None, seed=0):
    torch.manual_seed(seed)
    return DCGANGenerator(
        resolution, channels, nz=NZ, ngf=2, num_class_embeds=num_class_embeds, class_embed_dim=4
    ).eval()


@pytest.mark.parametrize("resolution,seed,factors", [(64, 4, [2] * 4), (256, 4, [2] * 6), (360, 5, [3, 3, 2, 2, 2])])
def test_upsampling_plan_is_exact(resolution, seed, factors):
    assert upsampling_plan(resolution) == (seed, factors)
    assert seed * int(np.prod(factors)) == resolution


@pytest.mark.parametrize(
    "resolution,nearest", [(4, "Nearest: 6 or 8"), (100, "Nearest: 96 or 108"), (7 * 16, "Nearest: 108 or 120")]
)
def test_unsupported_resolutions_raise_and_suggest_the_nearest(resolution, nearest):
    with pytest.raises(ValueError, match=f"got {resolution}. {nearest}"):
        DCGANGenerator(resolution, 4, nz=NZ, ngf=2)


@pytest.mark.parametrize("resolution", [64, 128, 256, 360])
@pytest.mark.parametrize("channels", [4, 5])
def test_generator_and_discriminator_shapes(resolution, channels):
    generator = tiny_generator(resolution, channels)
    discriminator = DCGANDiscriminator(resolution, channels, ndf=2)
    with torch.no_grad():
        x = generator(torch.randn(2, NZ))
        assert x.shape == (2, channels, resolution, resolution)
        assert x.min() >= -1 and x.max() <= 1
        assert discriminator(x).shape == (2,)


def test_paper_defaults_and_xavier_init():
    generator, discriminator = DCGANGenerator(), DCGANDiscriminator()
    assert (generator.config.sample_size, generator.config.nz, generator.config.ngf) == (360, 100, 32)
    assert discriminator.config.ndf == 64
    conv = generator.net[0]
    bound = np.sqrt(6 / (conv.weight.shape[0] * 25 + conv.weight.shape[1] * 25))  # Xavier-uniform, 5x5 kernel
    assert conv.weight.abs().max() <= bound and conv.weight.std() > bound / 3
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in discriminator.modules())


def test_conditional_models_need_labels_and_use_them():
    generator = tiny_generator(num_class_embeds=3)
    discriminator = DCGANDiscriminator(12, 4, ndf=2, num_class_embeds=3, spectral_norm=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in discriminator.modules())
    z = torch.randn(2, NZ)
    with torch.no_grad():
        assert not torch.equal(generator(z, torch.tensor([0, 0])), generator(z, torch.tensor([1, 1])))
        assert discriminator(generator(z, torch.tensor([0, 1])), torch.tensor([0, 1])).shape == (2,)
    with pytest.raises(ValueError, match="class_labels"):
        generator(z)
    with pytest.raises(ValueError, match="class_labels"):
        discriminator(torch.zeros(2, 4, 12, 12))


def test_save_load_round_trip(tmp_path):
    generator = tiny_generator(num_class_embeds=3)
    discriminator = DCGANDiscriminator(12, 4, ndf=2, num_class_embeds=3, spectral_norm=True).eval()
    generator.save_pretrained(tmp_path / "g")
    discriminator.save_pretrained(tmp_path / "d")
    assert (tmp_path / "g" / "diffusion_pytorch_model.safetensors").exists()
    g2, d2 = DCGANGenerator.from_pretrained(tmp_path / "g"), DCGANDiscriminator.from_pretrained(tmp_path / "d")
    z, y = torch.randn(3, NZ), torch.tensor([0, 1, 2])
    with torch.no_grad():
        x = generator(z, y)
        assert torch.equal(x, g2(z, y))
        assert torch.allclose(discriminator(x, y), d2(x, y))


# ------------------------------------------------------------------------------------------------ pipeline


def get_dummy_components(num_class_embeds=None, channels=5):
    return {"gan_generator": tiny_generator(channels=channels, num_class_embeds=num_class_embeds)}


def get_dummy_inputs(seed=0, batch_size=2):
    return {"batch_size": batch_size, "generator": torch.Generator().manual_seed(seed), "output_type": "np"}


@pytest.fixture
def pipe():
    from fundus_diffusion import FundusGANPipeline

    return FundusGANPipeline(**get_dummy_components())


def test_pipeline_outputs_and_value_ranges(pipe):
    assert pipe.config.mask_names == ["disc", "atrophy"] and pipe.config.image_channels == 3
    out = pipe(**get_dummy_inputs())
    assert out.images.shape == (2, 12, 12, 3) and out.images.min() >= 0 and out.images.max() <= 1
    assert set(np.unique(out.masks[0]["disc"])) <= {0.0, 1.0} and out.masks[1]["atrophy"].shape == (12, 12)
    pil = pipe(batch_size=3, output_type="pil")
    assert len(pil.images) == 3 and pil.images[0].mode == "RGB" and pil.images[0].size == (12, 12)
    assert pil.masks[2]["disc"].mode == "L" and set(np.unique(np.asarray(pil.masks[2]["disc"]))) <= {0, 255}
    pt = pipe(**{**get_dummy_inputs(), "output_type": "pt"})
    assert pt.images.shape == (2, 3, 12, 12)


def test_pipeline_is_deterministic_by_seed_and_per_sample(pipe):
    a, b = pipe(**get_dummy_inputs(seed=1)), pipe(**get_dummy_inputs(seed=1))
    assert np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, pipe(**get_dummy_inputs(seed=2)).images)
    images, masks = pipe(**get_dummy_inputs(seed=1), return_dict=False)
    assert np.array_equal(images, a.images) and np.array_equal(masks[0]["disc"], a.masks[0]["disc"])
    pair = pipe(batch_size=2, generator=[torch.Generator().manual_seed(s) for s in (5, 6)], output_type="np")
    single = pipe(batch_size=1, generator=[torch.Generator().manual_seed(6)], output_type="np")
    np.testing.assert_allclose(pair.images[1], single.images[0], atol=1e-6)
    # num_inference_steps and guidance_scale are accepted (uniform interface) and change nothing.
    same = pipe(**get_dummy_inputs(seed=1), num_inference_steps=20, guidance_scale=3.0)
    assert np.array_equal(same.images, a.images)


def test_pipeline_latents_and_bad_inputs(pipe):
    latents = torch.randn(2, NZ)
    assert np.array_equal(pipe(batch_size=2, latents=latents, output_type="np").images,
                          pipe(batch_size=2, latents=latents[:, :, None, None], output_type="np").images)  # fmt: skip
    with pytest.raises(ValueError, match="latents shape"):
        pipe(batch_size=3, latents=latents)
    with pytest.raises(ValueError, match="generators"):
        pipe(batch_size=3, generator=[torch.Generator()])
    with pytest.raises(ValueError, match="unconditional"):
        pipe(batch_size=2, class_labels="PM")
    with pytest.raises(ValueError, match="output_type"):
        pipe(batch_size=1, output_type="rgba")


def test_conditional_pipeline_labels():
    from fundus_diffusion import FundusGANPipeline

    pipe = FundusGANPipeline(**get_dummy_components(num_class_embeds=3))
    by_name = pipe(**get_dummy_inputs(), class_labels=["PM", "non-PM"])
    by_id = pipe(**get_dummy_inputs(), class_labels=torch.tensor([1, 0]))
    assert np.array_equal(by_name.images, by_id.images)
    assert not np.array_equal(by_name.images, pipe(**get_dummy_inputs(), class_labels="PM").images)
    null = pipe(**get_dummy_inputs(), class_labels=[None, -1])
    assert np.array_equal(null.images, pipe(**get_dummy_inputs()).images)  # no labels = the null class
    for bad in (["PM"], ["drusen", "PM"], [7, 0]):
        with pytest.raises(ValueError, match="class_labels|class label"):
            pipe(**get_dummy_inputs(), class_labels=bad)


def test_pipeline_rejects_mismatched_config():
    from fundus_diffusion import FundusGANPipeline

    with pytest.raises(ValueError, match="channels"):
        FundusGANPipeline(**get_dummy_components(channels=4), mask_names=["disc", "atrophy"])
    with pytest.raises(ValueError, match="class embeddings"):
        FundusGANPipeline(**get_dummy_components(num_class_embeds=2))


def test_pipeline_from_pretrained_in_a_fresh_process(tmp_path, pipe):
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "FundusGANPipeline"]
    assert index["gan_generator"] == ["dcgan_generator", "DCGANGenerator"] and index["mask_names"] == "disc,atrophy"
    assert (tmp_path / "gan_generator" / "dcgan_generator.py").exists()
    assert {"pipeline.py", "pipeline_fundus.py", "dcgan_generator.py"} <= {p.name for p in tmp_path.glob("*.py")}
    assert (tmp_path / "gan_generator" / "diffusion_pytorch_model.safetensors").exists()
    expected = pipe(**get_dummy_inputs(seed=3)).images
    np.save(tmp_path / "expected.npy", expected)
    code = (
        "import sys, numpy as np, torch\n"
        "from fundus_diffusion import FundusGANPipeline\n"
        "pipe = FundusGANPipeline.from_pretrained(sys.argv[1])\n"
        "assert pipe.config.mask_names == ['disc', 'atrophy'], pipe.config\n"
        "out = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), output_type='np')\n"
        "assert np.array_equal(out.images, np.load(sys.argv[1] + '/expected.npy'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


# ------------------------------------------------------------------------------------------------ DiffAugment


def test_diffaugment_moves_masks_with_the_image_and_keeps_gradients():
    torch.manual_seed(0)
    rgb = torch.rand(4, 3, 16, 16) * 2 - 1
    x = torch.cat([rgb, (rgb[:, :1] > 0).float() * 2 - 1], dim=1)  # mask channel = a function of the image
    assert torch.equal(color(x)[:, 3:], x[:, 3:]) and not torch.equal(color(x)[:, :3], x[:, :3])
    for geometric in (translation, cutout):
        y = geometric(x)
        assert y.shape == x.shape
        moved = y[:, 3] != 0  # where the pixel was not filled
        assert torch.equal(y[:, 3][moved], torch.where(y[:, 0] > 0, 1.0, -1.0)[moved])
    x.requires_grad_(True)
    DiffAugment("color,translation,cutout")(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_diffaugment_policy():
    assert not DiffAugment("") and DiffAugment("color, cutout").names == ("color", "cutout")
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(DiffAugment("")(x), x)
    with pytest.raises(ValueError, match="Unknown DiffAugment"):
        DiffAugment("color,rotate")


# ------------------------------------------------------------------------------------------------ training pieces


@pytest.mark.parametrize("loss", ["bce", "hinge"])
def test_one_step_updates_both_networks_and_d_gets_no_generator_gradients(loss):
    from accelerate import Accelerator

    from fundus_diffusion.training.dcgan import METRICS, DCGANStep

    accelerator = Accelerator(cpu=True)
    generator = tiny_generator(num_class_embeds=3).train()
    discriminator = DCGANDiscriminator(12, 4, ndf=2, num_class_embeds=3)
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-2)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=1e-2)
    before_g = [p.detach().clone() for p in generator.parameters()]
    before_d = [p.detach().clone() for p in discriminator.parameters()]
    step = DCGANStep(
        accelerator, generator, discriminator, opt_g, opt_d, loss=loss, augment=DiffAugment("translation"),
        class_conditional=True, class_dropout_prob=0.5, label_smoothing=0.1 if loss == "bce" else 0.0,
    )  # fmt: skip
    metrics = step(torch.rand(4, 4, 12, 12) * 2 - 1, torch.tensor([0, 1, 2, 1]))
    assert metrics.shape == (len(METRICS),) and torch.isfinite(metrics).all()
    assert 0 <= metrics[2] <= 1 and 0 <= metrics[3] <= 1
    assert all(not torch.equal(a, b) for a, b in zip(before_g, generator.parameters()) if a.ndim == 4)
    assert all(not torch.equal(a, b) for a, b in zip(before_d, discriminator.parameters()) if a.ndim == 4)
    assert all(p.grad is None for p in discriminator.parameters())


def test_device_batches_are_deterministic_per_epoch_and_resumable(tmp_path):
    from fundus_diffusion.data import FundusTrainingView, load_phantom_dataset
    from fundus_diffusion.training.batches import DeviceBatches

    view = FundusTrainingView(load_phantom_dataset(6, size=64, seed=1), 16, ("disc",), cache_dir=str(tmp_path))
    batches = DeviceBatches(view, batch_size=2, device="cpu", seed=3)
    assert len(batches) == 3
    epoch = list(batches.epoch(0))
    assert epoch[0]["pixel_values"].shape == (2, 4, 16, 16) and epoch[0]["class_labels"].shape == (2,)
    assert set(torch.unique(epoch[0]["pixel_values"][:, 3]).tolist()) <= {-1.0, 1.0}
    assert torch.equal(list(batches.epoch(0, skip=2))[0]["pixel_values"], epoch[2]["pixel_values"])
    assert not torch.equal(list(batches.epoch(1))[0]["pixel_values"], epoch[0]["pixel_values"])
    # Two processes see disjoint halves of the data (a flip-invariant fingerprint: each sample's pixel sum).
    halves = [DeviceBatches(view, batch_size=3, device="cpu", seed=3, process_index=i, num_processes=2) for i in (0, 1)]
    seen = torch.cat([next(h.epoch(0))["pixel_values"].sum(dim=(1, 2, 3)) for h in halves])
    everything = torch.cat([b["pixel_values"] for b in epoch]).sum(dim=(1, 2, 3))
    assert torch.allclose(seen.sort().values, everything.sort().values)


def test_loader_batches_follow_their_seed_per_epoch_and_resume(tmp_path):
    from accelerate import Accelerator

    from fundus_diffusion.data import FundusTrainingView, load_phantom_dataset
    from fundus_diffusion.training.batches import LoaderBatches

    view = FundusTrainingView(
        load_phantom_dataset(6, size=64, seed=1), 16, ("disc",), cache_dir=str(tmp_path)
    )

    def order(seed, epoch, skip=0, global_seed=0):
        torch.manual_seed(global_seed)  # what --seed sets before the loader is built: must not matter
        batches = LoaderBatches(Accelerator(cpu=True), view, batch_size=2, seed=seed)
        return [b["pixel_values"].sum(dim=(1, 2, 3)).tolist() for b in batches.epoch(epoch, skip=skip)]

    first = order(3, 0)
    assert len(first) == 3 and order(3, 0, global_seed=1) == first  # the data seed decides, not the global one
    assert order(3, 1) != first and order(4, 0) != first
    assert order(3, 1, skip=1) == order(3, 1)[1:]  # a resumed epoch continues the uninterrupted one's order


def test_sample_diversity():
    from fundus_diffusion.training.dcgan import sample_diversity

    same = torch.randn(1, 4, 32, 32).expand(5, -1, -1, -1)
    assert sample_diversity(same) == pytest.approx(0.0, abs=1e-6)
    assert sample_diversity(torch.randn(5, 4, 32, 32)) > 1.0


def parse(argv):
    from fundus_diffusion.training import dcgan

    return dcgan.parse_args(["--output_dir", "out", *argv])


def test_paper_preset_and_overrides():
    paper = parse(["--preset", "paper", "--diffaugment", "color", "--ema_beta", "0.99"])
    assert (paper.resolution, paper.train_batch_size, paper.num_epochs) == (360, 32, 100)
    assert (paper.nz, paper.ngf, paper.ndf) == (100, 32, 64)
    assert (paper.learning_rate, paper.adam_beta1, paper.loss, paper.num_validation_images) == (2e-4, 0.5, "bce", 64)
    assert paper.diffaugment == "color" and paper.ema_max_decay == 0.99  # explicit flags win over the preset
    assert paper.use_ema  # the deprecated --ema_beta X still means: keep an EMA with decay X
    assert parse(["--preset", "paper", "--masks", "disc,atrophy"]).num_epochs == 130
    assert parse(["--preset", "paper", "--num_epochs", "5"]).num_epochs == 5
    assert parse(["--compile"]).compile and parse(["--torch_compile"]).compile  # the old spelling still works
    assert not parse([]).compile
    with pytest.raises(SystemExit):
        parse(["--loss", "hinge", "--label_smoothing", "0.1"])
    with pytest.raises(SystemExit):
        parse(["--diffaugment", "rotate"])
