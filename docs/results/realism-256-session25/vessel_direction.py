"""RESULTS.md session 25: do the samples' vessels leave the disc in every direction, where the photographs' run up
and down (the arcades)? CPU, no training; one number per image.

For each 256 px image with a disc mask: the vessel response (the green channel's Gaussian blur of sigma 3 px minus the
channel, kept where positive: darker than its surround, as vessels are) in a ring around the disc's centroid, from 1.6
to 3.5 disc radii (radius = sqrt(area / pi)), inside the field of view (any channel above 15/255). The share of that
response within 45 degrees of straight up or down is the image's "vertical share" (0.5 for vessels in every direction
alike). Real side: the 167 photographs of fundus-od; synthetic side: each set's pairs the device packed back (a generic
folder: metadata.csv, images/, masks/disc/). Prints the quantiles per set and the ROC AUC of the vertical share between
real and synthetic (0.5: the same distribution).

    python vessel_direction.py <fundus-od folder> NAME=<folder> ... > vessel_direction.json
"""

import json
import sys

import torch

from fundus_diffusion.data import load_fundus_dataset
from fundus_diffusion.evaluation.arrays import dataset_arrays
from fundus_diffusion.evaluation.augment import gaussian_blur
from fundus_diffusion.evaluation.realism import roc_auc


def vertical_share(folder: str) -> torch.Tensor:
    arrays = dataset_arrays(load_fundus_dataset(folder), 256, ["disc"], folder).float() / 255
    green, disc, field = arrays[:, 1:2], arrays[:, 3] > 0.5, arrays[:, :3].amax(1) > 15 / 255
    blurred = gaussian_blur(green, torch.full((len(green),), 3.0), radius=9)
    response = (blurred - green).clamp(min=0)[:, 0]
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    shares = []
    for i in range(len(arrays)):
        area = disc[i].sum()
        if area == 0:
            continue
        cy, cx = (disc[i] * yy).sum() / area, (disc[i] * xx).sum() / area
        radius = (area / torch.pi).sqrt()
        distance = ((yy - cy) ** 2 + (xx - cx) ** 2).sqrt()
        ring = (distance > 1.6 * radius) & (distance < 3.5 * radius) & field[i]
        angle = torch.atan2(yy - cy, xx - cx).abs()  # 0 right, pi / 2 up or down, pi left
        vertical = ring & ((angle - torch.pi / 2).abs() < torch.pi / 4)
        shares.append(((response[i] * vertical).sum() / (response[i] * ring).sum().clamp(min=1e-8)).item())
    return torch.tensor(shares)


def main(real_folder: str, *named: str) -> None:
    real = vertical_share(real_folder)
    quantiles = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    out = {"real": {"n": len(real), "quantiles_10_25_50_75_90": torch.quantile(real, quantiles).tolist()}}
    for item in named:
        name, folder = item.split("=", 1)
        shares = vertical_share(folder)
        out[name] = {
            "n": len(shares),
            "quantiles_10_25_50_75_90": torch.quantile(shares, quantiles).tolist(),
            "auc_real_above_synthetic": roc_auc(shares, real),  # P(a real share > a synthetic one)
        }
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:])
