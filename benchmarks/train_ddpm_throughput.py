"""DDPM training and sampling throughput on one device: our training step against a plain diffusers loop.

    python benchmarks/train_ddpm_throughput.py --json reports/ddpm_throughput.json     # on a CUDA GPU, < 8 min
    python benchmarks/train_ddpm_throughput.py --device cpu --tiny                     # syntax check
    python benchmarks/train_ddpm_throughput.py --sizes 64 --sections train --variants baseline,compiled --profile
    # issue 19 part 2: the documented 256 px recipe against the plain loop on the same network, MFU of a measured peak
    python benchmarks/train_ddpm_throughput.py --sizes 256 --model_256 small256 --sections train \\
        --variants baseline,compiled_cudagraphs --peak_tflops 790 --profile --json reports/train_throughput_small256.json

Training rows: images/s and peak memory of (a) the baseline of diffusers' example scripts -- the same UNet with
fp32 weights, bf16 autocast, eager, ``torch.optim.AdamW``, no EMA, cudnn.benchmark off -- and (b)
``fundus_diffusion.training.ddpm.DDPMKind.step`` as the training loop sets it up (bf16 via accelerate,
cudnn.benchmark, fused AdamW, foreach EMA update), eager and with ``torch.compile``, with and without channels-last
(``--variants``), at 64 and 256 px on random batches; the default variants leave channels-last out (measured on
an H200 it was slower: CUDA GroupNorm has no NHWC kernel). A memory row trains 256 px at batch 16 with gradient
checkpointing (target: under 15 GiB, a free-notebook GPU). Loader rows time the trainer's two data paths
(``--data_on_device``): on the H200 host the DataLoader gave 102 images/s at 256 px, below what training takes. Sampling
rows time ``FundusPipeline`` at 256 px with DDPM (1000 steps), DDIM (50) and DPM-Solver++ (20) on untrained bf16
weights (speed only). ``--json`` is rewritten after every row, so a run cut short keeps what it measured.
"""

import argparse
import functools
import gc
import json
import tempfile
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from fundus_diffusion.data.schema import NUM_CLASS_EMBEDS, num_channels
from fundus_diffusion.models.unet import UNET_PRESETS, build_unet, preset_space_to_depth
from fundus_diffusion.pipelines.pipeline_fundus import unet_output
from fundus_diffusion.training import ddpm

MASKS = ("disc", "atrophy")
BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16, SXM parts
# Training variants: None is the baseline; a tuple holds flags for the DDPM trainer.
VARIANTS = {
    "baseline": None,
    "eager": (),
    "compiled": ("--compile",),
    "compiled_channels_last": ("--compile", "--channels_last"),
    "eager_channels_last": ("--channels_last",),
    "compiled_max_autotune": ("--compile", "--compile_mode", "max-autotune-no-cudagraphs"),
    "compiled_cudagraphs": ("--compile", "--compile_mode", "reduce-overhead"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="Tiny model, small sizes, few steps: a CPU syntax check.")
    parser.add_argument("--warmup", type=int, default=10, help="Untimed steps per variant (compilation happens here).")
    parser.add_argument("--steps", type=int, default=30, help="Timed training steps per variant.")
    parser.add_argument("--batch_64", type=int, default=64)
    parser.add_argument("--batch_256", type=int, default=16)
    parser.add_argument("--sample_batch", type=int, default=16)
    parser.add_argument("--ddpm_steps", type=int, default=1000)
    parser.add_argument(
        "--variants",
        default="baseline,eager,compiled",
        help="Training variants at both sizes, from: " + ", ".join(VARIANTS) + " (compiled ones run on CUDA only).",
    )
    parser.add_argument(
        "--sizes", default="64,256", help="Training rows at these sizes (64: base64, 256: --model_256)."
    )
    parser.add_argument(
        "--model_256",
        default="base256",
        choices=sorted(UNET_PRESETS),
        help="UNet preset of the 256 px rows: base256 (the default, as in earlier records), or small256, the "
        "documented 256 px recipe's (issue 19 compares the recipe with the plain loop on the same network).",
    )
    parser.add_argument(
        "--peak_tflops",
        type=float,
        default=None,
        help="The bf16 peak that MFU is a share of. Default: the datasheet's dense figure for known GPUs ("
        + ", ".join(f"{k} {v:g}" for k, v in BF16_PEAK_TFLOPS.items())
        + "); give a peak measured on the GPU itself (issue 19 quotes 790 TFLOP/s on the H200) to compare with it.",
    )
    parser.add_argument(
        "--sections",
        default="train,memory,data,sample",
        help="Which rows: train (the variants), memory (256 px with gradient checkpointing), data, sample.",
    )
    parser.add_argument(
        "--profile", action="store_true", help="After each training row, print its 15 costliest GPU kernels."
    )
    parser.add_argument("--json", default=None, help="Also write the results to this file.")
    parser.add_argument("--from_json", default=None, help="Only print the table of a JSON an earlier run wrote.")
    args = parser.parse_args(argv)
    args.sizes = [int(size) for size in args.sizes.split(",")]
    args.sections = set(args.sections.split(","))
    if not set(args.sizes) <= {64, 256}:
        parser.error(f"--sizes takes 64 and/or 256, not {args.sizes}.")
    if not args.sections <= {"train", "memory", "data", "sample"}:
        parser.error(f"--sections takes train, memory, data, sample, not {sorted(args.sections)}.")
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"Unknown --variants {sorted(unknown)}: choose from {', '.join(VARIANTS)}.")
    if args.tiny:
        args.warmup, args.steps, args.batch_64, args.batch_256, args.sample_batch = 1, 2, 2, 2, 2
        args.ddpm_steps = 10
    return args


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_memory(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device):
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def random_batch(batch, resolution, device):
    return {
        "pixel_values": torch.rand(batch, num_channels(MASKS), resolution, resolution, device=device) * 2 - 1,
        "class_labels": torch.randint(0, NUM_CLASS_EMBEDS, (batch,), device=device),
        "mask_annotated": torch.ones(batch, len(MASKS), dtype=torch.bool, device=device),  # every mask annotated
    }


