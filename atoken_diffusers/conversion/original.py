"""Conversion of the official AToken checkpoints (``apple/ml-atoken``: pickled ``.pt`` state dict + YAML config).

Pickles are only read with ``torch.load(weights_only=True)``, which refuses arbitrary objects. Every key of the
official state dict must map onto this project's module names with the same shape; anything missing, unexpected or
mis-shaped stops the conversion with a message naming it.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping
from typing import NamedTuple

import torch
import yaml

from ..quantizers.fsq import suggested_levels

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
    if config.get("use_quantizer") and "quantizer_codebook_size" in arch:
        # The official quantizer takes the suggested levels of this nominal size; record the levels and the size
        # they really give (1024 -> [8, 5, 5, 5] = 1000 codes), so the config does not claim codes that do not exist.
        levels = suggested_levels(arch["quantizer_codebook_size"], f"{path}: quantizer_codebook_size")
        config.update(fsq_levels=levels, fsq_codebook_size=math.prod(levels))
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


def rename_keys(
    original: Mapping[str, torch.Tensor],
    rename=convert_key,
    ignore_prefixes: tuple[str, ...] = ("quantizer.",),  # FSQ buffers carry no state
) -> dict[str, str]:
    """Our name -> official name for every key of an official state dict, skipping ``ignore_prefixes``. An unknown
    key, or two keys landing on one name, is an error naming them."""
    names = {}
    for key in original:
        if key.startswith(ignore_prefixes):
            continue
        new = rename(key)
        if new in names:
            raise KeyError(f"Checkpoint keys {names[new]!r} and {key!r} both map onto {new!r}; the checkpoint is "
                           "corrupt.")
        names[new] = key
    return names


def check_state_dict(converted: Mapping[str, torch.Tensor], model: torch.nn.Module, original_names=None) -> None:
    """Raise unless ``converted`` holds exactly ``model``'s state-dict names with the same shapes (errors name the
    official key through ``original_names``: ours -> theirs)."""
    expected = model.state_dict()
    theirs = original_names or {}
    for key, value in converted.items():
        name = theirs.get(key, key)
        if key not in expected:
            raise KeyError(f"Unexpected key {name!r} (-> {key!r}): the config does not build this module.")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"Shape mismatch for {name!r}: checkpoint {tuple(value.shape)}, model {tuple(expected[key].shape)}; "
                "does the config match the checkpoint?"
            )
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise KeyError(f"Missing keys in the official checkpoint: {missing[:5]}{' ...' if len(missing) > 5 else ''}")


def convert_state_dict(
    original: Mapping[str, torch.Tensor],
    model: torch.nn.Module,
    rename=convert_key,
    ignore_prefixes: tuple[str, ...] = ("quantizer.",),
) -> dict[str, torch.Tensor]:
    """Rename an official state dict to ``model``'s names with ``rename``, checking names and shapes."""
    names = rename_keys(original, rename, ignore_prefixes)
    converted = {ours: original[theirs] for ours, theirs in names.items()}
    check_state_dict(converted, model, names)
    return converted


class ConvertedCheckpoint(NamedTuple):
    """An official checkpoint under our names: constructor config, state dict, and ours -> official key names (for
    errors that name the key the user can find in their file)."""

    config: dict
    state_dict: dict[str, torch.Tensor]
    original_names: dict[str, str]


def convert_original_checkpoint(checkpoint, config) -> ConvertedCheckpoint:
    """An official checkpoint + YAML as (AutoencoderAToken config, state dict under our names, name map).

    Args:
        checkpoint: a ``.pt`` path (read weights-only) or an already loaded official state dict.
        config: the checkpoint's YAML path.
    Names and shapes are checked against the model when it is built (:meth:`AutoencoderAToken.from_single_file`
    calls :func:`check_state_dict`); this module never imports the model.
    """
    original = checkpoint if isinstance(checkpoint, Mapping) else load_original_state_dict(checkpoint)
    arguments = load_original_config(config)
    names = rename_keys(original)
    return ConvertedCheckpoint(arguments, {ours: original[theirs] for ours, theirs in names.items()}, names)
