"""What the optic discs look like, in numbers: colour, detail and how much of the disc's edges and lines run in one
direction, in a square around each disc, per image, summarised per set beside real photographs.

The disc-region judge (``realism.region_test``) says *whether* generated discs can be told from real ones; this
says *how* they differ, so that a description made by eye ("brighter", "mottled") can be checked. Per image, in the
judge's square (``realism.DISC_CROP_FRACTION``: a quarter of the side, 64 px at 256 px, about one and a half disc
diameters of fundus-od's, 33-62 px) centred on the disc:

- ``red``, ``green``, ``blue``: each channel's mean (0-255);
- ``fine_detail``: root mean square of the image less its Gaussian blur of sigma 1.5 px at 256 px (small vessels,
  texture, speckle; 0-255 units);
- ``middle_detail``: the same of the band between the blurs of sigma 1.5 and 4 px at 256 px (vessel trunks, the
  cup's edge, blotches);
- ``orientation_coherence``: the structure tensor of the green channel's gradients (their outer products, smoothed
  with sigma 2 px at 256 px): ``sum(lambda1 - lambda2) / sum(lambda1 + lambda2)`` over the square, weighted by the
  gradients' energy, so the strongest edges count most. 1: every edge and line runs one way where it is (vessels, the
  rim); independent noise gives about 0.17 (the floor at that smoothing). A sharp rim alone also scores high, so a
  softer rim and fewer vessels both lower it;
- ``rim_coherence``: the same in the ring 16-26 px from the centre at 256 px, where the rim of a fundus-od disc lies
  (their radii: 16-31 px, median 22);
- ``gradient_around``: the root mean square of the green channel's smoothed gradient in the ring 28-48 px from the
  centre (0-255 units per px): the vessel trunks leaving the disc and the retina around it.

Every blur scales with the resolution, so a set compares with real photographs at the same size. The square is
centred on the centroid of the image's disc mask (``locate="mask"``), or on the brightest point of its luminance
blurred with sigma 6 px at 256 px (``locate="brightest"``), for sets without masks; two sets compare only when
located alike (``brightest_in_disc`` says how often the brightest point lies in a set's own disc masks; on the real
fundus-od photographs it lies a median 7 px from the mask's centroid).
"""

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from .augment import gaussian_blur
from .realism import DISC_CROP_FRACTION, mask_centroids
from .spectrum import CONTROL

CHUNK = 32  # images whose intermediate maps are held at once (about 7 MB each at 256 px)
FINE_SIGMA, MIDDLE_SIGMA, TENSOR_SIGMA, LOCATE_SIGMA = 1.5, 4.0, 2.0, 6.0  # px at REFERENCE_SIDE
REFERENCE_SIDE = 256
MIN_RESOLUTION = 128  # below it the blurs fall under a pixel: the fine detail and the orientation measure noise
RIM_RING, AROUND_RING = (16, 26), (28, 48)  # px from the centre at REFERENCE_SIDE
STATISTICS = (
    "red", "green", "blue", "fine_detail", "middle_detail", "orientation_coherence", "rim_coherence", "gradient_around",
)  # fmt: skip
LOCATE = ("mask", "brightest")
REAL = "real"


def _blur(images: torch.Tensor, sigma_at_256: float) -> torch.Tensor:
    """Each of ``images [N, C, S, S]`` blurred with sigma ``sigma_at_256 x S / 256`` px."""
    sigma = sigma_at_256 * images.shape[-1] / REFERENCE_SIDE
    radius = min(max(1, int(3 * sigma + 0.5)), images.shape[-1] - 1)  # reflect padding needs radius < side
    return gaussian_blur(images, torch.full((len(images),), sigma, dtype=images.dtype), radius)


