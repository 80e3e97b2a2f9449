"""Sampling throughput of generate.py's sampling path, eager against compiled, per dtype and batch size; the speed of
generate.py's writer alone, one encoding thread against its pool; and host memory while generate.py streams pairs to
disk.

The measurement, on a CUDA GPU (one H200: issue 19 asks >= 60 images/s at 256 px with DPM-Solver++ 20):

    python benchmarks/sampling_throughput.py --output_json docs/benchmarks/sampling_throughput_h200.json

This full default has not been run yet (estimated, not measured: 6-9 minutes; four compilations of the 256 px UNet,
base256 eager and reduce-overhead in fp16 and bf16 at batch 32 and 64, then 10,000 streamed pairs); one smaller
throughput run on an H200 (small256, bf16, batch 64) is in RESULTS.md with its command. Where one command may run 10
minutes at most, run ``--sections throughput`` and ``--sections stream`` apart. One H200 run of both (RESULTS.md session
9) found the sampler at about twice the speed of the stream: the writer, encoding after each batch, was the limit,
which the writer rows measure apart from the sampler and without a GPU:

    python benchmarks/sampling_throughput.py --sections writer --device cpu

A check on a CPU in under a minute (tiny UNet at 32 px):

    python benchmarks/sampling_throughput.py --quick

Throughput rows time ``fundus_diffusion.generate.generate_samples``, what ``generate.py`` runs for every batch (one
CPU generator per sample, class labels, 8-bit images and binary masks out), on a randomly initialised UNet of
``--model_config`` at ``--resolution`` (no download; untrained weights measure speed only) or on a saved ``--model``,
with DPM-Solver++ in ``--steps`` steps, for each of ``--modes`` (``eager`` or a ``torch.compile`` mode, compiled by
generate.py's own path, ``prepare_pipeline``), ``--dtypes``, ``--memory_formats`` (generate.py's ``--channels_last``),
``--cudnn_benchmark`` (off / on: cuDNN's algorithm search for the fixed batch shape; the off rows run first, as the
algorithms the search picks stay cached in the process) and ``--batch_sizes``. The first ``--warmup`` batches
(compilation, CUDA-graph capture) are timed apart and reported as warm-up; then ``--repeats`` batches are timed
between ``torch.cuda.synchronize()`` calls. ``--profile`` then runs one more batch of each row under the profiler
and prints its 15 costliest kernels (``train_ddpm_throughput.print_profile``): where the time goes.

The stream rows run ``generate_dataset`` (generate.py's writer: Arrow shards, then the dataset, card and Hub layout)
for ``--stream_samples`` pairs in ``--work_dir``, eager, with ``--stream_steps`` solver steps (host memory does not
depend on the step count; the rows' speed is not the sampling figure), and print the process's resident memory when
each shard is on disk and after the assembly, with the peak (sampled every 20 ms): the RSS and, on Linux, its
anonymous part (RSS less file-backed pages: the memory-mapped Arrow files datasets reads are in the RSS as page cache
the kernel can drop, not memory the process holds). Flat host memory: the RSS after the last shard is about the RSS
after the first. ``--output_json`` is rewritten after every row, so a run cut short keeps
what it measured. The stream rows print the pairs/s of the whole run (dataset assembly included) and when each shard
was on disk. ``--stream_sampler phantom`` keeps everything of that path but the denoising: each pipeline call returns
ready-made phantom pairs of the sample's seed (``draw_phantom``, image, disc and atrophy masks at ``--resolution``)
in the pipeline's own output format, so the row measures what stays in host memory on a GPU machine (where the
UNet's activations live on the GPU) at the writer's speed instead of a CPU's UNet's: 10,000 pairs at 256 px in
minutes on a CPU, where a tiny UNet draws about 1.4 pairs/s. The model is still built (its mask names and config
go into the dataset card), so its weights are in every row: RESULTS.md passes ``--model_config tiny`` to keep them
small (the default ``base256`` adds about 450 MiB).

The writer rows time ``fundus_diffusion.generate.write_samples``, what ``generate.py`` runs after sampling (each pair
encoded as PNG into Arrow shards of ``--shard_size``; with ``--png`` also written as PNG files), on ``--writer_samples``
ready-made phantom pairs at ``--resolution`` (image, disc and atrophy masks; fundus-like content, so compression costs
about what a sample's does) fed in batches of the largest ``--batch_sizes``, without a model: for each of
``--writer_threads`` encoding threads (``1``: one thread encodes while the main thread writes, the serial speed; the
default adds generate.py's own, ``encoding_threads()``), without and with ``--png``, the best of ``--repeats`` runs.
Each row says whether its files (shards and PNGs) are byte for byte those of the first row of its kind.
"""

