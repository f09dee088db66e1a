"""Conversion of the official AToken checkpoints into diffusers folders."""

from ..utils.atomic import save_atomically
from .original import convert_state_dict, load_original_autoencoder, load_original_config, load_original_state_dict

__all__ = ["convert_state_dict", "load_original_autoencoder", "load_original_config", "load_original_state_dict", "save_atomically"]
