"""Per-call inference options of :class:`AutoencoderAToken` (spatial tiling, batch slicing, decoder tiles).

``enable_tiling()``, ``enable_slicing()`` and ``set_decode_tiles()`` set a model's defaults, as in diffusers; a call
may override any of them (``vae.decode(z, tiling=True, decode_cache_frames=4)``) without touching the model, so
compiled graphs and concurrent callers (ComfyUI, the demo) never see another caller's settings. Every value is
checked here, once, with a message naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InferenceOptions:
    """Attributes:
    tiling: encode/decode spatial tiles of ``tile_sample_min_size`` px blended over ``tile_overlap_factor`` of a
        tile when an input is larger than one tile.
    slicing: run a batch one sample at a time (lower peak memory).
    decode_stride_frames, decode_cache_frames: decoder temporal tiles of ``stride`` frames, each also attending to
        the keys/values of the last ``cache`` frames of the tile before (0 = independent tiles).
    """

    tiling: bool = False
    tile_sample_min_size: int = 512
    tile_overlap_factor: float = 0.25
    slicing: bool = False
    decode_stride_frames: int = 16
    decode_cache_frames: int = 0

    def replace(self, **overrides) -> "InferenceOptions":
        """A copy with the non-None ``overrides``; unknown names raise TypeError listing the known ones."""
        unknown = sorted(set(overrides) - set(OPTION_NAMES))
        if unknown:
            raise TypeError(f"unknown inference option(s) {unknown}; known: {', '.join(OPTION_NAMES)}.")
        given = {k: v for k, v in overrides.items() if v is not None}
        if not given:
            return self
        # Built field by field (not dataclasses.replace), which torch.compile traces without a graph break.
        return InferenceOptions(**{name: given.get(name, getattr(self, name)) for name in OPTION_NAMES})

    def check(self, spatial: int, temporal: int, tile_frames: int) -> "InferenceOptions":
        """Raise ValueError naming the first option that does not fit a model of ``spatial`` x ``temporal``
        compression with ``tile_frames``-frame temporal tiles; returns self."""
        size, overlap = self.tile_sample_min_size, self.tile_overlap_factor
        if isinstance(size, bool) or not isinstance(size, int) or size < spatial or size % spatial:
            raise ValueError(f"tile_sample_min_size must be a positive multiple of {spatial}; got {size!r}.")
        if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
            raise ValueError(f"tile_overlap_factor must be a number in [0, 1); got {overlap!r}.")
        stride, cache = self.decode_stride_frames, self.decode_cache_frames
        for name, value, low in (("decode_stride_frames", stride, 1), ("decode_cache_frames", cache, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low or value % temporal:
                raise ValueError(f"{name} must be a multiple of {temporal} (>= {max(low, temporal) if low else 0}); "
                                 f"got {value!r}.")
        if stride + cache > tile_frames:
            raise ValueError(f"decode_stride_frames + decode_cache_frames must be <= {tile_frames} "
                             f"(temporal_tile_frames); got {stride} + {cache}.")
        return self

    def tile_cells(self, spatial: int) -> tuple[int, int]:
        """(tile side, overlap) in latent cells."""
        tile = self.tile_sample_min_size // spatial
        return tile, int(tile * self.tile_overlap_factor)


OPTION_NAMES = ("tiling", "tile_sample_min_size", "tile_overlap_factor", "slicing", "decode_stride_frames",
                "decode_cache_frames")
