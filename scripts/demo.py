"""The README's main job: a tiny DDPM trained on built-in phantoms (CPU, a few minutes), then image + mask pairs.

    fundus-demo --output_dir outputs/demo
"""

import time

from fundus_diffusion.demo import run_demo
from fundus_diffusion.training.args import CommandParser


def parse_args(argv=None):
    parser = CommandParser(description=__doc__)
    parser.add_argument("--output_dir", default="outputs/demo")
    parser.add_argument("--num_samples", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(args):
    start = time.perf_counter()
    sheet = run_demo(args.output_dir, args.num_samples, args.seed)
    print(f"Done in {time.perf_counter() - start:.0f} s. Model: {args.output_dir}/model; pairs (dataset + PNG): "
          f"{args.output_dir}/synthetic; contact sheet: {sheet}")


if __name__ == "__main__":
    main(parse_args())
