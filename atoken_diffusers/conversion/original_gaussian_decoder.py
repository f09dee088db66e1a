"""Conversion of the official AToken Gaussian-splat decoder (``SLatGaussianDecoder``: ``.pt`` state dict + YAML).

The YAML is the official ``configs/3d_decode_gs.yaml`` layout (``model: {resolution, model_channels, ...,
representation_config: {...}}``). Settings this port does not implement are refused with a message naming the key;
the checkpoint is read weights-only and every key must map onto :class:`ATokenGaussianDecoder` with the same shape.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import yaml

from ..models.strict_loading import check_finite_weights
from ..three_d.gaussian_decoder import DEFAULT_LR, ATokenGaussianDecoder
from .original import convert_state_dict, load_original_state_dict, rename_key

# Official name -> our name. Applied in order, first match wins.
_KEY_RULES = [
    (r"^input_layer\.weight$", r"proj_in.weight"),
    (r"^blocks\.(\d+)\.mlp\.mlp\.0\.weight$", r"blocks.\1.mlp.fc1.weight"),
    (r"^blocks\.(\d+)\.mlp\.mlp\.2\.weight$", r"blocks.\1.mlp.fc2.weight"),
    (r"^blocks\.(\d+)\.(norm1|norm2|attn\.to_qkv|attn\.to_out)\.weight$", r"blocks.\1.\2.weight"),
    (r"^out_layer\.(weight|bias)$", r"proj_out.\1"),
    (r"^offset_perturbation$", r"offset_perturbation"),
]
# Modules of the official training class (SLatGaussianDecoderTrain) that the decoder does not use.
_IGNORED_PREFIXES = ("lpips_loss.",)

# Official model keys copied to our config as they are; the official constructor requires the first four.
_MODEL_KEYS = (
    "resolution", "model_channels", "latent_channels", "num_blocks", "num_heads", "mlp_channels", "window_size"
)
# Official representation_config key -> our config key.
_REPRESENTATION_KEYS = {
    "num_gaussians": "num_gaussians",
    "voxel_size": "voxel_size",
    "perturb_offset": "perturb_offset",
    "3d_filter_kernel_size": "filter_3d",
    "scaling_bias": "scaling_bias",
    "opacity_bias": "opacity_bias",
}
# The architecture this port implements (official defaults when a key is absent); anything else is refused.
_EXPECTED = {"attn_mode": "swin", "pe_mode": "ape", "qk_rms_norm": False}


def convert_gaussian_key(key: str) -> str:
    """Map one official state-dict key to :class:`ATokenGaussianDecoder`'s name."""
    return rename_key(key, _KEY_RULES)


def load_original_gaussian_config(path: str | os.PathLike) -> dict:
    """Read an official Gaussian decoder YAML into :class:`ATokenGaussianDecoder` arguments."""
    with open(path) as f:
        data = yaml.safe_load(f)
    model = data.get("model") if isinstance(data, Mapping) else None
    if not isinstance(model, Mapping) or not isinstance(model.get("representation_config"), Mapping):
        raise ValueError(f"{path} is not a Gaussian decoder config: expected model -> representation_config.")
    for key, value in _EXPECTED.items():
        if model.get(key, value) != value:
            raise ValueError(f"{path}: model.{key}={model[key]!r} is not supported (this decoder uses {value!r}).")
    rep = model["representation_config"]
    # The official decoder indexes all of these without defaults, so a config lacking one never ran there either.
    absent = [f"model.{k}" for k in _MODEL_KEYS[:4] if k not in model] + [
        f"model.representation_config.{k}" for k in (*_REPRESENTATION_KEYS, "scaling_activation", "lr") if k not in rep
    ]
    if absent:
        raise ValueError(f"{path}: missing required keys {absent}.")
    config = {key: model[key] for key in _MODEL_KEYS if key in model}
    if "num_heads" not in config:  # official fallback: 64-channel heads
        config["num_heads"] = config["model_channels"] // model.get("num_head_channels", 64)

    if rep["scaling_activation"] != "softplus":
        raise ValueError(
            f"{path}: representation_config.scaling_activation={rep['scaling_activation']!r} is not supported "
            "(this decoder uses 'softplus')."
        )
    config.update({ours: rep[theirs] for theirs, ours in _REPRESENTATION_KEYS.items()})
    lr = rep["lr"]
    if not isinstance(lr, Mapping):
        raise ValueError(f"{path}: representation_config.lr must map _xyz, _scaling, ... to multipliers; got {lr!r}.")
    missing = sorted(f"_{k}" for k in DEFAULT_LR if f"_{k}" not in lr)
    unknown = sorted(k for k in lr if k.lstrip("_") not in DEFAULT_LR)
    if missing or unknown:
        raise ValueError(f"{path}: representation_config.lr is missing {missing} / has unknown {unknown}.")
    config["lr"] = {k: float(lr[f"_{k}"]) for k in DEFAULT_LR}
    return config


def convert_gaussian_state_dict(
    original: Mapping[str, torch.Tensor], model: ATokenGaussianDecoder
) -> dict[str, torch.Tensor]:
    """Rename an official Gaussian decoder state dict to ``model``'s names, checking names and shapes."""
    return convert_state_dict(original, model, rename=convert_gaussian_key, ignore_prefixes=_IGNORED_PREFIXES)


def load_original_gaussian_decoder(
    checkpoint_pt: str | os.PathLike, config_yaml: str | os.PathLike, torch_dtype: torch.dtype | None = None
) -> ATokenGaussianDecoder:
    """Build an :class:`ATokenGaussianDecoder` (eval mode) from an official checkpoint + config pair."""
    model = ATokenGaussianDecoder(**load_original_gaussian_config(config_yaml))
    original = load_original_state_dict(checkpoint_pt)
    converted = convert_gaussian_state_dict(original, model)
    check_finite_weights(original, str(checkpoint_pt))  # official names: a NaN weight is blamed on the file
    model.load_state_dict(converted, strict=True)
    model.eval()
    # nn.Module.to: diffusers' ModelMixin.to warns about fp32 modules on every dtype cast, and this model has none.
    return torch.nn.Module.to(model, torch_dtype) if torch_dtype is not None else model
