"""benchmarks/device_tree.sh in a scratch repository: hide takes docs/results/ out of what a device call sends (the
index and the not-ignored files) and refuses commits until restore puts everything back."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_tree.sh"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def run(repo, *argv):
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(argv, cwd=repo, capture_output=True, text=True, env=env)


def sent(repo):
    """What a device call sends: tracked files and untracked ones git does not ignore."""
    tracked = run(repo, "git", "ls-files").stdout.split()
    return sorted(tracked + run(repo, "git", "ls-files", "--others", "--exclude-standard").stdout.split())


@pytest.fixture
def repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    run(tmp_path, "git", "init", "-q")
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(SCRIPT, tmp_path / "benchmarks" / "device_tree.sh")
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "docs" / "results" / "figure.png").write_bytes(b"png")
    (tmp_path / "code.py").write_text("x = 1\n")
    run(tmp_path, "git", "add", ".")
    assert run(tmp_path, "git", "commit", "-q", "-m", "start").returncode == 0
    return tmp_path


@pytest.mark.parametrize("hooks_folder", [True, False], ids=["hooks-folder", "no-hooks-folder"])
def test_hide_keeps_results_from_the_device_and_commits_out_until_restore(repo, hooks_folder):
    if not hooks_folder:  # a clone made without git's templates has none (this session's checkout did not)
        shutil.rmtree(repo / ".git" / "hooks", ignore_errors=True)
    everything = ["benchmarks/device_tree.sh", "code.py", "docs/results/figure.png"]
    assert sent(repo) == everything
    assert run(repo, "bash", "benchmarks/device_tree.sh", "hide").returncode == 0
    assert sent(repo) == ["benchmarks/device_tree.sh", "code.py"]
    assert (repo / "docs" / "results" / "figure.png").read_bytes() == b"png"  # still on disk
    refused = run(repo, "git", "commit", "-q", "--allow-empty", "-m", "would delete docs/results")
    assert refused.returncode != 0 and "device_tree.sh restore" in refused.stderr
    assert run(repo, "bash", "benchmarks/device_tree.sh", "hide").returncode == 0  # twice is harmless

    assert run(repo, "bash", "benchmarks/device_tree.sh", "restore").returncode == 0
    assert sent(repo) == everything
    assert run(repo, "git", "status", "--porcelain").stdout == ""  # index as HEAD has it, nothing staged
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert run(repo, "git", "commit", "-q", "--allow-empty", "-m", "allowed again").returncode == 0


def test_hide_leaves_a_pre_commit_hook_of_its_own_alone(repo):
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\nexit 0\n")
    refused = run(repo, "bash", "benchmarks/device_tree.sh", "hide")
    assert refused.returncode == 1 and "exists; this script would replace it" in refused.stderr
    assert hook.read_text() == "#!/bin/sh\nexit 0\n" and "docs/results/figure.png" in sent(repo)
