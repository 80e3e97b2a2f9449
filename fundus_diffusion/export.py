"""A schema dataset in the formats other tools load: parquet + card (``load_dataset``), ``imagefolder``, nnU-Net v2.

- ``write_hub_layout(folder)``: a saved dataset folder laid out as ``Dataset.push_to_hub`` uploads it
  (``data/train-0000K-of-0000N.parquet``, ``configs`` and ``dataset_info`` in ``README.md``), so that
  ``datasets.load_dataset(folder)`` reads it as it would the Hub repo; the ``save_to_disk`` files move to
  ``arrow/``, which ``load_fundus_dataset`` memory-maps (``arrow_folder``). ``build_dataset.py`` and ``generate.py``
  call it on every folder they write; older folders get it from ``scripts/export_dataset.py --format hub``.
- ``export_imagefolder(dataset, folder)``: ``images/<uid>.<ext>``, ``masks/<name>/<uid>.png`` and a ``metadata.csv``
  whose ``file_name`` / ``<name>_mask_file_name`` columns ``load_dataset("imagefolder", data_dir=folder)`` reads
  (diffusers' ``--train_data_dir`` too), and which is also this package's generic folder layout (``--folder_dir``).
  With ``resolution``, every photograph and its masks framed as training frames them (``pair_to_array``: the fundus
  field cropped square, then resized): masks a model of that resolution takes as given (``generate.py --masks_from``).
  ``uid`` is a hash of the row's id and image (``export_uid``), so exports of different datasets (two synthetic runs
  of one model with other seeds included) can be written into one folder and combine.
- ``export_nnunet(dataset, folder)``: nnU-Net v2's raw layout (``imagesTr/<case>_0000.png``, ``labelsTr/<case>.png``,
  ``dataset.json``), one label value per mask (see ``export_nnunet`` for overlaps).

Masks are whatever ``<name>_mask`` columns the dataset has (``schema.dataset_mask_names``); a mask a row was not
annotated for is left out (imagefolder: no file, an empty cell) or the row is left out (nnU-Net: no "unknown" label).
"""

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
from datasets import Dataset, DatasetInfo, Features, SplitDict, SplitInfo, config, load_from_disk
from datasets.info import DatasetInfosDict
from datasets.table import embed_table_storage
from datasets.utils.metadata import MetadataConfigs
from datasets.utils.py_utils import convert_file_size_to_int
from huggingface_hub import DatasetCard, DatasetCardData
from PIL import Image as PILImage

from .data.schema import LABEL_NAMES, ORIGIN_COLUMN, annotation_flags, dataset_mask_names, mask_column, parse_mask_names
from .data.transforms import is_generated, pair_to_array

PARQUET_DIR = "data"  # the folder push_to_hub uploads shards to
ARROW_DIR = "arrow"  # where the save_to_disk files of a folder in the Hub layout live
IMAGEFOLDER_METADATA = "metadata.csv"
NNUNET_FILE_ENDING = ".png"
_BATCH = 64  # rows decoded at a time while exporting


def arrow_folder(folder: str) -> Optional[str]:
    """The ``save_to_disk`` folder of the dataset folder ``folder``: ``folder/arrow`` (folders in the Hub layout,
    see ``write_hub_layout``), ``folder`` itself (folders written before it), or None when neither holds one."""
    for candidate in (os.path.join(folder, ARROW_DIR), folder):
        if os.path.isfile(os.path.join(candidate, config.DATASET_STATE_JSON_FILENAME)):
            return candidate
    return None


