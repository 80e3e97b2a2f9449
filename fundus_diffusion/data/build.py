"""Raw PALM / ADAM / generic folders -> one schema dataset, with a build report and a dataset card.

``scan_sources`` lists the images of every root (nothing decoded yet), ``write_rows`` decodes and checks each pair
and streams the rows into an Arrow file, and ``build_dataset`` turns that into a folder laid out as the Hub lays out
a dataset (``data/*.parquet``, the ``README.md`` card) with the ``save_to_disk`` rows in ``arrow/``. The folder
appears at ``output_dir`` only when everything succeeded.
"""

import hashlib
import io
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from datasets import Dataset, DatasetInfo, load_from_disk
from datasets.arrow_writer import ArrowWriter
from huggingface_hub import DatasetCard, DatasetCardData
from PIL import Image
from tqdm.auto import tqdm

from .. import export
from ..model_cards import LICENSE, render_dataset_card, size_category
from .adam import find_adam_training, scan_adam
from .folder import scan_folder
from .palm import is_palm_2019, palm_2024_root, scan_palm
from .readers import BadFileError, Candidate, FundusDataError, SourceScan, read_label_table, stem
from .schema import LABEL_NAMES, UNKNOWN_LABEL, annotation_column, fundus_features, mask_column
from .transforms import is_generated_source

ROWS_FORMAT_VERSION = 2  # bump when the rows written for the same files change, to invalidate cached raw builds
INVERTED_DISC_FRACTION = 0.5  # a real optic disc covers a few percent of a fundus photograph, never half of it
_EXAMPLES = 5  # file names listed per reason in reports

CITATIONS = {
    "PALM": """@article{fang2024palm,
  title   = {Open fundus photograph dataset with pathologic myopia recognition and anatomical structure annotation},
  author  = {Fang, Huihui and Li, Fei and Wu, Junde and Fu, Huazhu and Sun, Xu and Orlando, José Ignacio and
             Bogunović, Hrvoje and Zhang, Xiulan and Xu, Yanwu},
  journal = {Scientific Data}, volume = {11}, pages = {99}, year = {2024}, doi = {10.1038/s41597-024-02911-2}
}""",
    "ADAM": """@article{fang2022adam,
  title   = {{ADAM} Challenge: Detecting Age-Related Macular Degeneration From Fundus Images},
  author  = {Fang, Huihui and Li, Fei and Fu, Huazhu and others},
  journal = {IEEE Transactions on Medical Imaging}, volume = {41}, number = {10}, pages = {2828--2847}, year = {2022},
  doi     = {10.1109/TMI.2022.3172773}
}""",
    "DRISHTI-GS1": """@inproceedings{sivaswamy2014drishti,
  title     = {Drishti-{GS}: Retinal image dataset for optic nerve head ({ONH}) segmentation},
  author    = {Sivaswamy, Jayanthi and Krishnadas, S. R. and Joshi, Gopal Datt and Jain, Madhulika and others},
  booktitle = {IEEE 11th International Symposium on Biomedical Imaging (ISBI)}, pages = {53--56}, year = {2014},
  doi       = {10.1109/ISBI.2014.6867807}
}
@article{sivaswamy2015drishti,
  title   = {A comprehensive retinal image dataset for the assessment of glaucoma from the optic nerve head analysis},
  author  = {Sivaswamy, Jayanthi and Krishnadas, S. and Chakravarty, Arunava and Joshi, Gopal Datt and others},
  journal = {JSM Biomedical Imaging Data Papers}, volume = {2}, number = {1}, pages = {1004}, year = {2015}
}""",
    "DRIONS-DB": """@article{carmona2008drions,
  title   = {Identification of the optic nerve head with genetic algorithms},
  author  = {Carmona, Enrique J. and Rincón, Mariano and García-Feijoó, Julián and Martínez-de-la-Casa, José M.},
  journal = {Artificial Intelligence in Medicine}, volume = {43}, number = {3}, pages = {243--259}, year = {2008},
  doi     = {10.1016/j.artmed.2008.04.005}
}""",
}