import argparse
import hashlib
import itertools
import json
import os
import tempfile
import threading
import time
from typing import Optional

import numpy as np
import psutil
import torch
from train_ddpm_throughput import print_profile, sync  # a sibling script: run from benchmarks/, as the others are

from fundus_diffusion.cli import run_script
from fundus_diffusion.data.schema import num_channels
from fundus_diffusion.generate import (
    COMPILE_MODES,
    GenerationConfig,
    encoding_threads,
    generate_dataset,
    generate_samples,
    prepare_pipeline,
    shard_paths,
    write_samples,
)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Settings whose default --quick changes (a flag given on the command line is kept either way).
DEFAULTS = dict(
    model_config="base256", resolution=256, batch_sizes="32,64", warmup=2, repeats=3, stream_samples=10_000,
    shard_size=256, writer_samples=256,
)  # fmt: skip
QUICK = dict(model_config="tiny", resolution=32, batch_sizes="4", warmup=1, repeats=2, stream_samples=64, shard_size=16, writer_samples=32)
SECTIONS = ("throughput", "stream", "writer")
MIB = 2**20


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="A saved FundusPipeline folder (default: a random --model_config UNet).")
    parser.add_argument("--model_config", default=None, help="UNet preset of the random model (default base256).")
    parser.add_argument("--resolution", type=int, default=None, help="Default 256.")
    parser.add_argument("--masks", default="disc,atrophy", help="Mask channels of the random model.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--modes", default=None, help="Comma list of eager and torch.compile modes. Default: eager,reduce-overhead on CUDA, eager,default on the CPU.")
    parser.add_argument("--dtypes", default=None, help="Comma list of fp32, fp16, bf16. Default: fp16,bf16 on CUDA, fp32 on the CPU.")
    parser.add_argument("--batch_sizes", default=None, help="Comma list (default 32,64).")
    parser.add_argument(
        "--memory_formats", default="contiguous",
        help="Comma list of contiguous and channels_last: the network's weight layout (generate.py's --channels_last).",
    )  # fmt: skip
    parser.add_argument(
        "--cudnn_benchmark", default="off",
        help="Comma list of off and on: cuDNN's algorithm search per shape (generate.py's --cudnn_benchmark).",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=20, help="DPM-Solver++ steps.")
    parser.add_argument("--warmup", type=int, default=None, help="Batches per row timed as warm-up (compilation happens here; default 2).")
    parser.add_argument("--repeats", type=int, default=None, help="Timed batches per throughput row; runs per writer row, the best kept (default 3).")
    parser.add_argument("--sections", default="throughput,stream", help=f"Comma list of {', '.join(SECTIONS)}.")
    parser.add_argument("--stream_samples", type=int, default=None, help="Pairs the stream rows write (default 10,000).")
    parser.add_argument("--stream_steps", type=int, default=2, help="Solver steps of the stream rows (memory, not speed).")
    parser.add_argument("--shard_size", type=int, default=None, help="generate.py's --shard_size for the stream rows (default 256).")
    parser.add_argument(
        "--stream_sampler", choices=("model", "phantom"), default="model",
        help="What draws the stream rows' pairs: the model, or ready-made phantom pairs in its place (see above).",
    )  # fmt: skip
    parser.add_argument("--writer_samples", type=int, default=None, help="Ready-made pairs the writer rows write (default 256).")
    parser.add_argument(
        "--writer_threads", default=f"1,{encoding_threads()}",
        help="Comma list of encoding thread counts for the writer rows (default: 1 and generate.py's default here).",
    )  # fmt: skip
    parser.add_argument("--work_dir", default=None, help="Where the stream and writer rows write (default: a temporary folder, removed).")
    parser.add_argument("--output_json", default=None)
    parser.add_argument(
        "--profile", action="store_true",
        help="After each throughput row, print the 15 costliest kernels of one more batch (where the time goes).",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="Tiny UNet at 32 px, batch 4, 64 streamed and 32 written pairs: a CPU check.")
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    cuda = args.device.startswith("cuda")
    args.modes = (args.modes or ("eager,reduce-overhead" if cuda else "eager,default")).split(",")
    args.dtypes = (args.dtypes or ("fp16,bf16" if cuda else "fp32")).split(",")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.memory_formats = args.memory_formats.split(",")
    switches = {"off": False, "on": True}
    if set(args.memory_formats) - {"contiguous", "channels_last"} or set(args.cudnn_benchmark.split(",")) - set(switches):
        parser.error("--memory_formats takes contiguous, channels_last; --cudnn_benchmark takes off, on.")
    # off before on: the algorithms cuDNN picks while timing them stay cached in the process for the rows after
    args.cudnn_benchmark = sorted({switches[v] for v in args.cudnn_benchmark.split(",")})
    args.sections = set(args.sections.split(","))
    args.writer_threads = list(dict.fromkeys(int(t) for t in args.writer_threads.split(",")))
    for mode in args.modes:
        if mode != "eager" and mode not in COMPILE_MODES:
            parser.error(f"--modes: {mode!r} is neither eager nor a torch.compile mode ({', '.join(COMPILE_MODES)}).")
    if set(args.dtypes) - set(DTYPES) or not args.sections <= set(SECTIONS) or min(args.writer_threads) < 1:
        parser.error(f"--dtypes takes {', '.join(DTYPES)}, --sections {', '.join(SECTIONS)}, --writer_threads counts >= 1.")
    return args


