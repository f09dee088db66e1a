"""Peak-memory estimates for dense encode/decode, and the check that refuses inputs that would not fit.

:func:`estimate_peak_bytes` follows the execution plan of :class:`~atoken_diffusers.models.autoencoder_atoken.
AutoencoderAToken` from shapes alone: the work unit that runs at once (one sample with slicing, one temporal tile of
``temporal_tile_frames`` frames for encode / ``decode_stride_frames`` for decode, one spatial tile with tiling) sets
the transformer activations and the per-unit patch tensors; the whole output is added on top. The constants below
were calibrated against the peak anonymous memory of real calls on the ``tiny`` and ``small`` presets (CPU, float32,
PyTorch 2.13; estimates at 1.03-1.77x the measured peaks; tests/test_bad_sizes.py keeps three of them between 1x and
2x). Attention runs through ``scaled_dot_product_attention`` kernels that never hold the (tokens x tokens) score
matrix of a dense grid, so it adds no quadratic term; the decoder's key/value cache (a masked layout) is the one path
not calibrated.

:func:`check_fits` compares the estimate with :func:`available_bytes` (``psutil.virtual_memory().available`` on
CPU, free plus PyTorch-cached memory on CUDA) and raises :class:`~atoken_diffusers.utils.validation.
InputTooLargeError` naming both numbers and the fix. Nothing runs while ``torch.compile``/``torch.export`` trace, so
graphs stay whole.
"""

from __future__ import annotations

import math

import torch

from .validation import InputTooLargeError

# Bytes per token of one transformer pass, in units of the element size: the widest moment of a block holds the
# residual, the normed input, q/k/v and their rotated copies and the attention output (ATTENTION_WIDTHS x dim), or the
# MLP's hidden and activated rows (MLP_WIDTHS x mlp_dim) next to the residual.
ATTENTION_WIDTHS = 14
MLP_WIDTHS = 3
# Activations autograd keeps per block and token when gradients are on (x dim and x mlp_dim, element size units).
SAVED_DIM_WIDTHS, SAVED_MLP_WIDTHS = 12, 3
# Fixed overhead of a call (kernels' scratch buffers, allocator slack).
OVERHEAD_BYTES = 16 << 20
# Safety factor over the sum above: measured peaks were 0.8-1.2x the raw sum for tiled calls (allocator slack over
# many tiles) and 0.7-1.05x for untiled ones, so estimates land at 1.03-1.77x the measured peak.
MARGIN = 1.25
# The smallest spatial tile (pixels) a refusal suggests before it asks for a smaller input instead.
SMALLEST_TILE = 128
VERBS = {"encode": "encode", "decode": "decode", "forward": "encode and decode"}


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def format_bytes(n: float) -> str:
    """Human size: ``6.9 GB``."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.3g} TB"


def transformer_bytes(tokens: int, dim: int, mlp_dim: int, depth: int, element_size: int, grad: bool) -> int:
    """Peak activation bytes of one pass of ``tokens`` tokens through a transformer stack."""
    widest = max(ATTENTION_WIDTHS * dim, MLP_WIDTHS * mlp_dim + 2 * dim)
    saved = depth * (SAVED_DIM_WIDTHS * dim + SAVED_MLP_WIDTHS * mlp_dim) if grad else 0
    return tokens * element_size * (widest + saved)


def estimate_peak_bytes(model, shape, mode: str, dtype: torch.dtype, options) -> int:
    """Estimated peak bytes (beyond the weights and the input itself) of ``model``'s dense encode or decode.

    Args:
        model: an ``AutoencoderAToken`` (its config and patch size are read).
        shape: the input's shape: pixels (B, C, H, W) / (B, C, T, H, W) for ``"encode"``, latents (B, C, h, w) /
            (B, C, t, h, w) for ``"decode"``; ``"forward"`` takes pixels and counts both halves.
        dtype: the input's dtype (encode reads pixels in it).
        options: the call's :class:`~atoken_diffusers.models.inference_options.InferenceOptions`.
    """
    if mode not in ("encode", "decode", "forward"):
        raise ValueError(f"mode must be 'encode', 'decode' or 'forward'; got {mode!r}.")
    pt, s, _ = model.patch_size
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (4, 5):
        raise ValueError(f"shape must have 4 (images) or 5 (videos) entries; got {shape}.")
    b, frames, height, width = shape[0], (shape[2] if len(shape) == 5 else 1), shape[-2], shape[-1]
    if mode == "decode":
        grid = (b, frames, height, width)
    else:
        grid = (b, _ceil_div(frames, pt), _ceil_div(height, s), _ceil_div(width, s))
    image = len(shape) == 4
    pads = dict(spatial_pad=bool(height % s or width % s), temporal_pad=image or bool(frames % pt))
    encode = _unit_bytes(model, grid, image, "encode", dtype, options, **pads) if mode != "decode" else 0
    decode = _unit_bytes(model, grid, image, "decode", dtype, options) if mode != "encode" else 0
    # With gradients on, a forward keeps the encoder's saved activations while the decoder runs.
    total = encode + decode if encode and decode and _grad(model) else max(encode, decode)
    return int(total * MARGIN)


def _grad(model) -> bool:
    return torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters())


def _unit_bytes(model, grid: tuple[int, int, int, int], image: bool, mode: str, dtype: torch.dtype, options,
                spatial_pad: bool = False, temporal_pad: bool = False) -> int:
    """Peak bytes of encoding or decoding the latent grid (B, t, h, w) as the model would run it; ``spatial_pad`` /
    ``temporal_pad``: the pixels' sides / frames are not multiples of the patch (encode copies them padded)."""
    config, (pt, s, _) = model.config, model.patch_size
    b, t, h, w = grid
    tile, _ = options.tile_cells(s)
    tiled = options.tiling and max(h, w) > tile
    if mode == "encode":
        frames_per_pass = config.temporal_tile_frames // pt
    else:
        frames_per_pass = t if options.decode_cache_frames else options.decode_stride_frames // pt
    unit = ((1 if options.slicing else b), min(t, frames_per_pass), min(tile, h) if tiled else h,
            min(tile, w) if tiled else w)
    tokens = math.prod(unit)
    patch_dim = pt * s * s * config.in_channels
    element = model.dtype.itemsize
    pixel_element = max(element, dtype.itemsize)
    side = "encoder" if mode == "encode" else "decoder"
    stack = transformer_bytes(tokens, config[f"{side}_dim"], config[f"{side}_mlp_dim"], config[f"{side}_depth"],
                              element, _grad(model))
    unit_elements = tokens * patch_dim  # one work unit as 3072-wide patch vectors
    if mode == "encode":  # the padded copies of the unit (border rows/cols, zero frames), then the token copy
        frames_kept = 1 / pt if image else 1
        padded = (frames_kept if spatial_pad else 0) + (1 if temporal_pad else 0)
        unit_patches = (padded * pixel_element + element) * unit_elements
        output = b * t * h * w * 2 * config.latent_channels * element * (2 if tiled else 1)
    else:  # the decoder's output rows and their pixel-grid copy (+ the deblocked copy); tiles add the float32 blend
        unit_patches = (3 if config.get("deblock_strength") else 2) * unit_elements * element
        kept = patch_dim // pt if image else patch_dim
        output = (b * t * h * w * kept + h * w * s * s) * 4 if tiled else 0  # + the blend weights
    if b > unit[0] or t > unit[1]:  # slicing / temporal chunks gather their outputs into one more tensor
        output += b * t * h * w * (2 * config.latent_channels if mode == "encode" else patch_dim) * element
    # Every pass builds the position table of its tile and gathers it per token (float32).
    table = (unit[2] * unit[3] + tokens) * config[f"{side}_dim"] * 4
    return int(stack + unit_patches + output + table + OVERHEAD_BYTES)


