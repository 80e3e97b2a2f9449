"""Pictures people look at: contact sheets of fundus images with their mask outlines."""

import math
import zlib
from typing import Dict, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Outline colours of the common masks, all readable on an orange-red fundus; any other name gets one of
# OTHER_COLOURS, the same for a name on every sheet (``mask_colour``).
MASK_COLOURS = {"disc": (0, 255, 255), "atrophy": (255, 255, 0), "cup": (0, 90, 255), "detachment": (255, 0, 255)}
OTHER_COLOURS = ((0, 255, 0), (255, 255, 255), (160, 120, 255), (0, 170, 120), (255, 160, 200), (120, 255, 200))


def mask_colour(name: str):
    """The outline colour of mask ``name``: its own for the common masks, else one picked by the name's bytes (not
    ``hash``, which changes between runs)."""
    return MASK_COLOURS.get(name) or OTHER_COLOURS[zlib.crc32(name.encode()) % len(OTHER_COLOURS)]


def mask_outline(mask: Image.Image, width: int = 1) -> np.ndarray:
    """Boolean boundary of a binary ``L`` mask: the mask minus its erosion."""
    binary = mask.convert("L").point(lambda v: 255 if v >= 128 else 0)
    eroded = binary.filter(ImageFilter.MinFilter(2 * width + 1))
    return (np.asarray(binary) > 0) & ~(np.asarray(eroded) > 0)


def overlay_masks(image: Image.Image, masks: Dict[str, Image.Image], width: Optional[int] = None) -> Image.Image:
    """The RGB image with each mask's outline drawn in its colour (``mask_colour``); a None mask (not annotated) is
    left out."""
    out = np.array(image.convert("RGB"))
    width = width or max(1, image.width // 128)
    for name, mask in masks.items():
        if mask is None:  # not annotated: nothing to draw
            continue
        if mask.size != image.size:
            mask = mask.resize(image.size, Image.NEAREST)
        out[mask_outline(mask, width)] = mask_colour(name)
    return Image.fromarray(out)


def contact_sheet(
    images: Sequence[Image.Image],
    masks: Optional[Sequence[Dict[str, Image.Image]]] = None,
    captions: Optional[Sequence[str]] = None,
    columns: Optional[int] = None,
    tile: int = 128,
) -> Image.Image:
    """A grid of ``tile``-px thumbnails, each with its mask outlines and an optional caption."""
    if not images:
        raise ValueError("contact_sheet needs at least one image.")
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    caption_h = 12 if captions else 0
    sheet = Image.new("RGB", (columns * tile, rows * (tile + caption_h)), (20, 20, 20))
    draw = ImageDraw.Draw(sheet)
    for i, image in enumerate(images):
        thumb = image.convert("RGB").resize((tile, tile), Image.LANCZOS)
        if masks is not None:
            small = {k: m.resize((tile, tile), Image.NEAREST) for k, m in masks[i].items() if m is not None}
            thumb = overlay_masks(thumb, small, width=1)
        x, y = (i % columns) * tile, (i // columns) * (tile + caption_h)
        sheet.paste(thumb, (x, y))
        if captions:
            draw.text((x + 2, y + tile), str(captions[i])[: tile // 6], fill=(230, 230, 230))
    return sheet
