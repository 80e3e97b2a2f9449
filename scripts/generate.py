"""Generate a synthetic fundus dataset (images + masks, the real data's schema) from a trained pipeline.

    fundus-generate --model runs/ddpm-256 --num_samples 1000 --labels PM=600,non-PM=400 \\
        --guidance_scale 2 --output_dir data/synthetic

A diffusion model samples with DPM-Solver++ in 20 steps unless --scheduler / --num_inference_steps say otherwise
(--scheduler own: the scheduler it was saved with, for a trained DDPM the full 1,000-step chain). Long runs on a GPU:
--compile (--compile_mode reduce-overhead replays CUDA graphs) compiles the UNet once for --batch_size.

Images for given masks: one sample per mask set in DIR/masks/<name>/<id>.png (ids kept; an id without some of the
model's masks gets them generated too):

    fundus-generate --model runs/ddpm-256 --masks_from my_masks --scheduler ddpm \\
        --num_inference_steps 250 --resample_steps 4 --output_dir data/synthetic-for-my-masks

On several GPUs, one process each (the shards are split between them; the dataset is the same as on one):

    accelerate launch --multi_gpu --num_processes 4 scripts/generate.py --model runs/ddpm-256 --num_samples 10000 ...
"""


from fundus_diffusion.cli import add_dataset_push_args, dataset_repo_id, run_script
from fundus_diffusion.generate import (
    COMPILE_MODES,
    DEFAULT_INFERENCE_STEPS,
    DEFAULT_SCHEDULER,
    OWN_SCHEDULER,
    POSTPROCESSING,
    TIMESTEP_SPACINGS,
    GenerationConfig,
    check_resume,
    generate_dataset,
    parse_label_counts,
    process_state,
    push_dataset,
    read_mask_sets,
)
from fundus_diffusion.pipelines.loading import SCHEDULERS, load_fundus_pipeline
from fundus_diffusion.training.args import CommandParser


def parse_args(argv=None):
    parser = CommandParser(description=__doc__)
    parser.add_argument("--model", required=True, help="A saved FundusPipeline / FundusGANPipeline folder or Hub id.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--num_samples", type=int, default=None, help="Default: the sum of --labels, or one per --masks_from set.")
    parser.add_argument(
        "--masks_from", default=None, metavar="DIR",
        help="Draw one sample for each mask set DIR/masks/<name>/<id>.png (the model's resolution, cropped square "
        "around the fundus field as for training; ids kept).",
    )  # fmt: skip
    parser.add_argument(
        "--resample_steps", type=int, default=0,
        help="With --masks_from: RePaint resampling, each step done again this many times (needs --scheduler ddpm or ddim).",
    )  # fmt: skip
    parser.add_argument("--labels", default=None, help="Counts per class, e.g. PM=600,non-PM=400. Default: unconditional.")
    parser.add_argument(
        "--origin", default=None,
        help="For a model trained with --origin_conditioning: draw every sample as this origin (camera or "
        "collection, e.g. drions; the model card lists them). Default: each sample's origin drawn in the training "
        "images' proportions. Either way the dataset's origin column says which.",
    )  # fmt: skip
    parser.add_argument(
        "--scheduler", choices=[*SCHEDULERS, OWN_SCHEDULER], default=None,
        help=f"Default: {DEFAULT_SCHEDULER} ({DEFAULT_INFERENCE_STEPS} steps); with --resample_steps ddpm. "
        f"{OWN_SCHEDULER}: the one the model was saved with.",
    )  # fmt: skip
    parser.add_argument(
        "--num_inference_steps", type=int, default=None,
        help=f"Default: {DEFAULT_INFERENCE_STEPS} with the default scheduler, else the full training chain.",
    )  # fmt: skip
    parser.add_argument(
        "--timestep_spacing", choices=TIMESTEP_SPACINGS, default=None,
        help="Where the sampler's steps fall on the training chain (diffusers' timestep_spacing). Default: as the "
        "model's scheduler was saved (the ours preset: trailing, whose last step is T / steps - 1 above 0: t = 9 with "
        "100 steps). linspace and leading end at t = 0.",
    )  # fmt: skip
    parser.add_argument("--guidance_scale", type=float, default=1.0, help="Classifier-free guidance (> 1 needs --labels).")
    parser.add_argument(
        "--autoguidance_model", default=None, metavar="MODEL",
        help="Autoguidance: a weaker model of the same training (e.g. an earlier snapshot) to guide away from, at "
        "--autoguidance_scale. Default: the guide saved with the model (fundus-train-ddpm --guide_step).",
    )  # fmt: skip
    parser.add_argument(
        "--autoguidance_scale", type=float, default=None,
        help="Autoguidance: the weight w in weak + w * (main - weak), e.g. 1.5 (RESULTS.md session 21); 1 is the main "
        "model alone. A second UNet pass per step.",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="Sample i uses seed + i.")
    parser.add_argument(
        "--batch_size", type=int, default=64,
        help="Samples per network call; --resume takes the run's (a batch rounds a sample within one 8-bit level).",
    )  # fmt: skip
    parser.add_argument("--shard_size", type=int, default=256, help="Samples per on-disk shard (the unit of --resume).")
    parser.add_argument("--postprocess", default="", help=f"Comma list, applied in order: {', '.join(POSTPROCESSING)}.")
    parser.add_argument("--png", action="store_true", help="Also write png/images, png/masks/<name>, png/metadata.csv.")
    parser.add_argument("--resume", action="store_true", help="Continue a partly written --output_dir.")
    parser.add_argument(
        "--device", default=None,
        help="Default: cuda if available (under accelerate launch: the process's GPU), else cpu. With a sampler that "
        "draws noise at every step (ddpm, sde-dpmsolver++, euler_ancestral, or any with --masks_from), --resume "
        "needs the run's device type.",
    )  # fmt: skip
    parser.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto", help="auto: fp16 on a GPU, fp32 on the CPU.")
    parser.add_argument(
        "--compile", action="store_true",
        help="torch.compile the network once for --batch_size (the last batch is padded): worth it for long GPU runs.",
    )  # fmt: skip
    parser.add_argument(
        "--compile_mode", choices=COMPILE_MODES, default="default",
        help="With --compile: reduce-overhead replays CUDA graphs; the max-autotune modes search kernels for minutes.",
    )  # fmt: skip
    parser.add_argument("--channels_last", action="store_true", help="The network's weights in channels-last (NHWC) memory format.")
    parser.add_argument(
        "--cudnn_benchmark", action="store_true",
        help="Let cuDNN time its convolution algorithms once for the batch's fixed shape (seconds at the start).",
    )  # fmt: skip
    add_dataset_push_args(parser)
    return parser.parse_args(argv)


