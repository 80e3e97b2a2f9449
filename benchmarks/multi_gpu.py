"""Both trainers on 1, 2 (4, ...) GPUs of one host through ``accelerate launch``: agreement, resume, scaling.

    python benchmarks/multi_gpu.py --gpus 1,2 --json reports/multi_gpu.json      # on a multi-GPU machine, ~7 min
    python benchmarks/multi_gpu.py --smoke                                      # 2 CPU processes, tiny models

For each trainer (DDPM at 64 px, DCGAN at 360 px; phantoms by default) it runs, as subprocesses:

- ``1x{B}`` seed 0, and again with ``--data_seed 1``: one GPU at the effective batch B (the second run starts from
  the same weights with other data order and noise: the run-to-run noise that agreement is judged against);
- ``{N}x{B/N}`` seed 0: N GPUs at the same effective batch, for each N > 1 (the agreement check);
- ``{N}x{B}``: N GPUs at the one-GPU per-device batch (throughput scaling at fixed work per GPU);
- the ``{N}x{B/N}`` run resumed on one process (``1x{B}``, same effective batch) for more steps.

Runs already finished in ``--output_dir`` with the same settings are not launched again (other settings: refused), so
a later call with more ``--gpus`` (``1,2,4`` after ``1,2``, once more GPUs are free) launches only the new runs; its
table has every listed row, but a run that an earlier call's resume row continued shows no EMA columns any more (they
are in that earlier call's table and JSON).

and prints one table: images/s read off ``logs/metrics.csv`` (second half of the steps, after warm-up), the mean
loss over the second half with its standard error, the EMA model's loss on a fixed batch (DDPM: the same noise and
timesteps for every model; DCGAN: the fixed-noise diversity ratio of the EMA generator), the EMA weights' relative
distance from the one-GPU seed-0 run, and the checks that each run wrote its checkpoints and model card once.
NVLink multicast stays off (NCCL_NVLS_ENABLE=0 and friends are set for every launch).
"""

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from fundus_diffusion.cli import run_script
from fundus_diffusion.training.run_folder import checks, finished, mean_and_error, read_metrics, second_half, throughput

REPO = Path(__file__).resolve().parents[1]
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", default="1,2", help="Process counts to compare; the first must be 1.")
    parser.add_argument("--dataset", default="phantom:512")
    parser.add_argument("--trainers", default="ddpm,dcgan")
    parser.add_argument("--ddpm_steps", type=int, default=300)
    parser.add_argument("--dcgan_steps", type=int, default=300)
    parser.add_argument("--output_dir", default="reports/multi_gpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None, help="Also draw each trainer's loss curves into PLOT_{trainer}.png.")
    parser.add_argument("--smoke", action="store_true", help="Two CPU processes, tiny models, a few steps.")
    parser.add_argument(
        "--from_runs",
        action="store_true",
        help="Launch nothing: rebuild the table from the runs already in --output_dir (e.g. of a session cut short).",
    )
    args = parser.parse_args(argv)
    args.gpus = [int(n) for n in args.gpus.split(",")]
    if args.smoke:
        args.gpus, args.dataset = [1, 2], "phantom:16"
    if args.gpus[0] != 1:
        parser.error("--gpus must start with 1 (the reference run).")
    return args


def trainer_settings(trainer, args):
    """(script, effective batch, steps, flags) of one trainer's runs."""
    if trainer == "ddpm":
        if args.smoke:
            return "train_ddpm.py", 4, 6, ["--preset", "demo", "--resolution", "16", "--masks", "disc"]
        flags = ["--resolution", "64", "--masks", "disc", "--model_config", "base64", "--mixed_precision", "bf16"]
        return "train_ddpm.py", 64, args.ddpm_steps, flags + ["--lr_warmup_steps", "50"]
    if args.smoke:
        return "train_dcgan.py", 4, 6, ["--resolution", "16", "--ngf", "4", "--ndf", "4", "--use_ema", "--ema_max_decay", "0.9"]
    # DiffAugment: without it the paper's DCGAN collapses within these steps, and a collapsed EMA generator says
    # nothing about agreement (measured on phantoms, 2 x H200).
    flags = ["--preset", "paper", "--use_ema", "--ema_max_decay", "0.999", "--diffaugment", "color,translation,cutout"]
    return "train_dcgan.py", 32, args.dcgan_steps, flags + ["--mixed_precision", "bf16"]


def launch(args, script, processes, batch, steps, flags, output_dir, data_seed, resume=False):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
               "--num_machines", "1", "--dynamo_backend", "no"]  # fmt: skip
    if processes > 1:
        command += ["--multi_gpu"]  # on a machine without CUDA: processes on the CPU (gloo)
    elif args.smoke:
        command += ["--cpu"]
    if args.smoke:
        command += ["--mixed_precision", "no"]
    command += [str(REPO / "scripts" / script), *flags, "--dataset", args.dataset, "--seed", "0"]
    command += ["--data_seed", str(data_seed)]
    command += ["--train_batch_size", str(batch), "--max_train_steps", str(steps), "--output_dir", str(output_dir)]
    command += ["--checkpointing_steps", str(steps), "--validation_steps", str(steps), "--logger", "none"]
    command += ["--training_cache_dir", str(Path(args.output_dir) / "cache")]
    if "train_ddpm" in script:
        command += ["--logging_steps", "1" if args.smoke else "5"]
    if resume:
        command += ["--resume_from_checkpoint", "latest"]
    env = {**os.environ, **NO_MULTICAST, "HF_HUB_OFFLINE": "1"}
    env.setdefault("OMP_NUM_THREADS", "1" if args.smoke else "4")
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    with open(Path(output_dir).with_suffix(".log"), "a") as f:
        f.write(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def ema_weights(run, trainer):
    path = weights_path(run, trainer)
    return load_file(path) if path.exists() else None


def weights_path(run, trainer):
    return Path(run) / ("unet" if trainer == "ddpm" else "gan_generator") / "diffusion_pytorch_model.safetensors"


def relative_distance(a, b):
    keys = [k for k in a if a[k].is_floating_point()]
    diff = sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in keys)
    norm = sum(float(b[k].double().pow(2).sum()) for k in keys)
    return math.sqrt(diff / norm)


