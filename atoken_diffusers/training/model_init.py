"""Building the model a stage trains: a preset, optionally warm-started from the previous stage's export or from
SigLIP2."""

from __future__ import annotations

import torch

from ..models.autoencoder_atoken import AutoencoderAToken
from ..models.presets import preset_config
from .config import ModelConfig
from .siglip2_init import init_encoder_from_siglip2


def copy_overlapping(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Load ``state`` into ``model``; tensors whose shape changed (a wider latent, 32 -> 48 channels) get their
    overlapping slice copied and the rest set to zero, so the grown model starts computing what the old one did.
    ``to_moments`` is handled as its two halves (mean rows, then log-variance rows). Returns {key: note}."""
    own, notes = model.state_dict(), {}
    for key, target in own.items():
        if key not in state:
            notes[key] = "new (kept its initialisation)"
            continue
        src = state[key].to(target.dtype)
        if src.shape == target.shape:
            own[key] = src
            continue
        if src.ndim != target.ndim:
            raise ValueError(f"{key}: cannot grow {tuple(src.shape)} into {tuple(target.shape)}.")
        grown = torch.zeros_like(target)
        halves = 2 if key.endswith("to_moments.weight") else 1
        for s_part, t_part in zip(src.chunk(halves), grown.chunk(halves)):
            region = tuple(slice(0, min(a, b)) for a, b in zip(s_part.shape, t_part.shape))
            t_part[region] = s_part[region]
        if key.endswith("to_moments.weight"):  # fresh mean rows keep a small random start so new channels learn
            mean_new, rows = grown.chunk(2)[0], src.shape[0] // 2
            mean_new[rows:] = target.chunk(2)[0][rows:]
        own[key] = grown
        notes[key] = f"grown {tuple(src.shape)} -> {tuple(target.shape)}"
    model.load_state_dict(own)
    return notes


def build_model(cfg: ModelConfig) -> AutoencoderAToken:
    model = AutoencoderAToken(**preset_config(cfg.preset, **cfg.overrides))
    if cfg.init_from:
        previous = AutoencoderAToken.from_pretrained(cfg.init_from, torch_dtype=torch.float32)
        copy_overlapping(model, previous.state_dict())
    if cfg.siglip2_init:
        init_encoder_from_siglip2(model, cfg.siglip2_init)
    return model
