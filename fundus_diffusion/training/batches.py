"""Training batches from a ``FundusTrainingView``: the whole set resident on the GPU, or a DataLoader.

The real sets this package is for are a few hundred to a few thousand images: as ``uint8`` they fit any training GPU
(1,000 images at 360 px with 4 channels are 0.5 GB), and batching them there takes the host out of the step. Both
trainers choose with ``--data_on_device`` (``auto``: on the GPU when the set takes under a quarter of its free memory).
"""

import itertools
import math
import os
from dataclasses import dataclass
from typing import Dict, Iterator, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..data import FundusTrainingView, load_fundus_dataset
from ..data.transforms import flip_where
from .args import data_seed


class DeviceBatches:
    """The whole training view as one ``uint8`` tensor on the device, batched, scaled to [-1, 1] and flipped there
    (``random_flip``); batches hold ``pixel_values``, ``flipped`` (``[B]`` bool: mirrored left-right), ``class_labels``,
    ``origin_ids`` and ``mask_annotated`` (``[B, M]`` bool), as the view's items.

    A DataLoader spends most of a GAN step at 360 px converting and copying floats; the real sets are ~1k images
    (0.5 GB as uint8 at 360 px, 4 channels), which fit any training GPU. Each epoch's order and flips come from
    ``seed + epoch``, so a resumed run sees the batches an uninterrupted one would. Processes take disjoint slices.
    """

    def __init__(
        self,
        view,
        batch_size: int,
        device,
        seed: int = 0,
        process_index: int = 0,
        num_processes: int = 1,
        accumulation_steps: int = 1,
        random_flip: bool = True,
    ):
        arrays = np.load(view.cache_path, mmap_mode="r")
        self.data = torch.empty(arrays.shape, dtype=torch.uint8, device=device)
        for start in range(0, len(arrays), 256):  # chunked, so host RAM never holds the whole array
            self.data[start : start + 256] = torch.from_numpy(np.array(arrays[start : start + 256]))
        self.labels = view.class_labels.to(device)
        self.origin_ids = view.origin_ids.to(device)
        self.mask_annotated = torch.from_numpy(view.mask_annotated).to(device)
        self.batch_size, self.seed, self.random_flip = batch_size, seed, random_flip
        self.process_index, self.num_processes = process_index, num_processes
        batches = len(arrays) // num_processes // batch_size
        self.num_batches = whole_steps(batches, accumulation_steps, len(arrays), batch_size, num_processes)

    def __len__(self) -> int:
        return self.num_batches

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Dict[str, torch.Tensor]]:
        order, flips = epoch_order_and_flips(self.seed, epoch, len(self.data), self.random_flip)
        order, flips = order[self.process_index :: self.num_processes].to(self.data.device), flips.to(self.data.device)
        for i in range(skip, self.num_batches):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = self.data[index].float().div_(127.5).sub_(1.0)
            yield {
                "pixel_values": flip_where(x, flips[index]),
                "flipped": flips[index],
                "class_labels": self.labels[index],
                "origin_ids": self.origin_ids[index],
                "mask_annotated": self.mask_annotated[index],
            }


def epoch_order_and_flips(seed: int, epoch: int, n: int, random_flip: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """An epoch's shuffled order of ``n`` samples and, per sample index, whether it is flipped left-right: from
    ``seed + epoch`` on the CPU, so the same on every device and for a resumed run. Without ``random_flip`` none is
    flipped, in the same order."""
    rng = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=rng)
    return order, (torch.rand(n, generator=rng) < 0.5) & random_flip


class LoaderBatches:
    """The same interface over an accelerate-prepared DataLoader (the memory-mapped cache, any dataset size).

    The shuffle order comes from its own generator, reseeded with ``seed + epoch`` each epoch, as ``DeviceBatches``
    does: without it accelerate seeds the order of several processes from the global generator (``--seed``, not
    ``--data_seed``), and a resumed epoch would be shuffled differently from the uninterrupted one. Each sample is
    flipped by its index as ``DeviceBatches`` flips it (``epoch_order_and_flips``), here in the main process: drawn in
    the view, the flips came from the global generator, which the DataLoader's fetching one batch ahead (and its
    workers' own seeds) advanced differently in a resumed run.
    """

    def __init__(
        self,
        accelerator,
        view,
        batch_size: int,
        num_workers: int = 0,
        accumulation_steps: int = 1,
        seed: int = 0,
        random_flip: bool = True,
    ):
        self.seed, self.order, self.random_flip = seed, torch.Generator().manual_seed(seed), random_flip
        loader = DataLoader(
            view,
            batch_size=batch_size,
            shuffle=True,
            generator=self.order,  # the sampler's; accelerate synchronises it across processes
            drop_last=True,
            num_workers=num_workers,
            # Not persistent: a new iterator each epoch draws the workers' base seed from ``generator`` before the
            # epoch's order, as a resumed run's first epoch does (persistent workers drew it once, at the first epoch).
            persistent_workers=False,
            pin_memory=accelerator.device.type == "cuda",
        )
        self.accelerator, self.loader, self.num_samples = accelerator, accelerator.prepare(loader), len(view)
        self.num_batches = whole_steps(
            len(self.loader), accumulation_steps, len(view), batch_size, accelerator.num_processes
        )

    def __len__(self) -> int:
        return self.num_batches

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[Dict[str, torch.Tensor]]:
        self.order.manual_seed(self.seed + epoch)
        self.loader.set_epoch(epoch)
        _, flips = epoch_order_and_flips(self.seed, epoch, self.num_samples, self.random_flip)
        batches = self.accelerator.skip_first_batches(self.loader, skip) if skip else self.loader
        for batch in itertools.islice(batches, max(self.num_batches - skip, 0)):
            index = batch.pop("index")
            batch["flipped"] = flips.to(index.device)[index]
            batch["pixel_values"] = flip_where(batch["pixel_values"], batch["flipped"])
            yield batch


