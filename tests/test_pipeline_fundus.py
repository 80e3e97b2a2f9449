import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import torch_threads
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UNet2DModel,
    UniPCMultistepScheduler,
)
from diffusers.utils.torch_utils import randn_tensor

from fundus_diffusion import FundusPipeline, FundusPipelineOutput
from fundus_diffusion.data import NUM_CLASS_EMBEDS
from fundus_diffusion.hub import save_model
from fundus_diffusion.pipelines.loading import SCHEDULERS, load_fundus_pipeline, use_scheduler
from fundus_diffusion.pipelines.pipeline_fundus import starting_noise, step_noise_generators


def get_dummy_components(mask_names=("disc",), num_class_embeds=NUM_CLASS_EMBEDS, in_channels=None):
    torch.manual_seed(0)
    channels = in_channels or 3 + len(mask_names)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(4, 8),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=4,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        num_class_embeds=num_class_embeds,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=50,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        timestep_spacing="trailing",
    )
    return {"unet": unet, "scheduler": scheduler, "mask_names": list(mask_names)}


def get_dummy_inputs(device="cpu", seed=0):
    return {
        "batch_size": 2,
        "class_labels": ["PM", "non-PM"],
        "generator": torch.Generator(device).manual_seed(seed),
        "num_inference_steps": 3,
        "output_type": "np",
    }


def make_pipe(**kwargs):
    pipe = FundusPipeline(**get_dummy_components(**kwargs))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("mask_names", [("disc",), ("disc", "atrophy")])
def test_shapes_and_value_ranges(mask_names):
    pipe = make_pipe(mask_names=mask_names)
    out = pipe(**get_dummy_inputs())
    assert isinstance(out, FundusPipelineOutput)
    assert out.images.shape == (2, 8, 8, 3) and out.images.dtype == np.float32
    assert out.images.min() >= 0 and out.images.max() <= 1
    assert [sorted(m) for m in out.masks] == [sorted(mask_names)] * 2
    for masks in out.masks:
        for mask in masks.values():
            assert mask.shape == (8, 8) and set(np.unique(mask)) <= {0.0, 1.0}

    pil = pipe(**{**get_dummy_inputs(), "output_type": "pil"})
    assert all(im.mode == "RGB" and im.size == (8, 8) for im in pil.images)
    assert all(m.mode == "L" and set(np.unique(np.asarray(m))) <= {0, 255} for ms in pil.masks for m in ms.values())
    np.testing.assert_allclose(np.stack([np.asarray(im) for im in pil.images]) / 255, out.images, atol=1 / 255)

    pt = pipe(**{**get_dummy_inputs(), "output_type": "pt"})
    assert pt.images.shape == (2, 3, 8, 8) and torch.is_tensor(pt.masks[0][mask_names[0]])


def test_image_only_pipeline_has_three_channels_and_no_masks():
    out = make_pipe(mask_names=())(**get_dummy_inputs())
    assert out.images.shape == (2, 8, 8, 3) and out.masks == [{}, {}]


def test_same_seed_same_samples_and_per_sample_generators():
    pipe = make_pipe()
    a, b = pipe(**get_dummy_inputs(seed=0)).images, pipe(**get_dummy_inputs(seed=0)).images
    assert np.array_equal(a, b)
    assert np.abs(a - pipe(**get_dummy_inputs(seed=1)).images).max() > 1e-3
    # With one generator per sample, sample i does not depend on the rest of the batch.
    batch = pipe(**{**get_dummy_inputs(), "generator": [torch.Generator().manual_seed(s) for s in (7, 8)]}).images
    alone = pipe(
        **{
            **get_dummy_inputs(),
            "batch_size": 1,
            "class_labels": ["non-PM"],
            "generator": torch.Generator().manual_seed(8),
        }
    ).images
    np.testing.assert_allclose(batch[1], alone[0], atol=1e-5)


def test_step_noise_is_drawn_on_the_execution_device_from_per_sample_seeds(monkeypatch):
    cpu = [torch.Generator().manual_seed(s) for s in (7, 8)]
    assert step_noise_generators(cpu, torch.device("cpu")) is cpu  # on the CPU nothing changes
    assert step_noise_generators(None, torch.device("cuda")) is None

    made_for = []

    def fake_device_generator(device):  # this machine has no GPU: record the device, hand out a CPU generator
        made_for.append(str(device))
        return real_generator()

    real_generator = torch.Generator
    monkeypatch.setattr(torch, "Generator", fake_device_generator)

    def derived_noise(seeds):
        generators = [real_generator().manual_seed(s) for s in seeds]
        return [torch.randn(3, generator=g) for g in step_noise_generators(generators, torch.device("cuda"))]

    pair, alone = derived_noise([7, 8]), derived_noise([8])
    assert made_for == ["cuda"] * 3
    assert torch.equal(pair[1], alone[0])  # sample i's step noise depends only on generator i
    assert not torch.equal(pair[0], pair[1])
    caller = real_generator().manual_seed(8)
    single = step_noise_generators(caller, torch.device("cuda"))
    assert torch.equal(torch.randn(3, generator=single), alone[0])
    assert torch.equal(torch.randn(3, generator=caller), torch.randn(3, generator=real_generator().manual_seed(8)))


