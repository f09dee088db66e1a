"""Input checks shared by every public entry point. Each error names the argument and says how to fix it.

Shape, dtype and type checks always run (they cost nothing). Checks of tensor *values* (ranges, NaN/Inf, index
bounds) need the values on the host: they run for CPU tensors in eager mode, and are skipped for accelerator tensors
(where reading a value would stall the device every call) and while ``torch.compile`` / ``torch.export`` trace (where
it would break the graph). :func:`values_checkable` says which. No value check copies its input: dimensions broadcast
by ``expand()`` are read once and other strided views are reduced in bounded chunks (:func:`value_range`), so checking
a 30000 x 30000 expanded view costs what its storage costs.

Sizes: :class:`InputTooLargeError` is raised (by :mod:`atoken_diffusers.utils.memory`) for inputs whose estimated peak
memory exceeds what the device has available.
"""

from __future__ import annotations

import math

import torch

# Pixels are expected in [-1, 1]; a little overshoot (e.g. from a previous decode) is fine, 0..255 or 0..1-scaled
# garbage is not.
PIXEL_LIMIT = 1.5
# Largest temporary (elements) a value check may create when reducing a strided view that no permutation makes
# contiguous (e.g. x[..., ::2]): 16M float32 = 64 MB.
REDUCE_CHUNK = 1 << 24


class InputTooLargeError(ValueError):
    """An input whose estimated peak memory exceeds the memory available; the message gives both figures and the fix
    (tiling, a smaller size). A ``ValueError``, so callers that catch bad input catch this too.

    Attributes: ``problem`` (the message before the fix) and ``fix``, one of ``"tiling"``, ``"smaller_tile"`` and
    ``"smaller_input"``, so a front end (the CLI, ComfyUI) can name its own flag or widget instead of the Python
    argument."""

    FIXES = {
        "tiling": "pass tiling=True (or call enable_tiling()) and slicing=True, or a smaller input",
        "smaller_tile": "pass a smaller tile_sample_min_size and slicing=True",
        "smaller_input": "pass a smaller input (fewer samples, frames or pixels): even the smallest tiles would not fit",
    }

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}; {self.FIXES[fix]}.")
        self.problem, self.fix = problem, fix

    def phrased(self, fixes: dict[str, str]) -> str:
        """The message with the fix worded by ``fixes`` (keys as :attr:`FIXES`; missing ones keep the default)."""
        return f"{self.problem}; {fixes.get(self.fix, self.FIXES[self.fix])}."


def check_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}.")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); pass at least one sample with a non-zero size.")
    return x


def values_checkable(x: torch.Tensor) -> bool:
    """True when checking ``x``'s values is free: a CPU tensor, outside torch.compile/torch.export tracing."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return x.device.type == "cpu"


def distinct_view(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``x`` without its broadcast copies, and how often each element repeats: dimensions of stride 0 (from
    ``expand()``) narrowed to one entry, the rest permuted into storage order (contiguous for any permutation of a
    contiguous tensor). Its min, max and NaN presence are ``x``'s; no data is copied."""
    repeat = 1
    for dim, (size, stride) in enumerate(zip(x.shape, x.stride())):
        if stride == 0 and size > 1:
            x, repeat = x.narrow(dim, 0, 1), repeat * size
    order = sorted(range(x.ndim), key=lambda d: -x.stride(d))
    return x.permute(order), repeat


