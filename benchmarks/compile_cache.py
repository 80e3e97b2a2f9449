r"""How much of a compiled training's warm-up ``--compile_cache`` saves on a fresh machine (issue 19: time to quality).

    python benchmarks/compile_cache.py --dataset phantom:16 \
        --recipe "--resolution 32 --model_config tiny --train_batch_size 4"                      # this CPU (gcc)
    python benchmarks/compile_cache.py --dataset .device_data/fundus-od --recipe "--resolution 256 \
        --model_config small256 --train_batch_size 16 --mixed_precision bf16 --compile_mode reduce-overhead"  # a GPU

Trains the recipe with ``--compile`` for --steps steps three times, each in a fresh subprocess with empty inductor and
Triton cache folders (as on a fresh machine): ``cold`` without a cache file (it writes one), ``loaded`` with that file,
and ``cold again`` without it (how much a cold start varies). Prints a table of the seconds to the first logged
step (the compile and the first step; ``logs/metrics.csv``'s ``wall_s``, which starts after the cache is loaded) and
of each whole process (the loading included), each row as its run ends, and writes it as JSON with --json.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from fundus_diffusion.training.run_folder import read_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_once(folder: str, name: str, dataset: str, recipe: str, steps: int, cache_file: str, loads: bool) -> dict:
    """One compiled training in a fresh process whose inductor and Triton caches start empty, with ``cache_file`` as
    its --compile_cache (none when empty; ``loads``: the file exists, so the run loads it); its timings."""
    slug = name.replace(" ", "-")  # a space in the inductor folder breaks its C++ compiler's command line
    env = {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": os.path.join(folder, f"inductor-{slug}"),
        "TRITON_CACHE_DIR": os.path.join(folder, f"triton-{slug}"),
    }
    output_dir = os.path.join(folder, f"run-{slug}")
    argv = [
        sys.executable, os.path.join(REPO, "scripts", "train_ddpm.py"), "--dataset", dataset, *shlex.split(recipe),
        "--compile", "--max_train_steps", str(steps), "--logging_steps", "1", "--logger", "none",
        "--validation_steps", "100000", "--checkpointing_steps", "100000", "--output_dir", output_dir,
        "--training_cache_dir", os.path.join(folder, "training-cache"),
    ]  # fmt: skip
    if cache_file:
        argv += ["--compile_cache", cache_file]
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{name}: train_ddpm.py failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    first = read_metrics(output_dir)[0]
    return {"run": name, "compile cache": "loaded" if loads else "none",
            "seconds to step 1": float(first["wall_s"]), "process seconds": round(seconds, 1)}  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="What train_ddpm.py --dataset accepts (e.g. phantom:16).")
    parser.add_argument("--recipe", required=True, help="train_ddpm.py flags besides --compile (one quoted string).")
    parser.add_argument("--steps", type=int, default=3, help="Training steps per run.")
    parser.add_argument("--json", help="Also write the table here.")
    args = parser.parse_args(argv)
    print("| run | compile cache | seconds to step 1 | process seconds |")
    print("|---|---|---:|---:|")
    rows = []
    with tempfile.TemporaryDirectory(prefix="compile-cache-benchmark-") as folder:
        cache_file = os.path.join(folder, "compile_cache.bin")
        runs = [("cold", cache_file, False), ("loaded", cache_file, True), ("cold again", "", False)]  # cold writes it
        for name, cache, loads in runs:  # each row as it comes: a run takes minutes on a GPU
            row = train_once(folder, name, args.dataset, args.recipe, args.steps, cache, loads)
            seconds = f"{row['seconds to step 1']:.1f} | {row['process seconds']:.1f}"
            print(f"| {name} | {row['compile cache']} | {seconds} |", flush=True)
            rows.append(row)
        size = os.path.getsize(cache_file) / 2**20 if os.path.exists(cache_file) else 0.0  # a failed save only warns
    print(f"cache file: {size:.1f} MiB" if size else "cache file: not written (see the cold run's warnings)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"recipe": args.recipe, "dataset": os.path.basename(args.dataset), "steps": args.steps,
                       "cache_file_mib": round(size, 2), "rows": rows}, f, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
