"""Training: the loop (`train`), checkpoints, EMA, DDP helpers and the CSV log."""

from muni.training.checkpoint import Checkpoint, load_checkpoint, load_state_into
from muni.training.distributed import shared_generator
from muni.training.ema import EMA
from muni.training.loop import TrainConfig, TrainingDivergedError, TrainResult, train

__all__ = ["train", "TrainConfig", "TrainResult", "TrainingDivergedError", "EMA", "Checkpoint",
           "load_checkpoint", "load_state_into", "shared_generator"]
