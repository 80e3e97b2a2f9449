"""The pictures benchmarks/realism_ablation.sh brings back of each finished synthetic set, made in one process (loading
the package once, not once per set and picture: each load cost about 15 s of device time):

- ``<set>/fullsize.png``: its first 8 samples at full size, no masks drawn, to look at beside real photographs;
- ``<samples_dir>/<set>/images/NNN.png``: its first ``--samples`` RGB samples, so that the set can still be judged
  elsewhere (``build_dataset.py --folder_dir <samples_dir>/<set> --images_only``, then ``evaluate.py --masks none``)
  when the device machine is lost with its evaluations.

    python benchmarks/realism_pictures.py /tmp/realism/synthetic --samples 56 --samples_dir /tmp/realism/samples

A set counts once generate.py has saved it whole (``generate.saved_dataset``); what already exists is not made again
(a ``done`` file marks a set's exported samples).
"""

import argparse
import os

from fundus_diffusion.generate import saved_dataset
from fundus_diffusion.visualization import contact_sheet

FULLSIZE = "fullsize.png"


def make_pictures(synthetic_root: str, samples: int, samples_dir: str) -> list:
    """Make what is missing for every finished set under ``synthetic_root``; returns the sets it touched."""
    touched = []
    for name in sorted(os.listdir(synthetic_root)):
        set_dir = os.path.join(synthetic_root, name)
        fullsize = os.path.join(set_dir, FULLSIZE)
        export_dir = os.path.join(samples_dir, name)
        done = os.path.join(export_dir, "done")
        if os.path.isfile(fullsize) and (samples == 0 or os.path.isfile(done)):
            continue
        dataset = saved_dataset(set_dir)
        if dataset is None:  # still being written, or its save was cut short
            continue
        if not os.path.isfile(fullsize):
            contact_sheet(list(dataset.select(range(min(8, len(dataset))))["image"]), columns=4, tile=256).save(fullsize)
        if samples and not os.path.isfile(done):
            os.makedirs(os.path.join(export_dir, "images"), exist_ok=True)
            for i, image in enumerate(dataset.select(range(min(samples, len(dataset))))["image"]):
                image.convert("RGB").save(os.path.join(export_dir, "images", f"{i:03d}.png"))
            open(done, "w").close()
        touched.append(name)
    return touched


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("synthetic_root", help="The folder holding one saved synthetic set per subfolder.")
    parser.add_argument("--samples", type=int, default=56, help="RGB samples exported per set (0: none).")
    parser.add_argument("--samples_dir", required=True, help="Where <set>/images/NNN.png go.")
    args = parser.parse_args(argv)
    for name in make_pictures(args.synthetic_root, args.samples, args.samples_dir):
        print(f"pictures of {name}")


if __name__ == "__main__":
    main()
