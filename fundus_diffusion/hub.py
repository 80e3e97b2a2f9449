"""Model cards and Hub uploads for saved pipelines."""

import json
import os
from importlib import resources
from typing import Dict, Optional, Sequence

DEFAULT_IGNORE = ("checkpoint-*", ".tmp-*", "logs/*", "*.lock")
METRICS_FILE = "metrics.json"  # the measured metrics a card shows, kept beside it so that later ones can be added


def render_model_card(template: str, **context) -> str:
    """Render ``model_cards/<template>.md`` (Jinja) with ``context``; undefined variables are errors."""
    import jinja2
    from huggingface_hub import ModelCard

    source = resources.files("fundus_diffusion.model_cards").joinpath(f"{template}.md").read_text(encoding="utf-8")
    text = (
        jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
        .from_string(source)
        .render(**context)
    )
    return str(ModelCard(text))  # parses the YAML header, so a broken template fails here and not on the Hub


def save_model_card(folder: str, template: str, **context) -> str:
    """Write the rendered card as ``folder/README.md`` and return its path."""
    path = os.path.join(folder, "README.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_model_card(template, **context))
    return path


def push_folder(
    folder: str, repo_id: str, token: Optional[str] = None, ignore_patterns: Sequence[str] = DEFAULT_IGNORE
) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` without checkpoints, temporaries and logs; return the URL."""
    from huggingface_hub import create_repo, upload_folder

    repo_id = create_repo(repo_id, exist_ok=True, token=token).repo_id
    upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        ignore_patterns=list(ignore_patterns),
        token=token,
        commit_message="Upload fundus-diffusion model",
    )
    return f"https://huggingface.co/{repo_id}"


def add_model_card_metrics(model_dir: str, metrics: Sequence[Dict]) -> str:
    """Merge ``metrics`` into a saved pipeline's card (by name; new values win) and re-render ``README.md``; the
    weights are not rewritten. Returns the card's path."""
    from filelock import FileLock

    from .generate import load_fundus_pipeline

    path = os.path.join(model_dir, METRICS_FILE)
    with FileLock(f"{path}.lock"):  # evaluations of one model's sample sets may finish at the same time
        merged = {}
        if os.path.exists(path):
            with open(path) as f:
                merged = {m["name"]: m for m in json.load(f)}
        merged.update({m["name"]: m for m in metrics})
        pipeline = load_fundus_pipeline(model_dir, device="cpu", dtype="fp32")
        pipeline.save_pretrained(model_dir, metrics=list(merged.values()), card_only=True)
    return os.path.join(model_dir, "README.md")