@dataclass
class BuildReport:
    """What a build kept, excluded and changed; ``summary()`` is what ``build_dataset.py`` prints."""

    roots: List[Tuple[str, str]] = field(default_factory=list)  # (layout, path)
    mask_names: List[str] = field(default_factory=list)  # the dataset's masks: its <name>_mask columns, in order
    kept: List[Tuple[str, str, int, str]] = field(default_factory=list)  # (source, split, label, origin)
    excluded: List[Tuple[str, str]] = field(default_factory=list)  # (image, reason) found by the readers
    skipped: List[Tuple[str, str]] = field(default_factory=list)  # (file, reason) bad files left out by skip_bad
    thresholded: List[str] = field(default_factory=list)  # non-binary masks thresholded at 128
    images_only: int = 0  # images kept without a disc mask (require_masks=False): not annotated for the disc
    annotated: Dict[str, int] = field(default_factory=dict)  # kept images annotated for each mask
    notes: List[str] = field(default_factory=list)

    def counts(self, column: str) -> Dict[str, int]:
        """Kept images per ``source``, ``split``, ``label`` (by name) or ``origin``."""
        index = ("source", "split", "label", "origin").index(column)
        values = [k[index] for k in self.kept]
        if column == "label":
            values = [LABEL_NAMES[v] if v != UNKNOWN_LABEL else "unknown" for v in values]
        return dict(sorted(Counter(values).items()))

    def summary(self) -> str:
        lines = ["Build report", *(f"  read {layout} {path}" for layout, path in self.roots), f"  kept: {len(self.kept)} images"]
        for column in ("source", "split", "label"):
            counts = ", ".join(f"{k} {v}" for k, v in self.counts(column).items())
            lines.append(f"    by {column}: {counts or '-'}")
        annotated = ", ".join(f"{m} {self.annotated.get(m, 0)}" for m in self.mask_names)
        lines.append(f"  annotated, of {len(self.kept)}: {annotated or 'no masks'} (the rest: not annotated, no mask)")
        lines.append(f"  excluded: {len(self.excluded)} images")
        lines += [f"    {reason}: {len(paths)}{_examples(paths)}" for reason, paths in _by_reason(self.excluded).items()]
        lines.append(f"  skipped bad files (--skip_bad): {len(self.skipped)}")
        lines += [f"    {path}: {reason}" for path, reason in self.skipped]
        lines.append(f"  masks thresholded at 128 (not binary): {len(self.thresholded)}{_examples(self.thresholded)}")
        if self.images_only:
            lines.append(f"  kept without a disc mask (images only, not annotated for the disc): {self.images_only}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _examples(paths: Sequence[str], limit: int = _EXAMPLES) -> str:
    if not paths:
        return ""
    names = [os.path.basename(p) for p in paths[:limit]]
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return f" ({', '.join(names)}{more})"


def _by_reason(items: Sequence[Tuple[str, str]]) -> Dict[str, List[str]]:
    by_reason: Dict[str, List[str]] = {}
    for path, reason in items:
        by_reason.setdefault(reason, []).append(path)
    return by_reason


def detect_layout(path: str) -> Optional[str]:
    """``"folder"``, ``"palm"`` or ``"adam"`` for a raw dataset folder, None when it is none of them."""
    if os.path.isdir(os.path.join(path, "images")):
        return "folder"
    if palm_2024_root(path) is not None or is_palm_2019(path):
        return "palm"
    if find_adam_training(path)[0] is not None:
        return "adam"
    return None


def scan_sources(
    palm_dirs: Iterable[str] = (),
    adam_dirs: Iterable[str] = (),
    folder_dirs: Iterable[str] = (),
    labels: Optional[str] = None,
    include_amd: bool = False,
    require_masks: bool = True,
) -> Tuple[List[Candidate], BuildReport]:
    """List every image of every root, apply ``labels`` (a CSV / XLSX of image name, label) and check ids are unique.

    Names in ``labels`` may be an id (``palm/Training/P0001``, unambiguous across sources), a file name or a stem.
    """
    scans: List[SourceScan] = [scan_palm(d, require_masks=require_masks) for d in palm_dirs]
    scans += [scan_adam(d, include_amd=include_amd, require_masks=require_masks) for d in adam_dirs]
    scans += [scan_folder(d, require_masks=require_masks) for d in folder_dirs]
    if not scans:
        raise FundusDataError("No input given. Fix: pass at least one of --palm_dir, --adam_dir, --folder_dir.")
    report = BuildReport(roots=[(s.layout, s.root) for s in scans], mask_names=merged_mask_names(scans))
    candidates = [c for s in scans for c in s.candidates]
    for s in scans:
        report.excluded += s.excluded
        report.notes += s.notes
    seen: Dict[str, str] = {}
    for c in candidates:
        if c.id in seen:
            raise FundusDataError(
                f"Duplicate id {c.id!r}: {seen[c.id]} and {c.image_path}. Fix: pass each dataset once (the PALM 2019 "
                "and 2024 releases hold the same images), give generic folders distinct names, and keep one file "
                "per image name (not both x.jpg and x.png)."
            )
        seen[c.id] = c.image_path
    if labels:
        _apply_labels(candidates, labels, report)
    report.images_only = sum("disc" not in c.masks for c in candidates)
    return candidates, report


def merged_mask_names(scans: Sequence[SourceScan]) -> List[str]:
    """The masks of a dataset built from ``scans``: every source's, the disc first, then in order of appearance."""
    names = ["disc"]
    for scan in scans:
        names += [name for name in scan.mask_names if name not in names]
    return names


def _apply_labels(candidates: List[Candidate], path: str, report: BuildReport):
    table, used = read_label_table(path), set()
    for c in candidates:
        name = os.path.basename(c.image_path)
        key = next((k for k in (c.id, name, stem(name)) if k in table), None)
        if key is not None:
            c.label = table[key]
            used.add(key)
    unused = sorted(set(table) - used)
    if table and not used:
        example = next((c for c in candidates), None)
        forms = f" (e.g. {example.id!r}, {os.path.basename(example.image_path)!r} or {stem(example.image_path)!r})" if example else ""
        raise FundusDataError(
            f"--labels {path}: none of its {len(table)} names matches an image of the inputs (first: {unused[0]!r}). "
            f"Fix: name each image by its id, file name or stem{forms}, or pass the folder these labels belong to."
        )
    report.notes.append(f"{path}: labels given for {len(used)} names")
    if unused:
        report.notes.append(f"{path}: {len(unused)} names match no image (e.g. {unused[0]!r})")


def scan_signature(candidates: Sequence[Candidate], **options) -> str:
    """A hash of what a build would read: every candidate, its files' sizes and times, and the options."""
    hasher = hashlib.sha1(json.dumps([ROWS_FORMAT_VERSION, options], sort_keys=True).encode())
    for c in candidates:
        hasher.update(json.dumps(asdict(c), sort_keys=True).encode())
        for path in (c.image_path, *c.masks.values()):
            if path:
                st = os.stat(path)
                hasher.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return hasher.hexdigest()[:20]


def _open(path: str, data: bytes, kind: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # decodes everything, so a truncated file fails here and not in the middle of training
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadFileError(
            path,
            f"cannot read this {kind} ({without_reprs(err)})",
            "re-download or re-export the file, or pass --skip_bad to leave the pair out",
        ) from err
    return image


def without_reprs(err: BaseException) -> str:
    """An exception's text without object reprs (PIL: "cannot identify image file <_io.BytesIO object at 0x..>")."""
    text = re.sub(r"\s*<[^<>]* object at 0x[0-9a-fA-F]+>", "", str(err)).strip()
    return text or type(err).__name__


def to_rgb(image: Image.Image) -> np.ndarray:
    """``uint8 [H, W, 3]`` of any image: 16- and 32-bit greyscale (``I;16``, ``I``) scaled from their full range
    rather than clipped at 255, which makes nearly every pixel white; float images (``F``) scaled from [0, 1]."""
    if image.mode.startswith("I") or image.mode == "F":
        array = np.asarray(image).astype(np.float64)
        if image.mode == "F":
            scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0
        else:
            scale = 255.0 / 65535.0 if array.max(initial=0) > 255 or image.mode.startswith("I;16") else 1.0
        grey = np.clip(np.round(array * scale), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


EXIF_ORIENTATION = 0x0112


def read_image(path: str) -> Tuple[dict, Tuple[int, int], bool]:
    """The stored image (original bytes for RGB JPEG / PNG, else converted to RGB PNG), its size, and whether it
    was converted.

    A photograph with an EXIF orientation tag is converted too, its pixels kept as stored: ``datasets`` would turn
    the original bytes by the tag when decoding them, while its masks (checked against the stored size) stay as they
    are, and the two would no longer line up."""
    with open(path, "rb") as f:
        data = f.read()
    image = _open(path, data, "image")
    turned = image.getexif().get(EXIF_ORIENTATION, 1) != 1
    converted = turned or not (image.format in ("JPEG", "PNG") and image.mode == "RGB")
    if converted:
        data = _png(to_rgb(image))
    return {"bytes": data, "path": os.path.basename(path)}, image.size, converted


def read_mask(path: str, image_path: str, size: Tuple[int, int], zero_is_structure: bool) -> Tuple[np.ndarray, bool]:
    """A mask as a boolean structure map, and whether it had to be thresholded (it held values besides 0 and 255).

    Masks that hold only 0 and 1 are read as 0 / 1 rather than thresholded to nothing.
    """
    with open(path, "rb") as f:
        mask = _open(path, f.read(), "mask")
    if mask.size != size:
        raise BadFileError(
            path,
            f"the mask is {mask.size[0]}x{mask.size[1]} px but its image {image_path} is {size[0]}x{size[1]} px",
            "export the mask at the image's size (resize with nearest neighbour if it was scaled) or remove the pair",
        )
    values = np.asarray(mask.convert("L"))
    present = np.flatnonzero(np.bincount(values.ravel(), minlength=256))
    threshold = 1 if present.max() <= 1 else 128
    structure = values < threshold if zero_is_structure else values >= threshold
    return structure, threshold == 128 and not set(present.tolist()) <= {0, 255}


def load_pair(c: Candidate, mask_names: Sequence[str]) -> Tuple[dict, List[str], bool]:
    """Decode and check one candidate: the schema row with the masks ``mask_names``, the mask files that were
    thresholded, and whether the image was converted to RGB.

    A mask the candidate is not annotated for is stored as None with its flag False; an annotated mask without a
    file ("absent") as an all-zero mask.
    """
    image, size, converted = read_image(c.image_path)
    thresholded, masks = [], {}
    for name, path in c.masks.items():
        if path is None:
            masks[name] = np.zeros(size[::-1], dtype=bool)
            continue
        masks[name], was_thresholded = read_mask(path, c.image_path, size, c.zero_is_structure)
        if was_thresholded:
            thresholded.append(path)
    fraction = masks["disc"].mean() if "disc" in masks else 0.0
    # A generated set written back as a folder (export_imagefolder names its source) has its masks in the schema's
    # polarity by construction: a large disc there is the model's, for the evaluation to judge, not a flipped file.
    if fraction > INVERTED_DISC_FRACTION and not is_generated_source(c.origin):
        polarity = "0 = disc" if c.zero_is_structure else "255 = disc"
        raise BadFileError(
            c.masks["disc"],
            f"the disc mask covers {fraction:.0%} of the image, so its polarity is probably inverted (read as {polarity})",
            "PALM / ADAM masks (0 = disc) go with --palm_dir / --adam_dir, generic folders need 255 = disc: "
            "invert the masks (PIL.ImageOps.invert) or pass the folder with the right flag",
        )
    row = {"id": c.id, "source": c.source, "split": c.split, "image": image, "label": c.label}
    for name in mask_names:
        annotated = name in masks
        row[mask_column(name)] = {"bytes": _png(masks[name].astype(np.uint8) * 255), "path": None} if annotated else None
        row[annotation_column(name)] = annotated
    return row, thresholded, converted


def _load_or_error(c: Candidate, mask_names: Sequence[str]):
    try:
        return load_pair(c, mask_names)
    except BadFileError as err:
        return err


def ordered_map(fn: Callable, items: Sequence, workers: int) -> Iterator:
    """``map(fn, items)`` on a thread pool (PIL and zlib release the GIL), in order, a bounded window ahead."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def write_rows(
    candidates: Sequence[Candidate],
    path: str,
    report: BuildReport,
    skip_bad: bool = False,
    progress: bool = True,
    num_workers: Optional[int] = None,
) -> BuildReport:
    """Decode, check and write every candidate as a schema row with ``report.mask_names`` into the Arrow file
    ``path`` (atomically)."""

    features = fundus_features(report.mask_names)
    workers = num_workers if num_workers is not None else min(4, os.cpu_count() or 1)
    tmp, converted = f"{path}.{uuid.uuid4().hex}.tmp", []
    try:
        with ArrowWriter(features=features, path=tmp) as writer:
            results = ordered_map(lambda c: _load_or_error(c, report.mask_names), candidates, workers)
            for c, result in tqdm(zip(candidates, results), total=len(candidates), desc="Reading images", disable=not progress):
                if isinstance(result, BadFileError):
                    if not skip_bad:
                        raise result
                    report.skipped.append((result.path, result.reason))
                    continue
                row, thresholded, was_converted = result
                writer.write(features.encode_example(row))
                report.kept.append((c.source, c.split, c.label, c.origin))
                for name in c.masks:
                    report.annotated[name] = report.annotated.get(name, 0) + 1
                report.thresholded += thresholded
                converted += [c.image_path] * was_converted
            writer.finalize()
        if converted:
            report.notes.append(f"{len(converted)} images stored converted to RGB{_examples(converted)}")
        if not report.kept:
            raise nothing_left_error(report)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return report


def nothing_left_error(report: BuildReport) -> FundusDataError:
    dropped = _by_reason(report.excluded + report.skipped).items()
    reasons = "\n".join(f"  {reason}: {len(paths)}{_examples(paths, limit=50)}" for reason, paths in dropped)
    return FundusDataError(
        f"No image is left after filtering {', '.join(p for _, p in report.roots)}. Why each image was dropped:\n{reasons or '  (no images found)'}\n"
        "Fix: see the reasons above (e.g. add the disc masks, pass --include_amd or --images_only, repair bad files)."
    )


def citations_for(origins: Iterable[str]) -> List[str]:
    """BibTeX for the datasets among ``origins`` (matched by name: ``PALM``, ``DRISHTI-GS1``, ``drions``, ...)."""
    keys = {o.lower().split("-")[0].replace("folder:", "") for o in origins}
    return [bib for name, bib in CITATIONS.items() if name.lower().split("-")[0] in keys]


def dataset_card(report: BuildReport, pretty_name: Optional[str] = None):
    """The ``README.md`` of a built dataset (``model_cards/dataset.md``): metadata (licence, tasks, counts, masks) and
    a body with the counts, the masks and how many images each is annotated on, the build's exclusions and the
    sources' citations."""
    n = len(report.kept)
    annotated = {name: report.annotated.get(name, 0) for name in report.mask_names}
    masked = [name for name, count in annotated.items() if count]  # an images-only build lists masks none of it has
    pretty_name = pretty_name or f"Fundus photographs with {' and '.join(masked) or 'no'} masks"
    counts = {c: report.counts(c) for c in ("source", "split", "label", "origin")}
    excluded = {reason: len(p) for reason, p in _by_reason(report.excluded).items()}
    data = DatasetCardData(
        **LICENSE,
        pretty_name=pretty_name,
        task_categories=["image-segmentation", "image-classification", "unconditional-image-generation"],
        tags=["medical", "ophthalmology", "fundus", "retina", "pathologic-myopia", "optic-disc", "fundus-diffusion"],
        size_categories=[size_category(n)],
        fundus_diffusion={
            "num_samples": n,
            **{f"{c}_counts": counts[c] for c in ("source", "split", "label")},
            "excluded": excluded,
            "skipped_bad_files": len(report.skipped),
            "thresholded_masks": len(report.thresholded),
            "images_without_disc_mask": report.images_only,
            "mask_names": list(report.mask_names),
            "annotated_images": annotated,
        },
    )
    return render_dataset_card(
        "dataset",
        data,
        roots=[f"{os.path.basename(p)} ({layout} layout)" for layout, p in report.roots],
        num_samples=n,
        counts={c: counts[c] for c in ("source", "origin", "split", "label")},
        excluded=excluded,
        skipped=len(report.skipped),
        thresholded=len(report.thresholded),
        images_only=report.images_only,
        annotated=annotated,
        citations=citations_for(counts["origin"]),
    )


def build_dataset(
    output_dir: str,
    palm_dirs: Iterable[str] = (),
    adam_dirs: Iterable[str] = (),
    folder_dirs: Iterable[str] = (),
    labels: Optional[str] = None,
    include_amd: bool = False,
    require_masks: bool = True,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> BuildReport:
    """Build one schema dataset from raw roots into ``output_dir`` (the Hub layout with its ``README.md`` card, and the
    ``save_to_disk`` rows in ``arrow/``).

    Everything is written into a temporary folder beside ``output_dir`` and moved into place at the end, so a failed
    build leaves ``output_dir`` untouched.
    """

    output_dir = os.path.abspath(output_dir)
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(f"{output_dir} already exists. Fix: choose another --output_dir or pass --overwrite.")
    parent = os.path.dirname(output_dir)
    try:
        os.makedirs(parent, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent, prefix=".write-probe-"):
            pass
    except OSError as err:  # a file in the way, no permission, a read-only mount: say so before reading anything
        raise FundusDataError(
            f"--output_dir {output_dir}: cannot write into {parent} ({err.strerror or type(err).__name__}). Fix: "
            "choose a writable --output_dir."
        ) from None
    candidates, report = scan_sources(palm_dirs, adam_dirs, folder_dirs, labels, include_amd, require_masks)
    remove_stale_builds(output_dir)
    tmp = tempfile.mkdtemp(prefix=building_prefix(output_dir), dir=parent)
    try:
        with open(os.path.join(tmp, BUILDER_FILE), "w", encoding="utf-8") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
        write_rows(candidates, os.path.join(tmp, "rows.arrow"), report, skip_bad=skip_bad, progress=progress)
        info = DatasetInfo(features=fundus_features(report.mask_names), citation="\n".join(citations_for(report.counts("origin"))))
        dataset = Dataset.from_file(os.path.join(tmp, "rows.arrow"), info=info)
        staged = os.path.join(tmp, "dataset")
        dataset.save_to_disk(staged)
        del dataset
        dataset_card(report).save(os.path.join(staged, "README.md"))
        export.write_hub_layout(staged)  # data/*.parquet for load_dataset(output_dir); the Arrow files into arrow/
        if os.path.exists(output_dir):  # --overwrite: swap the old folder out only now that the new one is complete
            os.replace(output_dir, os.path.join(tmp, "previous"))
        os.replace(staged, output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


BUILDER_FILE = "builder.json"  # the process building in a hidden folder: the folder is stale once it is gone
STALE_AFTER_S = 24 * 3600  # a folder that names no process (or another host's) counts as stale after this long


def building_prefix(output_dir: str) -> str:
    return f".{os.path.basename(output_dir)}.building-"


def remove_stale_builds(output_dir: str) -> List[str]:
    """Delete the hidden ``.NAME.building-*`` folders that killed builds of ``output_dir`` left beside it (the
    builder process is gone, or, when that cannot be told, the folder is older than a day); return them."""
    parent, prefix, removed = os.path.dirname(output_dir), building_prefix(output_dir), []
    for entry in os.scandir(parent):
        if entry.name.startswith(prefix) and entry.is_dir(follow_symlinks=False) and _is_stale(entry.path):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


def _is_stale(folder: str) -> bool:
    try:
        with open(os.path.join(folder, BUILDER_FILE), encoding="utf-8") as f:
            builder = json.load(f)
        if builder.get("host") == socket.gethostname():
            return not _process_alive(int(builder["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return time.time() - os.stat(folder).st_mtime > STALE_AFTER_S
    except OSError:
        return False


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def push_dataset_to_hub(output_dir: str, repo_id: str, private: Optional[bool] = None, token: Optional[str] = None):
    """Push a built folder and its card to the Hub, keeping the ``dataset_info`` / ``configs`` metadata that
    ``Dataset.push_to_hub`` writes into the Hub's README."""

    load_from_disk(export.arrow_folder(output_dir) or output_dir).push_to_hub(repo_id, private=private, token=token)
    card = DatasetCard.load(os.path.join(output_dir, "README.md"))
    hub_card = DatasetCard.load(repo_id, repo_type="dataset", token=token)
    for key in ("dataset_info", "configs"):
        if key in hub_card.data:
            card.data[key] = hub_card.data[key]
    card.push_to_hub(repo_id, token=token, repo_type="dataset", commit_message="Add the fundus-diffusion dataset card")
