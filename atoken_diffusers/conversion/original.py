"""Conversion of the official AToken checkpoints (``apple/ml-atoken``: pickled ``.pt`` state dict + YAML config).

Pickles are only read with ``torch.load(weights_only=True)``, which refuses arbitrary objects. Every key of the
official state dict must map onto this project's module names with the same shape; anything missing, unexpected or
mis-shaped stops the conversion with a message naming it.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import yaml

# Official name -> our name. Applied in order, first match wins.
_KEY_RULES = [
    (r"^(encoder|decoder)\.input_layer\.", r"\1.proj_in."),
    (r"^(encoder|decoder)\.pos_embedder\.position_embedding\.weight$", r"\1.pos_table.weight"),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.mlp\.mlp\.0\.", r"\1.blocks.\2.mlp.fc1."),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.mlp\.mlp\.2\.", r"\1.blocks.\2.mlp.fc2."),
    (r"^decoder\.blocks\.(\d+)\.attn\.([qk])_rms_norm\.gamma$", r"decoder.blocks.\1.attn.\2_norm.gamma"),
    (r"^(encoder|decoder)\.blocks\.(\d+)\.(norm1|norm2|attn\.to_qkv|attn\.to_out)\.", r"\1.blocks.\2.\3."),
    (r"^encoder\.post_layernorm\.", r"encoder.norm_out."),
    (r"^encoder\.head\.probe$", r"encoder.pool.probe"),
    (r"^encoder\.head\.attention\.(to_q|to_kv|to_out)\.", r"encoder.pool.\1."),
    (r"^encoder\.head\.layernorm\.", r"encoder.pool.norm."),
    (r"^encoder\.head\.mlp\.mlp\.0\.", r"encoder.pool.mlp.fc1."),
    (r"^encoder\.head\.mlp\.mlp\.2\.", r"encoder.pool.mlp.fc2."),
    (r"^proj\.weight$", r"to_moments.weight"),
    (r"^decoder\.out_norm\.", r"decoder.norm_out."),
    (r"^decoder\.out_layer\.", r"decoder.proj_out."),
]

# Official arch_cfg key -> our config key.
_CONFIG_KEYS = {
    "latent_channels": "latent_channels",
    "encoder_model_channels": "encoder_dim",
    "encoder_num_blocks": "encoder_depth",
    "encoder_num_heads": "encoder_heads",
    "encoder_mlp_channels": "encoder_mlp_dim",
    "decoder_model_channels": "decoder_dim",
    "decoder_num_blocks": "decoder_depth",
    "decoder_num_heads": "decoder_heads",
    "decoder_mlp_channels": "decoder_mlp_dim",
    "patch_size": "patch_size",
    "use_quantizer": "use_quantizer",
    "quantizer_codebook_size": "fsq_codebook_size",
    "quantizer_num_codebooks": "fsq_num_codebooks",
}

# The architecture this port implements; an official config asking for anything else is refused.
_EXPECTED = {
    "encoder_attn_mode": "full", "decoder_attn_mode": "full",
    "encoder_pe_mode": "joint", "decoder_pe_mode": "joint",
    "encoder_qk_rms_norm": False, "decoder_qk_rms_norm": True,
    "encoder_use_bias": True, "decoder_use_bias": False,
    "encoder_use_rms_norm": False, "decoder_use_rms_norm": True,
    "quantizer_type": "fsq", "quantizer_chunk_size": 1, "use_decoder": True,
}


def rename_key(key: str, rules=_KEY_RULES) -> str:
    """Apply the first matching (pattern, replacement) rule; an unmatched key is an error naming it."""
    for pattern, repl in rules:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key)
    raise KeyError(f"Unexpected key {key!r} in the official checkpoint: no module of this model has this name.")


def convert_key(key: str) -> str:
    """Official AToken autoencoder name -> ours."""
    return rename_key(key, _KEY_RULES)


def load_original_config(path: str | os.PathLike) -> dict:
    """Read an official YAML config (``model: model_cfg: arch_cfg: ...``) into AutoencoderAToken arguments."""
    with open(path) as f:
        data = yaml.safe_load(f)
    try:
        arch = data["model"]["model_cfg"]["arch_cfg"]
    except (TypeError, KeyError):
        raise ValueError(f"{path} is not an AToken config: expected the keys model -> model_cfg -> arch_cfg.") from None
    for key, value in _EXPECTED.items():
        if key in arch and arch[key] != value and not (key.startswith("quantizer") and not arch.get("use_quantizer")):
            raise ValueError(f"{path}: {key}={arch[key]!r} is not supported (AToken uses {value!r}).")
    patch = list(arch.get("patch_size", [4, 16, 16]))
    for key in ("in_channels", "out_channels"):
        if key in arch and arch[key] != 3 * patch[0] * patch[1] * patch[2]:
            raise ValueError(f"{path}: {key}={arch[key]} does not match patch_size {patch} x 3 channels.")
    config = {ours: arch[theirs] for theirs, ours in _CONFIG_KEYS.items() if theirs in arch}
    config["patch_size"] = tuple(patch)
    if config.get("use_quantizer") and arch.get("quantizer_feature_dim", arch["latent_channels"]) != arch["latent_channels"]:
        raise ValueError(f"{path}: quantizer_feature_dim must equal latent_channels ({arch['latent_channels']}).")
    return config


def load_original_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load an official ``.pt`` state dict safely (weights_only) and check that it is one."""
    try:
        with warnings.catch_warnings():  # the official files use pickle protocol 4, which torch merely notes
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError for anything but plain tensors/containers
        raise ValueError(f"{path} could not be loaded as a weights-only checkpoint: {err}") from err
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ValueError(f"{path} is not a state dict (a mapping from parameter names to tensors).")
    return dict(obj)


def convert_state_dict(
    original: Mapping[str, torch.Tensor],
    model: torch.nn.Module,
    rename=convert_key,
    ignore_prefixes: tuple[str, ...] = ("quantizer.",),  # FSQ buffers carry no state
) -> dict[str, torch.Tensor]:
    """Rename an official state dict to ``model``'s names with ``rename``, checking names and shapes; keys starting
    with ``ignore_prefixes`` are dropped."""
    expected = model.state_dict()
    converted = {}
    for key, value in original.items():
        if key.startswith(ignore_prefixes):
            continue
        new = rename(key)
        if new not in expected:
            raise KeyError(f"Unexpected key {key!r} (-> {new!r}): the config does not build this module.")
        if tuple(value.shape) != tuple(expected[new].shape):
            raise ValueError(
                f"Shape mismatch for {key!r}: checkpoint {tuple(value.shape)}, model {tuple(expected[new].shape)}; "
                "does the config match the checkpoint?"
            )
        converted[new] = value
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise KeyError(f"Missing keys in the official checkpoint: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return converted


def load_original_autoencoder(checkpoint, config, torch_dtype: torch.dtype | None = None, **overrides):
    """Build an ``AutoencoderAToken`` from an official checkpoint + config pair."""
    from ..models.autoencoder_atoken import AutoencoderAToken

    model = AutoencoderAToken(**{**load_original_config(config), **overrides})
    state = convert_state_dict(load_original_state_dict(checkpoint), model)
    model.load_state_dict(state, strict=True)
    model.eval()
    # nn.Module.to: diffusers' ModelMixin.to warns about fp32 modules on every dtype cast, and this model has none.
    return torch.nn.Module.to(model, torch_dtype) if torch_dtype is not None else model
