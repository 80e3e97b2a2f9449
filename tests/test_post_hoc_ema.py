"""Post-hoc EMA synthesis (fundus_diffusion.training.post_hoc_ema, scripts/post_hoc_ema.py) on a tiny UNet whose
profiles are tracked by hand; training with --post_hoc_ema is tested in test_train_ddpm.py."""

import json
import runpy
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors import safe_open

from fundus_diffusion import FundusPipeline, hub
from fundus_diffusion.models.unet import build_unet
from fundus_diffusion.pipelines.loading import load_fundus_pipeline
from fundus_diffusion.training import post_hoc_ema as phema

REPO = Path(__file__).resolve().parents[1]
SIGMA_RELS = (0.05, 0.28)


def make_run(folder: Path, steps: int = 6, every: int = 2, learning: bool = True, guide: bool = False):
    """A run folder as ``train_ddpm.py --post_hoc_ema`` (``guide``: and ``--guide_step``) leaves it: a saved pipeline
    and profile snapshots. The "training" moves the weights by seeded noise (or not at all); returns the online UNet
    and the tracker."""
    torch.manual_seed(0)
    unet = build_unet("tiny", 16, 4)
    pipe = FundusPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10), mask_names=["disc"])
    info = {"steps": steps, "epochs": 3, "weights": "EMA, decay up to 0.9999"}
    if guide:
        pipe.register_modules(guide_unet=build_unet("tiny", 16, 4))
        info["autoguidance guide"] = "the EMA model of step 3 ships with the final model as its guide_unet"
    hub.save_model(pipe, str(folder), training_info=info)
    (folder / "training_args.json").write_text(json.dumps({"post_hoc_ema": True}))
    tracker = phema.make_post_hoc_ema(unet, SIGMA_RELS, str(folder), "cpu")
    for step in range(1, steps + 1):
        if learning:
            with torch.no_grad():
                for p in unet.parameters():
                    p.add_(0.1 * torch.randn_like(p))
        tracker.update()
        if step % every == 0:
            phema.save_snapshots(tracker, str(folder), SIGMA_RELS)
    return unet, tracker


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phema") / "run"
    unet, tracker = make_run(folder, guide=True)
    return folder, unet, tracker


def test_snapshots_are_safetensors_that_describe_themselves(run):
    folder, _, tracker = run
    names = sorted(p.name for p in (folder / "post_hoc_ema").iterdir())
    assert names == [f"profile-{i}-step-{s:07d}.safetensors" for i in (0, 1) for s in (2, 4, 6)]
    with safe_open(str(folder / "post_hoc_ema" / "profile-1-step-0000004.safetensors"), "pt") as f:
        meta = f.metadata()
        assert f.get_tensor("conv_in.weight").dtype == torch.float32
    assert (float(meta["sigma_rel"]), int(meta["step"])) == (0.28, 4)
    assert float(meta["gamma"]) == pytest.approx(tracker.ema_models[1].gamma)
    assert [(s.step, s.sigma_rel) for s in phema.list_snapshots(str(folder))][:2] == [(2, 0.05), (2, 0.28)]


@pytest.mark.parametrize("profile", [0, 1])
def test_a_tracked_length_at_a_snapshot_step_is_that_profile(run, profile):
    # The known limit of the least-squares combination: a target in the span of the snapshots is reproduced.
    folder, _, tracker = run
    state, info = phema.synthesise(str(folder), SIGMA_RELS[profile], step=6)
    assert info == {"sigma_rel": SIGMA_RELS[profile], "step": 6, "snapshots": 6, "profiles": list(SIGMA_RELS)}
    tracked = tracker.ema_models[profile].ema_model.state_dict()
    assert state.keys() == tracked.keys()
    for key in tracked:
        torch.testing.assert_close(state[key], tracked[key], rtol=1e-5, atol=1e-6)


