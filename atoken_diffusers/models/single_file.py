"""Loading official single-file checkpoints, in the shape of diffusers' ``FromOriginalModelMixin``.

diffusers' own mixin only knows the model classes registered in ``diffusers.loaders.single_file_utils``, so AToken
brings its own: the same entry point, ``from_single_file(checkpoint, config=...)``, backed by
:func:`atoken_diffusers.conversion.original.convert_original_checkpoint`, which turns the checkpoint and its YAML into
a (config, state dict) pair without knowing the model class. The mixin builds the model and checks every name and
shape against it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from ..conversion.original import check_state_dict, convert_original_checkpoint
from .strict_loading import check_finite_weights


class FromOriginalATokenMixin:
    """Adds :meth:`from_single_file` (and its older name :meth:`from_original`) to a ``ModelMixin`` class."""

    @classmethod
    def from_single_file(
        cls,
        pretrained_model_link_or_path_or_dict: str | os.PathLike | Mapping[str, torch.Tensor],
        config: str | os.PathLike | None = None,
        original_config: str | os.PathLike | None = None,
        torch_dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        **overrides,
    ):
        """Build the model (eval mode) from an official ``.pt`` checkpoint and its ``.yaml`` config.

        Args:
            pretrained_model_link_or_path_or_dict: a local ``.pt`` file (read weights-only) or a loaded official state
                dict. Nothing is downloaded.
            config: the checkpoint's official YAML (e.g. ``atoken-soc.yaml``). ``original_config`` is the diffusers
                spelling of the same argument; pass one of them.
            torch_dtype: cast the weights to this dtype (default: as stored, float32).
            device: move the model there.
            overrides: constructor arguments that replace the converted config's (e.g. ``decode_cache_frames=4``).
        Raises:
            ValueError / KeyError naming the config key or checkpoint key that does not fit (or a weight holding
            NaN/Inf), and how to fix it.
        """
        if config is not None and original_config is not None:
            raise ValueError("pass the YAML as config or original_config, not both.")
        yaml_path = config if config is not None else original_config
        if yaml_path is None:
            raise ValueError(f"{cls.__name__}.from_single_file needs the checkpoint's YAML: pass "
                             "config='atoken-soc.yaml'.")
        if torch_dtype is not None and not isinstance(torch_dtype, torch.dtype):
            raise TypeError(f"torch_dtype must be a torch.dtype such as torch.bfloat16; got {torch_dtype!r}.")
        source = pretrained_model_link_or_path_or_dict
        converted = convert_original_checkpoint(source, yaml_path)
        model = cls(**{**converted.config, **overrides})
        check_state_dict(converted.state_dict, model, converted.original_names)
        # Names as in the user's file: a NaN weight is blamed on the checkpoint, not later on the input.
        check_finite_weights({converted.original_names.get(k, k): v for k, v in converted.state_dict.items()},
                             "the state dict" if isinstance(source, Mapping) else str(source))
        model.load_state_dict(converted.state_dict, strict=True)
        model.eval()
        # nn.Module.to: diffusers' ModelMixin.to warns about fp32 modules on every dtype cast, and this model has none.
        return torch.nn.Module.to(model, device=device, dtype=torch_dtype)

    @classmethod
    def from_original(cls, checkpoint, config, **kwargs):
        """The earlier name of :meth:`from_single_file` (same arguments), kept for existing callers."""
        return cls.from_single_file(checkpoint, config=config, **kwargs)
