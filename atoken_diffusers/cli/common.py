"""Helpers shared by the command-line tools: loading a model with messages phrased for ``--model``."""

from __future__ import annotations

from ..models.loading import DTYPES, load_autoencoder, pick_device

__all__ = ["DTYPES", "load_model", "pick_device"]


def load_model(path: str, config: str | None = None, dtype: str = "fp32", device: str | None = None):
    """:func:`~atoken_diffusers.models.loading.load_autoencoder`, its errors turned into one-line exits."""
    try:
        return load_autoencoder(path, config, dtype, device)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"--model {err}") from None
