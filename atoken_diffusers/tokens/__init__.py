"""Token sets and the conversions between dense pixels/voxels and tokens."""

from .patchify import PATCH_SIZE, grid_to_tokens, pad_to_patches, tokens_to_grid
from .sparse import SparseTokens
from .temporal_tiles import TokenLayout, build_layout
from .voxels import voxels_to_tokens

__all__ = [
    "PATCH_SIZE", "SparseTokens", "TokenLayout", "build_layout", "grid_to_tokens", "pad_to_patches",
    "tokens_to_grid", "voxels_to_tokens",
]
