"""Conversion of the official AToken checkpoints into diffusers folders.

The autoencoder loads with ``AutoencoderAToken.from_single_file(pt, config=yaml)``; this package only turns official
files into (config, state dict) and never imports a model at import time. ``load_original_autoencoder`` (the
autoencoder) and ``load_original_gaussian_decoder`` (the 3D Gaussian decoder) are resolved on first use.
"""

from ..utils.atomic import save_atomically
from .original import (
    check_state_dict,
    convert_original_checkpoint,
    convert_state_dict,
    load_original_config,
    load_original_state_dict,
)

__all__ = [
    "check_state_dict", "convert_original_checkpoint", "convert_state_dict", "load_original_autoencoder",
    "load_original_config", "load_original_gaussian_decoder", "load_original_state_dict", "save_atomically",
]


def __getattr__(name: str):
    # Lazy so that importing the conversion code does not import the models (which import it: no cycle).
    if name == "load_original_autoencoder":
        from ..models.autoencoder_atoken import AutoencoderAToken

        return AutoencoderAToken.from_single_file
    if name == "load_original_gaussian_decoder":
        from .original_gaussian_decoder import load_original_gaussian_decoder

        return load_original_gaussian_decoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
