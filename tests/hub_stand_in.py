"""A stand-in for the Hugging Face Hub without a network: a local folder plays the Hub repo. ``model_info`` lists its
files, ``hf_hub_download`` copies one into the snapshot folder, and ``snapshot_download`` copies only the files that
diffusers' allow / ignore patterns select, as the Hub does: what diffusers does not ask for is not there.

Imports only diffusers, huggingface_hub and the standard library: the tests run it in a process that cannot import
fundus_diffusion. Run with ``HF_HUB_OFFLINE=1`` (revisions then resolve to themselves, with no network call).
"""

import fnmatch
import os
import shutil
import types

import diffusers.configuration_utils
import diffusers.pipelines.pipeline_utils
import diffusers.utils.dynamic_modules_utils
import diffusers.utils.hub_utils
from huggingface_hub.errors import EntryNotFoundError


def install(repo: str, snapshot: str, *also) -> None:
    """Route diffusers' Hub calls (and ``hf_hub_download`` in the modules ``also``) to ``repo``."""
    files = [os.path.relpath(os.path.join(root, f), repo) for root, _, names in os.walk(repo) for f in names]

    def model_info(repo_id, **kwargs):
        return types.SimpleNamespace(siblings=[types.SimpleNamespace(rfilename=f) for f in files], sha="0" * 40)

    def hf_hub_download(repo_id, filename, subfolder=None, **kwargs):
        name = f"{subfolder}/{filename}" if subfolder else filename
        if name not in files:
            raise EntryNotFoundError(f"{repo_id} has no {name}")
        os.makedirs(os.path.dirname(os.path.join(snapshot, name)), exist_ok=True)
        return shutil.copyfile(os.path.join(repo, name), os.path.join(snapshot, name))

    def snapshot_download(repo_id, allow_patterns=None, ignore_patterns=None, **kwargs):
        for f in files:
            allowed = allow_patterns is None or any(fnmatch.fnmatch(f, p) for p in allow_patterns)
            if allowed and not any(fnmatch.fnmatch(f, p) for p in ignore_patterns or ()):
                hf_hub_download(repo_id, f)
        return snapshot

    pipeline_utils, dynamic_modules = diffusers.pipelines.pipeline_utils, diffusers.utils.dynamic_modules_utils
    for module in (pipeline_utils, dynamic_modules, diffusers.configuration_utils, diffusers.utils.hub_utils, *also):
        module.hf_hub_download = hf_hub_download
    pipeline_utils.model_info = dynamic_modules.model_info = model_info
    pipeline_utils.snapshot_download = snapshot_download
