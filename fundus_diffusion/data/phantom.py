"""Deterministic fundus-like phantoms with exact masks: the embedded default for the demo and the tests.

A phantom is a textured orange-red fundus disc on black with vignetting, a bright optic disc with a cup, vessels
radiating from it in two arcades around a darker macula, left or right eye, varied colour and illumination.
Pathological-myopia (PM) phantoms are paler and tessellated and carry peripapillary and patchy atrophy, whose mask
is exact. Everything is drawn from ``numpy.random.default_rng(seed)``, so a seed always gives the same sample.
"""

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
from datasets import Dataset
from PIL import Image, ImageDraw, ImageFilter

from .schema import LABEL_NAMES, fundus_features


@dataclass
class Phantom:
    image: Image.Image  # RGB
    disc_mask: Image.Image  # L, 255 = optic disc
    atrophy_mask: Image.Image  # L, 255 = atrophy (all zero for non-PM)
    label: int  # 0 = non-PM, 1 = PM
    eye: str  # "left" or "right"


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bicubically."""
    coarse = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0


def _vessel_path(rng, start, angle, length, bend, steps=24):
    """A slightly wiggly arc leaving ``start`` at ``angle`` and curving by ``bend`` radians in total."""
    points = [start]
    x, y = start
    for i in range(steps):
        a = angle + bend * (i / steps) + rng.normal(0, 0.06)
        x += np.cos(a) * length / steps
        y += np.sin(a) * length / steps
        points.append((x, y))
    return points


def draw_phantom(seed: int, size: int = 256, label: Optional[int] = None) -> Phantom:
    """Draw one phantom. ``label`` 0 (non-PM) or 1 (PM); None draws it from the seed (half each)."""
    if size < 32:
        raise ValueError(f"Phantom size must be at least 32 px, got {size}.")
    rng = np.random.default_rng(seed)
    label = int(rng.random() < 0.5) if label is None else int(label)
    if label not in (0, 1):
        raise ValueError(f"Phantom label must be 0 ({LABEL_NAMES[0]}) or 1 ({LABEL_NAMES[1]}), got {label}.")
    eye = "right" if rng.random() < 0.5 else "left"
    s = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5

    # Fundus field: a circle, sometimes clipped top and bottom as in many cameras.
    cx, cy = s / 2 + rng.normal(0, 0.01 * s), s / 2 + rng.normal(0, 0.01 * s)
    radius = s * rng.uniform(0.44, 0.49)
    r = np.hypot(xx - cx, yy - cy) / radius
    field = r < 1.0
    if rng.random() < 0.3:
        field &= np.abs(yy - cy) < radius * rng.uniform(0.85, 0.95)

    # Base colour, texture, illumination and vignetting.
    base = np.array([rng.uniform(0.72, 0.95), rng.uniform(0.28, 0.42), rng.uniform(0.08, 0.18)], dtype=np.float32)
    if label == 1:  # PM fundi are paler
        base = base * np.array([1.0, 1.15, 1.3], dtype=np.float32) + 0.04
    texture = 0.85 + 0.3 * _smooth_noise(rng, size, 6) + 0.06 * (_smooth_noise(rng, size, 40) - 0.5)
    light_dir = rng.uniform(0, 2 * np.pi)
    illumination = 1.0 + rng.uniform(0.05, 0.25) * ((xx - cx) * np.cos(light_dir) + (yy - cy) * np.sin(light_dir)) / radius
    vignette = np.clip(1.0 - 0.55 * r**2.2, 0.0, 1.0)
    shade = texture * illumination * vignette
    img = base[None, None, :] * shade[..., None]

    if label == 1:  # tessellation: choroidal vessels showing through as dark stripes
        stripes = np.sin((xx * np.cos(light_dir) + yy * np.sin(light_dir)) / s * rng.uniform(40, 70) + 6 * _smooth_noise(rng, size, 5))
        img *= (1.0 - 0.07 * (stripes > 0.3))[..., None]

    # Optic disc, nasal side: right eye -> disc on the right of the image.
    side = 1.0 if eye == "right" else -1.0
    dx, dy = cx + side * radius * rng.uniform(0.28, 0.42), cy + radius * rng.normal(0, 0.06)
    disc_r = s * rng.uniform(0.055, 0.085)
    disc_ry = disc_r * rng.uniform(1.0, 1.18)

    # Macula: a darker blob about 2.5 disc diameters temporal to the disc.
    mx, my = dx - side * disc_r * rng.uniform(4.5, 5.5), dy + disc_r * rng.normal(0.3, 0.2)
    macula = np.exp(-((xx - mx) ** 2 + (yy - my) ** 2) / (2 * (disc_r * 1.3) ** 2))
    img *= (1.0 - rng.uniform(0.25, 0.4) * macula)[..., None]

    # Vessels: an upper and a lower arcade plus a few nasal branches, drawn on a mask and darkened.
    vessels = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(vessels)
    width0 = max(1, int(round(s / 110)))
    for upper in (True, False):
        for k in range(2):
            start_angle = -np.pi / 2 - 0.4 * side if upper else np.pi / 2 + 0.4 * side
            angle = start_angle + rng.normal(0, 0.15)
            bend = (-1 if upper else 1) * side * rng.uniform(0.9, 1.3)  # curve around the macula
            pts = _vessel_path(rng, (dx, dy), angle, radius * rng.uniform(0.9, 1.4), bend)
            draw.line(pts, fill=int(200 - 60 * k), width=width0 + 1 - k, joint="curve")
    for _ in range(int(rng.integers(2, 5))):
        a = (0.0 if side > 0 else np.pi) + rng.normal(0, 0.6)
        pts = _vessel_path(rng, (dx, dy), a, radius * rng.uniform(0.35, 0.6), rng.normal(0, 0.6), steps=12)
        draw.line(pts, fill=140, width=width0, joint="curve")
    vessel_map = np.asarray(vessels.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32) / 255.0
    vessel_colour = np.array([0.55, 0.12, 0.08], dtype=np.float32)
    img = img * (1 - 0.6 * vessel_map[..., None]) + vessel_colour * shade[..., None] * 0.6 * vessel_map[..., None] * 0.5

    # Atrophy (PM only): a peripapillary crescent on the temporal side plus patchy lesions near the macula.
    atrophy = np.zeros((size, size), dtype=bool)
    if label == 1:
        ring = ((xx - dx) / (disc_r * rng.uniform(1.5, 2.1))) ** 2 + ((yy - dy) / (disc_ry * rng.uniform(1.4, 1.9))) ** 2 < 1
        temporal = (xx - dx) * side < disc_r * rng.uniform(0.0, 0.6)
        atrophy |= ring & temporal
        for _ in range(int(rng.integers(0, 4))):
            px = mx + side * disc_r * rng.uniform(-1.0, 2.5)
            py = my + disc_r * rng.normal(0, 1.5)
            pr = disc_r * rng.uniform(0.3, 0.9)
            blob = ((xx - px) / pr) ** 2 + ((yy - py) / (pr * rng.uniform(0.6, 1.4))) ** 2 + 0.35 * _smooth_noise(rng, size, 12) < 1
            atrophy |= blob
    disc = ((xx - dx) / disc_r) ** 2 + ((yy - dy) / disc_ry) ** 2 < 1
    atrophy &= field & ~disc

    atrophy_colour = np.array([0.93, 0.82, 0.62], dtype=np.float32) * rng.uniform(0.85, 1.0)
    img[atrophy] = 0.35 * img[atrophy] + 0.65 * atrophy_colour * shade[atrophy][:, None] ** 0.3

    # Disc last: bright yellow-orange rim with a paler cup; vessels emerge from the cup.
    disc_colour = np.array([1.0, rng.uniform(0.75, 0.9), rng.uniform(0.45, 0.6)], dtype=np.float32)
    cup = ((xx - dx) / (disc_r * 0.45)) ** 2 + ((yy - dy) / (disc_ry * 0.5)) ** 2 < 1
    edge = np.clip(1.0 - (((xx - dx) / disc_r) ** 2 + ((yy - dy) / disc_ry) ** 2), 0, 1) ** 0.35
    img[disc] = (0.25 * img[disc] + 0.75 * disc_colour * (0.8 + 0.2 * edge[disc][:, None])) * (1 - 0.3 * vessel_map[disc][:, None])
    img[cup] = 0.5 * img[cup] + 0.5 * np.array([1.0, 0.95, 0.85], dtype=np.float32)

    img = np.clip(img + rng.normal(0, 0.008, img.shape).astype(np.float32), 0, 1) * field[..., None]
    to_l = lambda m: Image.fromarray((m * 255).astype(np.uint8), mode="L")  # noqa: E731
    return Phantom(
        image=Image.fromarray((img * 255 + 0.5).astype(np.uint8), mode="RGB"),
        disc_mask=to_l(disc & field),
        atrophy_mask=to_l(atrophy),
        label=label,
        eye=eye,
    )


def phantom_rows(num_samples: int, size: int = 256, seed: int = 0, split: str = "train") -> Iterator[dict]:
    """Rows in the dataset schema; sample ``i`` is ``draw_phantom(seed + i)``, labels alternate PM / non-PM."""
    for i in range(num_samples):
        p = draw_phantom(seed + i, size=size, label=i % 2)
        yield {
            "id": f"phantom/{split}/{seed + i:06d}",
            "source": "phantom",
            "split": split,
            "image": p.image,
            "disc_mask": p.disc_mask,
            "has_disc_annotation": True,
            "atrophy_mask": p.atrophy_mask,
            "has_atrophy_annotation": True,
            "label": p.label,
        }


def load_phantom_dataset(num_samples: int = 64, size: int = 256, seed: int = 0, split: str = "train"):
    """A ``datasets.Dataset`` of phantoms in the schema (PM and non-PM alternate)."""
    return Dataset.from_generator(
        phantom_rows,
        gen_kwargs={"num_samples": num_samples, "size": size, "seed": seed, "split": split},
        features=fundus_features(),
    )
