"""AToken's video geometry as Wan's pipeline sees it: 4x temporal and 16x spatial compression, and the frame counts
that follow (Wan asks for 4k + 1 frames; AToken decodes every latent frame to 4 frames).

A leaf module (imports nothing of the package). Code with a VAE at hand passes ``vae.temporal_compression_ratio`` /
``vae.spatial_compression_ratio``; ``TEMPORAL`` and ``SPATIAL`` are only the defaults (AToken's values) for code
without one.
"""

from __future__ import annotations

TEMPORAL = 4  # AToken's temporal compression (vae.config.scale_factor_temporal)
SPATIAL = 16  # and its spatial one (vae.config.scale_factor_spatial)


def latent_num_frames(num_frames: int, temporal: int = TEMPORAL) -> int:
    """Latent frames Wan generates for ``num_frames`` (= 4k + 1 for temporal 4): k + 1."""
    return (num_frames - 1) // temporal + 1


def decoded_num_frames(num_frames: int, temporal: int = TEMPORAL) -> int:
    """Frames of the video AToken decodes when Wan is asked for ``num_frames`` (= 4k + 1): 4 (k + 1)."""
    return temporal * latent_num_frames(num_frames, temporal)


def check_num_frames(num_frames, name: str = "num_frames", temporal: int = TEMPORAL) -> int:
    """``num_frames`` must be a positive integer of the form 4k + 1 (1, 5, 9, ..., 81; ``temporal`` replaces the
    4); the error suggests the nearest valid counts."""
    form = f"{temporal}k + 1"
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"{name} must be a positive integer of the form {form} (1, {1 + temporal}, "
                         f"{1 + 2 * temporal}, ...); got {num_frames!r}.")
    if (num_frames - 1) % temporal:
        lo = (num_frames - 1) // temporal * temporal + 1
        raise ValueError(f"{name}={num_frames} is not of the form {form} (Wan makes k + 1 latent frames); use {lo} or "
                         f"{lo + temporal}. AToken decodes {form} requested frames to {temporal} (k + 1) frames.")
    return num_frames
