import numpy as np
import pytest
import torch

from fundus_diffusion.data import draw_phantom, parse_mask_names
from fundus_diffusion.data.transforms import array_to_tensor, pair_to_array
from fundus_diffusion.pipelines.pipeline_fundus import tensor_to_outputs
from fundus_diffusion.visualization import contact_sheet


def test_phantom_is_deterministic_and_masks_are_binary():
    a, b = draw_phantom(3, size=96), draw_phantom(3, size=96)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(draw_phantom(4, size=96).image))
    for mask in (a.disc_mask, a.atrophy_mask):
        assert set(np.unique(np.asarray(mask))) <= {0, 255}
    assert np.asarray(a.disc_mask).any()


def test_pm_phantoms_have_atrophy_outside_the_disc_and_non_pm_none():
    pm, normal = draw_phantom(1, size=128, label=1), draw_phantom(1, size=128, label=0)
    atrophy, disc = np.asarray(pm.atrophy_mask) > 0, np.asarray(pm.disc_mask) > 0
    assert atrophy.any() and not (atrophy & disc).any()
    assert not np.asarray(normal.atrophy_mask).any()


def test_tensor_round_trip_keeps_masks_exact():
    p = draw_phantom(0, size=128, label=1)
    names = parse_mask_names("disc,atrophy")
    x = array_to_tensor(pair_to_array(p.image, {"disc": p.disc_mask, "atrophy": p.atrophy_mask}, names, 64))
    assert x.shape == (5, 64, 64) and x.min() >= -1 and x.max() <= 1
    assert set(torch.unique(x[3:]).tolist()) <= {-1.0, 1.0}
    images, masks = tensor_to_outputs(x[None], names, "pil")
    assert images[0].mode == "RGB" and masks[0]["disc"].mode == "L"
    assert np.array_equal(np.asarray(masks[0]["disc"]) > 0, (x[3] > 0).numpy())
    np_images, np_masks = tensor_to_outputs(x[None], names, "np")
    assert np_images.shape == (1, 64, 64, 3) and np_masks[0]["atrophy"].shape == (64, 64)


def test_frame_pair_frames_a_wide_photograph_as_training_does():
    """The Python route to a pipeline's image= / masks= from a photograph of another shape: the fundus field of a
    wide photograph (black bands left and right) is centred and fills the square, where a plain resize stretches it."""
    from PIL import Image

    from fundus_diffusion import frame_pair

    p = draw_phantom(2, size=64)
    wide_image = Image.new("RGB", (96, 64))
    wide_image.paste(p.image, (16, 0))
    wide_disc = Image.new("L", (96, 64))
    wide_disc.paste(p.disc_mask, (16, 0))
    image, masks = frame_pair(wide_image, {"disc": wide_disc, "cup": None}, resolution=32)
    assert image.size == (32, 32) and masks["cup"] is None and set(np.unique(np.asarray(masks["disc"]))) <= {0, 255}
    square_image, square_masks = frame_pair(p.image, {"disc": p.disc_mask}, resolution=32)
    assert np.array_equal(np.asarray(masks["disc"]), np.asarray(square_masks["disc"]))
    assert np.abs(np.asarray(image, np.int16) - np.asarray(square_image, np.int16)).max() <= 2
    stretched = np.asarray(wide_disc.resize((32, 32), Image.NEAREST)) > 0
    assert not np.array_equal(stretched, np.asarray(masks["disc"]) > 0)  # what the old message's resize gave
    with pytest.raises(ValueError, match=r"Mask\(s\) disc \(64x64 px\) are not the photograph's size \(96x64 px\)"):
        frame_pair(wide_image, {"disc": p.disc_mask}, resolution=32)  # cropped by the wrong box, it would misplace the disc
    stacked = pair_to_array(wide_image, {"disc": wide_disc}, ["disc"], 32)
    assert np.array_equal(stacked[:3].transpose(1, 2, 0), np.asarray(image)) and np.array_equal(stacked[3], np.asarray(masks["disc"]))


