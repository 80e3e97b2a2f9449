"""benchmarks/realism_pictures.py: the full-size sheet and the exported samples of each finished set, made once."""

import importlib.util

from conftest import REPO_ROOT
from PIL import Image

from fundus_diffusion.data import load_fundus_dataset, load_phantom_dataset

spec = importlib.util.spec_from_file_location("realism_pictures", REPO_ROOT / "benchmarks" / "realism_pictures.py")
realism_pictures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(realism_pictures)


def test_pictures_of_finished_sets_are_made_once(tmp_path):
    synthetic, samples = tmp_path / "synthetic", tmp_path / "samples"
    load_phantom_dataset(10, size=32).save_to_disk(str(synthetic / "a-2"))
    (synthetic / "b-2").mkdir(parents=True)  # still being written: no dataset_info.json
    assert realism_pictures.make_pictures(str(synthetic), 6, str(samples)) == ["a-2"]
    assert Image.open(synthetic / "a-2" / "fullsize.png").size == (4 * 256, 2 * 256)  # 8 samples, 4 columns
    exported = load_fundus_dataset(str(samples / "a-2"))  # a generic folder with the masks: judged as it is
    original = load_fundus_dataset(str(synthetic / "a-2")).select(range(6))
    pairs = lambda rows: sorted((r["image"].tobytes(), r["disc_mask"].tobytes()) for r in rows)  # noqa: E731
    assert len(exported) == 6 and pairs(exported) == pairs(original)  # each image with its own mask
    assert realism_pictures.make_pictures(str(synthetic), 6, str(samples)) == []  # nothing made twice


def test_flagged_samples_are_exported_once_their_evaluation_exists(tmp_path):
    synthetic, samples, evaluations = tmp_path / "synthetic", tmp_path / "samples", tmp_path / "eval"
    dataset = load_phantom_dataset(10, size=32)
    dataset.save_to_disk(str(synthetic / "a-2"))
    assert realism_pictures.make_pictures(str(synthetic), 2, str(samples), str(evaluations)) == ["a-2"]
    assert not (samples / "a-2" / "flagged").exists()  # not evaluated yet
    (evaluations / "a-2").mkdir(parents=True)
    (evaluations / "a-2" / "flagged_ids.txt").write_text(f"{dataset[7]['id']}\n{dataset[3]['id']}\n")
    assert realism_pictures.make_pictures(str(synthetic), 2, str(samples), str(evaluations)) == ["a-2"]
    flagged = samples / "a-2" / "flagged"
    assert sorted(p.name for p in flagged.iterdir()) == ["003.png", "007.png", "done"]  # indices in the set
    assert Image.open(flagged / "007.png").tobytes() == dataset[7]["image"].convert("RGB").tobytes()
    assert realism_pictures.make_pictures(str(synthetic), 2, str(samples), str(evaluations)) == []
