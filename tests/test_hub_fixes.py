"""A fundus pipeline's push_to_hub uploads what hub.save_model writes (card, metrics.json, configs without local paths),
not diffusers' generic card; the model cards claim only what the saved folder shows (the paper's Table 1 settings,
the noise schedule's betas)."""

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import huggingface_hub
import pytest
import torch
from diffusers import DDPMScheduler

from fundus_diffusion import FundusGANPipeline, FundusPipeline
from fundus_diffusion.hub import save_model
from fundus_diffusion.model_cards import paper_differences

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_pipeline_code import REFUSE_FUNDUS_DIFFUSION, tiny_ddpm, tiny_gan  # noqa: E402


@pytest.fixture
def uploads(monkeypatch):
    """The Hub stubbed as tests/test_checkpointing.py stubs it: ``{repo_id: {path: text}}`` of every uploaded folder's
    text files (read while the folder, a temporary one, still exists), and the create_repo calls."""
    uploaded, created = {}, []

    def create_repo(repo_id, **kwargs):
        created.append((repo_id, kwargs))
        return types.SimpleNamespace(repo_id=repo_id)

    def upload_folder(repo_id, folder_path, ignore_patterns, **kwargs):
        files = {}
        for root, _, names in os.walk(folder_path):
            for name in names:
                path = os.path.join(root, name)
                relative = os.path.relpath(path, folder_path).replace(os.sep, "/")
                files[relative] = Path(path).read_text() if name.endswith((".json", ".md", ".py")) else None
        uploaded[repo_id] = {**files, "__commit_message__": kwargs["commit_message"]}
        return types.SimpleNamespace(pr_url=f"https://huggingface.co/{repo_id}/discussions/1")

    monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    return types.SimpleNamespace(files=uploaded, created=created)


@pytest.mark.parametrize("make,cls", [(tiny_ddpm, FundusPipeline), (tiny_gan, FundusGANPipeline)])
def test_push_to_hub_uploads_the_card_metrics_and_no_local_path(tmp_path, uploads, make, cls):
    secret = tmp_path / "St-Elsewhere-clinic" / "patients-2024"
    secret.mkdir(parents=True)
    source = tmp_path / "model"
    metrics = [{"name": "FID", "value": 41.2, "notes": "100 samples"}]
    save_model(make(), source, training_info={"dataset": str(secret), "steps": 3}, metrics=metrics)
    loaded = cls.from_pretrained(source)  # knows where it came from: a local path

    assert loaded.push_to_hub("me/fundus", private=True) == "https://huggingface.co/me/fundus"
    files = uploads.files["me/fundus"]
    assert uploads.created == [("me/fundus", {"exist_ok": True, "token": None, "private": True})]
    card = files["README.md"]
    assert "not for clinical use" in card.lower() and "channels and value ranges" in card.lower()
    assert '"disc"' in card and "| FID | 41.2 | 100 samples |" in card
    assert 'DiffusionPipeline.from_pretrained("me/fundus", trust_remote_code=True)' in card  # the pushed id
    assert json.loads(files["metrics.json"]) == metrics
    assert {"model_index.json", "pipeline.py"} <= set(files)
    for path, text in files.items():
        if text is not None:
            assert str(tmp_path) not in text and "St-Elsewhere" not in text, path
    assert files["__commit_message__"] == "Upload fundus-diffusion model"

    # save_pretrained(push_to_hub=True) pushes the same way; a pipeline built in memory has no metrics yet
    make().save_pretrained(tmp_path / "fresh", push_to_hub=True, repo_id="me/fresh", commit_message="first")
    assert "README.md" in uploads.files["me/fresh"] and json.loads(uploads.files["me/fresh"]["metrics.json"]) == []
    assert uploads.files["me/fresh"]["__commit_message__"] == "first"
    assert "README.md" not in os.listdir(tmp_path / "fresh")  # the local save stays as save_pretrained writes it
    assert loaded.push_to_hub("me/fundus", create_pr=True) == "https://huggingface.co/me/fundus/discussions/1"


def test_push_to_hub_without_fundus_diffusion_says_what_to_install(tmp_path):
    """The folder's own pipeline.py (loaded by diffusers alone) has no card templates: it refuses instead of
    uploading diffusers' generic card."""
    save_model(tiny_ddpm(), tmp_path)
    script = REFUSE_FUNDUS_DIFFUSION + (
        "from diffusers import DiffusionPipeline\n"
        "pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "try:\n"
        "    pipe.push_to_hub('me/fundus')\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "push_to_hub uploads a fundus pipeline with its model card" in result.stdout
        and "Fix: pip install fundus-diffusion" in result.stdout
    )