def test_lengths_differ_and_an_unchanging_model_is_its_own_average(run, tmp_path):
    folder, unet, _ = run
    short, _ = phema.synthesise(str(folder), 0.08)
    long, _ = phema.synthesise(str(folder), 0.2)
    assert (short["conv_in.weight"] - long["conv_in.weight"]).abs().max() > 1e-2
    # A model that never changes: every EMA of it, of any length in the profiles' range, is the model itself, up to
    # the least-squares fit's total weight (refused unless within WEIGHT_SUM_TOLERANCE of 1).
    still = tmp_path / "still"
    unet, _ = make_run(still, learning=False)
    for sigma_rel in (0.08, 0.15, 0.2):
        state, _ = phema.synthesise(str(still), sigma_rel)
        for key, value in unet.state_dict().items():
            torch.testing.assert_close(state[key], value, rtol=phema.WEIGHT_SUM_TOLERANCE, atol=1e-6)


def test_script_writes_one_loadable_pipeline_per_length(run, tmp_path):
    folder, _, _ = run
    out = tmp_path / "ablation"
    script = runpy.run_path(str(REPO / "scripts" / "post_hoc_ema.py"))
    script["main"](script["parse_args"](["--run", str(folder), "--sigma_rel", "0.1,0.2", "--output_dir", str(out)]))
    weights = {}
    for value in ("0.1", "0.2"):
        saved = out / f"sigma_rel-{value}"
        assert {"README.md", "training_args.json", "model_index.json", "pipeline.py"} <= {p.name for p in saved.iterdir()}
        pipe = load_fundus_pipeline(str(saved), device="cpu")
        info = pipe.config.training_info
        assert info["post_hoc_ema_sigma_rel"] == float(value) and info["steps"] == 6
        assert pipe.guide_unet is None and "autoguidance guide" not in info  # the run's guide suits its own EMA
        assert f"post-hoc EMA, sigma_rel {value} " in (saved / "README.md").read_text()
        weights[value] = pipe.unet.conv_in.weight.detach().clone()
        out_images = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
        assert out_images.images[0].size == (16, 16)
    assert not torch.equal(weights["0.1"], weights["0.2"])
    with pytest.raises(FileExistsError, match=r"sigma_rel-0.2 already holds a saved model\. Fix: choose another"):
        phema.write_post_hoc_pipelines(str(folder), [0.2], str(out))


def test_one_length_gets_its_own_folder_as_several_do(run, tmp_path):
    # README's "one folder per length" holds for one length too, so a later call adds its lengths beside.
    folder, _, _ = run
    one = tmp_path / "one"
    assert phema.write_post_hoc_pipelines(str(folder), [0.1], str(one), step=4) == [str(one / "sigma_rel-0.1")]
    early = load_fundus_pipeline(str(one / "sigma_rel-0.1"), device="cpu").config.training_info
    assert early["steps"] == 4 and "epochs" not in early  # the run's 3 epochs are not this model's
    assert not (one / "model_index.json").exists()
    phema.write_post_hoc_pipelines(str(folder), [0.2], str(one))
    assert load_fundus_pipeline(str(one / "sigma_rel-0.2"), device="cpu").config.training_info["epochs"] == 3
    assert sorted(p.name for p in one.iterdir()) == ["sigma_rel-0.1", "sigma_rel-0.2"]
    # an --output_dir that an older version filled with one length's model is not written into
    with pytest.raises(FileExistsError, match=r"one/sigma_rel-0.1 is itself a saved model .*Fix: choose another"):
        phema.write_post_hoc_pipelines(str(folder), [0.15], str(one / "sigma_rel-0.1"))