def make_pipeline(args, dtype: str):
    """The saved ``--model``, or a random ``--model_config`` UNet (class-conditional, ``--masks``), on the device."""
    from diffusers import DDPMScheduler

    from fundus_diffusion import FundusPipeline
    from fundus_diffusion.models import build_unet, preset_space_to_depth
    from fundus_diffusion.pipelines.loading import load_fundus_pipeline

    if args.model:
        pipe = load_fundus_pipeline(args.model, device=args.device, dtype=dtype)
        if not hasattr(pipe, "scheduler"):
            raise ValueError(f"--model {args.model} is a GAN; this benchmark times diffusion sampling.")
    else:
        masks = args.masks.split(",")
        torch.manual_seed(0)
        unet = build_unet(args.model_config, args.resolution, num_channels(masks)).to(args.device, DTYPES[dtype])
        space_to_depth = preset_space_to_depth(args.model_config)
        pipe = FundusPipeline(unet=unet, scheduler=DDPMScheduler(), mask_names=masks, space_to_depth=space_to_depth)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def model_name(args) -> str:
    return os.path.basename(os.path.normpath(args.model)) if args.model else f"random-{args.model_config}"


def row_key(mode: str, dtype: str, layout: str, cudnn_benchmark: bool, batch: int) -> dict:
    return {"mode": mode, "dtype": dtype, "memory_format": layout, "cudnn_benchmark": cudnn_benchmark, "batch": batch}