def _aminmax_bounded(x: torch.Tensor) -> torch.Tensor:
    """(2,) min and max of ``x``; a strided ``x`` is reduced in pieces of at most REDUCE_CHUNK elements, since
    ``torch.aminmax`` copies any non-contiguous input whole."""
    if x.is_contiguous() or x.numel() <= REDUCE_CHUNK:
        return torch.stack(torch.aminmax(x))
    rows = max(1, REDUCE_CHUNK * x.shape[0] // x.numel())
    parts = [_aminmax_bounded(part[0] if part.shape[0] == 1 else part) for part in x.split(rows)]
    lo, hi = torch.stack(parts).unbind(1)
    return torch.stack([lo.min(), hi.max()])


def value_range(x: torch.Tensor) -> tuple[float, float]:
    """(min, max) in one pass without a copy of ``x``, also for expanded or strided views (NaN propagates into
    both)."""
    lo, hi = _aminmax_bounded(distinct_view(x.detach())[0]).tolist()
    return lo, hi


def check_finite(x: torch.Tensor, name: str, bounds: tuple[float, float] | None = None) -> None:
    """Raise if ``x`` holds NaN/Inf; ``bounds`` (min, max) from :func:`value_range` saves a pass over large inputs."""
    if not x.is_floating_point() or (bounds is None and not values_checkable(x)):
        return
    lo, hi = bounds if bounds is not None else value_range(x)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        core, repeat = distinct_view(x.detach())
        bad = (~torch.isfinite(core)).sum().item() * repeat  # only on the error path
        raise ValueError(f"{name} contains {bad} NaN/Inf values; clean the input (e.g. torch.nan_to_num) first.")


def check_pixels(x, name: str = "x", channels: int = 3, values: bool = True) -> torch.Tensor:
    """Validate images (B, C, H, W) or videos (B, C, T, H, W) in [-1, 1]; ``values=False`` checks only the type and
    shape (then call :func:`check_pixel_values`, e.g. after a size check)."""
    check_tensor(x, name)
    if x.ndim not in (4, 5):
        raise ValueError(
            f"{name} must be images (B, {channels}, H, W) or videos (B, {channels}, T, H, W); got rank {x.ndim} "
            f"with shape {tuple(x.shape)}. Add a batch dimension with {name}[None] if you passed a single sample."
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name} has dtype {x.dtype}; pass float pixels in [-1, 1], e.g. {name}.float() / 127.5 - 1 for uint8 images."
        )
    if x.shape[1] != channels:
        hint = " (channel-last input? use x.permute(0, 3, 1, 2))" if x.shape[-1] == channels else ""
        raise ValueError(f"{name} must have {channels} channels in dim 1; got shape {tuple(x.shape)}{hint}.")
    return check_pixel_values(x, name) if values else x


