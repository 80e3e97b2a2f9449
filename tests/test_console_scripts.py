"""Every script is also a console command (``fundus-generate`` runs ``scripts/generate.py``), for pip installs that
have no ``scripts/`` folder."""

import ast
import runpy
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

import fundus_diffusion.scripts as commands


def setup_commands():
    """``COMMANDS`` of setup.py, read without running setup()."""
    tree = ast.parse((REPO_ROOT / "setup.py").read_text(encoding="utf-8"))
    (value,) = [node.value for node in tree.body if isinstance(node, ast.Assign) and node.targets[0].id == "COMMANDS"]
    return ast.literal_eval(value)


def test_every_script_is_a_command():
    scripts = sorted(path.stem for path in (REPO_ROOT / "scripts").glob("*.py") if path.stem != "__init__")
    assert setup_commands() == scripts == commands.SCRIPTS
    assert all(callable(getattr(commands, f"{name}_command")) for name in scripts)


def test_a_command_runs_its_script_and_names_itself(tmp_path):
    """The command's error line and ``--help`` carry the name the user typed, and its exit status is the script's."""
    code = "import sys; sys.argv[0] = 'fundus-generate'; import fundus_diffusion.scripts as s; s.generate_command()"
    run = [sys.executable, "-c", code, "--model", str(tmp_path / "no-model"), "--num_samples", "1", "--output_dir", "o"]
    missing = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert f"fundus-generate: error: {tmp_path / 'no-model'}: no such local folder" in missing.stderr
    usage = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=300)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: fundus-generate")


def test_help_texts_keep_their_command_lines_apart():
    """A backslash at a docstring line's end must be written ``\\\\`` to show in ``--help``: a lone one joins the lines,
    and the example reads ``... id_prefix         --output_dir ...``."""
    joined = []
    for path in sorted([*(REPO_ROOT / "scripts").glob("*.py"), *(REPO_ROOT / "benchmarks").glob("*.py")]):
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")), clean=False) or ""
        joined += [f"{path.name}: {line.strip()}" for line in docstring.splitlines() if "        --" in line.strip()]
    assert joined == []


@pytest.mark.parametrize(
    "script, shown, unsaid",
    [
        ("generate.py", ["Sample i uses seed + i. (default: 0)", "(default: 64)"], ["(default: None)", "(default: False)"]),
        ("evaluate.py", ["Training steps per segmenter. (default: 800)", "Default: cuda if available, else cpu."],
         ["(default: None)", "else cpu. (default"]),  # a help that names its default is left as it is
        ("train_ddpm.py", ["Save a resumable checkpoint every N steps. (default: 500)"], ["(default: None)"]),
        ("split_dataset.py", ["--test_fraction TEST_FRACTION (default: 0.2)"], ["(default: None)"]),  # no help text
        ("train_ddpm.py", ["Per-device batch size. (default: 16)"], []),  # the ours preset's, computed from the flags
    ],
)
def test_help_gives_each_flags_default_where_it_has_one(script, shown, unsaid, monkeypatch, capsys):
    """A flag's default shows in --help unless it is unset (None, False, empty) or the help already names it."""
    parse_args = runpy.run_path(str(REPO_ROOT / "scripts" / script))["parse_args"]
    monkeypatch.setattr(sys, "argv", [script])
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # the lines as one, wrapped however the terminal is wide
    assert all(part in text for part in shown) and not any(part in text for part in unsaid)
