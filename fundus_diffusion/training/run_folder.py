"""What a finished run folder says: its metrics log, its throughput and loss, its checkpoints and saved model.

Read by ``benchmarks/multi_gpu.py`` to build its table, and kept here so that the arithmetic is tested as library code.
"""

import csv
import json
import math
from pathlib import Path

from .checkpointing import CHECKPOINT_RE


def finished(run, expected=None):
    """Whether ``run`` saved its final model (in an earlier call); with ``expected`` (``{arg: value}``), refuses a run
    trained with other settings, which would otherwise be mixed into the table."""
    if not (Path(run) / "model_index.json").exists():
        return False
    if expected and not checks(run, expected["max_train_steps"])["resumed"]:  # a resume row re-saved its arguments
        saved = json.loads((Path(run) / "training_args.json").read_text())
        differ = {k: (saved.get(k), v) for k, v in expected.items() if saved.get(k) != v}
        if differ:
            raise ValueError(
                f"{run} was trained with other settings (saved, now): {differ}. Use another --output_dir or delete it."
            )
    return True


def read_metrics(run):
    """The rows of ``run/logs/metrics.csv`` (as strings, as the CSV holds them)."""
    with open(Path(run) / "logs" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def second_half(rows, first_step=0):
    """The later half of the rows after ``first_step``: past the warm-up (compilation, first steps)."""
    rows = [r for r in rows if int(r["step"]) > first_step]
    return rows[len(rows) // 2 :]


def throughput(rows, effective_batch):
    """Images/s between the first and last row of the second half (warm-up excluded)."""
    if len(rows) < 2:
        return float("nan")
    steps = int(rows[-1]["step"]) - int(rows[0]["step"])
    return effective_batch * steps / (float(rows[-1]["wall_s"]) - float(rows[0]["wall_s"]))


def mean_and_error(values):
    """Mean and its standard error."""
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / max(n - 1, 1)
    return mean, math.sqrt(var / n)


def checks(run, steps):
    """Checkpoints written once and complete; one final model with one card."""
    # checkpoint-N folders only: a damaged one set aside (checkpoint-N.damaged) is not a checkpoint of the run
    checkpoints = sorted(p.name for p in Path(run).glob("checkpoint-*") if CHECKPOINT_RE.match(p.name))
    temporaries = list(Path(run).glob(".tmp-*"))
    return {
        "checkpoints": checkpoints,
        "resumed": any(int(name.split("-")[1]) > steps for name in checkpoints),  # continued later (--from_runs)
        "ok": checkpoints == [f"checkpoint-{steps}"] and not temporaries and (Path(run) / "README.md").exists(),
    }
