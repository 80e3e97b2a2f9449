"""RESULTS.md session 29: the host-side work of one `generate_samples` batch of 64 at 256 px (4 channels) on a GPU
before this session's change, timed on a CPU with one thread: the starting noise from one CPU generator per sample
(what the pipeline draws through diffusers' `randn_tensor`, in the UNet's dtype: fp16, generate.py's default on a
GPU; float32 beside it), and what the host then did with the pipeline's `np` output: the NaN check and the 8-bit PIL
images and masks. (The float conversion that makes the `np` output runs on the device there, so it is left out.)
After the change, the pipeline's `starting_noise` draws the same fp16 noise in threads, one per core of the machine
(`threads_for_noise`, torch's intra-op threads set to match). CPU, seconds.

    python host_work.py
"""

import json
import os
import time

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from fundus_diffusion.pipelines.pipeline_fundus import starting_noise, tensor_to_outputs

BATCH, SHAPE = 64, (4, 256, 256)


def seconds(work) -> float:
    start = time.perf_counter()
    work()
    return round(time.perf_counter() - start, 3)


def serial_noise(dtype: torch.dtype) -> torch.Tensor:
    return randn_tensor((BATCH, *SHAPE), generator=[torch.Generator("cpu").manual_seed(s) for s in range(BATCH)], dtype=dtype)


def one_batch() -> dict:
    row = {}
    for dtype in (torch.float16, torch.float32):
        row[f"starting_noise_{str(dtype).removeprefix('torch.')}_s"] = seconds(lambda dtype=dtype: serial_noise(dtype))
    generators = [torch.Generator("cpu").manual_seed(s) for s in range(BATCH)]
    torch.set_num_threads(os.cpu_count())  # starting_noise draws in as many threads as torch's
    row["starting_noise_float16_threaded_s"] = seconds(
        lambda: starting_noise((BATCH, *SHAPE), generators, torch.device("cpu"), torch.float16)
    )
    torch.set_num_threads(1)
    images, masks = tensor_to_outputs(serial_noise(torch.float32).clamp(-1, 1), ["disc"], "np")  # a sampled batch's stand-in
    row["nan_check_s"] = seconds(lambda: np.isfinite(images).all())
    row["eight_bit_pil_s"] = seconds(lambda: (
        [Image.fromarray((im * 255).round().astype(np.uint8), mode="RGB") for im in images],
        [{n: Image.fromarray((m * 255).astype(np.uint8), mode="L") for n, m in ms.items()} for ms in masks],
    ))  # fmt: skip
    return row


def main(repeats: int = 3) -> dict:
    torch.set_num_threads(1)
    rows = [one_batch() for _ in range(repeats)]
    return {"batch": BATCH, "shape": SHAPE, "threads": 1, "threads_for_noise": os.cpu_count(), "repeats": rows}


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
