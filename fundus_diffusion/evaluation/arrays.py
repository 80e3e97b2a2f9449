"""Images as the evaluation networks take them: ``uint8 [N, 3 + M, R, R]`` stacks of a dataset's rows, cropped and
resized as for training, and the device they train on."""

from typing import Dict, List, Sequence, Tuple

import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data import load_fundus_dataset
from ..data.schema import check_has_masks, mask_column
from ..data.transforms import is_generated, pair_to_array


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"

def dataset_arrays(dataset, resolution: int, mask_names: Sequence[str], desc: str) -> torch.Tensor:
    """``uint8 [N, 3 + M, R, R]``: every row cropped, resized and stacked as for training (a generated row, framed
    already, only resized). A mask a row is not
    annotated for is an all-zero channel (``schema.annotation_matrix`` tells which); a mask the dataset has no column
    for is an error."""
    check_has_masks(dataset, mask_names, what=f"The {desc}")
    out = torch.empty((len(dataset), 3 + len(mask_names), resolution, resolution), dtype=torch.uint8)
    for i, row in enumerate(tqdm(dataset, desc=f"loading {desc}", unit="img", leave=False)):
        masks = {name: row[mask_column(name)] for name in mask_names}
        out[i] = torch.from_numpy(pair_to_array(row["image"], masks, mask_names, resolution, framed=is_generated(row)))
    return out


COMPARED_REAL_HELP = "The real photographs to compare with (a saved dataset)."
CONTROL_HELP = "Other real photographs: the control (a saved dataset)."


def add_named_set_args(
    parser, real_help: str = COMPARED_REAL_HELP, holdout_help: str = CONTROL_HELP, holdout_required: bool = False
) -> None:
    """A benchmark's real, held-out and ``--synthetic name=dataset`` sets (``named_sets``) and their resolution
    (by default: real photographs to compare several sets with, and an optional control)."""
    parser.add_argument("--real", required=True, help=real_help)
    parser.add_argument("--holdout", required=holdout_required, default=None, help=holdout_help)
    parser.add_argument("--synthetic", action="append", default=[], help="name=dataset, repeatable.")
    parser.add_argument("--resolution", type=int, default=256)


def parse_named_sets(items: Sequence[str]) -> List[Tuple[str, str]]:
    """A benchmark's repeatable ``--synthetic name=dataset`` -> ``[(name, dataset)]``, a ``ValueError`` for an item
    without both or a name given twice."""
    named = [item.partition("=")[::2] for item in items]
    for item, (name, path) in zip(items, named):
        if not name or not path:
            raise ValueError(f"--synthetic {item!r}: give name=dataset, e.g. ours-10000=data/synthetic")
    names = [name for name, _ in named]
    if len(set(names)) < len(names):
        raise ValueError(f"--synthetic: each set needs its own name; got {names}.")
    return named


def named_sets(items: Sequence[str], resolution: int) -> Dict[str, Tuple[torch.Tensor, List[str]]]:
    """A benchmark's repeatable ``--synthetic name=dataset`` -> ``{name: (dataset_arrays without masks, ids)}``; every
    item is checked (``parse_named_sets``) before any set is loaded."""
    sets = {}
    for name, path in parse_named_sets(items):
        dataset = load_fundus_dataset(path)
        sets[name] = dataset_arrays(dataset, resolution, [], name), list(dataset["id"])
    return sets


def to_pil(array: torch.Tensor, mask_names: Sequence[str]) -> Tuple[Image.Image, Dict[str, Image.Image]]:
    """One ``uint8 [3 + M, H, W]`` row back to an RGB image and its ``L`` masks."""
    image = Image.fromarray(array[:3].permute(1, 2, 0).numpy(), mode="RGB")
    return image, {name: Image.fromarray(array[3 + m].numpy(), mode="L") for m, name in enumerate(mask_names)}
