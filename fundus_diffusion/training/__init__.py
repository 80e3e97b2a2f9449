"""What a training script needs: shared flags, the NaN guard and atomic checkpoints. Trainers live in submodules."""

from .args import NonFiniteLossError, add_common_args, check_finite
from .checkpointing import find_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint

__all__ = [
    "NonFiniteLossError",
    "add_common_args",
    "check_finite",
    "find_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
]
