"""Choose a DDPM's EMA length after training (post-hoc EMA, Karras et al. 2024):

    fundus-post-hoc-ema --run runs/ddpm256 --sigma_rel 0.10 --output_dir models/ddpm256-ema
    # models/ddpm256-ema/sigma_rel-0.1 (a model folder for generate.py), and with several lengths one folder each:
    fundus-post-hoc-ema --run runs/ddpm256 --sigma_rel 0.05,0.10,0.20 --output_dir models/ema-ablation

--run is a folder trained with `train_ddpm.py --post_hoc_ema`. Each --sigma_rel (the EMA's length as a fraction of
the training time) is synthesised from the run's snapshots at --step (default: the last) and saved as an ordinary model
folder with its card, for generate.py: in --output_dir/sigma_rel-VALUE, for one value as for several (a later call with
other values adds their folders beside). A length the snapshots cannot reconstruct is refused, with the cause: one
outside the tracked profiles' lengths, a --step without a snapshot, or too few snapshots (a short run: train longer or
with a smaller --post_hoc_ema_every). The logic lives in fundus_diffusion.training.post_hoc_ema.
"""


from fundus_diffusion.cli import run_script
from fundus_diffusion.training.args import CommandParser
from fundus_diffusion.training.post_hoc_ema import parse_sigma_rels, write_post_hoc_pipelines


def parse_args(argv=None):
    parser = CommandParser(description=__doc__)
    parser.add_argument("--run", required=True, help="A train_ddpm.py --post_hoc_ema output folder.")
    parser.add_argument("--sigma_rel", required=True, help="One EMA length or several, comma-separated (0.05,0.10).")
    parser.add_argument("--step", type=int, default=None, help="The training step to synthesise at; default: the last.")
    parser.add_argument("--output_dir", required=True, help="Where the model folders go: one sigma_rel-VALUE sub-folder per length.")
    return parser.parse_args(argv)


def main(args):
    sigma_rels = parse_sigma_rels(args.sigma_rel)
    for folder in write_post_hoc_pipelines(args.run, sigma_rels, args.output_dir, step=args.step):
        print(f"Saved the post-hoc EMA pipeline to {folder}")


if __name__ == "__main__":
    run_script(main, parse_args)