def throughput_row(pipe, args, mode: str, dtype: str, layout: str, cudnn_benchmark: bool, batch: int) -> dict:
    """Images/s of ``generate_samples`` on batches of ``batch``, after ``--warmup`` batches timed as warm-up."""
    config = GenerationConfig(
        model=model_name(args), num_samples=batch, scheduler="dpmsolver++", num_inference_steps=args.steps,
        batch_size=batch, device=args.device, compile=None if mode == "eager" else mode,
        channels_last=layout == "channels_last", cudnn_benchmark=cudnn_benchmark,
    )  # fmt: skip
    config = prepare_pipeline(pipe, config)
    conditional = pipe.class_conditional
    labels = [("PM", "non-PM")[i % 2] if conditional else None for i in range(batch)]
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def run(batches: int) -> float:
        sync(device)
        start = time.perf_counter()
        for _ in range(batches):
            generate_samples(pipe, list(range(batch)), labels, config)
        sync(device)
        return time.perf_counter() - start

    warmup_s = run(args.warmup)
    seconds = run(args.repeats)
    if args.profile:  # after the timing, so the profiler costs the row nothing
        print(f"profile: {mode} {dtype} {layout} cuDNN benchmark {'on' if cudnn_benchmark else 'off'} batch {batch}", flush=True)
        print_profile(lambda: generate_samples(pipe, list(range(batch)), labels, config), device, steps=1)
    return {
        **row_key(mode, dtype, layout, cudnn_benchmark, batch),
        "images_per_s": batch * args.repeats / seconds,
        "warmup_s": round(warmup_s, 2),
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }


class ShardMemory:
    """Wraps a prepared pipeline: before each batch that starts a new shard (the previous shard is then fully drawn;
    its last batch is encoded while this one is drawn), records the process's RSS and the seconds since the start; a
    thread keeps the peak RSS and anonymous memory, sampled every 20 ms. With ``phantom_size``, each call returns phantom pairs of that
    size for the call's seeds instead of running the pipeline (``--stream_sampler phantom``)."""

    def __init__(self, pipe, shard_size: int, phantom_size: Optional[int] = None):
        self.pipe, self.shard_size, self.phantom_size, self.generated, self.after_shard = pipe, shard_size, phantom_size, 0, []
        self.start = time.perf_counter()
        self.process, self.peak, self.stopped = psutil.Process(), {}, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def memory(self) -> dict:
        """MiB of resident memory: ``rss_mib``, and ``anonymous_mib`` where the OS tells file-backed pages apart."""
        info = self.process.memory_info()
        shared = getattr(info, "shared", None)  # Linux: resident file-backed and shared-memory pages
        return {"rss_mib": round(info.rss / MIB, 1), "anonymous_mib": None if shared is None else round((info.rss - shared) / MIB, 1)}

    def _keep_peak(self) -> None:
        for key, value in self.memory().items():
            if value is not None:
                self.peak[key] = max(self.peak.get(key, 0), value)

    def _watch(self):
        while not self.stopped.wait(0.02):
            self._keep_peak()

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def __call__(self, **kwargs):
        if self.generated and self.generated % self.shard_size == 0:
            seconds = round(time.perf_counter() - self.start, 1)
            self.after_shard.append({"samples": self.generated, **self.memory(), "seconds": seconds})
        self.generated += kwargs["batch_size"]
        return self.pipe(**kwargs) if self.phantom_size is None else self.phantoms(kwargs["generator"])

    def phantoms(self, generators):
        """The pipeline's ``output_type="pt"`` output (what ``generate_samples`` asks for), drawn as phantoms of each
        generator's seed."""
        from fundus_diffusion import FundusPipelineOutput
        from fundus_diffusion.data import draw_phantom

        drawn = [draw_phantom(g.initial_seed(), size=self.phantom_size) for g in generators]
        images = np.stack([np.asarray(p.image, dtype=np.float32) / 255 for p in drawn])
        return FundusPipelineOutput(
            images=torch.from_numpy(images).permute(0, 3, 1, 2),
            masks=[{"disc": binary(p.disc_mask), "atrophy": binary(p.atrophy_mask)} for p in drawn],
        )

    def __enter__(self):
        self.start = time.perf_counter()
        self._keep_peak()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()
        self._keep_peak()


def binary(mask) -> torch.Tensor:
    """An ``L`` mask (0 / 255) as the pipeline's ``pt`` output gives it: float32 in {0, 1}."""
    return torch.from_numpy((np.asarray(mask) > 127).astype(np.float32))


