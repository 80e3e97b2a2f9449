"""The training view's cache: one build when several processes start at once, rebuilds, pickling; the loader's flips."""

import multiprocessing
import os
import pickle

import numpy as np
import pytest
import torch

from fundus_diffusion.data import FundusTrainingView, load_phantom_dataset


@pytest.fixture(scope="module")
def phantoms():
    return load_phantom_dataset(6, size=64, seed=3)


def _make_view(args):
    dataset, cache_dir, marker_dir = args
    original = FundusTrainingView._build_cache

    def counting_build(self, build_threads):
        open(os.path.join(marker_dir, str(os.getpid())), "w").close()
        original(self, build_threads)

    FundusTrainingView._build_cache = counting_build
    view = FundusTrainingView(dataset, 32, "disc,atrophy", cache_dir=cache_dir)
    return view.cache_path, view[5]["pixel_values"].sum().item()


def test_concurrent_processes_build_the_cache_once(phantoms, tmp_path):
    """As under ``accelerate launch``: three processes create the same view together; one builds, all agree."""
    markers = tmp_path / "builds"
    markers.mkdir()
    with multiprocessing.get_context("fork").Pool(3) as pool:
        results = pool.map(_make_view, [(phantoms, str(tmp_path / "cache"), str(markers))] * 3)
    assert len(os.listdir(markers)) == 1
    assert len(set(results)) == 1
    assert sorted(f for f in os.listdir(tmp_path / "cache") if not f.endswith(".lock")) == [os.path.basename(results[0][0])]


def test_stale_or_broken_cache_is_rebuilt(phantoms, tmp_path):
    view = FundusTrainingView(phantoms, 32, "disc", cache_dir=str(tmp_path))
    expected = view[2]["pixel_values"]
    np.save(view.cache_path, np.zeros((2, 4, 8, 8), dtype=np.uint8))  # wrong shape, e.g. from an older version
    assert torch.equal(FundusTrainingView(phantoms, 32, "disc", cache_dir=str(tmp_path))[2]["pixel_values"], expected)
    open(view.cache_path, "wb").write(b"garbage")
    assert torch.equal(FundusTrainingView(phantoms, 32, "disc", cache_dir=str(tmp_path))[2]["pixel_values"], expected)


def test_batched_fetch_matches_items_and_carries_the_index(phantoms, tmp_path):
    """The DataLoader fetches whole batches through ``__getitems__``; it must agree with ``__getitem__``."""
    plain = FundusTrainingView(phantoms, 32, "disc,atrophy", cache_dir=str(tmp_path))
    batch = next(iter(torch.utils.data.DataLoader(plain, batch_size=6)))
    assert torch.equal(batch["pixel_values"], torch.stack([plain[i]["pixel_values"] for i in range(6)]))
    assert torch.equal(batch["class_labels"], torch.tensor([i % 2 for i in range(6)]))
    assert batch["index"].tolist() == list(range(6))


def test_loader_batches_flip_each_sample_by_seed_epoch_and_index_and_resume_exactly(phantoms, tmp_path):
    """Flips are drawn from the seed and the epoch per sample index (as DeviceBatches draws them), in the main
    process: drawn in the view from the global generator, a resumed run flipped other samples, because the DataLoader
    fetches a batch ahead (and workers seed themselves)."""
    from accelerate import Accelerator

    from fundus_diffusion.training.batches import LoaderBatches, epoch_order_and_flips

    view = FundusTrainingView(phantoms, 32, "disc,atrophy", cache_dir=str(tmp_path))
    _, flips = epoch_order_and_flips(5, 0, len(view))
    assert flips.any() and not flips.all()
    expected = [view[i]["pixel_values"].flip(-1) if flips[i] else view[i]["pixel_values"] for i in range(len(view))]
    accelerator = Accelerator(cpu=True)
    straight = list(LoaderBatches(accelerator, view, batch_size=2, seed=5).epoch(0))
    seen = [x for batch in straight for x in batch["pixel_values"]]
    found = sorted(next(i for i, e in enumerate(expected) if torch.equal(x, e)) for x in seen)
    assert found == list(range(len(view))) and all("index" not in batch for batch in straight)
    torch.manual_seed(123)  # the global generator no longer matters
    resumed = list(LoaderBatches(accelerator, view, batch_size=2, num_workers=1, seed=5).epoch(0, skip=1))
    assert len(resumed) == len(straight) - 1
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(straight[1:], resumed))
    # A run resumed at an epoch boundary with workers: the epoch is shuffled as in the uninterrupted run (persistent
    # workers drew their base seed from the order's generator only at the first epoch, so it was not).
    uninterrupted = LoaderBatches(accelerator, view, batch_size=2, num_workers=1, seed=5)
    list(uninterrupted.epoch(0))
    second = list(uninterrupted.epoch(1))
    restarted = list(LoaderBatches(accelerator, view, batch_size=2, num_workers=1, seed=5).epoch(1))
    assert all(torch.equal(a["pixel_values"], b["pixel_values"]) for a, b in zip(second, restarted))


