"""Where a UNet preset's work sits, by feature-map size: the convolution FLOPs (2 x multiply-adds) and the bytes its
GroupNorm layers move in the sampling precision (input read twice, output written once), per sample of one network
call, from hooks on one forward pass on the CPU. No GPU and no timing: it tells which resolution level a lighter
network must change to cut the GPU's work per image (issue 19), where the profile of sampling_throughput.py --profile
names kernels, not levels. On the GPU the GroupNorm bytes are what Inductor's fused norm / SiLU kernels are bound by.

    python benchmarks/unet_level_costs.py --model_config small256 --resolution 256 --masks disc
"""

import argparse
import collections
import math
from typing import Dict, Tuple

import torch

from fundus_diffusion.models.unet import UNET_PRESETS, build_unet, preset_space_to_depth
from fundus_diffusion.pipelines.pipeline_fundus import unet_output


def level_costs(
    unet: torch.nn.Module, in_channels: int, resolution: int, bytes_per_value: int = 2, space_to_depth: int = 1
) -> Tuple[Dict, Dict]:
    """``({feature-map size: convolution FLOPs}, {size: GroupNorm bytes})`` for one ``resolution`` px sample of
    ``in_channels`` through ``unet`` (called as the pipeline calls it, with its ``space_to_depth``)."""
    flops, norm_bytes = collections.Counter(), collections.Counter()

    def count_conv(module, inputs, output):
        kernel = module.kernel_size[0] * module.kernel_size[1]
        flops[output.shape[-1]] += 2 * output.numel() * (module.in_channels // module.groups) * kernel

    def count_norm(module, inputs, output):
        x = inputs[0]  # [B, C, H, W], or an attention block's [B, C, H * W]
        size = x.shape[-1] if x.dim() == 4 else math.isqrt(x.shape[-1])
        norm_bytes[size] += 3 * bytes_per_value * x.numel()

    hooks = [
        m.register_forward_hook(count_conv if isinstance(m, torch.nn.Conv2d) else count_norm)
        for m in unet.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.GroupNorm))
    ]
    try:
        with torch.no_grad():
            class_labels = torch.zeros(1, dtype=torch.long) if unet.config.num_class_embeds else None
            sample = torch.randn(1, in_channels, resolution, resolution)
            unet_output(unet, sample, torch.tensor([500]), class_labels, space_to_depth)
    finally:
        for hook in hooks:
            hook.remove()
    return dict(flops), dict(norm_bytes)


def table(flops: Dict[int, int], norm_bytes: Dict[int, int]) -> str:
    total_flops, total_bytes = sum(flops.values()), sum(norm_bytes.values())
    lines = [
        "| feature map | conv GFLOP per sample | share | GroupNorm MB per sample | share |",
        "|---|---:|---:|---:|---:|",
    ]
    for size in sorted(set(flops) | set(norm_bytes), reverse=True):
        f, b = flops.get(size, 0), norm_bytes.get(size, 0)
        lines.append(f"| {size} px | {f / 1e9:.1f} | {f / total_flops:.0%} | {b / 1e6:.0f} | {b / total_bytes:.0%} |")
    lines.append(f"| all | {total_flops / 1e9:.1f} | | {total_bytes / 1e6:.0f} | |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_config", default="small256", choices=sorted(UNET_PRESETS))
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--masks", default="disc", help="Comma list of mask channels beside RGB (none: RGB only).")
    parser.add_argument("--bytes_per_value", type=int, default=2, help="2: bf16 / fp16 (generate.py on a GPU), 4: fp32.")
    args = parser.parse_args(argv)
    in_channels = 3 + (0 if args.masks == "none" else len(args.masks.split(",")))
    unet = build_unet(args.model_config, args.resolution, in_channels=in_channels).eval()
    print(f"{args.model_config} at {args.resolution} px, {in_channels} channels, one sample, one network call")
    space_to_depth = preset_space_to_depth(args.model_config)
    print(table(*level_costs(unet, in_channels, args.resolution, args.bytes_per_value, space_to_depth)))


if __name__ == "__main__":
    main()