def timed(step, device, warmup, steps):
    """Seconds of ``steps`` calls after ``warmup`` untimed ones; also returns the warm-up's seconds (compilation)."""
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    warm = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return time.perf_counter() - warm, warm - start


def print_profile(step, device, steps=5):
    """The kernels that take the GPU's time in ``steps`` calls of ``step`` (where a speed-up would have to come from)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort_by, row_limit=15, max_name_column_width=60), flush=True)


def flops_per_image(preset, resolution, device):
    """Forward + backward FLOPs of one image (PyTorch's FLOP counter: convolutions, matmuls, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    unet = build_unet(preset, resolution, num_channels(MASKS)).to(device)
    batch = random_batch(1, resolution, device)
    with FlopCounterMode(display=False) as counter:
        t = torch.tensor([10], device=device)
        out = unet_output(unet, batch["pixel_values"], t, batch["class_labels"], preset_space_to_depth(preset))
        out.float().mean().backward()
    del unet
    return counter.get_total_flops()


def baseline_step(unet, optimizer, noise_scheduler, batch, device, space_to_depth=1):
    """The loop of diffusers' train_unconditional.py without EMA: fp32 weights, bf16 autocast, eager."""
    x, labels = batch["pixel_values"], batch["class_labels"]
    noise = torch.randn_like(x)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (x.shape[0],), device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        pred = unet_output(unet, noise_scheduler.add_noise(x, noise, t), t, labels, space_to_depth)
    loss = F.mse_loss(pred.float(), noise_scheduler.get_velocity(x, noise, t).float())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def train_row(name, preset, resolution, batch_size, device, args, flags=()):
    """Run one variant and return its row. ``flags`` go to the DDPM trainer; ``None`` means the baseline."""
    from fundus_diffusion.training import make_accelerator

    reset_memory(device)
    torch._dynamo.reset()  # each variant compiles afresh, and no earlier graph counts against the recompile limit
    batch = random_batch(batch_size, resolution, device)
    if flags is None:
        torch.backends.cudnn.benchmark = False  # diffusers' default
        unet = build_unet(preset, resolution, num_channels(MASKS)).to(device).train()
        optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)
        noise_scheduler = ddpm.make_noise_scheduler(ddpm.parse_args(["--output_dir", "unused"]))
        step = functools.partial(
            baseline_step, unet, optimizer, noise_scheduler, batch, device, preset_space_to_depth(preset)
        )
        release = None
    else:
        train_args = ddpm.parse_args(
            ["--output_dir", "unused", "--resolution", str(resolution), "--model_config", preset, "--logger", "none"]
            + ["--masks", ",".join(MASKS), "--train_batch_size", str(batch_size), "--mixed_precision", "bf16"]
            + ["--class_conditional", *flags]  # random batches, no dataset to infer it from
        )
        accelerator = make_accelerator(train_args, cpu=device.type == "cpu")  # as the trainer: cudnn.benchmark on
        training = ddpm.DDPMKind(train_args, accelerator, view=None, plan=SimpleNamespace(max_train_steps=10_000))
        training.train_mode()
        step = functools.partial(training.step, batch)
        release = accelerator.free_memory  # accelerate keeps references to what it prepared
    seconds, warmup_seconds = timed(step, device, args.warmup, args.steps)
    if args.profile:
        print(f"profile: {name} {preset} {resolution} px", flush=True)
        print_profile(step, device)
    if release:
        release()
    return {
        "section": "train",
        "variant": name,
        "model": preset,
        "resolution": resolution,
        "batch": batch_size,
        "images_per_s": batch_size * args.steps / seconds,
        "peak_gib": peak_gib(device),
        "warmup_s": round(warmup_seconds, 1),
    }


