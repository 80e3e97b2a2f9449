"""fundus_diffusion.evaluation.disc_appearance and benchmarks/disc_appearance.py: measures that can fail (lines are
coherent and speckle is not, a brighter disc is brighter), windows located by the masks or the brightest point, the
evaluation report's section and the benchmark's table and JSON."""

import importlib.util
import json

import pytest
import torch
from conftest import REPO_ROOT

from fundus_diffusion.data import load_phantom_dataset
from fundus_diffusion.evaluation import EvaluationConfig, evaluate, write_report
from fundus_diffusion.evaluation.arrays import dataset_arrays
from fundus_diffusion.evaluation.disc_appearance import (
    STATISTICS,
    appearance,
    appearance_section,
    brightest_points,
    nearest_origin,
    set_appearance,
    split_by,
    summary,
)
from fundus_diffusion.evaluation.report import disc_appearance_lines

spec = importlib.util.spec_from_file_location("disc_appearance_benchmark", REPO_ROOT / "benchmarks" / "disc_appearance.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)

SIDE = 256


def constructed(kind: str) -> torch.Tensor:
    """Two ``uint8 [3, 256, 256]`` images of grey 120: vessels (green lines of an 8 px period, vertical or diagonal),
    speckle (independent noise of std 30 in every pixel and channel) or plain, 40 brighter."""
    images = torch.full((2, 3, SIDE, SIDE), 120.0)
    position = torch.arange(SIDE, dtype=torch.float32)
    if kind == "lines":
        images[:, 1] += 30 * torch.cos(2 * torch.pi * position / 8)
    elif kind == "diagonal lines":  # the off-diagonal term of the tensor carries their direction
        images[:, 1] += 30 * torch.cos(2 * torch.pi * (position[:, None] + position[None, :]) / (8 * 2**0.5))
    elif kind == "speckle":
        images += 30 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    else:
        images += 40
    return images.clamp(0, 255).round().to(torch.uint8)


def test_lines_are_coherent_speckle_is_fine_and_undirected_and_brightness_is_the_mean():
    centres = torch.full((2, 2), SIDE // 2)
    kinds = ("lines", "diagonal lines", "speckle", "brighter")
    lines, diagonal, speckle, bright = (appearance(constructed(kind), centres) for kind in kinds)
    assert lines["orientation_coherence"].min() > 0.99 and diagonal["orientation_coherence"].min() > 0.95
    assert speckle["orientation_coherence"].max() < 0.3
    assert lines["rim_coherence"].min() > 0.99 and speckle["rim_coherence"].max() < 0.3  # the ring alone
    assert bright["gradient_around"].max() < 1e-3 < lines["gradient_around"].min()
    assert speckle["fine_detail"].min() > 4 * lines["fine_detail"].max()
    assert bright["red"].tolist() == [160.0, 160.0] and bright["fine_detail"].max() < 1e-3
    assert lines["red"].tolist() == [120.0, 120.0]  # the lines are green only


def test_windows_follow_the_masks_or_the_brightest_point():
    images = torch.full((3, 3, SIDE, SIDE), 60, dtype=torch.uint8)
    images[:, :, 40:61, 180:201] = 230  # a bright "disc" up and right
    discs = torch.zeros((3, SIDE, SIDE), dtype=torch.bool)
    discs[:2, 40:61, 180:201] = True  # the third image's mask is empty
    assert brightest_points(images).tolist() == [[50, 190]] * 3
    by_mask, by_brightness = set_appearance(images, discs, "mask"), set_appearance(images, discs, "brightest")
    assert by_mask["n"] == 2 and by_brightness["n"] == 3 and by_mask["brightest_in_disc"] == 1.0
    assert by_mask["statistics"]["red"]["mean"] == by_brightness["statistics"]["red"]["mean"] > 60
    discs[0] = False
    discs[0, 200:220, 20:40] = True  # a mask away from the bright patch: its window is elsewhere, its point outside
    moved = set_appearance(images, discs, "mask")
    assert moved["brightest_in_disc"] == 0.5 and moved["statistics"]["red"]["per_image"][0] == 60.0
    assert set_appearance(images, None, "brightest")["brightest_in_disc"] is None
    square = SIDE // 4  # the disc-region judge's square: centred on the point, and moved inside at the border
    corner = torch.zeros((2, 3, SIDE, SIDE), dtype=torch.uint8)
    corner[:, :, :square, :square] = 200
    red = appearance(corner, torch.tensor([[square // 2, square // 2], [3, 3]]))["red"]
    assert red.tolist() == [200.0, 200.0]  # exactly the bright square: centred, and at the corner moved inside
    shifted = appearance(corner, torch.tensor([[square // 2, square // 2 + square // 4]]))["red"]
    assert shifted.tolist() == [150.0]  # a quarter of the square's side further right: three quarters bright
    ring = torch.zeros((1, 3, SIDE, SIDE), dtype=torch.uint8)  # vessels only 28-48 px from the centre
    distance = ((torch.arange(SIDE)[:, None] - 128) ** 2 + (torch.arange(SIDE)[None, :] - 128) ** 2).float().sqrt()
    ring[0, 1] = (((distance > 32) & (distance < 44)) * (torch.arange(SIDE)[None, :] % 8 < 2) * 200).to(torch.uint8)
    around = appearance(ring.expand(2, -1, -1, -1), torch.tensor([[128, 128], [30, 30]]))["gradient_around"]
    assert around[0] > 5 and around[1] < 1e-3  # about the centre, and not about a point far from the ring
    with pytest.raises(ValueError, match="locate='brightest' works without them"):
        set_appearance(images, None, "mask")


def test_the_report_section_and_its_lines():
    real = dataset_arrays(load_phantom_dataset(6, size=128), 128, ["disc"], "phantoms")
    speckled = (real.float() + 30 * torch.randn(real.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 255)
    speckled[:, 3:] = real[:, 3:].float()  # the masks unchanged
    section = appearance_section(real, real[:3], speckled.round().to(torch.uint8), disc_channel=3)
    assert section["computed"] and list(section["sets"]) == ["real", "held-out real (control)", "synthetic"]
    synthetic, same = section["sets"]["synthetic"]["statistics"], section["sets"]["real"]["statistics"]
    assert synthetic["fine_detail"]["mean"] > 2 * same["fine_detail"]["mean"]
    assert synthetic["orientation_coherence"]["mean"] < same["orientation_coherence"]["mean"]
    markdown = "\n".join(disc_appearance_lines(section))
    assert "around the centroid of each disc mask" in markdown and "| synthetic | 6 | mask |" in markdown
    cameras = ["left", "right"] * 3
    by_camera = appearance_section(real, real[:4], real, 3, real_origins=cameras, holdout_origins=cameras[:4])
    names = list(by_camera["sets"])
    assert names[:6] == [
        "real", "real / left", "real / right", "held-out real (control)", "held-out real (control) / left",
        "held-out real (control) / right",
    ]  # then the control's and the synthetic set's rows per style they take (a style no image takes has none)
    assert names.index("synthetic") > max(i for i, name in enumerate(names) if name.startswith("held-out real (control) / like"))
    assert all(name.startswith("synthetic / like ") for name in names[names.index("synthetic") + 1 :])
    assert by_camera["sets"]["real / left"]["n"] == 3
    synthetic_shares = [row["share"] for name, row in by_camera["sets"].items() if name.startswith("synthetic / like")]
    assert sum(synthetic_shares) == pytest.approx(1.0) and "assignment_accuracy" in by_camera["sets"]["held-out real (control)"]
    unannotated = real.clone()
    unannotated[1::2, 3] = 0  # every "right" image without a disc mask: one camera left to compare with
    one_camera = appearance_section(unannotated, real[:4], real, 3, real_origins=cameras, holdout_origins=cameras[:4])
    assert list(one_camera["sets"]) == ["real", "held-out real (control)", "synthetic"]  # no rows per camera, no error
    small = appearance_section(real[:, :, ::2, ::2], real[:3, :, ::2, ::2], real[:, :, ::2, ::2], disc_channel=3)
    assert not small["computed"] and "these: 64" in "\n".join(disc_appearance_lines(small))
    assert disc_appearance_lines(None) == []  # a report from before the section


def test_evaluate_reports_disc_appearance_located_by_the_disc_masks(tmp_path):
    real, holdout = load_phantom_dataset(8, size=128, seed=0), load_phantom_dataset(4, size=128, seed=1000, split="test")
    config = EvaluationConfig(masks="disc", resolution=128, device="cpu", seeds=1, segmenter_steps=1, realism_steps=1, realism_folds=2)
    report, figures = evaluate(real, load_phantom_dataset(6, size=128, seed=2000), holdout, config)
    paths = write_report(report, figures, str(tmp_path))
    saved = json.loads(open(paths["json"]).read())["disc_appearance"]
    assert {name: row["n"] for name, row in saved["sets"].items()} == {"real": 8, "held-out real (control)": 4, "synthetic": 6}
    assert {row["located_by"] for row in saved["sets"].values()} == {"mask"}
    assert "How the optic discs look (128 px)" in open(paths["markdown"]).read()


def test_the_cli_prints_the_table_and_json_and_refuses_mask_location_without_masks(tmp_path, capsys):
    phantoms = load_phantom_dataset(14, size=128)
    paths = {name: str(tmp_path / name) for name in ("train", "holdout", "images_only")}
    two_cameras = lambda row, i: {"id": f"{'left' if i % 2 else 'right'}cam_{i:03d}"}  # noqa: E731
    phantoms.select(range(10)).map(two_cameras, with_indices=True).save_to_disk(paths["train"])
    phantoms.select(range(10, 14)).save_to_disk(paths["holdout"])
    phantoms.select(range(4)).remove_columns(["disc_mask"]).save_to_disk(paths["images_only"])
    benchmark.main([
        "--real", paths["train"], "--holdout", paths["holdout"], "--synthetic", f"copy={paths['train']}",
        "--synthetic", f"bare={paths['images_only']}", "--resolution", "128", "--locate", "brightest",
        "--output_json", str(tmp_path / "d.json"), "--real_by_origin",
    ])  # fmt: skip
    saved = json.loads((tmp_path / "d.json").read_text())
    assert list(saved["sets"]) == ["real", "real / leftcam", "real / rightcam", "held-out real (control)", "copy", "bare"]
    assert saved["sets"]["real / leftcam"]["n"] == 5 and saved["sets"]["real / leftcam"]["statistics"]["red"]["per_image"] == [
        saved["sets"]["real"]["statistics"]["red"]["per_image"][i] for i in (1, 3, 5, 7, 9)
    ]  # fmt: skip
    assert saved["sets"]["copy"]["statistics"] == saved["sets"]["real"]["statistics"]
    assert saved["sets"]["bare"]["brightest_in_disc"] is None and saved["sets"]["copy"]["brightest_in_disc"] is not None
    assert "| copy | 10 | brightest |" in capsys.readouterr().out
    assigned = benchmark.main([
        "--real", paths["train"], "--holdout", paths["holdout"], "--synthetic", f"copy={paths['train']}",
        "--resolution", "128", "--locate", "brightest", "--assign_origin",
    ])  # fmt: skip
    like = [name for name in assigned if name.startswith("copy / like ")]
    assert like and list(assigned)[-len(like) :] == like  # after the set's own row
    assert sum(assigned[name]["share"] for name in like) == pytest.approx(1.0)
    for bad, message in (
        (["--resolution", "64"], "need at least 128 px"),
        (["--synthetic", "no-name"], "give name=dataset"),
        (["--locate", "mask", "--synthetic", f"bare={paths['images_only']}"], "has no disc masks to locate the discs by. Fix: --locate brightest"),
    ):  # fmt: skip
        with pytest.raises(SystemExit):
            benchmark.main(["--real", paths["train"], *bad])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the held-out phantoms are of one origin
        benchmark.main(["--real", paths["holdout"], "--resolution", "128", "--locate", "brightest", "--assign_origin"])
    assert "--assign_origin needs real photographs of two origins or more (rows 'real / <origin>'); found 0" in capsys.readouterr().err


def record(reds, blues=None):
    """A ``set_appearance`` record of images with these mean reds (and blues; green 100, other statistics 0)."""
    values = {name: torch.zeros(len(reds)) for name in STATISTICS}
    values["red"], values["green"] = torch.tensor(reds, dtype=torch.float32), torch.full((len(reds),), 100.0)
    values["blue"] = torch.tensor(blues if blues is not None else [50.0] * len(reds), dtype=torch.float32)
    values["fine_detail"] = torch.arange(len(reds), dtype=torch.float32)
    return summary(values, "brightest")


def test_each_image_takes_the_origin_of_the_nearest_colour_and_a_set_splits_by_it():
    cameras = {"bright": record([200, 210, 190]), "dark": record([100, 110, 90], [20, 25, 15])}
    samples = record([205, 95, 180, 120], [50, 20, 45, 30])
    groups = nearest_origin(cameras, samples)
    assert groups == ["bright", "dark", "bright", "dark"]
    parts = split_by(samples, groups)
    assert {name: part["n"] for name, part in parts.items()} == {"bright": 2, "dark": 2}
    assert parts["dark"]["statistics"]["fine_detail"]["per_image"] == [1.0, 3.0]  # the images' own values, in order
    assert parts["bright"]["statistics"]["red"]["mean"] == pytest.approx(192.5)