def whole_steps(num_batches: int, accumulation_steps: int, samples: int, batch_size: int, num_processes: int) -> int:
    """The batches of an epoch that make whole optimizer steps: the rest is dropped, so that every epoch ends on a
    step on every process (accelerate only knows an epoch's end for a prepared DataLoader read to its end). Raises
    when that leaves none."""
    whole = num_batches - num_batches % accumulation_steps
    if whole == 0:
        raise ValueError(
            f"{samples} samples make {num_batches} batch(es) of {batch_size} per process on {num_processes} "
            f"process(es), fewer than the {accumulation_steps} of one optimizer step (--gradient_accumulation_steps "
            f"{accumulation_steps}). Fix: a lower --gradient_accumulation_steps or --train_batch_size, or fewer "
            "processes."
        )
    return whole


def fits_on_device(view, device) -> bool:
    """On CUDA, when the uint8 cache takes under a quarter of the free GPU memory."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return os.path.getsize(view.cache_path) < free / 4


def make_batches(accelerator, view, args, seed: int):
    """``DeviceBatches`` or ``LoaderBatches`` as ``args.data_on_device`` says; with ``auto`` every process must fit
    the set, so that all of them take the same path."""
    on_device = args.data_on_device == "yes"
    if args.data_on_device == "auto":
        fits = torch.tensor([int(fits_on_device(view, accelerator.device))], device=accelerator.device)
        on_device = bool(accelerator.gather(fits).all())
    accumulation = args.gradient_accumulation_steps
    if on_device:
        return DeviceBatches(
            view, args.train_batch_size, accelerator.device, seed, accelerator.process_index,
            accelerator.num_processes, accumulation, args.random_flip,
        )  # fmt: skip
    return LoaderBatches(
        accelerator, view, args.train_batch_size, args.dataloader_num_workers, accumulation, seed, args.random_flip
    )


def load_training_batches(accelerator, args, mask_names):
    """The cached training view of ``args.dataset`` (built once, by the main process first) and this process's
    batches of it."""
    with accelerator.main_process_first():
        view = FundusTrainingView(
            load_fundus_dataset(args.dataset), args.resolution, mask_names, cache_dir=args.training_cache_dir,
            name=f"--dataset {args.dataset}", antialiased_masks=args.antialiased_masks,
        )  # fmt: skip
    if len(view) < args.train_batch_size:
        raise ValueError(f"The dataset has {len(view)} samples, fewer than --train_batch_size {args.train_batch_size}.")
    return view, make_batches(accelerator, view, args, data_seed(args))


@dataclass(frozen=True)
class EpochPlan:
    """How many optimizer steps and epochs a run takes, and where a resumed run picks up."""

    steps_per_epoch: int
    max_train_steps: int
    num_epochs: int
    accumulation_steps: int

    @classmethod
    def for_run(cls, batches, args) -> "EpochPlan":
        steps_per_epoch = len(batches) // args.gradient_accumulation_steps  # whole steps: see whole_steps
        max_train_steps = args.max_train_steps or args.num_epochs * steps_per_epoch
        return cls(
            steps_per_epoch,
            max_train_steps,
            math.ceil(max_train_steps / steps_per_epoch),
            args.gradient_accumulation_steps,
        )

    def epochs(self, batches, global_step: int) -> Iterator[Tuple[int, Iterator]]:
        """``(epoch, its micro-batches)`` from ``global_step`` on; the first epoch skips what was already trained."""
        first_epoch = global_step // self.steps_per_epoch
        skip = (global_step % self.steps_per_epoch) * self.accumulation_steps
        for epoch in range(first_epoch, self.num_epochs):
            yield epoch, batches.epoch(epoch, skip if epoch == first_epoch else 0)
