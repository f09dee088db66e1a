"""Training AToken (the paper's adversarial-free recipe) on accelerate: configs, data, optimisation, checkpoints."""

from .config import TrainConfig
from .trainer import Trainer

__all__ = ["TrainConfig", "Trainer"]