def stream(args, work_dir: str) -> dict:
    """RSS while generate_dataset writes ``--stream_samples`` pairs (see the module docstring)."""
    pipe = make_pipeline(args, args.dtypes[0])
    batch = max(args.batch_sizes)
    config = GenerationConfig(
        model=model_name(args), num_samples=args.stream_samples, scheduler="dpmsolver++",
        num_inference_steps=args.stream_steps, batch_size=batch, shard_size=args.shard_size, device=args.device,
    )  # fmt: skip
    config = prepare_pipeline(pipe, config)  # before wrapping: the scheduler is set on the pipeline itself
    if args.stream_sampler == "phantom" and list(pipe.mask_names) != ["disc", "atrophy"]:
        raise ValueError(f"--stream_sampler phantom draws disc and atrophy masks; this model has {list(pipe.mask_names)}.")
    start = time.perf_counter()
    with ShardMemory(pipe, args.shard_size, args.resolution if args.stream_sampler == "phantom" else None) as watched:
        before = watched.memory()
        generate_dataset(watched, config, os.path.join(work_dir, "stream"))
        after = watched.memory()
    seconds = time.perf_counter() - start
    return {
        "num_samples": args.stream_samples,
        "shard_size": args.shard_size,
        "batch": batch,
        "dtype": args.dtypes[0],
        "steps": args.stream_steps,
        "sampler": args.stream_sampler,
        "encoding_threads": encoding_threads(),
        "seconds": round(seconds, 1),
        "pairs_per_s": round(args.stream_samples / seconds, 2),
        "memory_before": before,
        "memory_after_shard": watched.after_shard,
        "memory_after_assembly": after,
        "memory_peak": watched.peak,
    }


def writer_rows(args, work_dir: str) -> list:
    """Pairs/s of ``write_samples`` alone on ready-made phantom pairs, per thread count, without and with ``--png``
    (see the module docstring)."""
    from fundus_diffusion.data import draw_phantom

    phantoms = [draw_phantom(i, size=args.resolution) for i in range(args.writer_samples)]
    batch, n = max(args.batch_sizes), len(phantoms)
    batches = [
        (range(first, first + len(chunk)), [p.image for p in chunk], [{"disc": p.disc_mask, "atrophy": p.atrophy_mask} for p in chunk])
        for first in range(0, n, batch)
        for chunk in [phantoms[first : first + batch]]
    ]  # fmt: skip
    rows, first_digest = [], {}
    for png in (False, True):
        config = GenerationConfig(model="phantom", num_samples=n, batch_size=batch, shard_size=args.shard_size, png=png)
        for threads in args.writer_threads:
            times = []
            for repeat in range(args.repeats):  # the best of --repeats: other work on a shared CPU only slows a run
                folder = os.path.join(work_dir, f"writer-{threads}-{png}-{repeat}")
                os.makedirs(folder)
                shards = list(enumerate(shard_paths(config, folder)))
                start = time.perf_counter()
                write_samples(iter(batches), config, shards, ["disc", "atrophy"], threads, os.path.join(folder, "png"))
                times.append(time.perf_counter() - start)
            seconds, digest = min(times), folder_digest(folder)
            row = {"threads": threads, "png": png, "pairs": n, "seconds": round(seconds, 2), "pairs_per_s": n / seconds}
            rows.append({**row, "same_as_first": digest == first_digest.setdefault(png, digest)})
            print(rows[-1], flush=True)
    return rows


