"""Train a DCGAN on fundus images + masks and save a FundusGANPipeline (see fundus_diffusion.training.dcgan).

accelerate launch scripts/train_dcgan.py --dataset data/pm --masks disc --preset paper --output_dir runs/dcgan-360
"""

import argparse

from fundus_diffusion.cli import run_script
from fundus_diffusion.training.args import add_common_args
from fundus_diffusion.training.dcgan import add_dcgan_args, parse_dcgan_args, train_dcgan


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dcgan_args(add_common_args(parser))
    return parse_dcgan_args(parser, argv)


def main(args):
    train_dcgan(args)


if __name__ == "__main__":
    run_script(main, parse_args)
