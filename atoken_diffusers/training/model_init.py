"""Building the model a stage trains: a preset, optionally started as a PCA codec, warm-started from the previous
stage's export or from SigLIP2."""

from __future__ import annotations

import torch

from ..models.autoencoder_atoken import AutoencoderAToken
from ..models.presets import preset_config
from .config import ModelConfig
from .siglip2_init import init_encoder_from_siglip2

# Tensors that may grow between stages, and the axis that carries the latent channels (to_moments: [mean | logvar]).
GROWABLE = {"to_moments.weight": 0, "decoder.proj_in.weight": 1}


def copy_overlapping(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Load ``state`` into ``model`` where the only allowed difference is a wider latent (32 -> 48 channels between
    curriculum stages): the old channels are copied, the decoder's new input columns are zero (the grown model starts
    computing what the old one did) and the new posterior-mean rows keep their small random start so the new channels
    learn. ``to_moments`` grows as its two halves. Any other shape difference or missing/unexpected key is an error.
    Returns {key: note} for the grown tensors."""
    own, notes = model.state_dict(), {}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"model.init_from does not match the preset: missing {missing[:3]}, unexpected "
                         f"{unexpected[:3]}; use the preset the previous stage was trained with.")
    for key, target in own.items():
        src = state[key].to(target.dtype)
        if src.shape == target.shape:
            own[key] = src
            continue
        axis = GROWABLE.get(key)
        other = [d for d in range(src.ndim) if d != axis]
        if axis is None or src.ndim != target.ndim or any(src.shape[d] != target.shape[d] for d in other) \
                or src.shape[axis] > target.shape[axis]:
            raise ValueError(f"model.init_from: {key} is {tuple(src.shape)}, the preset needs {tuple(target.shape)}; "
                             "only the latent channels may grow between stages.")
        grown = torch.zeros_like(target)
        if key == "to_moments.weight":
            rows = src.shape[0] // 2
            for s_half, t_half in zip(src.chunk(2), grown.chunk(2)):
                t_half[:rows] = s_half
            grown.chunk(2)[0][rows:] = target.chunk(2)[0][rows:]
        else:
            grown[:, : src.shape[1]] = src
        own[key] = grown
        notes[key] = f"grown {tuple(src.shape)} -> {tuple(target.shape)}"
    model.load_state_dict(own)
    return notes


def build_model(cfg: ModelConfig) -> AutoencoderAToken:
    """The stage's model: the preset (with ``overrides``), warm-started from ``init_from`` and/or SigLIP2."""
    model = AutoencoderAToken(**preset_config(cfg.preset, **cfg.overrides))
    if cfg.pca_init:
        from ..weights.baseline import PCACodec
        from .pca_init import init_from_pca

        codec = PCACodec.load(cfg.pca_init)
        init_from_pca(model, codec.mean, codec.basis, scale=codec.scale)
        if cfg.context_init:
            from safetensors.torch import load_file

            from .context_init import init_context_decoder

            init_context_decoder(model, load_file(cfg.context_init), scale=codec.scale)
    elif cfg.context_init:
        raise ValueError("model.context_init needs model.pca_init (the context decoder reads PCA coefficients).")
    if cfg.init_from:
        previous = AutoencoderAToken.from_pretrained(cfg.init_from, torch_dtype=torch.float32, local_files_only=True)
        for key, note in copy_overlapping(model, previous.state_dict()).items():
            print(f"init_from {cfg.init_from}: {key} {note}")
    if cfg.siglip2_init:
        init_encoder_from_siglip2(model, cfg.siglip2_init)
    return model
