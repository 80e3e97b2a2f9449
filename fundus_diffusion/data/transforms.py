"""Joint image + mask transforms between schema samples and C-channel model tensors in [-1, 1].

Channel layout: 0-2 RGB, then one channel per mask in ``mask_names`` order (``disc,cup``: disc = 3, cup = 4). Mask channels
are -1 / +1 on input; on output (``pipelines.pipeline_fundus.tensor_to_outputs``) a mask is ``channel > 0``. Images are
resized with antialiasing, masks with nearest
neighbour, and every geometric operation is applied to both.
"""

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

FUNDUS_THRESHOLD = 12  # a pixel whose brightest channel exceeds this (of 255) belongs to the fundus field
GENERATED_SOURCE_PREFIX = "synthetic:"  # the source column of the rows generate.py writes: synthetic:<model>


def is_generated_source(source: Optional[str]) -> bool:
    """Whether a ``source`` value names a generated set (``synthetic:<model>``, as ``generate.py`` writes it)."""
    return str(source or "").startswith(GENERATED_SOURCE_PREFIX)


def is_generated(row: Dict) -> bool:
    """Whether a schema row is a generated sample (``generate.py``): a picture framed already, since the model draws
    framed pictures. Framing it again re-centres the square on its own fundus field, which moved 27 of 64 samples
    and their masks by 8-22 px (RESULTS.md session 34) and hid exact copies of training photographs from the copy
    check."""
    return is_generated_source(row.get("source"))


def fundus_bbox(image: Image.Image) -> Tuple[int, int, int, int]:
    """Bounding box (left, top, right, bottom) of the bright fundus field on its black surround."""
    rgb = np.asarray(image.convert("RGB"))
    field = rgb.max(axis=2) > FUNDUS_THRESHOLD
    rows, cols = np.flatnonzero(field.any(axis=1)), np.flatnonzero(field.any(axis=0))
    if rows.size == 0:  # an all-black image: keep everything
        return 0, 0, image.width, image.height
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def square_box(box: Tuple[int, int, int, int]) -> Tuple[int, int, int, int]:
    """The square box centred on ``box`` whose side is the longer of its sides (it may extend past the image)."""
    left, top, right, bottom = box
    side = max(right - left, bottom - top)
    cx, cy = (left + right) / 2, (top + bottom) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    return left, top, left + side, top + side


def frame_pair(
    image: Image.Image,
    masks: Optional[Dict[str, Optional[Image.Image]]] = None,
    resolution: int = 256,
    *,
    framed: bool = False,
    antialiased_masks: bool = False,
) -> Tuple[Image.Image, Dict[str, Optional[Image.Image]]]:
    """A photograph and its masks framed as training frames them: the fundus field cropped to a square (padded with
    black where the square passes the image's edge), then resized to ``resolution`` (the photograph with antialiasing,
    each mask with nearest neighbour, as a 0 / 255 ``L`` image; a mask given as None stays None). ``framed``: the
    picture is framed already (``is_generated``), so it is only resized. ``antialiased_masks``: each mask is resampled as
    the photograph is (Lanczos), its edge a ramp of grey levels instead of a staircase of 0 and 255 (a training view's
    choice, ``--antialiased_masks``: the generated rims' pixel-scale speckle sits on the masks' edges, RESULTS.md
    session 34; a mask is read back as ``channel > 0`` either way).

    What a pipeline's ``image=`` and ``masks=`` take from a photograph of another size: a plain resize of a
    non-square photograph stretches it, and misplaces its masks against what the model learnt.
    """
    wrong = {name: mask.size for name, mask in (masks or {}).items() if mask is not None and mask.size != image.size}
    if wrong:
        raise ValueError(
            f"Mask(s) {', '.join(f'{n} ({w}x{h} px)' for n, (w, h) in wrong.items())} are not the photograph's size "
            f"({image.width}x{image.height} px): a mask is framed by the photograph's fundus field, so it must be "
            "the photograph's own. Fix: give the masks as annotated on this photograph, at its size."
        )
    if framed and image.width != image.height:
        raise ValueError(
            f"A generated sample ({image.width}x{image.height} px) should be square: it would be stretched. Fix: give "
            "the samples as generate.py wrote them."
        )
    box = (0, 0, image.width, image.height) if framed else square_box(fundus_bbox(image))
    size = (resolution, resolution)
    rgb = image.convert("RGB").crop(box).resize(size, Image.LANCZOS, reducing_gap=3.0)
    framed_masks = {}
    for name, mask in (masks or {}).items():
        if mask is None:
            framed_masks[name] = None
        elif antialiased_masks:
            binary = mask.convert("L").point(lambda v: 255 if v >= 128 else 0)
            framed_masks[name] = binary.crop(box).resize(size, Image.LANCZOS, reducing_gap=3.0)
        else:
            framed_masks[name] = mask.convert("L").crop(box).resize(size, Image.NEAREST).point(lambda v: 255 if v >= 128 else 0)
    return rgb, framed_masks


def pair_to_array(
    image: Image.Image,
    masks: Dict[str, Image.Image],
    mask_names: Sequence[str],
    resolution: int,
    *,
    framed: bool = False,
    antialiased_masks: bool = False,
) -> np.ndarray:
    """``frame_pair`` (``framed`` and ``antialiased_masks`` as there), stacked to ``uint8 [C, H, W]``.

    Mask channels hold 0 or 255 (grey levels on the edges with ``antialiased_masks``); a mask given as None (not annotated) gives an all-zero channel, which only the
    annotation flags (``schema.annotation_matrix``) tell apart from an empty mask. The uint8 form is what the training
    cache stores (4x smaller than float).
    """
    rgb, framed_masks = frame_pair(
        image, {name: masks[name] for name in mask_names}, resolution, framed=framed, antialiased_masks=antialiased_masks
    )
    channels = [np.asarray(rgb).transpose(2, 0, 1)]
    for name in mask_names:
        mask = framed_masks[name]
        channels.append(np.zeros((1, resolution, resolution), np.uint8) if mask is None else np.asarray(mask)[None])
    return np.concatenate(channels, axis=0)


def array_to_tensor(array: np.ndarray) -> torch.Tensor:
    """``uint8 [C, H, W]`` -> float32 in [-1, 1] (mask channels become exactly -1 / +1)."""
    return torch.from_numpy(np.ascontiguousarray(array)).float().div_(127.5).sub_(1.0)


def flip_where(x: torch.Tensor, flags: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The batch ``x`` (``[N, C, H, W]``) with the samples whose ``flags`` (``[N]`` bool, on ``x``'s device) are set
    flipped along ``dim`` (-1: left-right, -2: up-down): every channel, so masks flip with their image. The one flip of
    the training batches and the evaluation networks; no host sync."""
    return torch.where(flags[:, None, None, None], x.flip(dim), x)