def test_dict_and_tuple_outputs_match():
    pipe = make_pipe()
    out = pipe(**get_dummy_inputs())
    images, masks = pipe(**get_dummy_inputs(), return_dict=False)
    assert np.array_equal(out.images, images)
    assert all(np.array_equal(out.masks[i]["disc"], masks[i]["disc"]) for i in range(2))


@pytest.mark.parametrize(
    "scheduler_class",
    [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler, EulerDiscreteScheduler],
)
def test_any_scheduler_runs(scheduler_class):
    pipe = make_pipe()
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    out = pipe(**get_dummy_inputs())
    assert out.images.shape == (2, 8, 8, 3) and np.isfinite(out.images).all()


def test_classifier_free_guidance_changes_samples_and_needs_labels():
    pipe = make_pipe()
    plain = pipe(**get_dummy_inputs()).images
    guided = pipe(**get_dummy_inputs(), guidance_scale=3.0).images
    assert np.isfinite(guided).all() and np.abs(plain - guided).max() > 1e-4
    unconditional = pipe(**{**get_dummy_inputs(), "class_labels": None}).images
    assert np.isfinite(unconditional).all()
    with pytest.raises(ValueError, match="guidance"):
        pipe(**{**get_dummy_inputs(), "class_labels": None}, guidance_scale=2.0)


def weaker_unet(unet: UNet2DModel, seed: int = 1) -> UNet2DModel:
    """A UNet of the same configuration with other weights: a stand-in for an earlier snapshot."""
    torch.manual_seed(seed)
    return UNet2DModel.from_config(unet.config)


def make_pipe_with_unet(unet: UNet2DModel) -> FundusPipeline:
    pipe = FundusPipeline(**{**get_dummy_components(), "unet": unet})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_autoguidance_interpolates_between_the_weak_and_the_main_model():
    pipe = make_pipe()
    weak = weaker_unet(pipe.unet)
    main_only = pipe(**get_dummy_inputs()).images
    weak_only = make_pipe_with_unet(weak)(**get_dummy_inputs()).images
    assert np.abs(main_only - weak_only).max() > 1e-3  # else the checks below could not fail

    at_zero = pipe(**get_dummy_inputs(), autoguidance_unet=weak, autoguidance_scale=0.0).images
    at_one = pipe(**get_dummy_inputs(), autoguidance_unet=weak, autoguidance_scale=1.0).images
    guided = pipe(**get_dummy_inputs(), autoguidance_unet=weak, autoguidance_scale=2.0).images
    np.testing.assert_array_equal(at_zero, weak_only)  # weak + 0 * (main - weak): the weak model alone
    np.testing.assert_allclose(at_one, main_only, atol=1e-6)
    assert np.isfinite(guided).all() and min(np.abs(guided - main_only).max(), np.abs(guided - weak_only).max()) > 1e-4


