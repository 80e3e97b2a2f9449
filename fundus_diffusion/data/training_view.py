"""The training view: schema rows -> C-channel tensors in [-1, 1], preprocessed once and cached per resolution.

Decoding and resizing a JPEG costs milliseconds; a training step wants thousands of samples a second. The view
therefore turns the whole dataset into one ``uint8 [N, C, H, W]`` array the first time a (dataset, resolution,
masks) combination is seen, stores it as ``.npy`` and memory-maps it afterwards, so host RAM stays flat whatever
the dataset size (the page cache holds the bytes, not the Python heap).
"""

import hashlib
import os
import shutil
import uuid
from typing import Optional, Sequence

import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .build import ordered_map
from .schema import NULL_CLASS_ID, UNKNOWN_LABEL, annotation_matrix, mask_column, origins, parse_mask_names
from .transforms import is_generated, pair_to_array

CACHE_VERSION = 3  # bump when preprocessing changes, so that old caches are not reused


def default_cache_dir() -> str:
    return os.environ.get("FUNDUS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "fundus_diffusion"))


class FundusTrainingView(Dataset):
    """A torch ``Dataset`` over a schema ``datasets.Dataset``.

    Items are ``{"pixel_values": float32 [C, H, W] in [-1, 1], "class_labels": int64, "origin_ids": int64,
    "mask_annotated": bool [M], "index": int}``, where unknown labels (-1) become ``NULL_CLASS_ID`` so that they train
    the unconditional branch, ``origin_ids`` index ``origin_names`` (each image's camera or collection:
    ``schema.origins``; sorted names) for ``--origin_conditioning``,
    ``mask_annotated`` says per mask whether the sample is annotated for it (an unannotated mask's channel is -1 and
    must not be trained on: ``training.ddpm.diffusion_loss`` leaves it out), and ``index`` is the row, by which the
    training batches flip it (``training.batches.epoch_flips``: drawn from the seed and epoch, not here, so that a
    DataLoader's workers and its fetching ahead cannot change which samples a resumed run flips). A mask the dataset
    has no column for, or one annotated on none of its images, is an error.

    Several processes (``accelerate launch``) may create the same view at once: the first builds the cache under
    a file lock (with ``build_threads`` threads, default up to 4), the others wait for it and then memory-map the
    finished file. ``name`` is how errors call the dataset (e.g. ``--dataset data/od``); ``antialiased_masks``: masks
    framed with grey edges (``transforms.frame_pair``; ``--antialiased_masks``).
    """

    def __init__(
        self,
        dataset,
        resolution: int,
        mask_names: Sequence[str] = ("disc",),
        cache_dir: Optional[str] = None,
        use_cache: bool = True,
        build_threads: Optional[int] = None,
        name: str = "the dataset",
        antialiased_masks: bool = False,
    ):
        self.dataset = dataset
        self.antialiased_masks = antialiased_masks
        self.resolution = int(resolution)
        self.mask_names = parse_mask_names(mask_names)
        self.mask_annotated = annotation_matrix(dataset, self.mask_names, what=name)
        unannotated = [n for n, count in zip(self.mask_names, self.mask_annotated.sum(axis=0)) if count == 0]
        if unannotated:
            raise ValueError(
                f"No image of {name} is annotated for {', '.join(unannotated)}: nothing would train "
                f"that channel. Fix: leave it out of --masks (--masks none for images alone), or annotate some images."
            )
        labels = np.asarray(dataset["label"], dtype=np.int64)
        self.class_labels = torch.from_numpy(np.where(labels == UNKNOWN_LABEL, NULL_CLASS_ID, labels))
        row_origins = origins(list(dataset["id"]), list(dataset["source"]))
        self.origin_names = sorted(set(row_origins))
        self.origin_ids = torch.tensor([self.origin_names.index(o) for o in row_origins], dtype=torch.long)
        self.cache_path = None
        self._arrays = None
        if use_cache:
            self.cache_path = os.path.join(cache_dir or default_cache_dir(), self._cache_name())
            self._arrays = self._load_or_build_cache(build_threads)

    def origin_counts(self) -> dict:
        """``{origin: images}`` in ``origin_names`` order: what an origin-conditioned model records and samples by."""
        counts = torch.bincount(self.origin_ids, minlength=len(self.origin_names)).tolist()
        return dict(zip(self.origin_names, counts))

    def partially_annotated(self) -> dict:
        """``{mask: (images annotated, images)}`` for each mask some images of the view are not annotated for."""
        counts = self.mask_annotated.sum(axis=0)
        return {n: (int(c), len(self)) for n, c in zip(self.mask_names, counts) if c < len(self)}

    @property
    def labelled(self) -> bool:
        """Whether some image of the view has a PM / non-PM label (the rest train as the null class)."""
        return bool((self.class_labels != NULL_CLASS_ID).any())

    @property
    def num_channels(self) -> int:
        return 3 + len(self.mask_names)

    @property
    def shape(self):
        return (len(self.dataset), self.num_channels, self.resolution, self.resolution)

    def _cache_name(self) -> str:
        fingerprint = getattr(self.dataset, "_fingerprint", None) or str(len(self.dataset))
        key = f"{CACHE_VERSION}-{fingerprint}-{len(self.dataset)}-{self.resolution}-{','.join(self.mask_names)}"
        key += "-antialiased" if self.antialiased_masks else ""  # the key of a plain view as before
        return f"view-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"

    def _load_or_build_cache(self, build_threads: Optional[int]) -> np.ndarray:
        os.makedirs(os.path.dirname(self.cache_path), exist_ok=True)
        with FileLock(f"{self.cache_path}.lock"):
            if not os.path.exists(self.cache_path) or _npy_shape(self.cache_path) != self.shape:
                self._build_cache(build_threads)
        return self._open_cache()

    def _open_cache(self) -> np.ndarray:
        return np.load(self.cache_path, mmap_mode="r")

    def __getstate__(self):
        # Spawned DataLoader workers get the path and map the file themselves; pickling the map would copy it.
        return {**self.__dict__, "_arrays": None}

    def _build_cache(self, build_threads: Optional[int]):
        """Stream the preprocessed samples into a temporary ``.npy`` (plain writes, so RSS stays flat) and move it
        into place atomically: a killed build never leaves a half-written cache behind."""
        threads = build_threads if build_threads is not None else min(4, os.cpu_count() or 1)
        check_cache_fits(self.shape, os.path.dirname(self.cache_path), threads)
        tmp = f"{self.cache_path}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                header = {"descr": "|u1", "fortran_order": False, "shape": self.shape}
                np.lib.format.write_array_header_1_0(f, header)
                arrays = ordered_map(self._preprocess, range(len(self.dataset)), threads)
                for array in tqdm(arrays, total=len(self.dataset), desc=f"Caching the {self.resolution} px view", leave=False):
                    f.write(array.tobytes())
            os.replace(tmp, self.cache_path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def _preprocess(self, index: int) -> np.ndarray:
        row = self.dataset[index]
        masks = {name: row[mask_column(name)] for name in self.mask_names}
        return pair_to_array(
            row["image"], masks, self.mask_names, self.resolution, framed=is_generated(row),
            antialiased_masks=self.antialiased_masks,
        )

    def __len__(self) -> int:
        return len(self.dataset)

    def _cached(self) -> Optional[np.ndarray]:
        if self._arrays is None and self.cache_path is not None:
            self._arrays = self._open_cache()
        return self._arrays

    def __getitem__(self, index: int):
        return self.__getitems__([index])[0]

    def __getitems__(self, indices):
        """A whole batch at once (the DataLoader calls this): each sample is read straight from the memory map into
        one float array, in numpy, so that no per-sample tensor operation wakes torch's thread pool."""
        arrays = self._cached()
        samples = [arrays[i] if arrays is not None else self._preprocess(i) for i in indices]
        pixel_values = torch.from_numpy(to_unit_range(samples))
        annotated = torch.from_numpy(self.mask_annotated)
        return [
            {
                "pixel_values": x, "class_labels": self.class_labels[i], "origin_ids": self.origin_ids[i],
                "mask_annotated": annotated[i], "index": i,
            }  # fmt: skip
            for x, i in zip(pixel_values, indices)
        ]


def check_cache_fits(shape, cache_dir: str, threads: int) -> None:
    """Refuse a cache that cannot fit before spending minutes on it: the ``uint8`` array on the cache's disk, and
    each preprocessing thread's decoded and resized images (about 8 bytes a pixel a channel) in free memory."""
    n, channels, height, width = shape
    needed = n * channels * height * width
    free = shutil.disk_usage(cache_dir).free
    if needed > free:
        raise ValueError(
            f"The {height} px training cache needs {human_bytes(needed)} but {cache_dir} has {human_bytes(free)} free. "
            "Fix: a lower --resolution, or a --training_cache_dir (or $FUNDUS_CACHE) on a larger disk."
        )
    working = threads * 8 * channels * height * width
    available = available_memory()
    if available is not None and working > available:
        raise ValueError(
            f"Preprocessing at {height} px needs about {human_bytes(working)} of memory but {human_bytes(available)} "
            "is available. Fix: a lower --resolution."
        )


def available_memory():
    """Bytes of memory available to new allocations, page cache included (Linux's MemAvailable; None elsewhere)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def human_bytes(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def to_unit_range(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """``uint8`` arrays of one shape -> one ``float32 [N, ...]`` array in [-1, 1], bit for bit what
    ``transforms.array_to_tensor`` gives, but in two passes instead of three and single-threaded: on a busy CPU,
    torch's thread pool costs more than it saves at this size."""
    out = np.empty((len(arrays), *arrays[0].shape), dtype=np.float32)
    for array, row in zip(arrays, out):
        np.divide(array, np.float32(127.5), out=row)
    out -= np.float32(1.0)
    return out


def _npy_shape(path: str):
    """The shape of a ``.npy`` file (an unreadable one reads as no shape, so it gets rebuilt)."""
    try:
        return np.load(path, mmap_mode="r").shape
    except (OSError, ValueError):
        return None
