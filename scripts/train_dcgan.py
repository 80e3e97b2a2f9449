"""Train a DCGAN on fundus images + masks and save a FundusGANPipeline: `accelerate launch scripts/train_dcgan.py --help`.

The logic lives in fundus_diffusion.training (the DCGAN kind of the one training loop); this file only parses flags
and calls it.
"""

from fundus_diffusion.cli import run_script
from fundus_diffusion.training.dcgan import parse_args, train


def main(args):
    train(args)  # which logs where it saved the model, once (from the main process) however many run


if __name__ == "__main__":
    run_script(main, parse_args)