def test_bad_inputs_raise():
    for bad in ("disc,Cup", "disc,optic cup", "1st", "disc,cup-rim", "disc,none"):
        with pytest.raises(ValueError, match="(?s)not a valid mask name.*lower-case letters, digits and '_'"):
            parse_mask_names(bad)
    with pytest.raises(ValueError, match="cup given more than once"):
        parse_mask_names("disc,cup,cup")
    with pytest.raises(ValueError, match="output_type"):
        tensor_to_outputs(torch.zeros(1, 4, 8, 8), ("disc",), "rgba")
    with pytest.raises(ValueError, match="Expected"):
        tensor_to_outputs(torch.zeros(1, 5, 8, 8), ("disc",), "pil")


def test_contact_sheet_size():
    p = draw_phantom(0, size=64)
    sheet = contact_sheet([p.image] * 5, [{"disc": p.disc_mask}] * 5, captions=["a"] * 5, columns=3, tile=32)
    assert sheet.size == (96, 2 * (32 + 12))


def test_generated_samples_are_not_framed_again():
    """A generated sample is framed already; framing it again re-centred the square on its own field and moved an
    off-centre one (and its masks), as it moved 27 of 64 of session 34's samples and hid exact copies from the copy
    check. Evaluation and training views take a generated row as it is, and frame a photograph as before."""
    from datasets import Dataset
    from PIL import Image

    from fundus_diffusion.data.schema import fundus_features
    from fundus_diffusion.data.transforms import is_generated
    from fundus_diffusion.evaluation.arrays import dataset_arrays

    p = draw_phantom(2, size=32)
    drawn = Image.new("RGB", (32, 32))  # a DRIONS-like frame: black bands, the field 4 px above the centre
    drawn.paste(p.image.resize((32, 20)), (0, 2))
    disc = Image.new("L", (32, 32))
    disc.paste(p.disc_mask.resize((32, 20), Image.NEAREST), (0, 2))
    as_drawn = np.concatenate([np.asarray(drawn).transpose(2, 0, 1), np.asarray(disc)[None]])
    rows = [
        {"id": f"{source}/0", "source": source, "split": "train", "image": drawn, "disc_mask": disc, "has_disc_annotation": True, "label": 0}
        for source in ("synthetic:run", "drions")
    ]
    assert [is_generated(row) for row in rows] == [True, False]
    assert np.array_equal(pair_to_array(drawn, {"disc": disc}, ["disc"], 32, framed=True), as_drawn)
    assert not np.array_equal(pair_to_array(drawn, {"disc": disc}, ["disc"], 32), as_drawn)  # re-centred

    arrays = dataset_arrays(Dataset.from_list(rows, features=fundus_features(["disc"])), 32, ["disc"], "set")
    assert np.array_equal(arrays[0].numpy(), as_drawn) and not np.array_equal(arrays[1].numpy(), as_drawn)


def test_training_view_cache_matches_uncached(tmp_path):
    from fundus_diffusion.data import FundusTrainingView, load_phantom_dataset

    ds = load_phantom_dataset(4, size=64, seed=7)
    cached = FundusTrainingView(ds, 32, ("disc", "atrophy"), cache_dir=str(tmp_path))
    plain = FundusTrainingView(ds, 32, ("disc", "atrophy"), use_cache=False)
    assert cached.cache_path and (tmp_path / cached.cache_path.split("/")[-1]).exists()
    for i in range(4):
        assert torch.equal(cached[i]["pixel_values"], plain[i]["pixel_values"])
    assert cached[0]["pixel_values"].shape == (5, 32, 32)
    assert cached[1]["class_labels"].item() == 1 and cached[0]["class_labels"].item() == 0


def test_image_only_models_have_three_channels():
    assert parse_mask_names("none") == () and parse_mask_names("disc, atrophy") == ("disc", "atrophy")
    images, masks = tensor_to_outputs(torch.zeros(2, 3, 8, 8), (), "pil")
    assert len(images) == 2 and masks == [{}, {}]


def test_any_mask_name_in_any_order():
    """Nothing depends on channel 3 being the disc: names come from the data, in the order given."""
    assert parse_mask_names("cup,disc") == ("cup", "disc")
    assert parse_mask_names("disc,atrophy,detachment") == ("disc", "atrophy", "detachment")
    assert parse_mask_names(["hard_exudates", "ma2"]) == ("hard_exudates", "ma2")