def test_a_pipeline_saved_with_its_guide_guides_with_it(tmp_path):
    pipe = make_pipe()
    weak = weaker_unet(pipe.unet)
    expected = pipe(**get_dummy_inputs(), autoguidance_unet=weak, autoguidance_scale=1.5).images
    guided = FundusPipeline(**get_dummy_components(), guide_unet=weak)
    guided.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(guided(**get_dummy_inputs(), autoguidance_scale=1.5).images, expected)
    np.testing.assert_array_equal(guided(**get_dummy_inputs()).images, pipe(**get_dummy_inputs()).images)  # w = 1

    save_model(guided, tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["guide_unet"] == ["diffusers", "UNet2DModel"]
    loaded = load_fundus_pipeline(str(tmp_path), device="cpu")
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(loaded(**get_dummy_inputs(), autoguidance_scale=1.5).images, expected, atol=1e-5)
    save_model(pipe, tmp_path / "plain")  # without a guide: none in the folder, none loaded
    assert not (tmp_path / "plain" / "guide_unet").exists()
    assert load_fundus_pipeline(str(tmp_path / "plain"), device="cpu").guide_unet is None


def test_autoguidance_keeps_given_channels_exactly_with_resampling():
    pipe = make_pipe(mask_names=("disc", "atrophy"))
    disc = np.zeros((8, 8), np.float32)
    disc[2:5, 3:6] = 1
    out = pipe(
        **{**get_dummy_inputs(), "output_type": "np"}, masks={"disc": disc}, resample_steps=2,
        autoguidance_unet=weaker_unet(pipe.unet), autoguidance_scale=2.0,
    )  # fmt: skip
    assert all(np.array_equal(masks["disc"], disc) for masks in out.masks) and np.isfinite(out.images).all()


def test_autoguidance_refuses_what_it_cannot_use():
    pipe = make_pipe()
    with pytest.raises(ValueError, match="needs a weaker model to guide with: pass autoguidance_unet"):
        pipe(**get_dummy_inputs(), autoguidance_scale=2.0)
    with pytest.raises(ValueError, match="not both"):
        pipe(**get_dummy_inputs(), guidance_scale=2.0, autoguidance_unet=weaker_unet(pipe.unet))
    other = make_pipe(mask_names=("disc", "atrophy")).unet  # 5 channels against 4
    with pytest.raises(ValueError, match="in_channels"):
        pipe(**get_dummy_inputs(), autoguidance_unet=other, autoguidance_scale=2.0)
    with pytest.raises(ValueError, match=r"move it with autoguidance_unet.to"):
        pipe(**get_dummy_inputs(), autoguidance_unet=weaker_unet(pipe.unet).to(torch.float64), autoguidance_scale=2.0)


def test_labels_accept_names_ids_and_unknown():
    pipe = make_pipe()
    assert pipe.class_ids(["PM", 0, None, -1], 4).tolist() == [1, 0, 2, 2]
    assert pipe.class_ids("PM", 3).tolist() == [1, 1, 1]


def test_bad_inputs_raise():
    pipe = make_pipe()
    with pytest.raises(ValueError, match="Unknown class label 'drusen'"):
        pipe(**{**get_dummy_inputs(), "class_labels": ["PM", "drusen"]})
    with pytest.raises(ValueError, match="Unknown class label 5"):
        pipe(**{**get_dummy_inputs(), "class_labels": [5, 0]})
    with pytest.raises(ValueError, match="3 class labels for a batch of 2"):
        pipe(**{**get_dummy_inputs(), "class_labels": ["PM"] * 3})
    with pytest.raises(ValueError, match="multiples of 2"):
        pipe(**get_dummy_inputs(), resolution=7)
    with pytest.raises(ValueError, match="need a UNet with 5 input and output channels"):
        FundusPipeline(**get_dummy_components(mask_names=("disc", "atrophy"), in_channels=4))
    with pytest.raises(ValueError, match="class embeddings"):
        FundusPipeline(**get_dummy_components(num_class_embeds=2))
    unconditional = make_pipe(num_class_embeds=None)
    assert unconditional(**{**get_dummy_inputs(), "class_labels": None}).images.shape == (2, 8, 8, 3)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional(**get_dummy_inputs())


def test_a_mask_image_saved_as_0_and_1_is_refused_not_read_as_empty():
    """An L image has 255 = structure: one saved with 1 = structure would condition on an empty mask, silently."""
    from PIL import Image

    pipe = make_pipe()
    disc = np.zeros((8, 8), np.uint8)
    disc[2:6, 3:7] = 1
    with pytest.raises(ValueError, match=r"Mask 'disc' of sample 0 has pixels above 0 \(at most 1\) but none at 128.*Fix: give it as 0 / 255"):
        pipe(**get_dummy_inputs(), masks={"disc": Image.fromarray(disc)})
    for given in (Image.fromarray(disc * 255), disc.astype(np.float32), Image.fromarray(np.zeros((8, 8), np.uint8))):
        out = pipe(**get_dummy_inputs(), masks={"disc": given})  # 0 / 255, an array in {0, 1}, an empty mask
        assert np.array_equal(out.masks[0]["disc"], np.asarray(given, dtype=np.float32) > 0)


def test_size_errors_show_the_resolution_and_frame_what_is_not_square():
    """A square input of another size may be resized if framed as training framed it; a non-square one must be
    framed (a resize stretches it): the Python message said "resize" for both (new-user pass, session 31)."""
    pipe = make_pipe()
    with pytest.raises(ValueError, match=r"generates 8x8 px \(resolution=8\)\. Fix: if it is framed .* resize it to 8x8 with nearest"):
        pipe(**get_dummy_inputs(), masks={"disc": np.zeros((4, 4))})
    with pytest.raises(ValueError, match=r"is 6x4 px; .*, and a resize would stretch it\. Fix: .*frame_pair\(photograph, masks, resolution=8\)"):
        pipe(**get_dummy_inputs(), image=np.zeros((4, 6, 3)))


def test_save_load_round_trip_in_this_and_a_fresh_process(tmp_path):
    pipe = make_pipe(mask_names=("disc", "atrophy"))
    expected = pipe(**get_dummy_inputs()).images
    save_model(pipe, tmp_path, metrics=[{"name": "FID", "value": 12.5, "notes": "test"}])

    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert {"model_index.json", "README.md", "pipeline.py", "unet/diffusion_pytorch_model.safetensors"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "FundusPipeline"] and index["mask_names"] == "disc,atrophy"
    card = (tmp_path / "README.md").read_text()
    assert "library_name: diffusers" in card and "not for clinical use" in card
    assert "| FID | 12.5 | test |" in card and "| 4 | atrophy mask |" in card

    loaded = FundusPipeline.from_pretrained(tmp_path)  # this class, not the folder's pipeline.py
    assert type(loaded) is FundusPipeline
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.id2label == {0: "non-PM", 1: "PM"}
    np.testing.assert_allclose(loaded(**get_dummy_inputs()).images, expected, atol=1e-4)

    np.save(tmp_path / "expected.npy", expected)
    script = (
        "import sys, numpy as np, torch\n"
        "from fundus_diffusion import FundusPipeline\n"
        "pipe = FundusPipeline.from_pretrained(sys.argv[1])\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        "out = pipe(batch_size=2, class_labels=['PM', 'non-PM'], generator=torch.Generator().manual_seed(0),\n"
        "           num_inference_steps=3, output_type='np')\n"
        "np.testing.assert_allclose(out.images, np.load(sys.argv[1] + '/expected.npy'), atol=1e-4)\n"
        "print('fresh process ok', sorted(out.masks[0]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fresh process ok ['atrophy', 'disc']" in result.stdout


def test_save_pretrained_writes_code_and_refuses_pickles(tmp_path):
    pipe = make_pipe()
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "pipeline.py").exists()
    assert not (tmp_path / "README.md").exists()  # cards are written by the training / generation code, not here
    with pytest.raises(ValueError, match="safetensors only"):
        pipe.save_pretrained(tmp_path / "pickled", safe_serialization=False)



@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_every_named_sampler_keeps_sample_i_independent_of_the_batch(scheduler):
    """generate.py's promise (sample i depends on its own seed only) for every --scheduler, the stochastic ones
    (ddpm, sde-dpmsolver++, euler_ancestral: fresh noise each step) included."""
    pipe = make_pipe()
    use_scheduler(pipe, scheduler)
    inputs = {**get_dummy_inputs(), "num_inference_steps": 4}
    batch = pipe(**{**inputs, "generator": [torch.Generator().manual_seed(s) for s in (7, 8)]}).images
    alone = pipe(**{**inputs, "batch_size": 1, "class_labels": ["non-PM"], "generator": torch.Generator().manual_seed(8)}).images
    np.testing.assert_allclose(batch[1], alone[0], atol=1e-5)
    assert np.isfinite(batch).all() and np.abs(batch[0] - batch[1]).max() > 1e-3


@pytest.fixture
def four_threads():
    """starting_noise draws in as many threads as torch's intra-op threads, which the suite sets to one."""
    with torch_threads(4):
        yield


def test_starting_noise_is_randn_tensors_draw_and_leaves_the_generators_where_it_would(four_threads, monkeypatch):
    """Drawn in threads, one per-sample CPU generator each: the same numbers, in the same order, as diffusers'
    randn_tensor, and each generator advanced as far (its next draws, the DDPM's step noise among them, unchanged).
    One generator listed for several samples draws in turn, without threads (there the order matters)."""
    from concurrent.futures import ThreadPoolExecutor

    from fundus_diffusion.pipelines import pipeline_fundus

    pools = []
    monkeypatch.setattr(pipeline_fundus, "ThreadPoolExecutor", lambda workers: pools.append(workers) or ThreadPoolExecutor(workers))

    def generators():
        return [torch.Generator("cpu").manual_seed(s) for s in (3, 1, 4, 1, 5)]

    for dtype in (torch.float32, torch.float16):
        ours, theirs = generators(), generators()
        drawn = starting_noise((5, 4, 8, 8), ours, torch.device("cpu"), dtype)
        assert drawn.dtype == dtype and torch.equal(drawn, randn_tensor((5, 4, 8, 8), generator=theirs, dtype=dtype))
        assert not torch.equal(drawn[0], drawn[2])  # each sample its own generator's numbers
        assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(ours, theirs))
    assert pools == [4, 4]  # drawn in threads, as many as torch's
    shared = torch.Generator("cpu").manual_seed(7)
    expected = randn_tensor((4, 4, 8, 8), generator=[torch.Generator("cpu").manual_seed(7)] * 4)
    assert torch.equal(starting_noise((4, 4, 8, 8), [shared] * 4, torch.device("cpu"), torch.float32), expected)
    assert pools == [4, 4]  # no pool for the shared generator
