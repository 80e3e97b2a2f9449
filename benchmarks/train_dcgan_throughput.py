"""DCGAN training throughput: our training step against a plain fp32 eager PyTorch loop of the same networks.

    python benchmarks/train_dcgan_throughput.py [--json OUT]                 # on a GPU: the paper's 360 px, batch 32
    python benchmarks/train_dcgan_throughput.py --device cpu --resolution 16 --batch_size 4 --ngf 4 --ndf 4 \\
        --num_images 40 --steps 2 --warmup 1                                   # a quick check that it runs

Prints a markdown table: training images/s (discriminator + generator update per image), the speed-up over the plain
loop, peak GPU memory, and the wall time of one epoch over ``--num_images`` images (1,071 in the paper) including the
data path. Each configuration runs in its own process (clean peak memory, accelerate state and compile caches).

- ``eager-fp32``: the PyTorch DCGAN example's loop: ``DataLoader`` over the memory-mapped uint8 cache, fp32, default
  Adam, discriminator gradients computed in the generator update, ``.item()`` logging every step.
- ``ours-*``: ``fundus_diffusion.training.dcgan`` as ``train_dcgan`` runs it: ``DCGANStep`` (discriminator frozen in
  the generator update), fused Adam, cudnn autotuning, data resident on the device (``DeviceBatches``), metrics
  read one step late; then bf16 autocast, channels_last and torch.compile on top.

The networks are the paper's (nz 100, ngf 32, ndf 64, BCE, Adam 2e-4 / 0.5) on random data.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import torch

CONFIGS = {
    "eager-fp32": {},
    "ours-fp32": {"mixed_precision": "no", "channels_last": False, "compile": False},
    "ours-bf16": {"mixed_precision": "bf16", "channels_last": False, "compile": False},
    "ours-bf16-channels_last": {"mixed_precision": "bf16", "channels_last": True, "compile": False},
    "ours-bf16-compile": {"mixed_precision": "bf16", "channels_last": False, "compile": True},
    "ours-bf16-channels_last-compile": {"mixed_precision": "bf16", "channels_last": True, "compile": True},
}
CPU_CONFIGS = ["eager-fp32", "ours-fp32", "ours-bf16"]  # inductor on CPU needs a C++ toolchain and minutes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--resolution", type=int, default=360)
    parser.add_argument("--masks", default="disc", help="'disc' (4 channels) or 'disc,atrophy' (5).")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--nz", type=int, default=100)
    parser.add_argument("--ngf", type=int, default=32)
    parser.add_argument("--ndf", type=int, default=64)
    parser.add_argument("--num_images", type=int, default=1071, help="Images in the timed epoch (the paper's set).")
    parser.add_argument("--steps", type=int, default=50, help="Timed steps for images/s.")
    parser.add_argument("--warmup", type=int, default=10, help="Untimed steps first (autotuning, compilation).")
    parser.add_argument("--configs", default=None, help=f"Comma-separated subset of {', '.join(CONFIGS)}.")
    parser.add_argument("--json", default=None, help="Also write the results here.")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one configuration
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def model_args(args):
    from fundus_diffusion.data.schema import parse_mask_names

    mask_names = parse_mask_names(args.masks)
    return SimpleNamespace(
        resolution=args.resolution, nz=args.nz, ngf=args.ngf, ndf=args.ndf, max_mult=8, class_conditional=False,
        spectral_norm=False, learning_rate=2e-4, adam_beta1=0.5, adam_beta2=0.999, mask_names=mask_names,
    )  # fmt: skip


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class MemmapView(torch.utils.data.Dataset):
    """What ``FundusTrainingView`` does per item on a cached array: uint8 -> [-1, 1] and a random joint flip."""

    def __init__(self, path):
        self.cache_path = path
        self.arrays = np.load(path, mmap_mode="r")
        self.class_labels = torch.zeros(len(self.arrays), dtype=torch.long)

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, index):
        from fundus_diffusion.data.transforms import array_to_tensor, flip_where

        x = array_to_tensor(self.arrays[index])[None]
        return {"pixel_values": flip_where(x, torch.rand(1) < 0.5)[0], "class_labels": 0}


def run_eager(args, device, view):
    """The plain loop: fp32, eager, default Adam, the PyTorch DCGAN example's update order and logging."""
    from fundus_diffusion.training.dcgan import build_models

    margs = model_args(args)
    generator, discriminator = build_models(margs, 3 + len(margs.mask_names))
    generator.to(device)
    discriminator.to(device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=margs.learning_rate, betas=(margs.adam_beta1, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=margs.learning_rate, betas=(margs.adam_beta1, 0.999))
    criterion = torch.nn.BCEWithLogitsLoss()

    def step(real):
        ones = torch.ones(real.shape[0], device=device)
        zeros = torch.zeros(real.shape[0], device=device)
        discriminator.zero_grad()
        out = discriminator(real)
        err_real = criterion(out, ones)
        err_real.backward()
        d_x = torch.sigmoid(out).mean().item()
        fake = generator(torch.randn(real.shape[0], margs.nz, 1, 1, device=device))
        out = discriminator(fake.detach())
        err_fake = criterion(out, zeros)
        err_fake.backward()
        opt_d.step()
        generator.zero_grad()
        err_g = criterion(discriminator(fake), ones)
        err_g.backward()
        opt_g.step()
        return (err_real + err_fake).item(), err_g.item(), d_x

    loader = torch.utils.data.DataLoader(
        view, batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=4 if device.type == "cuda" else 0,
        pin_memory=device.type == "cuda", persistent_workers=device.type == "cuda",
    )  # fmt: skip

    def epoch():
        for batch in loader:
            step(batch["pixel_values"].to(device, non_blocking=True))

    return step, epoch


def run_ours(args, device, view, config):
    """``DCGANStep`` and ``DeviceBatches`` set up as ``train_dcgan`` sets them up."""
    from fundus_diffusion.training.args import make_accelerator
    from fundus_diffusion.training.batches import DeviceBatches
    from fundus_diffusion.training.dcgan import DCGANStep, build_models, build_optimizers

    margs = model_args(args)
    run = SimpleNamespace(
        gradient_accumulation_steps=1, mixed_precision=config["mixed_precision"], logger="none",
        output_dir=tempfile.mkdtemp(), logging_dir="logs",
    )  # fmt: skip
    accelerator = make_accelerator(run, cpu=device.type == "cpu")
    generator, discriminator = build_models(margs, 3 + len(margs.mask_names))
    memory_format = torch.channels_last if config["channels_last"] else torch.contiguous_format
    generator.to(accelerator.device, memory_format=memory_format)
    discriminator.to(accelerator.device, memory_format=memory_format)
    opt_g, opt_d = build_optimizers(margs, generator, discriminator)
    if config["compile"]:
        generator.compile()
        discriminator.compile()
    generator, discriminator, opt_g, opt_d = accelerator.prepare(generator, discriminator, opt_g, opt_d)
    dcgan_step = DCGANStep(accelerator, generator, discriminator, opt_g, opt_d, channels_last=config["channels_last"])
    batches = DeviceBatches(view, args.batch_size, accelerator.device)
    pending = [None]

    def step(real):
        metrics = dcgan_step(real, None)
        if pending[0] is not None:  # the trainer logs each step's metrics one step late
            accelerator.reduce(pending[0], reduction="mean").tolist()
        pending[0] = metrics

    def epoch():
        for batch in batches.epoch(0):
            step(batch["pixel_values"])

    return step, epoch


def worker(args):
    device = torch.device(args.device)
    config = CONFIGS[args.worker]
    view = MemmapView(args.data)
    step, epoch = run_eager(args, device, view) if args.worker == "eager-fp32" else run_ours(args, device, view, config)
    real = torch.rand(args.batch_size, view.arrays.shape[1], args.resolution, args.resolution, device=device) * 2 - 1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step(real)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step(real)
    synchronize(device)
    step_seconds = time.perf_counter() - start

    epoch()  # untimed: DataLoader workers start, the last partial shapes compile
    synchronize(device)
    start = time.perf_counter()
    epoch()
    synchronize(device)
    epoch_seconds = time.perf_counter() - start

    result = {
        "config": args.worker,
        "images_per_s": args.steps * args.batch_size / step_seconds,
        "epoch_s": epoch_seconds,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }
    with open(args.result, "w") as f:
        json.dump(result, f)


def main(args):
    if args.worker:
        return worker(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("No CUDA device: run on a GPU, or pass --device cpu (with a tiny size) to check the script.")
    names = args.configs.split(",") if args.configs else list(CONFIGS if args.device == "cuda" else CPU_CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"Unknown configuration(s) {unknown}: choose from {', '.join(CONFIGS)}.")
    from fundus_diffusion.data.schema import parse_mask_names

    channels = 3 + len(parse_mask_names(args.masks))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "cache.npy")  # random pixels, laid out as the training view caches real ones
        cache = np.lib.format.open_memmap(
            data, mode="w+", dtype=np.uint8, shape=(args.num_images, channels, args.resolution, args.resolution)
        )
        rng = np.random.default_rng(0)
        for start in range(0, args.num_images, 64):
            cache[start : start + 64] = rng.integers(0, 256, cache[start : start + 64].shape, dtype=np.uint8)
        cache.flush()
        del cache
        passthrough = [f"--{k}={getattr(args, k)}" for k in ("device", "resolution", "masks", "batch_size", "nz",
                                                               "ngf", "ndf", "num_images", "steps", "warmup")]  # fmt: skip
        for name in names:
            out = os.path.join(tmp, f"{name}.json")
            command = [sys.executable, __file__, *passthrough, "--worker", name, "--data", data, "--result", out]
            print(f"running {name} ...", file=sys.stderr, flush=True)
            # A configuration that crashes (a compiler bug, out of memory) is reported, not allowed to hide the rest.
            if subprocess.run(command).returncode != 0:
                print(f"{name} failed; see its traceback above", file=sys.stderr, flush=True)
                continue
            with open(out) as f:
                results.append(json.load(f))
            print(json.dumps(results[-1]), flush=True)

    baseline = next((r["images_per_s"] for r in results if r["config"] == "eager-fp32"), None)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(
        f"\nDCGAN training, {args.resolution} px, {channels} channels, batch {args.batch_size}, nz {args.nz}, "
        f"ngf {args.ngf}, ndf {args.ndf}; {device}, torch {torch.__version__}\n"
    )
    print(f"| configuration | images/s | speed-up | peak GPU memory | epoch of {args.num_images:,} images |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        speedup = f"{r['images_per_s'] / baseline:.2f}x" if baseline else "-"
        memory = f"{r['peak_memory_gib']:.2f} GiB" if r["peak_memory_gib"] is not None else "-"
        print(f"| {r['config']} | {r['images_per_s']:,.0f} | {speedup} | {memory} | {r['epoch_s']:.2f} s |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"device": device, "torch": torch.__version__, "settings": vars(args), "results": results}, f, indent=2
            )


if __name__ == "__main__":
    main(parse_args())