def ddpm_eval_loss(run, args, samples=256):
    """Denoising loss of the saved EMA UNet on a fixed batch: same images, noise and timesteps for every model."""
    from fundus_diffusion.data import FundusTrainingView, load_fundus_dataset
    from fundus_diffusion.pipelines.loading import load_fundus_pipeline
    from fundus_diffusion.training.ddpm import diffusion_loss

    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    pipe = load_fundus_pipeline(str(run), device=device.type, dtype="fp32")  # the saved scheduler, weights in fp32
    config = json.loads((Path(run) / "training_args.json").read_text())
    view = FundusTrainingView(
        load_fundus_dataset(args.dataset), config["resolution"], tuple(config["mask_names"]),
        cache_dir=str(Path(args.output_dir) / "cache"),
    )  # fmt: skip
    batch = torch.utils.data.default_collate([view[i] for i in range(min(samples, len(view)))])
    pixels = torch.as_tensor(batch["pixel_values"]).to(device)
    labels = torch.as_tensor(batch["class_labels"]).to(device)
    torch.manual_seed(0)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return float(diffusion_loss(pipe.unet, pipe.scheduler, pixels, labels, space_to_depth=pipe.config.space_to_depth))


def final_diversity_ratio(run):
    with open(Path(run) / "logs" / "diversity.csv", newline="") as f:
        return float(list(csv.DictReader(f))[-1]["ratio"])




def summarise_run(trainer, run, name, processes, per_device, steps, wall, args):
    """One table row from a finished run's folder (its metrics log, checkpoints and saved model)."""
    late = second_half([r for r in read_metrics(run) if int(r["step"]) <= steps])  # not a resumed continuation
    loss, loss_error = mean_and_error([float(r["loss" if trainer == "ddpm" else "d_loss"]) for r in late])
    row = {
        "trainer": trainer, "run": name, "processes": processes, "per_device_batch": per_device,
        "effective_batch": processes * per_device, "steps": steps, "wall_s": wall and round(wall, 1),
        "images_per_s": throughput(late, processes * per_device), "loss": loss, "loss_stderr": loss_error,
        "g_loss": mean_and_error([float(r["g_loss"]) for r in late])[0] if trainer == "dcgan" else None,
        **checks(run, steps),
    }  # fmt: skip
    if row["resumed"]:  # its saved model is the continuation's, not this run's
        return row
    saved = weights_path(run, trainer).exists() if trainer == "ddpm" else finished(run)
    if saved:  # the EMA model was saved (DDPM: its weights are here to evaluate)
        row["ema_eval"] = ddpm_eval_loss(run, args) if trainer == "ddpm" else final_diversity_ratio(run)
    return row


def check_dataset_size(args):
    """Refuse before any launch when the largest row's effective batch exceeds the dataset (drop_last batches)."""
    from fundus_diffusion.data import load_fundus_dataset

    size = len(load_fundus_dataset(args.dataset))
    for trainer in args.trainers.split(","):
        batch = trainer_settings(trainer, args)[1] * max(args.gpus)
        if batch > size:
            raise SystemExit(
                f"{args.dataset} has {size} samples, fewer than the {trainer} row {max(args.gpus)}x"
                f"{batch // max(args.gpus)} takes in one step ({batch}): pass a larger --dataset "
                f"(e.g. phantom:{2 * batch}) or fewer --gpus."
            )