def test_without_random_flip_no_image_is_flipped_and_the_order_stays(phantoms, tmp_path):
    from accelerate import Accelerator

    from fundus_diffusion.training.batches import DeviceBatches, LoaderBatches, epoch_order_and_flips

    order, flips = epoch_order_and_flips(5, 0, 6)
    plain_order, none = epoch_order_and_flips(5, 0, 6, random_flip=False)
    assert flips.any() and not none.any() and torch.equal(order, plain_order)
    view = FundusTrainingView(phantoms, 32, "disc,atrophy", cache_dir=str(tmp_path))
    as_photographed = [view[i]["pixel_values"] for i in range(len(view))]
    on_device = [x for b in DeviceBatches(view, batch_size=2, device="cpu", seed=5, random_flip=False).epoch(0) for x in b["pixel_values"]]
    flipped = [x for b in DeviceBatches(view, batch_size=2, device="cpu", seed=5).epoch(0) for x in b["pixel_values"]]
    loaded = [x for b in LoaderBatches(Accelerator(cpu=True), view, batch_size=2, seed=5, random_flip=False).epoch(0) for x in b["pixel_values"]]
    for seen in (on_device, loaded):
        assert all(any(torch.equal(x, y) for y in as_photographed) for x in seen)
    assert not all(any(torch.equal(x, y) for y in as_photographed) for x in flipped)  # the default does flip
    assert all(torch.equal(a, b) or torch.equal(a, b.flip(-1)) for a, b in zip(on_device, flipped))  # the same order


def batch_sources(view) -> list:
    """Both data paths over ``view``, batches of 2: on the device for each of two processes, and the DataLoader."""
    from accelerate import Accelerator

    from fundus_diffusion.training.batches import DeviceBatches, LoaderBatches

    sources = [DeviceBatches(view, batch_size=2, device="cpu", seed=5, process_index=i, num_processes=2) for i in (0, 1)]
    return sources + [LoaderBatches(Accelerator(cpu=True), view, batch_size=2, seed=5)]


def test_each_batch_says_which_of_its_images_are_flipped(phantoms, tmp_path):
    """``flipped`` (what flip conditioning tells the UNet) is the flip each image got: undoing it gives back the stored
    image, on both data paths, for each of two processes, over epochs."""
    from fundus_diffusion.data.transforms import flip_where

    view = FundusTrainingView(phantoms, 32, "disc,atrophy", cache_dir=str(tmp_path))
    stored = [view[i]["pixel_values"] for i in range(len(view))]
    flags = []
    for batches in batch_sources(view):
        for epoch in range(3):
            for batch in batches.epoch(epoch):
                assert batch["flipped"].dtype == torch.bool and len(batch["flipped"]) == len(batch["pixel_values"])
                undone = flip_where(batch["pixel_values"], batch["flipped"])
                assert all(any(torch.equal(x, y) for y in stored) for x in undone)
                flags.append(batch["flipped"])
    assert torch.cat(flags).any() and not torch.cat(flags).all()


def test_conversion_is_bit_identical_to_array_to_tensor():
    from fundus_diffusion.data.training_view import to_unit_range
    from fundus_diffusion.data.transforms import array_to_tensor

    values = np.arange(256, dtype=np.uint8)
    assert np.array_equal(to_unit_range([values])[0].view(np.int32), array_to_tensor(values).numpy().view(np.int32))


def test_pickled_view_does_not_carry_the_cache(phantoms, tmp_path):
    """Spawned DataLoader workers receive the view pickled: it must map the file again, not copy the array."""
    view = FundusTrainingView(phantoms, 64, "disc", cache_dir=str(tmp_path))
    clone = pickle.loads(pickle.dumps(view))
    assert clone._arrays is None and torch.equal(clone[4]["pixel_values"], view[4]["pixel_values"])


def test_image_only_view_and_unknown_labels(tmp_path):
    dataset = load_phantom_dataset(2, size=48).map(lambda row: {"label": -1})
    view = FundusTrainingView(dataset, 16, (), cache_dir=str(tmp_path))
    item = view[0]
    assert item["pixel_values"].shape == (3, 16, 16) and item["class_labels"].item() == 2  # NULL_CLASS_ID
    batch = next(iter(torch.utils.data.DataLoader(view, batch_size=2)))
    assert batch["pixel_values"].shape == (2, 3, 16, 16) and batch["class_labels"].dtype == torch.int64


def test_too_few_batches_for_one_optimizer_step_says_so_and_how_to_fix_it():
    from fundus_diffusion.training.batches import whole_steps

    assert whole_steps(7, 3, 28, 4, 1) == 6  # the last batch, no whole step, is dropped
    with pytest.raises(ValueError, match=r"8 samples make 2 batch\(es\) of 4 .* fewer than the 3 of one optimizer step.*Fix: a lower"):
        whole_steps(2, 3, 8, 4, 1)