def main(args):
    labels = parse_label_counts(args.labels)
    mask_sets = read_mask_sets(args.masks_from) if args.masks_from else None
    default_samples = len(mask_sets.ids) if mask_sets else sum(labels.values())
    if args.num_samples is None and not default_samples:
        raise ValueError("How many samples? Give --num_samples N (or --labels PM=N,non-PM=M, or --masks_from a set of masks).")
    config = GenerationConfig(
        model=args.model,
        num_samples=args.num_samples if args.num_samples is not None else default_samples,
        labels=labels,
        origin=args.origin,
        scheduler=args.scheduler,
        num_inference_steps=args.num_inference_steps,
        timestep_spacing=args.timestep_spacing,
        guidance_scale=args.guidance_scale,
        autoguidance_model=args.autoguidance_model,
        autoguidance_scale=args.autoguidance_scale,
        seed=args.seed,
        postprocess=[p.strip() for p in args.postprocess.split(",") if p.strip()],
        shard_size=args.shard_size,
        png=args.png,
        batch_size=args.batch_size,
        device=args.device,
        masks_from=mask_sets.name if mask_sets else None,
        resample_steps=args.resample_steps,
        compile=args.compile_mode if args.compile else None,
        channels_last=args.channels_last,
        cudnn_benchmark=args.cudnn_benchmark or None,
    )
    # Before the model loads (a Hub id would be downloaded first): a wrong folder fails at once. The default sampler
    # depends on the model's kind and is compared by generate_dataset once the model is loaded.
    check_resume(args.output_dir, config, args.resume, model_loaded=False)
    state = process_state()  # one process, or one per GPU under accelerate launch
    device = args.device or (str(state.device) if state.num_processes > 1 else None)
    pipe = load_fundus_pipeline(args.model, device=device, dtype=args.dtype)  # generate_dataset sets the sampler
    dataset = generate_dataset(pipe, config, args.output_dir, resume=args.resume, mask_sets=mask_sets)
    if dataset is None:  # another process than the main one: its shards are written, the main one assembles
        return
    print(f"Wrote {len(dataset)} samples to {args.output_dir} (dataset card: {args.output_dir}/README.md)")
    if args.push_to_hub:
        print(f"Pushed to {push_dataset(args.output_dir, dataset_repo_id(args), args.hub_token, args.hub_private_repo)}")


if __name__ == "__main__":
    run_script(main, parse_args)
