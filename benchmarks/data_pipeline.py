"""Throughput of the training view through a torch DataLoader, as training uses it (batch 16, shuffled; the
flips come after the loader, in ``training.batches.LoaderBatches``).

    python benchmarks/data_pipeline.py [--dataset ../shared/data/fundus-od] [--num_workers 0,2]

Prints a markdown table: samples/s per resolution, with the cache (memory-mapped uint8, built first and timed)
and without it (decode + crop + resize every item), and the peak RSS so far of this process and of its DataLoader
workers (``resource.getrusage``). Caches go to a temporary folder, so every build is cold.

Wall-clock samples/s depends on what else the machine runs; "per CPU-s" (samples per second of CPU time of this
process and its workers, start-up included) does not, and is what one free core would deliver.
"""

import argparse
import gc
import os
import resource
import tempfile
import time
from pathlib import Path

from torch.utils.data import DataLoader

from fundus_diffusion.data import FundusTrainingView, load_fundus_dataset

DEFAULT_DATASET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fundus-od"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET), help="Anything load_fundus_dataset accepts.")
    parser.add_argument("--resolutions", default="64,256,360")
    parser.add_argument("--masks", default="disc")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_workers", default="0,2", help="DataLoader worker counts to try, comma-separated.")
    parser.add_argument("--seconds", type=float, default=3.0, help="How long each cached measurement runs.")
    parser.add_argument("--uncached_samples", type=int, default=160, help="Samples read per uncached measurement.")
    return parser.parse_args(argv)


def peak_rss_mb():
    """Peak resident set size of this process and of its largest finished child, in MiB (Linux reports KiB)."""
    return [resource.getrusage(who).ru_maxrss / 1024 for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]


def cpu_seconds():
    """CPU time of this process and of its finished (joined) children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def samples_per_second(view, batch_size, num_workers, seconds, max_samples=None):
    """(wall-clock samples/s, samples per CPU-second) of a shuffled DataLoader over ``view``."""
    loader = DataLoader(
        view, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=True, persistent_workers=num_workers > 0
    )
    batches = iter(loader)
    next(batches)  # warm-up: worker start-up is not throughput
    count, start, cpu_start = 0, time.perf_counter(), cpu_seconds()
    while time.perf_counter() - start < seconds and (max_samples is None or count < max_samples):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            continue
        count += batch["pixel_values"].shape[0]
    wall = time.perf_counter() - start
    del batches, loader  # shuts the workers down and joins them, so that their CPU time is counted
    gc.collect()
    return count / wall, count / (cpu_seconds() - cpu_start)


def main(args):
    with tempfile.TemporaryDirectory() as cache_dir:
        start = time.perf_counter()
        dataset = load_fundus_dataset(args.dataset, cache_dir=cache_dir)
        print(f"{args.dataset}: {len(dataset)} samples, read in {time.perf_counter() - start:.1f} s; {os.cpu_count()} CPUs")
        print("\n| resolution | cache | workers | samples/s | per CPU-s | cache build (s) | peak RSS main / workers (MiB) |")
        print("|---|---|---|---|---|---|---|")
        for resolution in (int(r) for r in args.resolutions.split(",")):
            for use_cache in (True, False):
                start = time.perf_counter()
                view = FundusTrainingView(dataset, resolution, args.masks, cache_dir=cache_dir, use_cache=use_cache)
                build = f"{time.perf_counter() - start:.1f}" if use_cache else "-"
                for workers in (int(w) for w in args.num_workers.split(",")):
                    limit = None if use_cache else args.uncached_samples
                    rate, per_cpu = samples_per_second(view, args.batch_size, workers, args.seconds if use_cache else 600, limit)
                    main_rss, child_rss = peak_rss_mb()
                    cache = "yes" if use_cache else "no"
                    row = f"| {resolution} | {cache} | {workers} | {rate:,.0f} | {per_cpu:,.0f} | {build} |"
                    print(f"{row} {main_rss:,.0f} / {child_rss:,.0f} |", flush=True)
        print(f"\nload average at the end: {' '.join(open('/proc/loadavg').read().split()[:3])}")


if __name__ == "__main__":
    main(parse_args())
