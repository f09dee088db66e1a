"""Config validation of the AToken models: one schema per model class (key -> accepted values) plus the rules that
tie keys together, checked when a model is built.

Models call :func:`check_config` first thing in ``__init__`` (``register_to_config`` has recorded every argument by
then), so ``from_config``, ``from_pretrained``, ``from_single_file``, presets and direct construction all pass
through it. JSON gives no types beyond what is written, so a string ``"false"`` or ``"48"`` in a ``config.json`` is
refused here rather than read as truthy or crashing deep inside ``torch.empty``. Each error is one line naming the
key, the value and the accepted values. Inference options (tiling, decoder tiles) are checked by
:class:`~atoken_diffusers.models.inference_options.InferenceOptions`, their one home.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Accepts:
    """The values one config key accepts.

    kind: ``"int"``, ``"number"`` (finite int or float), ``"bool"``, ``"ints"``/``"numbers"`` (a list of those),
        ``"mapping"`` (key -> finite number).
    low, high: inclusive bounds of the value (of every item for lists); ``low_open``/``high_open`` make them
        exclusive.
    length: exact list length (None: any non-empty length).
    optional: None is accepted too.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    length: int | None = None
    optional: bool = False

    def _scalar_ok(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return False
        if self.kind in ("int", "ints") and not isinstance(v, numbers.Integral):
            return False
        if not math.isfinite(v):
            return False
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return self.high is None or (v < self.high if self.high_open else v <= self.high)

    def accepts(self, value) -> bool:
        if value is None:
            return self.optional
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "mapping":
            return isinstance(value, Mapping) and all(isinstance(k, str) and self._scalar_ok(v) for k, v in value.items())
        if self.kind in ("ints", "numbers"):
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
                return False
            return (self.length is None or len(value) == self.length) and all(self._scalar_ok(v) for v in value)
        return self._scalar_ok(value)

    def describe(self) -> str:
        if self.kind == "bool":
            text = "true or false (a boolean, not a string)"
        else:
            noun = {"int": "an integer", "number": "a number", "ints": "integers", "numbers": "numbers",
                    "mapping": "a mapping of names to numbers"}[self.kind]
            bounds = []
            if self.low is not None:
                bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
            if self.high is not None:
                bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
            text = noun + (" " + " and ".join(bounds) if bounds else "")
            if self.kind in ("ints", "numbers"):
                text = f"a list of {self.length or 'one or more'} {text}"
        return f"null or {text}" if self.optional else text


def _int(low: int = 1, **kw) -> Accepts:
    return Accepts("int", low=low, **kw)


_POSITIVE = Accepts("number", low=0, low_open=True)

AUTOENCODER_SCHEMA: dict[str, Accepts] = {
    "latent_channels": _int(),
    **{f"{side}_{key}": _int() for side in ("encoder", "decoder") for key in ("dim", "depth", "heads", "mlp_dim")},
    "patch_size": Accepts("ints", low=1, length=3),
    "in_channels": _int(),
    "pos_grid_size": _int(),
    "use_quantizer": Accepts("bool"),
    "fsq_codebook_size": _int(2, optional=True),
    "fsq_num_codebooks": _int(),
    "fsq_levels": Accepts("ints", low=2, optional=True),
    "temporal_tile_frames": _int(),
    "scaling_factor": _POSITIVE,
    "shift_factor": Accepts("number"),
    "latents_mean": Accepts("numbers", optional=True),
    "latents_std": Accepts("numbers", low=0, low_open=True, optional=True),
    "block_out_channels": Accepts("ints", low=1),
    "force_upcast": Accepts("bool"),
    "sample_size": _int(),
    "deblock_strength": Accepts("number", low=0, high=0.5),
    **{key: _int(optional=True) for key in ("z_dim", "scale_factor_spatial", "scale_factor_temporal")},
}

GAUSSIAN_DECODER_SCHEMA: dict[str, Accepts] = {
    "resolution": _int(),
    "model_channels": _int(6),  # the 3-axis sin/cos position code needs at least 1 frequency per axis
    "latent_channels": _int(),
    "num_blocks": _int(0),
    "num_heads": _int(),
    "mlp_channels": _int(),
    "window_size": _int(),
    "num_gaussians": _int(),
    "voxel_size": _POSITIVE,
    "lr": Accepts("mapping", optional=True),
    "perturb_offset": Accepts("bool"),
    "filter_3d": Accepts("number", low=0),
    "scaling_bias": _POSITIVE,
    "opacity_bias": Accepts("number", low=0, low_open=True, high=1, high_open=True),
    "softcap": Accepts("number", low=0, optional=True),
    "surfel_prior": Accepts("mapping", optional=True),
}


def _autoencoder_rules(c: Mapping, cls: type) -> list[str]:
    """Cross-field errors of an AutoencoderAToken config whose keys each passed the schema."""
    errors = []
    # Aliases Wan-style pipelines read; they are derived, so a config that contradicts them is an error.
    derived = {"z_dim": c["latent_channels"], "scale_factor_spatial": c["patch_size"][1],
               "scale_factor_temporal": c["patch_size"][0]}
    errors += [f"{key}={c[key]} contradicts the model ({key} must be {value}); drop it from the config"
               for key, value in derived.items() if c[key] is not None and c[key] != value]
    for side in ("encoder", "decoder"):
        dim, heads = c[f"{side}_dim"], c[f"{side}_heads"]
        if dim % heads or (dim // heads) % 8:
            errors.append(f"{side}_dim={dim} / {side}_heads={heads} must give a whole head size divisible by 8 "
                          "(4D RoPE rotates 8 groups per head); change one of them")
    frames, side, side_w = c["patch_size"]
    if side != side_w:
        errors.append(f"patch_size={list(c['patch_size'])} must have equal height and width (frames, side, side)")
    entries = len(c["block_out_channels"])
    if 2 ** (entries - 1) != side:  # diffusers pipelines derive the spatial factor from this length alone
        fix = f"give {side.bit_length()} entries" if side & (side - 1) == 0 else "use a power-of-two patch side"
        errors.append(f"block_out_channels has {entries} entries, so pipelines read a spatial factor of "
                      f"{2 ** (entries - 1)}, but patch_size[1]={side}; {fix}")
    if c["temporal_tile_frames"] % frames:
        errors.append(f"temporal_tile_frames={c['temporal_tile_frames']} must be a multiple of patch_size[0]={frames}")
    for key in ("latents_mean", "latents_std"):
        if c[key] is not None and len(c[key]) != c["latent_channels"]:
            errors.append(f"{key} has {len(c[key])} values but latent_channels={c['latent_channels']}; give one per "
                          "channel or null")
    return errors


def _gaussian_decoder_rules(c: Mapping, cls: type) -> list[str]:
    """Cross-field errors of an ATokenGaussianDecoder config whose keys each passed the schema."""
    errors = []
    if c["num_blocks"] and c["model_channels"] % c["num_heads"]:  # heads exist only inside blocks
        errors.append(f"model_channels={c['model_channels']} must be divisible by num_heads={c['num_heads']}")
    if c["perturb_offset"] and c["voxel_size"] <= 1:
        errors.append(f"voxel_size={c['voxel_size']} must exceed 1 with perturb_offset=true (atanh(+-1/voxel_size)); "
                      "raise it or set perturb_offset=false")
    unknown = sorted(set(c["lr"] or {}) - set(cls.default_lr))
    if unknown:
        errors.append(f"lr has unknown keys {unknown}; its keys are {sorted(cls.default_lr)}")
    prior = c.get("surfel_prior")
    if prior is not None:
        unknown = sorted(set(prior) - set(cls.default_surfel))
        if unknown:
            errors.append(f"surfel_prior has unknown keys {unknown}; its keys are {sorted(cls.default_surfel)}")
        if any(prior.get(k, 1) <= 0 for k in ("tangent", "normal")):
            errors.append(f"surfel_prior tangent and normal are standard deviations in voxels and must be > 0; got "
                          f"{prior}")
        if c["perturb_offset"]:
            errors.append("surfel_prior spreads the Gaussians over the surface itself; set perturb_offset=false")
        if c["latent_channels"] % 3:
            errors.append(f"surfel_prior colours surfels with the mean of RGB triples, so latent_channels must be a "
                          f"multiple of 3; got {c['latent_channels']}")
    return errors


SCHEMAS = {
    "AutoencoderAToken": (AUTOENCODER_SCHEMA, _autoencoder_rules),
    "ATokenGaussianDecoder": (GAUSSIAN_DECODER_SCHEMA, _gaussian_decoder_rules),
}


def check_config(cls: type, config: Mapping) -> None:
    """Raise ValueError (one line: class, key, value, accepted values) unless ``config`` (every constructor argument
    of model class ``cls``, as ``register_to_config`` records them) fits the class's schema and rules."""
    owner = cls.__name__
    schema, rules = next(SCHEMAS[base.__name__] for base in cls.__mro__ if base.__name__ in SCHEMAS)
    for key, accepts in schema.items():
        value = config.get(key)
        if not accepts.accepts(value):
            raise ValueError(f"{owner} config {key}={value!r} is invalid: expected {accepts.describe()}; fix it in "
                             "config.json or the constructor call.")
    errors = rules(config, cls)
    if errors:
        raise ValueError(f"{owner} config: {errors[0]}.")


def check_config_keys(cls, config: Mapping) -> None:
    """Raise ValueError naming a key of ``config`` that ``cls`` does not take (a typo, or a newer version's key);
    private ``_`` keys and diffusers' ``quantization_config`` are allowed."""
    known = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(k for k in config if not k.startswith("_") and k != "quantization_config" and k not in known)
    if unknown:
        raise ValueError(f"config key {unknown[0]!r} is not an {cls.__name__} setting (a typo, or a folder from a newer "
                         f"atoken-diffusers); remove it from config.json or upgrade. Known keys: "
                         f"{', '.join(sorted(known))}.")