def paper_run_info(argv, monkeypatch):
    """The training information a DCGAN run with ``argv`` records (training.loop.run_info and the kind's own),
    without training (the data counts, which the card does not compare, stubbed), and the run's number of masks."""
    from fundus_diffusion.training import dcgan, loop

    for counts in ("source_counts", "label_counts", "annotation_counts"):
        monkeypatch.setattr(loop, counts, lambda view: "")
    args = dcgan.parse_args(["--output_dir", "out", *argv])
    accelerator = types.SimpleNamespace(num_processes=1, mixed_precision="no", device=torch.device("cpu"))
    info = loop.run_info(args, [], accelerator, steps=1000, epochs=args.num_epochs, seconds=1.0)
    return {**info, **dcgan.DCGANKind.training_info(types.SimpleNamespace(args=args))}, len(args.mask_names)


def test_the_cards_table_1_is_the_trainers_paper_preset(monkeypatch):
    for masks in ("disc", "disc,atrophy"):
        assert paper_differences(*paper_run_info(["--preset", "paper", "--masks", masks], monkeypatch)) == {}
    overridden = paper_differences(
        *paper_run_info(["--preset", "paper", "--learning_rate", "1e-3", "--num_epochs", "5"], monkeypatch)
    )
    assert overridden == {
        "learning_rate": (1e-3, 2e-4),
        "optimizer": ("Adam, lr 0.001, betas (0.5, 0.999)", "Adam, lr 0.0002, betas (0.5, 0.999)"),
        "epochs": (5, 100),
    }


def test_the_dcgan_card_claims_table_1_only_for_a_run_with_its_settings(tmp_path, monkeypatch):
    info, _ = paper_run_info(["--preset", "paper"], monkeypatch)
    save_model(tiny_gan(), tmp_path / "paper", training_info=info)
    assert (
        "Pathological Myopia*, trained with the paper's Table 1 settings.\n"
        in (tmp_path / "paper" / "README.md").read_text()
    )

    info, _ = paper_run_info(["--preset", "paper", "--learning_rate", "1e-3", "--diffaugment", "color"], monkeypatch)
    save_model(tiny_gan(), tmp_path / "flags", training_info=info)
    text = (tmp_path / "flags" / "README.md").read_text().replace("\n", " ")
    assert (
        "trained with the paper's Table 1 settings (`--preset paper`) except learning_rate: 0.001 (Table 1: 0.0002);"
        in text
    )
    assert "discriminator: BatchNorm, DiffAugment color (Table 1: BatchNorm)." in text
    assert "trained with the paper's Table 1 settings." not in text

    save_model(tiny_gan(), tmp_path / "other", training_info={**info, "preset": None})
    assert "Table 1" not in (tmp_path / "other" / "README.md").read_text()


def test_the_ddpm_card_names_the_betas_the_scheduler_holds(tmp_path):
    from fundus_diffusion.training.ddpm import shifted_betas

    pipe = tiny_ddpm()
    save_model(pipe, tmp_path / "plain")
    plain = (tmp_path / "plain" / "README.md").read_text().replace("\n", " ")
    assert "4 training steps, `linear` betas, `epsilon` prediction." in plain

    base = DDPMScheduler(num_train_timesteps=4, beta_schedule="squaredcos_cap_v2")
    betas = shifted_betas(base.betas, 64 / 256).float().tolist()  # as --schedule_base_resolution 64 at 256 px
    pipe.scheduler = DDPMScheduler.from_config(base.config, trained_betas=betas)
    schedule = "squaredcos_cap_v2, T = 4, epsilon, log-SNR shifted for 64 px"  # what the trainer records
    save_model(pipe, tmp_path / "shifted", training_info={"noise schedule": schedule})
    text = (tmp_path / "shifted" / "README.md").read_text().replace("\n", " ")
    assert f"| noise schedule | {schedule} |" in text
    assert "`squaredcos_cap_v2` betas" not in text  # the schedule the explicit betas replace
    assert (
        f"explicit betas (the scheduler config's `trained_betas`, {betas[0]:.3g} at the first step to {betas[-1]:.3g} "
        "at the last), which replace the `squaredcos_cap_v2` schedule its `beta_schedule` names (the training table's "
        "noise schedule says how they were made), `epsilon` prediction."
    ) in text
