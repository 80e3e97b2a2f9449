"""What a training script needs: shared flags, the NaN guard and atomic checkpoints. Trainers live in submodules."""

from .args import NonFiniteLossError, add_common_args, check_finite, make_accelerator
from .checkpointing import (
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    save_folder_atomically,
)

__all__ = [
    "NonFiniteLossError",
    "add_common_args",
    "check_finite",
    "find_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "make_accelerator",
    "save_checkpoint",
    "save_folder_atomically",
]
