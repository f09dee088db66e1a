"""Argument checks and conversions shared by the generation pipelines. Errors name the argument and the fix."""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch


def resolve_class_labels(class_labels, num_classes: int, class_names: Sequence[str] | None,
                         name: str = "class_labels") -> torch.Tensor:
    """Class ids (B,) int64 from an int, a class name, a list of either, or an integer tensor.

    Raises ValueError naming the unknown id or name and listing what exists.
    """
    if class_labels is None:
        raise ValueError(f"{name} is required: pass a class id in [0, {num_classes}) or a list of them.")
    if isinstance(class_labels, torch.Tensor):
        if class_labels.is_floating_point() or class_labels.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer class ids; got a {class_labels.dtype} tensor.")
        items = class_labels.reshape(-1).tolist()
    elif isinstance(class_labels, (int, str)):
        items = [class_labels]
    else:
        items = list(class_labels)
    if not items:
        raise ValueError(f"{name} is empty; pass at least one class id.")
    names = list(class_names or [])
    ids = []
    for item in items:
        if isinstance(item, str):
            if item not in names:
                known = ", ".join(names[:20]) or "none: this model has no class names, pass integer ids"
                raise ValueError(f"{name}: unknown class name {item!r}; known names: {known}.")
            ids.append(names.index(item))
        elif isinstance(item, numbers.Integral) and not isinstance(item, bool):
            item = int(item)
            if not 0 <= item < num_classes:
                named = f" ({', '.join(f'{i}={n}' for i, n in enumerate(names[:20]))})" if names else ""
                raise ValueError(f"{name}: class id {item} is out of range; this model knows {num_classes} classes, "
                                 f"ids 0..{num_classes - 1}{named}.")
            ids.append(item)
        else:
            raise TypeError(f"{name} entries must be int class ids or str class names; got {type(item).__name__}.")
    return torch.tensor(ids, dtype=torch.long)


def check_guidance(guidance_scale: float, conditional: bool, dropout: float) -> bool:
    """Whether classifier-free guidance runs. Scale 1 disables it; below 1 is an error (it would push samples away
    from the condition); above 1 needs a conditional model trained with label dropout."""
    if not guidance_scale >= 1:
        raise ValueError(f"guidance_scale must be >= 1 (1 turns classifier-free guidance off); got {guidance_scale}.")
    if guidance_scale > 1 and not conditional:
        raise ValueError(f"guidance_scale={guidance_scale} needs a condition to guide towards; this model is "
                         "unconditional, pass guidance_scale=1.")
    if guidance_scale > 1 and dropout <= 0:
        raise ValueError(f"guidance_scale={guidance_scale}: the transformer was trained without label dropout "
                         "(class_dropout_prob=0), so it has no unconditional branch; pass guidance_scale=1.")
    return guidance_scale > 1


def check_multiple(value, name: str, factor: int, reason: str) -> int:
    """``value`` if it is a positive integer multiple of ``factor``; else a ValueError naming ``name``, ``reason`` and
    the two nearest valid values. A ``--flag`` name reads as a command-line option ("--resolution 40 is not ..."),
    any other as an argument ("height=40 must be ...")."""
    if isinstance(value, bool) or not isinstance(value, int) or value < factor or value % factor:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        lo = max(factor, int(value) // factor * factor) if numeric else factor
        said = f"{name} {value!r} is not" if name.startswith("--") else f"{name}={value!r} must be"
        raise ValueError(f"{said} a positive multiple of {factor} ({reason}); use {lo} or {lo + factor}.")
    return value


def check_image_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """(h, w) latent grid of an image size; both sides must be positive multiples of ``factor``, the VAE's spatial
    compression (``vae.spatial_compression_ratio``, 16 for AToken)."""
    for arg, value in (("height", height), ("width", width)):
        check_multiple(value, arg, factor, "the VAE's pixels per latent cell")
    return height // factor, width // factor


def check_output_type(output_type: str, allowed: Sequence[str]) -> None:
    if output_type not in allowed:
        raise ValueError(f"output_type must be one of {', '.join(allowed)}; got {output_type!r}.")