def loader_rows(resolution, batch_size, args, device):
    """Images/s of the trainer's two data paths (``--data_on_device``), batches delivered on the device: a DataLoader
    over the memory-mapped uint8 cache (pinned memory, no worker processes) and the whole set as one device tensor."""
    from fundus_diffusion.data import FundusTrainingView, load_phantom_dataset
    from fundus_diffusion.training.batches import DeviceBatches

    rows = []
    with tempfile.TemporaryDirectory() as cache:
        view = FundusTrainingView(load_phantom_dataset(64, size=resolution), resolution, MASKS, cache_dir=cache)
        loader = torch.utils.data.DataLoader(
            view, batch_size=batch_size, shuffle=True, drop_last=True, pin_memory=device.type == "cuda"
        )
        on_device = DeviceBatches(view, batch_size, device)
        paths = {
            "DataLoader (--data_on_device no)": lambda: (
                b["pixel_values"].to(device, non_blocking=True) for b in loader
            ),
            "DeviceBatches (--data_on_device yes)": lambda: (b["pixel_values"] for b in on_device.epoch(0)),
        }
        for name, epoch in paths.items():
            images, start = 0, time.perf_counter()
            for _ in range(max(1, args.steps // len(loader))):
                for _batch in epoch():
                    images += batch_size
            sync(device)
            rows.append(
                {
                    "section": "data",
                    "variant": name,
                    "model": "-",
                    "resolution": resolution,
                    "batch": batch_size,
                    "images_per_s": images / (time.perf_counter() - start),
                    "peak_gib": float("nan"),
                }
            )
    return rows


def sampling_rows(preset, resolution, args, device):
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    reset_memory(device)
    train_args = ddpm.parse_args(
        ["--output_dir", "unused", "--masks", ",".join(MASKS), "--model_config", preset, "--resolution", str(resolution)]
    )
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rotation_conditioning = train_args.rotation_conditioning_prob > 0  # the ours preset's, as the pipeline expects
    unet = build_unet(preset, resolution, num_channels(MASKS), rotation_conditioning=rotation_conditioning)
    unet = unet.to(device, dtype).eval()
    pipeline = ddpm.make_pipeline(unet, ddpm.make_noise_scheduler(train_args), train_args)
    pipeline.set_progress_bar_config(disable=True)
    labels = (["PM", "non-PM"] * args.sample_batch)[: args.sample_batch]

    def sample(num_inference_steps, per_sample=False):
        # per_sample: one CPU generator per sample, as scripts/generate.py passes them (each sample reproducible alone)
        generator = [torch.Generator("cpu").manual_seed(i) for i in range(args.sample_batch)] if per_sample else None
        pipeline(
            batch_size=args.sample_batch,
            class_labels=labels,
            output_type="pt",
            generator=generator,
            num_inference_steps=num_inference_steps,
        )

    rows = []
    for label, scheduler_class, steps, per_sample in [
        ("DDPM", DDPMScheduler, args.ddpm_steps, False),
        ("DDPM, a CPU generator per sample (as generate.py)", DDPMScheduler, args.ddpm_steps, True),
        ("DDIM", DDIMScheduler, 5 if args.tiny else 50, False),
        ("DPM-Solver++", DPMSolverMultistepScheduler, 5 if args.tiny else 20, False),
    ]:
        pipeline.scheduler = scheduler_class.from_config(pipeline.scheduler.config)
        sample(2, per_sample)  # warm-up: kernels and allocator, not a full run
        seconds, _ = timed(functools.partial(sample, steps, per_sample), device, warmup=0, steps=1)
        rows.append(
            {
                "section": "sample",
                "variant": f"{label}, {steps} steps",
                "model": preset,
                "resolution": resolution,
                "batch": args.sample_batch,
                "images_per_s": args.sample_batch / seconds,
                "peak_gib": peak_gib(device),
            }
        )
    return rows


def datasheet_peak(device_name: str):
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in device_name), None)