def write_hub_layout(folder: str, split: str = "train", max_shard_size="500MB") -> List[str]:
    """Lay the saved dataset folder ``folder`` out as ``push_to_hub`` uploads it; return the parquet shards' paths.

    ``datasets.load_dataset(folder)`` refuses a folder holding ``save_to_disk``'s ``state.json``, so the Arrow files
    move into ``folder/arrow/`` (still memory-mapped by ``load_fundus_dataset``, without a conversion cache) and the
    root gets ``data/<split>-0000K-of-0000N.parquet`` (cut at ``max_shard_size`` as ``push_to_hub`` cuts them, every
    image's bytes embedded) and the card's ``configs`` / ``dataset_info`` YAML (a minimal ``README.md`` if there is
    none). The shards are written into a hidden folder and swapped in whole; running it again (a regenerated
    dataset, an older folder) rewrites them from the Arrow files.
    """
    source = arrow_folder(folder)
    if source is None:
        raise FileNotFoundError(
            f"{folder} holds no saved dataset (no {config.DATASET_STATE_JSON_FILENAME} there or in {ARROW_DIR}/). Fix: "
            "pass a folder written by fundus-build-dataset or fundus-generate."
        )
    dataset = load_from_disk(source)
    max_bytes = convert_file_size_to_int(max_shard_size)
    num_shards = max(1, min(len(dataset), int(dataset.data.nbytes / max_bytes) + 1))
    staging = tempfile.mkdtemp(prefix=f".{PARQUET_DIR}-", dir=folder)
    names, num_bytes = [], 0
    try:
        for index in range(num_shards):
            shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True).with_format("arrow")
            shard = shard.map(embed_table_storage, batched=True, batch_size=_BATCH, keep_in_memory=True)  # as push_to_hub does
            names.append(f"{split}-{index:05d}-of-{num_shards:05d}.parquet")
            num_bytes += shard.with_format(None).to_parquet(os.path.join(staging, names[-1]))
        if source == folder:
            _move_saved_files(folder, os.path.join(folder, ARROW_DIR))
        target = os.path.join(folder, PARQUET_DIR)
        if os.path.exists(target):
            os.replace(target, os.path.join(staging, "previous"))
        os.replace(staging, target)
        shutil.rmtree(os.path.join(target, "previous"), ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _add_card_yaml(folder, dataset.features, split, len(dataset), num_bytes)
    return [os.path.join(folder, PARQUET_DIR, name) for name in names]


def _move_saved_files(folder: str, arrow_dir: str) -> None:
    """``save_to_disk``'s files from ``folder`` into ``arrow_dir``: completed in a hidden folder, renamed in one step
    (open memory maps of the Arrow files stay valid)."""
    with open(os.path.join(folder, config.DATASET_STATE_JSON_FILENAME), encoding="utf-8") as f:
        data_files = [entry["filename"] for entry in json.load(f)["_data_files"]]
    staging = tempfile.mkdtemp(prefix=f".{ARROW_DIR}-", dir=folder)
    for name in (*data_files, config.DATASET_INFO_FILENAME, config.DATASET_STATE_JSON_FILENAME):
        if os.path.exists(os.path.join(folder, name)):
            os.replace(os.path.join(folder, name), os.path.join(staging, name))
    shutil.rmtree(arrow_dir, ignore_errors=True)
    os.replace(staging, arrow_dir)


def _add_card_yaml(folder: str, features: Features, split: str, num_examples: int, num_bytes: int) -> None:
    """What ``push_to_hub`` writes into the card: the data files of the ``default`` config and the features."""
    path = os.path.join(folder, config.REPOCARD_FILENAME)
    card = DatasetCard.load(path) if os.path.isfile(path) else DatasetCard(f"---\n{DatasetCardData()}\n---\n")
    splits = SplitDict()
    splits.add(SplitInfo(name=split, num_bytes=num_bytes, num_examples=num_examples))
    info = DatasetInfo(features=features, splits=splits, dataset_size=num_bytes)
    DatasetInfosDict({"default": info}).to_dataset_card_data(card.data)
    MetadataConfigs({"default": {"data_files": [{"split": split, "path": f"{PARQUET_DIR}/{split}-*"}]}}).to_dataset_card_data(card.data)
    card.save(path)


def export_uid(row_id: str, image_bytes: bytes, resolution: Optional[int] = None) -> str:
    """A file name unique across datasets: 16 hex digits of a hash of the row's id and its image's bytes (and the
    ``resolution`` it was framed at, if any).

    Two samples that share an id but differ (runs of one model with other seeds) never clash, the same sample
    exported twice gets the same name, and the name holds no word such as "train" or "test" from which
    ``load_dataset`` would infer splits. The row's id is kept beside it (``source_id``).
    """
    framed = b"" if resolution is None else f"\0{resolution}px".encode()
    return hashlib.sha1(row_id.encode() + b"\0" + image_bytes + framed).hexdigest()[:16]


def _rows(dataset: Dataset):
    """Every row with its Image columns undecoded (``{"bytes", "path"}``), a batch in memory at a time."""
    for batch in dataset.with_format("arrow").iter(batch_size=_BATCH):
        yield from batch.to_pylist()


def _image_bytes(cell: dict) -> bytes:
    if cell.get("bytes") is not None:
        return cell["bytes"]
    with open(cell["path"], "rb") as f:
        return f.read()


def _label_name(label: int) -> str:
    return LABEL_NAMES[label] if 0 <= label < len(LABEL_NAMES) else "unknown"


def export_imagefolder(
    dataset: Dataset, folder: str, mask_names: Optional[Sequence[str]] = None, resolution: Optional[int] = None
) -> int:
    """Write ``dataset`` (default: all its masks) as an ``imagefolder`` / generic folder into ``folder``; rows
    already there are kept, so several exports combine; return the number of rows in ``metadata.csv``.

    ``resolution``: each photograph and its masks framed as for training at that size (``pair_to_array``: the fundus
    field cropped square, padded with black, resized; a generated sample only resized; PNG), instead of the stored
    bytes.

    Columns: ``file_name`` (``images/<uid>.<ext>``, the stored bytes unchanged unless framed), ``<name>_mask_file_name``
    (``masks/<name>/<uid>.png``, empty where the row is not annotated for the mask), ``id`` (= ``uid``, what the
    generic folder reader matches files by), ``source_id`` (the row's own id), ``source``, ``split``, ``label``
    (``PM`` / ``non-PM`` / ``unknown``), ``has_<name>_annotation``, and for synthetic sets ``seed`` and, from an
    origin-conditioned model, ``origin`` (the camera or collection each sample was drawn as).
    """
    names = dataset_mask_names(dataset) if mask_names is None else parse_mask_names(mask_names)
    existing = _read_metadata(os.path.join(folder, IMAGEFOLDER_METADATA))
    columns = ["file_name", *(f"{mask_column(m)}_file_name" for m in names), "id", "source_id", "source", "split", "label"]
    synthetic_columns = [c for c in ("seed", ORIGIN_COLUMN) if c in dataset.column_names]
    columns += [f"has_{m}_annotation" for m in names] + synthetic_columns
    for row in existing.values():  # an earlier export's other columns (other masks), each once
        columns += [c for c in row if c not in columns]
    flags = {m: annotation_flags(dataset, m) for m in names}
    rows = dict(existing)
    for index, row in enumerate(_rows(dataset)):
        data = _image_bytes(row["image"])
        uid = export_uid(row["id"], data, resolution)
        annotated = {m: bool(flags[m][index]) and row[mask_column(m)] is not None for m in names}
        files = {m: _png_bytes(row[mask_column(m)]) for m in names if annotated[m]}
        if resolution is not None:
            data, files = _framed(data, files, resolution, is_generated(row))
        file_name = f"images/{uid}{_extension(data)}"
        entry = {"file_name": file_name, "id": uid, "source_id": row["id"], "source": row["source"], "split": row["split"]}
        entry["label"] = _label_name(row["label"])
        entry.update({c: row[c] for c in synthetic_columns})
        _write_file(os.path.join(folder, file_name), data)
        for m in names:
            entry[f"has_{m}_annotation"] = annotated[m]
            entry[f"{mask_column(m)}_file_name"] = f"masks/{m}/{uid}.png" if annotated[m] else ""
            if annotated[m]:
                _write_file(os.path.join(folder, entry[f"{mask_column(m)}_file_name"]), files[m])
        rows[file_name] = entry
    write_imagefolder_metadata(folder, columns, rows.values())
    return len(rows)


def _framed(image: bytes, masks: Dict[str, bytes], resolution: int, generated: bool):
    """A photograph and its masks (encoded bytes) framed as for training at ``resolution`` px (a ``generated`` sample,
    framed already, only resized: ``transforms.is_generated``), as PNG bytes."""
    names = list(masks)
    opened = {m: PILImage.open(io.BytesIO(data)) for m, data in masks.items()}
    array = pair_to_array(PILImage.open(io.BytesIO(image)), opened, names, resolution, framed=generated)
    encoded = []
    for channels, mode in [(array[:3].transpose(1, 2, 0), "RGB"), *((array[3 + k], "L") for k in range(len(names)))]:
        buffer = io.BytesIO()
        PILImage.fromarray(np.ascontiguousarray(channels), mode=mode).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    return encoded[0], dict(zip(names, encoded[1:]))


def write_imagefolder_metadata(folder: str, columns: Sequence[str], rows: Iterable[dict]) -> None:
    """``folder/metadata.csv`` with ``columns`` (``file_name`` and ``<name>_mask_file_name`` paths relative to
    ``folder`` are what ``load_dataset("imagefolder", data_dir=folder)`` reads), written atomically so that a reader
    never sees half a file; a column a row lacks is left empty."""
    path = os.path.join(folder, IMAGEFOLDER_METADATA)
    with open(f"{path}.tmp", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(f"{path}.tmp", path)


def _read_metadata(path: str) -> Dict[str, dict]:
    if not os.path.isfile(path):
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "file_name" not in (reader.fieldnames or []):
            raise ValueError(
                f"{path} has no file_name column, so it is not an imagefolder export. Fix: export into an empty folder "
                "or one written by export_imagefolder."
            )
        return {row["file_name"]: row for row in reader}


def _extension(data: bytes) -> str:
    fmt = PILImage.open(io.BytesIO(data)).format
    return {"JPEG": ".jpg", "PNG": ".png"}.get(fmt, f".{(fmt or 'png').lower()}")


def _png_bytes(cell: dict) -> bytes:
    """A mask cell as PNG bytes (the stored bytes when they already are a PNG)."""
    data = _image_bytes(cell)
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data
    buffer = io.BytesIO()
    PILImage.open(io.BytesIO(data)).convert("L").save(buffer, format="PNG")
    return buffer.getvalue()


def _write_file(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def export_nnunet(dataset: Dataset, folder: str, mask_names: Optional[Sequence[str]] = None, name: Optional[str] = None) -> dict:
    """Write ``dataset`` in nnU-Net v2's raw format into ``folder`` (name it ``$nnUNet_raw/DatasetXXX_Name``) and
    return its ``dataset.json``.

    ``imagesTr/<case>_0000.png`` is the RGB photograph (nnU-Net's natural-image reader takes the three colours as
    channels R, G, B), ``labelsTr/<case>.png`` one uint8 label map: background 0 and mask ``k`` of ``mask_names``
    (default: all the dataset's masks, in its column order) the value ``k`` (1, 2, ...). A pixel covered by several
    masks gets the value of the **last** of them: masks are listed container first (``disc`` before ``cup``), so a
    structure nested inside another (the cup inside the disc) keeps its own value instead of vanishing, and the
    container's value marks only the part outside it. To train the container as a whole, use nnU-Net's region-based
    training, made for nested structures: in ``dataset.json`` set e.g. ``"labels": {"background": 0, "disc": [1, 2],
    "cup": 2}, "regions_class_order": [1, 2]``. nnU-Net has no "not annotated" value, so rows not annotated for
    every one of ``mask_names`` are left out (counted in ``dataset.json``'s ``description``); export fewer masks to
    keep them. Exporting into a folder that already holds an export with the same labels adds the cases to it.
    """
    names = dataset_mask_names(dataset) if mask_names is None else parse_mask_names(mask_names)
    if not names:
        raise ValueError("export_nnunet: the dataset has no masks to train a segmenter on. Fix: export a dataset with masks.")
    annotated = np.stack([annotation_flags(dataset, m) for m in names], axis=1).all(axis=1)
    if not annotated.any():
        raise ValueError(
            f"export_nnunet: no row is annotated for all of {', '.join(names)}. Fix: pass fewer masks (--masks)."
        )
    labels_json = {"background": 0, **{m: k for k, m in enumerate(names, start=1)}}
    json_path = os.path.join(folder, "dataset.json")
    if os.path.isfile(json_path):
        with open(json_path, encoding="utf-8") as f:
            previous = json.load(f).get("labels")
        if previous != labels_json:
            raise ValueError(
                f"{json_path} has the labels {previous}, this export {labels_json}. Fix: export into another folder, "
                "or pass the masks of the earlier export (--masks)."
            )
    os.makedirs(os.path.join(folder, "imagesTr"), exist_ok=True)
    os.makedirs(os.path.join(folder, "labelsTr"), exist_ok=True)
    cases = []
    for index, row in enumerate(_rows(dataset)):
        if not annotated[index]:
            continue
        data = _image_bytes(row["image"])
        case = export_uid(row["id"], data)
        image = PILImage.open(io.BytesIO(data)).convert("RGB")
        labels = np.zeros((image.height, image.width), dtype=np.uint8)
        for value, m in enumerate(names, start=1):
            labels[np.asarray(PILImage.open(io.BytesIO(_image_bytes(row[mask_column(m)]))).convert("L")) >= 128] = value
        image.save(os.path.join(folder, "imagesTr", f"{case}_0000{NNUNET_FILE_ENDING}"))
        PILImage.fromarray(labels, mode="L").save(os.path.join(folder, "labelsTr", f"{case}{NNUNET_FILE_ENDING}"))
        cases.append(case)
    left_out = len(dataset) - len(cases)
    dataset_json = {
        "channel_names": {"0": "R", "1": "G", "2": "B"},
        "labels": labels_json,
        "numTraining": sum(f.endswith(NNUNET_FILE_ENDING) for f in os.listdir(os.path.join(folder, "labelsTr"))),
        "file_ending": NNUNET_FILE_ENDING,
        "name": name or os.path.basename(os.path.normpath(folder)),
        "description": (
            f"Exported by fundus-diffusion: masks {', '.join(names)} (a pixel in several takes the later one's value); "
            f"{left_out} rows not annotated for all of them left out."
        ),
    }
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(dataset_json, f, indent=2)
    return dataset_json
