"""The per-step metrics CSV both trainers write under ``output_dir/logs`` (main process only), resume-aware."""

import csv
import os
from typing import List, Optional, Sequence


class CSVLog:
    """Append rows to a CSV; on resume, rows after the resumed step (from the interrupted run) are dropped first.

    Trainers add a ``wall_s`` column (seconds since this process started training) so that throughput can be read
    off the log: images per second = batch x processes x steps / difference of ``wall_s``.
    """

    def __init__(self, path: str, columns: Sequence[str], resume_step: Optional[int] = None):
        self.path, self.columns = path, list(columns)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        rows: List[dict] = []
        if resume_step is not None and os.path.exists(path):
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")  # rows from an older column set
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(row)
