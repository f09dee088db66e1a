"""Load an AToken autoencoder the way every front end (CLI, demo, ComfyUI) accepts it: a converted diffusers folder,
or an official ``.pt`` checkpoint with its ``.yaml`` config; dtype names and device choice shared by all of them."""

from __future__ import annotations

from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str | None) -> torch.device:
    """``name`` as a device, or CUDA when available, else the CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_autoencoder(path: str | Path, config: str | Path | None = None, dtype: str = "fp32",
                     device: str | None = None):
    """An :class:`AutoencoderAToken` in eval mode on ``device``.

    Args:
        path: a converted folder (with ``config.json``) or an official ``.pt`` checkpoint.
        config: the checkpoint's YAML (only with a ``.pt`` path).
        dtype: one of ``DTYPES`` (fp32, bf16, fp16).
    Raises:
        FileNotFoundError / ValueError whose message starts with ``path`` and says what to do.
    """
    from .autoencoder_atoken import AutoencoderAToken

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}.")
    p = Path(path)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{path}: no config.json; convert official weights with `atoken convert` first.")
        model = AutoencoderAToken.from_pretrained(p, torch_dtype=DTYPES[dtype])
    elif p.is_file():
        if config is None:
            raise ValueError(f"{path} is a checkpoint file; also pass its YAML config (--config).")
        model = AutoencoderAToken.from_single_file(p, config=config, torch_dtype=DTYPES[dtype])
    else:
        raise FileNotFoundError(f"{path} does not exist.")
    return model.to(pick_device(device)).eval()
