"""Train a DDPM on fundus images and their masks: `accelerate launch scripts/train_ddpm.py --help`.

The logic lives in fundus_diffusion.training.ddpm; this file only parses flags and calls it.
"""

from fundus_diffusion.cli import run_script
from fundus_diffusion.training.ddpm import parse_args, train


def main(args):
    train(args)  # which logs where it saved the model, once (from the main process) however many run


if __name__ == "__main__":
    run_script(main, parse_args)
