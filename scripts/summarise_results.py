"""Print the RESULTS.md table from the ``summary.json`` files that ``scripts/reproduce_results.sh`` writes.

    fundus-summarise-results reports/results/summary.json
    fundus-summarise-results docs/results/summary.json reports/results-ddpm/summary.json   # merged

With several files (runs done in different sessions, e.g. with ``ONLY=...``) each row comes whole from the last file
that evaluated it (else the last that trained it): a later file's runs replace an earlier file's.
"""


from fundus_diffusion.cli import run_script
from fundus_diffusion.evaluation.metrics import format_mean_std
from fundus_diffusion.evaluation.protocol import EQUAL_REAL_PASSES, REAL_AS_LONG
from fundus_diffusion.evaluation.summary import load_summaries, realism_cell, row_source, training_run
from fundus_diffusion.training.args import CommandParser

# fmt: off
RUNS = {  # run name -> (what, resolution, channels, model, training images, sampler)
    "dcgan-paper": ("1. paper DCGAN (Table 1)", 360, 4, "DCGAN nz100 ngf32 ndf64, BCE, fp32, 100 epochs", "fundus-od train (134)", "one forward pass"),
    "ddpm-paper": ("2. paper DDPM (Table 2)", 64, 4, "UNet `paper`, T=300 linear, EMA 0.995, 4,000 steps of 8", "fundus-od train (134)", "DDPM, 300 steps"),
    "dcgan-diffaug": ("3a. DCGAN + DiffAugment + EMA", 360, 4, "as 1, bf16, 300 epochs", "fundus-od train (134)", "one forward pass"),
    "dcgan-diffaug-sn-hinge": ("3b. DCGAN + DiffAugment + SN + hinge + EMA", 360, 4, "as 3a", "fundus-od train (134)", "one forward pass"),
    "ddpm-256-dpm20": ("4a. our DDPM", 256, 4, "UNet `small256`, cosine, v-pred, {max_train_steps:,} steps of {train_batch_size}, {precision}{compiled}", "fundus-od train (134)", "DPM-Solver++, 20 steps"),
    "ddpm-256-ddpm1000": ("4b. our DDPM", 256, 4, "as 4a", "fundus-od train (134)", "DDPM, 1000 steps"),
    "phantom-5ch": ("5. 5-channel, PHANTOMS", 64, 5, "UNet `paper`, cosine, v-pred", "phantoms (512)", "DPM-Solver++, 20 steps"),
}
# fmt: on
# Filled from the "training_args" of the summary that holds the run's evaluation; older summaries have none
# (session 2's 256 px run: 2,000 steps of 16 in bf16).
RECORDED_ARGS = {"ddpm-256": {"max_train_steps": 2000, "train_batch_size": 16, "mixed_precision": "bf16"}}


def compiled(args):
    """How the run was compiled, as its command line said it (empty when not)."""
    if not args.get("compile"):
        return ""
    mode = args.get("compile_mode", "default")
    return ", `--compile`" + ("" if mode == "default" else f" `--compile_mode {mode}`")


def describe(model, args):
    """``model`` with ``{max_train_steps}``-style fields filled from the run's arguments (epochs where no steps)."""
    if args.get("max_train_steps") is None and args.get("num_epochs") is not None:
        model = model.replace("{max_train_steps:,} steps", "{num_epochs} epochs")
    try:
        precision = "fp32" if args.get("mixed_precision", "no") == "no" else args["mixed_precision"]
        return model.format(**args, precision=precision, compiled=compiled(args))
    except (KeyError, ValueError, TypeError):
        return model.split(", {")[0] + ", steps not recorded"


def fmt(stat):
    return format_mean_std(stat) if stat else "—"


def rate(count, seconds):
    """Images per second of a whole generate.py call (process start and model loading included)."""
    return f"{count / seconds:.2f}" if isinstance(seconds, (int, float)) and seconds > 0 else "—"


def main(paths):
    parts = load_summaries(paths)
    print(
        "| run | px | C | model | trained on | GPU | train wall s | sampler | gen wall s (n) | images/s | Dice real "
        "| Dice synthetic | synthetic / real | Dice real+synthetic | Dice real+synthetic, equal real passes "
        "| mask-image agreement | one disc component | flagged as copies (pixels / features) | FID "
        "| classifier two-sample AUC, real vs synthetic (0.5 = indistinguishable) | evaluated at px |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, (what, px, channels, model, data, sampler) in RUNS.items():
        train, part = training_run(name), row_source(parts, name)
        model = describe(model, part["training_args"].get(train, RECORDED_ARGS.get(train, {})))
        report, seconds = part["reports"].get(name), part["seconds"]
        gpu = part["device"].replace("NVIDIA ", "")
        if report is None:
            print(
                f"| {what} | {px} | {channels} | {model} | {data} | {gpu} | {seconds.get(train, 'not finished')} "
                f"| {sampler} | {seconds.get('gen-' + name, '—')} | | not evaluated | | | | | | | | | | |"
            )
            continue
        results = report["downstream"]["results"]
        real, syn, both = (results[k]["disc"]["dice"] for k in ("real", "synthetic", "real+synthetic"))
        equal_passes = fmt(results.get(EQUAL_REAL_PASSES, {}).get("disc", {}).get("dice"))  # opt-in rows
        if REAL_AS_LONG in results:
            equal_passes += f" (real alone as long: {fmt(results[REAL_AS_LONG]['disc']['dice'])})"
        flagged = " / ".join(str(m["n_flagged"]) for m in report["memorisation"].values())
        plaus = report["plausibility"]
        fid = report["fid_kid"].get("fid", "not computed")
        n_syn, gen_seconds = report["counts"]["synthetic"], seconds.get("gen-" + name, "—")
        print(
            f"| {what} | {px} | {channels} | {model} | {data} | {gpu} | {seconds.get(train, '—')} | {sampler} "
            f"| {gen_seconds} ({n_syn}) | {rate(n_syn, gen_seconds)} | {fmt(real)} | {fmt(syn)} "
            f"| {syn['mean'] / real['mean']:.0%} | {fmt(both)} | {equal_passes} "
            f"| {fmt(report['agreement']['results']['disc']['dice'])} "
            f"| {plaus['one_disc_component_synthetic']:.1%} | {flagged} of {n_syn} | "
            f"{fid if isinstance(fid, str) else f'{fid:.1f}'} | {realism_cell(report)} | {report['config']['resolution']} |"
        )
    palm_part = row_source(parts, "palm-cond")
    palm, seconds = palm_part["reports"].get("palm-cond"), palm_part["seconds"]
    if palm:
        agree, acc = palm["synthetic_label_agreement"], palm["real_held_out_accuracy"]
        print(
            f"\n6. PALM class-conditional DDPM (64 px, image only, {seconds.get('palm-cond', '—')} s training): the PM classifier "
            f"({acc['overall']:.1%} accurate on {acc['n']} held-out real PALM images) gives generated PM samples the PM label "
            f"{agree['PM']:.1%} of the time (n={agree['n_PM']}) and non-PM samples the non-PM label {agree['non-PM']:.1%} "
            f"(n={agree['n_non-PM']})."
        )


def parse_args(argv=None):
    parser = CommandParser(description=__doc__)
    parser.add_argument(
        "summaries", nargs="*", default=["reports/results/summary.json"], help="summary.json files, oldest first."
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    run_script(lambda args: main(args.summaries), parse_args)
