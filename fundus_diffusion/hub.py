"""Saving a trained pipeline with its model card, adding measured metrics to that card, and Hub uploads.

A pipeline's ``save_pretrained`` writes weights, configs (without local paths) and its own code; ``save_model`` adds
what this package knows about the run (training information, metrics) and the card rendered from ``model_cards/``.
A fundus pipeline's ``push_to_hub`` uploads what ``save_model`` writes (``push_pipeline``).
"""

import json
import os
import tempfile
from typing import Dict, List, Optional, Sequence

import huggingface_hub
from filelock import FileLock

from .model_cards import METRICS_FILE, model_card, portable_name, read_metrics, render_model_card

__all__ = [
    "save_model",
    "write_model_card",
    "add_model_card_metrics",
    "push_folder",
    "push_pipeline",
    "render_model_card",
]

DEFAULT_IGNORE = ("checkpoint-*", ".tmp-*", "logs/*", "snapshots/*", "post_hoc_ema/*", "*.lock")


def save_model(
    pipeline,
    folder: str,
    training_info: Optional[Dict] = None,
    metrics: Optional[Sequence[Dict]] = None,
    repo_id: Optional[str] = None,
) -> str:
    """Save ``pipeline`` into ``folder`` (safetensors weights, configs, its ``pipeline.py``) with its model card.

    ``training_info``: how the weights were trained, kept in ``model_index.json`` and shown in the card; local paths
    in it are reduced to their last component. ``metrics``: measured values only, as
    ``[{"name": "FID", "value": 41.2, "notes": "1000 samples vs PALM"}]``, kept in ``metrics.json``. ``repo_id``: the
    Hub id the model will be pushed to (``push_folder``), named in the card's loading snippet. Returns the card's path.
    """
    if training_info is not None or repo_id is not None:
        info = {key: portable_name(value) for key, value in (training_info or {}).items()}
        if repo_id is not None:
            info["hub_model_id"] = repo_id
        pipeline.register_to_config(training_info=info)
    pipeline.save_pretrained(folder)
    with open(os.path.join(folder, METRICS_FILE), "w", encoding="utf-8") as f:
        json.dump(list(metrics or []), f, indent=2)
    return write_model_card(folder)


def write_model_card(folder: str) -> str:
    """Render ``folder/README.md`` from the saved folder's files (no weights are loaded); returns its path."""
    path = os.path.join(folder, "README.md")
    model_card(folder).save(path)
    return path


def add_model_card_metrics(model_dir: str, metrics: Sequence[Dict]) -> str:
    """Merge ``metrics`` into a saved model's ``metrics.json`` (by name; new values win) and re-render its card; the
    weights are neither rewritten nor read. Returns the card's path."""
    path = os.path.join(model_dir, METRICS_FILE)
    with FileLock(f"{path}.lock"):  # evaluations of one model's sample sets may finish at the same time
        merged = {m["name"]: m for m in read_metrics(model_dir)}
        merged.update({m["name"]: m for m in metrics})
        with open(path, "w", encoding="utf-8") as f:
            json.dump(list(merged.values()), f, indent=2)
        return write_model_card(model_dir)


def push_folder(
    folder: str,
    repo_id: str,
    token: Optional[str] = None,
    private: Optional[bool] = False,
    ignore_patterns: Sequence[str] = DEFAULT_IGNORE,
    commit_message: Optional[str] = None,
    create_pr: bool = False,
) -> str:
    """Create ``repo_id`` if needed (``private``: visible to its owner only; None: the owner's default) and upload
    ``folder`` without checkpoints, temporaries and logs, as a pull request with ``create_pr``; return the URL (the
    pull request's with ``create_pr``)."""
    repo_id = huggingface_hub.create_repo(repo_id, exist_ok=True, token=token, private=private).repo_id
    commit = huggingface_hub.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        ignore_patterns=list(ignore_patterns),
        token=token,
        commit_message=commit_message or "Upload fundus-diffusion model",
        create_pr=create_pr,
    )
    return commit.pr_url if create_pr else f"https://huggingface.co/{repo_id}"


def push_pipeline(
    pipeline,
    repo_id: str,
    commit_message: Optional[str] = None,
    private: Optional[bool] = None,
    token: Optional[str] = None,
    create_pr: bool = False,
    metrics: Optional[List[Dict]] = None,
) -> str:
    """What a fundus pipeline's ``push_to_hub`` runs: ``save_model`` into a temporary folder, its card naming
    ``repo_id`` (which ``pipeline``'s ``training_info`` then records as ``hub_model_id``), then ``push_folder`` (as a
    pull request with ``create_pr``); return the URL. ``metrics`` None: those recorded beside the local folder
    ``pipeline`` was loaded from (measured on its weights), none for a pipeline built in memory or loaded from the
    Hub."""
    if metrics is None:
        source = pipeline.name_or_path
        metrics = read_metrics(source) if source and os.path.isdir(source) else []
    with tempfile.TemporaryDirectory() as folder:
        save_model(pipeline, folder, training_info=pipeline.config.training_info, metrics=metrics, repo_id=repo_id)
        return push_folder(
            folder, repo_id, token=token, private=private, commit_message=commit_message, create_pr=create_pr
        )
