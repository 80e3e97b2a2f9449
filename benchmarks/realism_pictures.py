"""The pictures benchmarks/realism_ablation.sh brings back of each finished synthetic set, made in one process (loading
the package once, not once per set and picture: each load cost about 15 s of device time):

- ``<set>/fullsize.png``: its first 8 samples at full size, no masks drawn, to look at beside real photographs;
- ``<samples_dir>/<set>/``: its first ``--samples`` pairs as a generic folder (``images/``, ``masks/<name>/``,
  ``metadata.csv``: ``export.export_imagefolder``), so that the set can still be judged elsewhere, masks included
  (``fundus-evaluate --synthetic <samples_dir>/<set>`` reads it as it is), when the device machine is lost with its
  evaluations, or judged again with more segmenter seeds on another machine;
- ``<samples_dir>/<set>/flagged/NNN.png``: once ``--eval_dir``/<set> holds its evaluation, every sample the
  memorisation checks flagged (``flagged_ids.txt``; NNN its index in the set), so that each can be looked at beside its
  nearest training photograph (named in the report) where the real data is: a near copy or only the same camera's
  layout is for the eye to say, and session 10 could look only at the flagged samples that happened to be among the
  first 56.

    python benchmarks/realism_pictures.py /tmp/realism/synthetic --samples 56 --samples_dir /tmp/realism/samples \\
        --eval_dir /tmp/realism/eval

A set counts once generate.py has saved it whole (``generate.saved_dataset``); what already exists is not made again
(a ``done`` file marks a set's exported samples, ``flagged/done`` its flagged ones).
"""

import argparse
import os

from fundus_diffusion.evaluation.report import FLAGGED_FILE
from fundus_diffusion.export import export_imagefolder
from fundus_diffusion.generate import saved_dataset
from fundus_diffusion.visualization import contact_sheet

FULLSIZE = "fullsize.png"


def export_flagged(dataset, flagged_file: str, flagged_dir: str) -> None:
    """Every sample listed in ``flagged_file`` as ``flagged_dir/NNN.png`` (NNN: its index in the set), then ``done``."""
    with open(flagged_file, encoding="utf-8") as f:
        flagged = set(f.read().split())
    os.makedirs(flagged_dir, exist_ok=True)
    indices = [i for i, sample_id in enumerate(dataset["id"]) if sample_id in flagged]
    for i, image in zip(indices, dataset.select(indices)["image"]):
        image.convert("RGB").save(os.path.join(flagged_dir, f"{i:03d}.png"))
    open(os.path.join(flagged_dir, "done"), "w").close()


def make_pictures(synthetic_root: str, samples: int, samples_dir: str, eval_dir: str = None) -> list:
    """Make what is missing for every finished set under ``synthetic_root``; returns the sets it touched."""
    touched = []
    for name in sorted(os.listdir(synthetic_root)):
        set_dir = os.path.join(synthetic_root, name)
        fullsize = os.path.join(set_dir, FULLSIZE)
        export_dir = os.path.join(samples_dir, name)
        done = os.path.join(export_dir, "done")
        flagged_dir = os.path.join(export_dir, "flagged")
        flagged_file = os.path.join(eval_dir, name, FLAGGED_FILE) if eval_dir else None
        flagged_due = flagged_file is not None and os.path.isfile(flagged_file) and not os.path.isfile(
            os.path.join(flagged_dir, "done")
        )
        if os.path.isfile(fullsize) and (samples == 0 or os.path.isfile(done)) and not flagged_due:
            continue
        dataset = saved_dataset(set_dir)
        if dataset is None:  # still being written, or its save was cut short
            continue
        if not os.path.isfile(fullsize):
            contact_sheet(list(dataset.select(range(min(8, len(dataset))))["image"]), columns=4, tile=256).save(fullsize)
        if samples and not os.path.isfile(done):
            export_imagefolder(dataset.select(range(min(samples, len(dataset)))), export_dir)
            open(done, "w").close()
        if flagged_due:
            export_flagged(dataset, flagged_file, flagged_dir)
        touched.append(name)
    return touched


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("synthetic_root", help="The folder holding one saved synthetic set per subfolder.")
    parser.add_argument("--samples", type=int, default=56, help="Pairs exported per set (0: none).")
    parser.add_argument("--samples_dir", required=True, help="Where each set's <set>/ generic folder goes.")
    parser.add_argument("--eval_dir", default=None, help="The evaluations, <set>/flagged_ids.txt: export the flagged samples.")
    args = parser.parse_args(argv)
    for name in make_pictures(args.synthetic_root, args.samples, args.samples_dir, args.eval_dir):
        print(f"pictures of {name}")


if __name__ == "__main__":
    main()
