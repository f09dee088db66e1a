"""Loading that refuses a folder whose config and weights do not fit, instead of diffusers' log lines.

diffusers' ``from_pretrained`` only logs when checkpoint weights go unused or model weights stay randomly initialised,
and ignores unknown config keys with a warning. For AToken's own folders each of those means a wrong model (a config
edited to 2 blocks silently drops 4 trained ones), so :class:`StrictLoadingMixin` turns them into one-line errors,
and checks every loaded weight finite so that a corrupted file is blamed on the file, not on the next input.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import torch

from .config_validation import check_config_keys

_BLOCK = re.compile(r"^(.*?blocks)\.(\d+)\.")
_SHAPE_ERROR = re.compile(r"because (\S+) expected shape torch\.Size\(\[(.*?)\]\), but got torch\.Size\(\[(.*?)\]\)")


def check_finite_weights(tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise ValueError naming the first floating tensor of ``tensors`` that holds NaN/Inf.

    A load-time check, one pass per tensor and one host sync per device: a float32 sum is NaN/Inf when any element
    is (10x faster than ``isfinite().all()``); the rare tensor flagged by an overflowing sum is counted exactly.
    Quantized tensor subclasses (torchao's) are skipped: they implement few operators, sums not among them.
    """
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    sums: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and tensor.device.type != "meta" and not is_traceable_wrapper_subclass(tensor):
            sums.setdefault(tensor.device, []).append((name, tensor.sum(dtype=torch.float32).isfinite()))
    flagged = [name for items in sums.values()
               for (name, _), ok in zip(items, torch.stack([flag for _, flag in items]).tolist()) if not ok]
    counts = {name: int((~torch.isfinite(tensors[name])).sum()) for name in flagged}  # error path only
    bad = [name for name in flagged if counts[name]]
    if bad:
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise ValueError(f"{source}: weight {bad[0]!r} holds {counts[bad[0]]} NaN/Inf values{more}; the file is "
                         "corrupt: download or convert it again.")


def _block_counts(keys) -> dict[str, int]:
    """Prefix of each repeated block list (``encoder.blocks``) -> number of blocks the keys hold."""
    counts: dict[str, int] = {}
    for key in keys:
        match = _BLOCK.match(key)
        if match:
            counts[match[1]] = max(counts.get(match[1], 0), int(match[2]) + 1)
    return counts


def check_loading_info(model, info: Mapping, source: str, depth_keys: Mapping[str, str]) -> None:
    """Raise ValueError unless the checkpoint at ``source`` filled exactly ``model``'s weights (shape mismatches
    never get here: diffusers raises on them unless told to re-initialise).

    ``depth_keys`` maps a block-list prefix to the config key of its length, so the error can name the fix.
    """
    missing, unexpected = sorted(info.get("missing_keys") or []), sorted(info.get("unexpected_keys") or [])
    if not (missing or unexpected):
        return
    stored = (set(model.state_dict()) - set(missing)) | set(unexpected)
    built, held = _block_counts(model.state_dict()), _block_counts(stored)
    for prefix, key in depth_keys.items():
        if built.get(prefix, 0) != held.get(prefix, 0):
            raise ValueError(f"{source}: the weights have {held.get(prefix, 0)} blocks under {prefix!r} but config "
                             f"{key}={built.get(prefix, 0)}; set {key}={held.get(prefix, 0)} in config.json.")
    what = f"{len(missing)} weights missing (e.g. {missing[0]!r})" if missing else \
        f"{len(unexpected)} unused weights (e.g. {unexpected[0]!r})"
    raise ValueError(f"{source}: {what}; config.json does not match the weights file: restore the folder as saved "
                     "or convert it again.")


class StrictLoadingMixin:
    """Put first among a ``ModelMixin`` model's bases. ``_depth_keys``: block-list prefix -> config key of its
    length (for error messages)."""

    _depth_keys: dict[str, str] = {}

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """diffusers' ``from_config``; a config key the model does not take is an error naming it."""
        if isinstance(config, Mapping):
            check_config_keys(cls, config)
        return super().from_config(config, return_unused_kwargs, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """diffusers' ``from_pretrained`` (same arguments, hub included), then: every weight of the model loaded,
        every stored weight used (unless ``ignore_mismatched_sizes=True`` asks to re-initialise what does not fit),
        and all finite; otherwise ValueError naming the weight and the fix. With
        ``local_files_only=True`` (what the project's own loads pass) a missing folder is a one-line
        FileNotFoundError."""
        want_info = kwargs.pop("output_loading_info", False)
        source = os.path.join(str(pretrained_model_name_or_path), kwargs.get("subfolder") or "")
        source = source.rstrip("/\\") or str(pretrained_model_name_or_path)
        try:
            result = super().from_pretrained(pretrained_model_name_or_path, output_loading_info=True, **kwargs)
        except OSError as err:  # offline and no such folder: diffusers' answer is a paragraph about connections
            if not kwargs.get("local_files_only") or os.path.isdir(source):
                raise
            raise FileNotFoundError(f"{source}: no such model folder (and not in the Hugging Face cache); pass a "
                                    "folder written by save_pretrained or `atoken convert`.") from err
        except ValueError as err:  # diffusers' multi-sentence shape error, which names no file: say it in one line
            shape = _SHAPE_ERROR.search(str(err))
            if shape is None:
                raise
            raise ValueError(f"{source}: weight {shape[1]!r} is stored as ({shape[3]}) but the config builds "
                             f"({shape[2]}); config.json does not belong to these weights.") from err
        model, info = result if isinstance(result, tuple) else (result, None)
        if info is not None and not kwargs.get("ignore_mismatched_sizes"):  # that flag asks for re-initialisation
            check_loading_info(model, info, source, cls._depth_keys)
        check_finite_weights(model.state_dict(), source)
        return (model, info) if want_info else model