def available_bytes(device: torch.device) -> int | None:
    """Memory a new allocation on ``device`` can use: available RAM on CPU, free plus cached-but-unused memory on
    CUDA; None where unknown (other devices)."""
    if device.type == "cpu":
        import psutil  # a dependency of accelerate and peft, both required

        return psutil.virtual_memory().available
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return None


def check_fits(model, shape, mode: str, dtype: torch.dtype, device: torch.device, options) -> None:
    """Raise :class:`InputTooLargeError` when the estimated peak of ``mode`` on an input of ``shape`` exceeds the
    memory available on ``device``; skipped while ``torch.compile``/``torch.export`` trace and on unknown devices."""
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return
    need = estimate_peak_bytes(model, shape, mode, dtype, options)
    if device.type == "cuda" and need <= torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device):
        return  # fits in PyTorch's own cache: the steady-state call makes no driver query
    available = available_bytes(device)
    if available is None or need <= available:
        return
    what = "x" if mode != "decode" else "z"
    size = " x ".join(str(int(n)) for n in shape[2:])
    smallest = options.replace(tiling=True, slicing=True, tile_sample_min_size=max(SMALLEST_TILE, model.patch_size[1]))
    if estimate_peak_bytes(model, shape, mode, dtype, smallest) > available:
        fix = "smaller_input"
    else:
        fix = "smaller_tile" if options.tiling else "tiling"
    tiles = f", tiles of {options.tile_sample_min_size} px" if options.tiling else ""
    raise InputTooLargeError(
        f"{what} of size {size} (batch {int(shape[0])}{tiles}) needs about {format_bytes(need)} to {VERBS[mode]} but only "
        f"{format_bytes(available)} is available on {device.type}", fix
    )
