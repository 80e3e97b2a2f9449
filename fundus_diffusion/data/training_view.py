"""The training view: schema rows -> C-channel tensors in [-1, 1], preprocessed once and cached per resolution.

Decoding and resizing a JPEG costs milliseconds; a training step wants thousands of samples a second. The view
therefore turns the whole dataset into one ``uint8 [N, C, H, W]`` array the first time a (dataset, resolution,
masks) combination is seen, stores it as ``.npy`` and memory-maps it afterwards, so host RAM stays flat whatever
the dataset size (the page cache holds the bytes, not the Python heap).
"""

import hashlib
import os
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .schema import MASK_COLUMNS, NULL_CLASS_ID, UNKNOWN_LABEL, parse_mask_names
from .transforms import array_to_tensor, pair_to_array, random_joint_flip


def default_cache_dir() -> str:
    return os.environ.get("FUNDUS_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "fundus_diffusion"))


class FundusTrainingView(Dataset):
    """A torch ``Dataset`` over a schema ``datasets.Dataset``.

    Items are ``{"pixel_values": float32 [C, H, W] in [-1, 1], "class_labels": int64}``, where unknown labels
    (-1) become ``NULL_CLASS_ID`` so that they train the unconditional branch.
    """

    def __init__(
        self,
        dataset,
        resolution: int,
        mask_names: Sequence[str] = ("disc",),
        flip: bool = True,
        cache_dir: Optional[str] = None,
        use_cache: bool = True,
    ):
        self.dataset = dataset
        self.resolution = int(resolution)
        self.mask_names = parse_mask_names(mask_names)
        self.flip = flip
        labels = np.asarray(dataset["label"], dtype=np.int64)
        self.class_labels = torch.from_numpy(np.where(labels == UNKNOWN_LABEL, NULL_CLASS_ID, labels))
        self.cache_path = None
        self._arrays = None
        if use_cache:
            self.cache_path = os.path.join(cache_dir or default_cache_dir(), self._cache_name())
            self._arrays = self._load_or_build_cache()

    @property
    def num_channels(self) -> int:
        return 3 + len(self.mask_names)

    def _cache_name(self) -> str:
        fingerprint = getattr(self.dataset, "_fingerprint", None) or str(len(self.dataset))
        key = f"{fingerprint}-{self.resolution}-{','.join(self.mask_names)}"
        return f"view-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npy"

    def _load_or_build_cache(self) -> np.ndarray:
        if not os.path.exists(self.cache_path):
            os.makedirs(os.path.dirname(self.cache_path), exist_ok=True)
            tmp = f"{self.cache_path}.{os.getpid()}.tmp"
            out = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.uint8, shape=(len(self.dataset), self.num_channels, self.resolution, self.resolution)
            )
            for i in range(len(self.dataset)):
                out[i] = self._preprocess(i)
            out.flush()
            del out
            os.replace(tmp, self.cache_path)  # atomic: a killed build never leaves a half-written cache behind
        return np.load(self.cache_path, mmap_mode="r")

    def _preprocess(self, index: int) -> np.ndarray:
        row = self.dataset[index]
        masks = {name: row[MASK_COLUMNS[name]] for name in self.mask_names}
        return pair_to_array(row["image"], masks, self.mask_names, self.resolution)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        array = self._arrays[index] if self._arrays is not None else self._preprocess(index)
        pixel_values = array_to_tensor(array)
        if self.flip:
            pixel_values = random_joint_flip(pixel_values)
        return {"pixel_values": pixel_values, "class_labels": self.class_labels[index]}