def run_trainer(trainer, args):
    script, batch, steps, flags = trainer_settings(trainer, args)
    root = Path(args.output_dir) / trainer
    root.mkdir(parents=True, exist_ok=True)
    plan = [("1x%d seed 0" % batch, 1, batch, 0), ("1x%d data seed 1" % batch, 1, batch, 1)]
    for n in args.gpus[1:]:
        plan += [(f"{n}x{batch // n} seed 0", n, batch // n, 0), (f"{n}x{batch} seed 0", n, batch, 0)]
    rows = []
    for name, processes, per_device, seed in plan:  # seed: the data seed; the weights always start from seed 0
        run = root / name.replace(" ", "_")
        wall = None
        expected = {
            "dataset": args.dataset,
            "train_batch_size": per_device,
            "max_train_steps": steps,
            "data_seed": seed,
        }
        if not (args.from_runs or finished(run, expected)):
            print(f"[{trainer}] {name} ...", flush=True)
            wall = launch(args, script, processes, per_device, steps, flags, run, seed)
        elif not (run / "logs" / "metrics.csv").exists():
            continue
        rows.append(summarise_run(trainer, run, name, processes, per_device, steps, wall, args))
        print(json.dumps(rows[-1]), flush=True)
    reference = ema_weights(root / plan[0][0].replace(" ", "_"), trainer)
    for row in [r for r in rows if not r["resumed"]] if reference is not None else []:
        weights = ema_weights(root / row["run"].replace(" ", "_"), trainer)
        if weights is not None:
            row["ema_distance"] = relative_distance(weights, reference)

    if args.from_runs:
        return rows
    # Resume the first multi-process run on one process at the same effective batch, for a quarter more steps.
    if len(args.gpus) > 1:
        n = args.gpus[1]
        run = root / f"{n}x{batch // n}_seed_0"
        more = steps + max(2, steps // 4)
        if not (run / f"checkpoint-{more}").exists():
            launch(args, script, 1, batch, more, flags, run, 0, resume=True)
        logged = [int(r["step"]) for r in read_metrics(run)]
        expected = list(range(1, more + 1)) if trainer == "dcgan" else sorted(set(logged))
        rows.append({
            "trainer": trainer, "run": f"{n}x{batch // n} resumed on 1x{batch}", "processes": 1,
            "per_device_batch": batch, "effective_batch": batch, "steps": more,
            "ok": logged == expected and logged[-1] == more
            and sorted(p.name for p in run.glob("checkpoint-*")) == [f"checkpoint-{steps}", f"checkpoint-{more}"],
        })  # fmt: skip
    return rows


def plot_losses(trainer, args):
    """The logged loss of every run of ``trainer`` against the step (DCGAN: the discriminator's)."""
    from fundus_diffusion.evaluation.figures import line_chart

    column = "loss" if trainer == "ddpm" else "d_loss"
    curves = {}
    for run in sorted((Path(args.output_dir) / trainer).glob("*/logs/metrics.csv")):
        metrics = read_metrics(run.parents[1])
        curves[run.parents[1].name.replace("_", " ")] = (
            [int(r["step"]) for r in metrics],
            [float(r[column]) for r in metrics],
        )
    path = f"{args.plot}_{trainer}.png"
    line_chart(f"{trainer}: {column} per logged step", curves).save(path)
    return path


def print_table(rows, device):
    print(f"\nDevice: {device}\n")
    print(
        "| trainer | run | GPUs x batch | images/s | scaling | loss (2nd half) | EMA model | EMA distance to 1-GPU seed 0 | checks |"
    )
    print("|---|---|---|---:|---:|---|---:|---:|---|")
    for r in rows:
        single = next(x for x in rows if x["trainer"] == r["trainer"] and x["processes"] == 1)
        ips = r.get("images_per_s")
        scaling = f"{ips / single['images_per_s']:.2f}x" if ips and "seed 0" in r["run"] else ""
        loss = f"{r['loss']:.4f} ± {r['loss_stderr']:.4f}" if "loss" in r else ""
        ema = f"{r['ema_eval']:.4f}" if "ema_eval" in r else ""
        dist = f"{r['ema_distance']:.4f}" if "ema_distance" in r else ""
        check = "ok" if r["ok"] else "resumed later (its own call's row)" if r.get("resumed") else "FAILED"
        print(
            f"| {r['trainer']} | {r['run']} | {r['processes']}x{r['per_device_batch']} | "
            f"{f'{ips:,.0f}' if ips else ''} | {scaling} | {loss} | {ema} | {dist} | {check} |"
        )


def main(args):
    if args.from_runs:
        device = "as recorded in the runs' model_index.json"
    elif args.smoke:
        device = "cpu (gloo)"
    elif torch.cuda.device_count() < max(args.gpus):
        raise SystemExit(f"--gpus asks for {max(args.gpus)} GPUs; this machine has {torch.cuda.device_count()}.")
    else:
        device = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name()}"
    if not args.from_runs:
        check_dataset_size(args)
    rows = []
    for trainer in args.trainers.split(","):
        rows += run_trainer(trainer, args)
        if args.plot:
            print("loss curves:", plot_losses(trainer, args))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"device": device, "rows": rows}, indent=2))
    print_table(rows, device)
    return rows


if __name__ == "__main__":
    run_script(main, parse_args)
