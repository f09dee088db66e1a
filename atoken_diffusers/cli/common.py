"""Helpers shared by the command-line tools: loading a model, choosing dtype and device."""

from __future__ import annotations

from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(path: str, config: str | None = None, dtype: str = "fp32", device: str | None = None):
    """A converted diffusers folder, or an official ``.pt`` checkpoint together with its ``.yaml`` config."""
    from ..models.autoencoder_atoken import AutoencoderAToken

    p = Path(path)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise SystemExit(f"--model {path}: no config.json; convert official weights with `atoken convert` first.")
        model = AutoencoderAToken.from_pretrained(p, torch_dtype=DTYPES[dtype])
    elif p.is_file():
        if config is None:
            raise SystemExit(f"--model {path} is a checkpoint file; also pass its YAML with --config.")
        model = AutoencoderAToken.from_original(p, config, torch_dtype=DTYPES[dtype])
    else:
        raise SystemExit(f"--model {path} does not exist.")
    return model.to(pick_device(device)).eval()