def check_pixel_values(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Raise if float pixels ``x`` hold NaN/Inf or lie far outside [-1, 1] (when :func:`values_checkable`)."""
    if not values_checkable(x):
        return x
    bounds = value_range(x)
    check_finite(x, name, bounds)
    peak = max(-bounds[0], bounds[1])
    if peak > PIXEL_LIMIT:
        raise ValueError(
            f"{name} has values up to {peak:.3g} but pixels must lie in [-1, 1]; rescale 0..255 input with "
            f"{name} / 127.5 - 1 (or 0..1 input with {name} * 2 - 1)."
        )
    return x


def check_latents(z, channels: int, name: str = "z") -> torch.Tensor:
    """Validate latents (B, C, h, w) or (B, C, t, h, w)."""
    check_tensor(z, name)
    if z.ndim not in (4, 5):
        raise ValueError(
            f"{name} must be image latents (B, {channels}, h, w) or video latents (B, {channels}, t, h, w); got shape "
            f"{tuple(z.shape)}."
        )
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a float tensor; got {z.dtype}. For FSQ indices use detokenize().")
    if z.shape[1] != channels:
        raise ValueError(
            f"{name} must have {channels} latent channels in dim 1 (this model's latent_channels); got shape {tuple(z.shape)}."
        )
    check_finite(z, name)
    return z


def check_indices(indices, num_codebooks: int, codebook_size: int, name: str = "indices") -> torch.Tensor:
    """Validate FSQ indices (B, num_codebooks, h, w) or (B, num_codebooks, t, h, w)."""
    check_tensor(indices, name)
    if indices.is_floating_point() or indices.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of codebook indices; got {indices.dtype}.")
    if indices.ndim not in (4, 5) or indices.shape[1] != num_codebooks:
        raise ValueError(
            f"{name} must have shape (B, {num_codebooks}, h, w) or (B, {num_codebooks}, t, h, w); got {tuple(indices.shape)}."
        )
    if not values_checkable(indices):
        return indices
    lo, hi = (int(v) for v in value_range(indices))
    if lo < 0 or hi >= codebook_size:
        raise ValueError(f"{name} must lie in [0, {codebook_size}); got values in [{lo}, {hi}].")
    return indices


def check_tokens(tokens, channels: int, name: str = "tokens", pos_limit: int | None = None):
    """Validate a :class:`SparseTokens` set: feature width, finite values, coordinates, samples numbered 0..B-1."""
    from ..tokens.sparse import SparseTokens

    if not isinstance(tokens, SparseTokens):
        raise TypeError(f"{name} must be a SparseTokens(feats, coords); got {type(tokens).__name__}.")
    if tokens.num_tokens == 0:
        raise ValueError(f"{name} holds no tokens; pass at least one.")
    if tokens.feats.shape[1] != channels:
        raise ValueError(f"{name}.feats must have {channels} channels; got {tokens.feats.shape[1]}.")
    if not tokens.feats.is_floating_point():
        raise TypeError(f"{name}.feats must be a float tensor; got {tokens.feats.dtype}.")
    check_finite(tokens.feats, f"{name}.feats")
    if (tokens.coords < 0).any():
        raise ValueError(f"{name}.coords must be non-negative (b, t, x, y, z) indices.")
    present = torch.unique(tokens.coords[:, 0])
    if present.numel() != int(present.max()) + 1:
        raise ValueError(
            f"{name}.coords sample indices (column b) must be 0..B-1 without gaps; got {present.tolist()[:8]}."
        )
    return tokens


def check_voxel_coords(coords, resolution: int, rows: int | None = None, rows_of: str = "feats",
                       batch: int | None = None, name: str = "coords") -> torch.Tensor:
    """Validate (N, 4) integer voxel coordinates (batch, x, y, z) with x, y, z in [0, resolution).

    Args:
        rows: the number of rows ``coords`` must have (one per row of the tensor named ``rows_of``), if known.
        batch: the number of samples, if known: batch indices must then lie in [0, batch); else only >= 0.
    """
    if not isinstance(coords, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(coords).__name__}.")
    if coords.ndim != 2 or coords.shape[1] != 4:
        xyz_only = coords.ndim == 2 and coords.shape[1] == 3
        hint = " Prepend the batch index, e.g. F.pad(coords, (1, 0))." if xyz_only else ""
        raise ValueError(f"{name} must have shape (N, 4) as (batch, x, y, z); got {tuple(coords.shape)}.{hint}")
    if coords.is_floating_point() or coords.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor; got {coords.dtype}.")
    if rows is not None and coords.shape[0] != rows:
        raise ValueError(f"{name} has {coords.shape[0]} rows but {rows_of} has {rows}; one row per voxel.")
    if coords.shape[0] == 0:
        return coords
    # One host read for all four bounds (this is input validation, before any model work).
    lo, hi, first, last = torch.stack([coords[:, 1:].min(), coords[:, 1:].max(), coords[:, 0].min(),
                                       coords[:, 0].max()]).tolist()
    if lo < 0 or hi >= resolution:
        raise ValueError(f"{name} x, y, z must lie in [0, {resolution}) (resolution); got [{lo}, {hi}].")
    if batch is not None and (first < 0 or last >= batch):
        raise ValueError(f"{name} batch indices must lie in [0, {batch}) (column 0, one index per sample); got "
                         f"[{first}, {last}].")
    if first < 0:
        raise ValueError(f"{name} batch indices (column 0) must be >= 0; got {first}.")
    return coords