def test_a_short_run_is_refused_for_its_few_snapshots_not_for_the_length(tmp_path):
    # README's example lengths on a short run: 0.2 lies between the profiles (0.05, 0.28) but snapshots at two steps
    # cannot reconstruct it. The refusal names that cause and its fixes, not "choose a sigma_rel between 0.05 and
    # 0.28" (which 0.2 is); every length is checked and nothing is written.
    short, out = tmp_path / "short", tmp_path / "out"
    make_run(short, steps=4, every=2)
    with pytest.raises(ValueError) as refused:
        phema.write_post_hoc_pipelines(str(short), [0.05, 0.1, 0.2], str(out))
    message = str(refused.value)
    assert message.startswith("sigma_rel 0.2 at step 4 cannot be reconstructed")
    assert "taken at 2 steps: 2, 4" in message and "weights sum to 1.012, not 1" in message
    assert "Cause: too few snapshots" in message and "0.2 needs 3 such steps where this run has 2" in message
    assert "Fix: train longer or save snapshots more often" in message and "--post_hoc_ema_every 1 or less" in message
    assert "reconstruct: sigma_rel 0.05-0.14, 0.26-0.28" in message
    assert "between 0.05 and 0.28" not in message
    assert not out.exists()
    phema.synthesise(str(short), 0.1)  # a length the message lists is synthesised
    once = tmp_path / "once"  # one snapshot step: only the tracked lengths; several refused lengths in one message
    make_run(once, steps=2, every=2)
    with pytest.raises(ValueError, match=r"sigma_rel 0.1, 0.2 at step 2 .* need 3 such steps where this run has 1\. "
                       r"Fix: .*--post_hoc_ema_every 1 or less.* sigma_rel 0.05, 0.28 \(the tracked"):  # fmt: skip
        phema.write_post_hoc_pipelines(str(once), [0.1, 0.2], str(out))
    assert phema.snapshot_steps_needed([phema.sigma_rel_to_gamma(s) for s in SIGMA_RELS], 0.1) == 2


def test_unevenly_spread_snapshots_are_named_as_the_cause(tmp_path):
    # Snapshots at 10, 20 and the last step 21 (not a multiple of the interval): three steps, as many as 0.2 needs
    # when evenly spread; the message blames the short last interval, not the count.
    folder = tmp_path / "uneven"
    unet, tracker = make_run(folder, steps=20, every=10)
    tracker.update()
    phema.save_snapshots(tracker, str(folder), SIGMA_RELS)
    with pytest.raises(ValueError, match=r"taken at 3 steps: 10, 20, 21.*Cause: the snapshot steps are unevenly spread "
                       r".*--max_train_steps a multiple of --post_hoc_ema_every"):  # fmt: skip
        phema.synthesise(str(folder), 0.2)


def test_errors_name_the_file_the_problem_and_the_fix(run, tmp_path):
    folder, _, _ = run
    plain = tmp_path / "plain"  # a saved model trained without --post_hoc_ema
    unet, scheduler = build_unet("tiny", 16, 4), DDPMScheduler(num_train_timesteps=10)
    hub.save_model(FundusPipeline(unet=unet, scheduler=scheduler, mask_names=["disc"]), str(plain))
    with pytest.raises(FileNotFoundError, match=r"plain/post_hoc_ema: no post-hoc EMA snapshots.*Fix: train with "):
        phema.write_post_hoc_pipelines(str(plain), [0.1], str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match=r"empty/model_index.json is missing.*Fix: finish the training"):
        phema.write_post_hoc_pipelines(str(tmp_path / "empty"), [0.1], str(tmp_path / "out"))
    with pytest.raises(ValueError, match=r"--step 7: the snapshots in .*run/post_hoc_ema span steps 2 to 6\. Fix"):
        phema.synthesise(str(folder), 0.1, step=7)
    with pytest.raises(ValueError, match=r"sigma_rel 0.5 at step 6 cannot be reconstructed .* Cause: sigma_rel 0.5 lies "
                       r"outside the tracked lengths.* Fix: choose a sigma_rel between 0.05 and 0.28"):  # fmt: skip
        phema.synthesise(str(folder), 0.5)
    with pytest.raises(ValueError, match=r"weights sum to 0\.\d+, not 1.* Cause: no snapshot was taken at step 5 \(the "
                       r"last before it: 4\).* Fix: choose a --step with a snapshot \(2, 4\)"):  # fmt: skip
        phema.synthesise(str(folder), 0.08, step=5)  # between snapshots: the recent weights are missing
    for given in ("0.1,1.5", "0.35"):  # 0.35 would stand for the profile of 0.289; 0.5 and above for a decay above 1
        with pytest.raises(ValueError, match=r"is outside \(0, 0.3002\]: no power-function EMA is longer"):
            phema.parse_sigma_rels(given)
    with pytest.raises(ValueError, match="sigma_rel 0.05 is given twice"):  # ema-pytorch's bare assertion otherwise
        phema.parse_sigma_rels("0.05,0.05,0.28")
    assert phema.parse_sigma_rels("0.05,0.3") == (0.05, 0.3)
    assert not (tmp_path / "out").exists()  # nothing is written before every length is synthesised