def brightest_points(images: torch.Tensor) -> torch.Tensor:
    """``long [N, 2]``: (row, column) of each image's brightest point once blurred (``LOCATE_SIGMA``): in a fundus
    photograph, almost always inside the optic disc."""
    luminance = _blur(images[:, :3].float().mean(dim=1, keepdim=True), LOCATE_SIGMA)[:, 0]
    index = luminance.flatten(1).argmax(dim=1)
    return torch.stack([index // luminance.shape[-1], index % luminance.shape[-1]], dim=1)


def appearance(images: torch.Tensor, centres: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per image of ``images`` (``uint8 [N, >=3, S, S]``), each of ``STATISTICS`` in the square around its centre
    (``long [N, 2]``; a square past the border is moved inside), ``CHUNK`` images at a time."""
    rows = {name: [] for name in STATISTICS}
    for start in range(0, len(images), CHUNK):
        chunk = _appearance(images[start : start + CHUNK], centres[start : start + CHUNK])
        for name in STATISTICS:
            rows[name].append(chunk[name])
    return {name: torch.cat(values) if values else torch.zeros(0) for name, values in rows.items()}


def _appearance(images: torch.Tensor, centres: torch.Tensor) -> Dict[str, torch.Tensor]:
    rgb = images[:, :3].float()
    fine_blur = _blur(rgb, FINE_SIGMA)
    fine, middle = rgb - fine_blur, fine_blur - _blur(rgb, MIDDLE_SIGMA)
    green = F.pad(rgb[:, 1:2], (1, 1, 1, 1), mode="replicate")  # an edge pixel's gradient from its own value
    dx = (green[..., 1:-1, 2:] - green[..., 1:-1, :-2]) / 2
    dy = (green[..., 2:, 1:-1] - green[..., :-2, 1:-1]) / 2
    jxx, jyy, jxy = _blur(torch.cat([dx * dx, dy * dy, dx * dy], dim=1), TENSOR_SIGMA).unbind(dim=1)
    anisotropy, energy = ((jxx - jyy) ** 2 + 4 * jxy**2).sqrt(), jxx + jyy
    side, window = images.shape[-1], max(2, images.shape[-1] // DISC_CROP_FRACTION)  # 2: a std, at any size
    corners = (centres - window // 2).clamp(0, side - window)
    grid = torch.arange(side, dtype=torch.float32) * REFERENCE_SIDE / side  # px at 256
    rows = {name: [] for name in STATISTICS}
    for i, ((top, left), (row, col)) in enumerate(zip(corners.tolist(), centres.tolist())):
        distance = ((grid[:, None] - grid[row]) ** 2 + (grid[None, :] - grid[col]) ** 2).sqrt()
        rim = (distance >= RIM_RING[0]) & (distance < RIM_RING[1])
        around = (distance >= AROUND_RING[0]) & (distance < AROUND_RING[1])
        rows["rim_coherence"].append(anisotropy[i][rim].sum() / energy[i][rim].sum().clamp(min=1e-12))
        rows["gradient_around"].append(energy[i][around].mean().sqrt())
        cut = (slice(top, top + window), slice(left, left + window))
        colour = rgb[i][(slice(None), *cut)].mean(dim=(1, 2))
        for c, name in enumerate(("red", "green", "blue")):
            rows[name].append(colour[c])
        rows["fine_detail"].append(fine[i][(slice(None), *cut)].pow(2).mean().sqrt())
        rows["middle_detail"].append(middle[i][(slice(None), *cut)].pow(2).mean().sqrt())
        rows["orientation_coherence"].append(anisotropy[i][cut].sum() / energy[i][cut].sum().clamp(min=1e-12))
    return {name: torch.stack(values) for name, values in rows.items()}


def set_appearance(images: torch.Tensor, discs: Optional[torch.Tensor], locate: str) -> Dict:
    """One set's summary: per statistic the mean and standard deviation over its images (and each image's value).
    ``locate="mask"``: windows on the centroids of the disc masks (``discs``, ``bool [N, S, S]``), images with an empty
    mask left out; ``"brightest"``: on every image's brightest point. ``brightest_in_disc``: the share of the images
    with a disc mask whose brightest point lies inside it (None without masks), how far the two ways agree."""
    if locate not in LOCATE:
        raise ValueError(f"locate={locate!r}: choose from {', '.join(LOCATE)}.")
    if locate == "mask" and discs is None:
        raise ValueError("locate='mask' needs the set's disc masks; locate='brightest' works without them.")
    centres, brightest_in_disc = brightest_points(images), None
    if discs is not None:
        has_disc = discs.flatten(1).any(dim=1)
        if bool(has_disc.any()):
            inside = discs[torch.arange(len(images)), centres[:, 0], centres[:, 1]]
            brightest_in_disc = float(inside[has_disc].float().mean())
        if locate == "mask":
            images, centres = images[has_disc], mask_centroids(discs[has_disc])
    return summary(appearance(images, centres), locate, brightest_in_disc)


def summary(values: Dict[str, torch.Tensor], located_by: str, brightest_in_disc: Optional[float] = None) -> Dict:
    """``set_appearance``'s record of per-image ``values`` (``{statistic: [N]}``): each statistic's mean, standard
    deviation and values."""
    n = len(next(iter(values.values())))
    statistics = {
        name: {
            "mean": float(v.mean()) if n else float("nan"),
            "std": float(v.std()) if n > 1 else float("nan"),
            "per_image": v.tolist(),
        }
        for name, v in values.items()
    }
    return {"n": n, "located_by": located_by, "brightest_in_disc": brightest_in_disc, "statistics": statistics}


COLOUR = ("red", "green", "blue")


def nearest_origin(origins: Dict[str, Dict], row: Dict) -> List[str]:
    """For each image of ``row`` (a ``set_appearance`` record), the name of the origin in ``origins`` (``{name:
    record}``, e.g. the real photographs of each camera) whose mean colour around the disc is nearest to the image's,
    each channel in units of the origins' pooled standard deviation: which camera's style a sample resembles."""
    stack = lambda record: torch.tensor([record["statistics"][c]["per_image"] for c in COLOUR]).T  # noqa: E731
    pooled = torch.cat([stack(record) for record in origins.values()])
    scale = pooled.std(dim=0).clamp(min=1e-6)
    centres = torch.stack([stack(record).mean(dim=0) for record in origins.values()])
    distances = torch.cdist(stack(row) / scale, centres / scale)
    names = list(origins)
    return [names[i] for i in distances.argmin(dim=1).tolist()]


def split_by(row: Dict, groups: List[str]) -> Dict[str, Dict]:
    """``{group: record}``: ``row``'s images (a ``set_appearance`` record) in each group of ``groups`` (one per
    image), summarised as ``summary`` does."""
    values = {name: torch.tensor(v["per_image"]) for name, v in row["statistics"].items()}
    return {
        group: summary({name: v[[g == group for g in groups]] for name, v in values.items()}, row["located_by"])
        for group in sorted(set(groups))
    }


def appearance_table(sets: Dict[str, Dict], reference: str) -> List[str]:
    """Markdown lines: per set its image count and each statistic's mean ± std, and the last column each detail
    statistic's ratio of means to ``reference``'s (a set's name in ``sets``)."""
    header = "| images | n | located by | " + " | ".join(name.replace("_", " ") for name in STATISTICS)
    header += f" | {', '.join(name.replace('_', ' ') for name in STATISTICS[3:])} / {reference}'s |"
    lines = [header, "|---|---:|---|" + "---:|" * (len(STATISTICS) + 1)]
    ref = sets[reference]["statistics"]
    for name, row in sets.items():
        stats = row["statistics"]
        cells = " | ".join(f"{stats[s]['mean']:.3g} ± {stats[s]['std']:.2g}" for s in STATISTICS)
        ratios = ", ".join(f"{stats[s]['mean'] / ref[s]['mean']:.2f}" for s in STATISTICS[3:])
        share = f" ({row['share']:.0%} of the set)" if "share" in row else ""
        lines.append(f"| {name}{share} | {row['n']} | {row['located_by']} | {cells} | {ratios} |")
    return lines


def with_assigned_origins(sets: Dict[str, dict], assigned: List[str]) -> Dict[str, dict]:
    """``sets`` with, after each set named in ``assigned``, its images split by ``nearest_origin`` among the real
    photographs' origins (rows ``<set> / like <origin>``, with each origin's ``share``); a set whose own origins are
    known (the held-out photographs) also gets ``assignment_accuracy``: how often the nearest origin is the true one."""
    prefix = f"{REAL} / "
    origins = {name[len(prefix) :]: row for name, row in sets.items() if name.startswith(prefix) and row["n"] > 0}
    if len(origins) < 2:
        raise ValueError(f"needs real photographs of two origins or more (rows '{prefix}<origin>'); found {len(origins)}.")
    added = {}
    for name in assigned:
        row = sets[name]
        truth = {origin: sets.get(f"{name} / {origin}") for origin in origins}
        if all(truth.values()):
            right = sum(group == origin for origin, part in truth.items() for group in nearest_origin(origins, part))
            row["assignment_accuracy"] = right / sum(part["n"] for part in truth.values())
        for origin, part in split_by(row, nearest_origin(origins, row)).items():
            added[f"{name} / like {origin}"] = {**part, "share": part["n"] / row["n"]}
    names = list(sets)  # each set's new rows after its own (and its origins')
    ends = {name: max(i for i, other in enumerate(names) if other == name or other.startswith(f"{name} / ")) for name in assigned}
    result = {}
    for i, name in enumerate(names):
        result[name] = sets[name]
        for owner in (owner for owner, end in ends.items() if end == i):
            result.update({key: row for key, row in added.items() if key.startswith(f"{owner} / like ")})
    return result


def origin_rows(
    name: str, images: torch.Tensor, discs: Optional[torch.Tensor], locate: str, origins: Sequence[str]
) -> Dict[str, Dict]:
    """``{"<name> / <origin>": set_appearance of that origin's images}`` (``origins``: one per image, e.g.
    ``data.schema.origins``), for each origin with an image located, when two or more have one; ``{}`` otherwise (one
    camera left to compare with, e.g. when another's images have no disc mask)."""
    rows = {}
    for origin in sorted(set(origins)):
        keep = torch.tensor([group == origin for group in origins])
        row = set_appearance(images[keep], None if discs is None else discs[keep], locate)
        if row["n"]:
            rows[f"{name} / {origin}"] = row
    return rows if len(rows) > 1 else {}


def appearance_section(
    real: torch.Tensor,
    holdout: torch.Tensor,
    synthetic: torch.Tensor,
    disc_channel: Optional[int],
    real_origins: Optional[Sequence[str]] = None,
    holdout_origins: Optional[Sequence[str]] = None,
) -> Dict:
    """The evaluation report's disc-appearance section: ``set_appearance`` of the real training photographs, the
    held-out ones (the control: how far real photographs differ by chance) and the synthetic set, all ``uint8
    [N, 3 + M, S, S]``; located by the disc masks in channel ``disc_channel``, or by the brightest point without one.
    With the origins (cameras) of the real and held-out photographs, two or more: rows per origin, and the held-out
    and synthetic images split by the origin they resemble (``with_assigned_origins``). Not computed below
    ``MIN_RESOLUTION`` px."""
    if real.shape[-1] < MIN_RESOLUTION:
        return {"computed": False, "reason": f"measured at {MIN_RESOLUTION} or more pixels a side (these: {real.shape[-1]})"}
    locate = "brightest" if disc_channel is None else "mask"
    origins, sets, by_origin = {REAL: real_origins, CONTROL: holdout_origins}, {}, {}
    for name, arrays in ((REAL, real), (CONTROL, holdout), ("synthetic", synthetic)):  # each set's rows after it
        arrays = arrays.cpu()
        discs = None if disc_channel is None else arrays[:, disc_channel] > 0
        sets[name] = set_appearance(arrays, discs, locate)
        if origins.get(name) is not None:
            by_origin[name] = origin_rows(name, arrays, discs, locate, origins[name])
        if by_origin.get(REAL):  # cameras to compare with: the real photographs' rows, then the control's
            sets.update(by_origin.get(name, {}))
    if by_origin.get(REAL):
        sets = with_assigned_origins(sets, [CONTROL, "synthetic"])
    return {"computed": True, "resolution": real.shape[-1], "window_side_px": real.shape[-1] // DISC_CROP_FRACTION, "sets": sets}