def print_table(rows, device_name, peak_tflops):
    print(
        f"\nDevice: {device_name}; MFU = TFLOP/s (PyTorch's FLOP counter) / {peak_tflops or 'unknown'} TFLOP/s bf16 peak\n"
    )
    print("| section | variant | model | px | batch | images/s | vs baseline | TFLOP/s | MFU | peak GiB | warm-up s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        base = next((b for b in rows if b["variant"] == "baseline" and b["resolution"] == r["resolution"]), None)
        speedup = f"{r['images_per_s'] / base['images_per_s']:.2f}x" if base and r["section"] == "train" else ""
        tflops = r.get("tflops_per_s")
        mfu = f"{100 * tflops / peak_tflops:.0f}%" if tflops and peak_tflops else ""
        print(
            f"| {r['section']} | {r['variant']} | {r['model']} | {r['resolution']} | {r['batch']} | "
            f"{r['images_per_s']:.1f} | {speedup} | {f'{tflops:.0f}' if tflops else ''} | {mfu} | {r['peak_gib']:.2f} "
            f"| {r.get('warmup_s', '')} |"
        )


def main(args):
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        return print_table(
            saved["rows"],
            saved["device"],
            args.peak_tflops or saved.get("peak_tflops") or datasheet_peak(saved["device"]),
        )
    device = torch.device(args.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak_tflops = args.peak_tflops or datasheet_peak(device_name)
    small, large = ("tiny", "tiny") if args.tiny else ("base64", args.model_256)
    res_small, res_large = (16, 32) if args.tiny else (64, 256)
    variants = [v for v in args.variants.split(",") if device.type == "cuda" or "compiled" not in v]
    rows = []

    def record(row):
        rows.append(row)
        print(row, flush=True)
        if args.json:  # rewritten after every row, so a run cut short still leaves its numbers
            import diffusers

            versions = {"torch": torch.__version__, "diffusers": diffusers.__version__}
            with open(args.json, "w") as f:
                json.dump(
                    {
                        "device": device_name,
                        **versions,
                        "peak_tflops": peak_tflops,
                        "warmup": args.warmup,
                        "steps": args.steps,
                        "rows": rows,
                    },
                    f,
                    indent=2,
                )

    sizes = [(small, res_small, args.batch_64), (large, res_large, args.batch_256)]
    sizes = [size for size, px in zip(sizes, (64, 256)) if px in args.sizes]
    if "train" not in args.sections:
        sizes = []
    flops = {resolution: flops_per_image(preset, resolution, device) for preset, resolution, _ in sizes}
    # Compiled variants last: their minutes of compilation must not keep the other rows from being measured.
    for compiled in (False, True):
        for preset, resolution, batch in sizes:
            for name in [v for v in variants if ("compiled" in v) == compiled]:
                row = train_row(name, preset, resolution, batch, device, args, VARIANTS[name])
                row["tflops_per_s"] = row["images_per_s"] * flops[resolution] / 1e12
                record(row)
        if not compiled:
            eager_extras(large, res_large, args, device, record)
    print_table(rows, device_name, peak_tflops)


def eager_extras(large, res_large, args, device, record):
    """The sections besides the training variants, at 256 px: memory with gradient checkpointing, data, sampling."""
    if "memory" in args.sections:
        flags = ("--gradient_checkpointing",)
        record(train_row("eager, gradient checkpointing", large, res_large, args.batch_256, device, args, flags))
    if "data" in args.sections:
        for row in loader_rows(res_large, args.batch_256, args, device):
            record(row)
    if "sample" in args.sections:
        for row in sampling_rows(large, res_large, args, device):
            record(row)


if __name__ == "__main__":
    main(parse_args())