def folder_digest(folder: str) -> str:
    """SHA-256 over every file's path and bytes under ``folder``."""
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(folder)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def print_throughput(rows, args) -> None:
    print(f"\nSampling: {model_name(args)} at {args.resolution} px, DPM-Solver++ {args.steps} steps, {args.device}\n")
    print("| mode | dtype | memory format | cuDNN benchmark | batch | images/s | warm-up s | peak GPU GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        key = f"| {r['mode']} | {r['dtype']} | {r['memory_format']} | {'on' if r['cudnn_benchmark'] else 'off'} | {r['batch']} |"
        if "error" in r:
            print(f"{key} failed: {r['error'][:200]} | | |")
            continue
        gib = f"{r['peak_gpu_gib']:.2f}" if r["peak_gpu_gib"] is not None else "-"
        print(f"{key} {r['images_per_s']:.1f} | {r['warmup_s']} | {gib} |")


def print_stream(result) -> None:
    print(
        f"\nHost memory streaming {result['num_samples']} pairs to disk (shards of {result['shard_size']}, batch "
        f"{result['batch']}, {drawn_by(result)}, {result['encoding_threads']} encoding threads): "
        f"{result['seconds']} s, {result['pairs_per_s']:.1f} pairs/s\n"
    )
    print("| samples drawn | host RSS MiB | anonymous MiB | s |")
    print("|---|---|---|---|")
    rows = [("0 (model loaded)", result["memory_before"], 0), *[(r["samples"], r, r["seconds"]) for r in result["memory_after_shard"]]]
    rows += [(f"{result['num_samples']} + dataset assembled", result["memory_after_assembly"], result["seconds"]), ("peak", result["memory_peak"], "")]
    for name, memory, seconds in rows:
        print(f"| {name} | {memory['rss_mib']} | {memory.get('anonymous_mib') or '-'} | {seconds} |")


def drawn_by(result) -> str:
    if result.get("sampler") == "phantom":
        return "pairs drawn as phantoms in the model's place"
    return f"{result['steps']} steps"


def print_writer(rows, args) -> None:
    print(
        f"\nWriter alone: {args.writer_samples} ready-made phantom pairs at {args.resolution} px (image, disc and atrophy "
        f"masks), batches of {max(args.batch_sizes)}, shards of {args.shard_size}, {os.cpu_count()} CPU cores\n"
    )
    print(f"| encoding threads | --png | s (best of {args.repeats}) | pairs/s | files as with the first row |")
    print("|---|---|---|---|---|")
    for r in rows:
        same = "yes" if r["same_as_first"] else "NO"
        print(f"| {r['threads']} | {'yes' if r['png'] else 'no'} | {r['seconds']} | {r['pairs_per_s']:.1f} | {same} |")


def main(args):
    import diffusers

    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    results = {"device": device_name, "torch": torch.__version__, "diffusers": diffusers.__version__}
    results["settings"] = {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items()}
    results["throughput"] = []

    def save():
        if args.output_json:  # rewritten after every row: a run cut short keeps what it measured
            os.makedirs(os.path.dirname(os.path.abspath(args.output_json)), exist_ok=True)
            with open(args.output_json, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=2)

    if "throughput" in args.sections:
        benchmark_before = torch.backends.cudnn.benchmark  # the rows set it; restored for the sections after them
        # Eager rows first: the compiled ones' minutes of compilation must not keep them from being measured.
        settings = itertools.product(args.dtypes, args.memory_formats, args.cudnn_benchmark)
        for mode, (dtype, layout, cudnn_benchmark) in itertools.product(sorted(args.modes, key=lambda m: m != "eager"), settings):
            torch._dynamo.reset()  # each mode compiles afresh; no earlier graph counts against the recompile limit
            pipe = make_pipeline(args, dtype)  # compiling and the layout are in place: a fresh network per row group
            for batch in args.batch_sizes:
                try:
                    row = throughput_row(pipe, args, mode, dtype, layout, cudnn_benchmark, batch)
                except Exception as err:  # one failing mode (e.g. a compile error) must not cost the other rows
                    row = {**row_key(mode, dtype, layout, cudnn_benchmark, batch), "error": f"{type(err).__name__}: {err}"}
                results["throughput"].append(row)
                print(row, flush=True)
                save()
                if "error" in row:
                    break
            del pipe
        torch.backends.cudnn.benchmark = benchmark_before
        print_throughput(results["throughput"], args)
    if "stream" in args.sections:
        results["stream"] = in_work_dir(stream, args)
        save()
        print_stream(results["stream"])
    if "writer" in args.sections:
        results["writer"] = in_work_dir(writer_rows, args)
        save()
        print_writer(results["writer"], args)
    return results


def in_work_dir(section, args):
    """``section(args, work_dir)`` in a temporary folder under ``--work_dir``, removed afterwards."""
    if args.work_dir:
        os.makedirs(args.work_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work_dir:
        return section(args, work_dir)


if __name__ == "__main__":
    run_script(main, parse_args)
