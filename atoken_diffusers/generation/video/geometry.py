"""AToken's video geometry as Wan's pipeline sees it: 4x temporal and 16x spatial compression, and the frame counts
that follow (Wan asks for 4k + 1 frames; AToken decodes every latent frame to 4 frames).

A leaf module (imports nothing of the package), so the pipeline, its builders and its trainer share it.
"""

from __future__ import annotations

TEMPORAL = 4  # AToken's temporal compression
SPATIAL = 16  # and its spatial one


def latent_num_frames(num_frames: int) -> int:
    """Latent frames Wan generates for ``num_frames`` (= 4k + 1): k + 1."""
    return (num_frames - 1) // TEMPORAL + 1


def decoded_num_frames(num_frames: int) -> int:
    """Frames of the video AToken decodes when Wan is asked for ``num_frames`` (= 4k + 1): 4 (k + 1)."""
    return TEMPORAL * latent_num_frames(num_frames)


def check_num_frames(num_frames, name: str = "num_frames") -> int:
    """``num_frames`` must be a positive integer of the form 4k + 1 (1, 5, 9, ..., 81); the error suggests the
    nearest valid counts."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"{name} must be a positive integer of the form 4k + 1 (1, 5, 9, ..., 81); got "
                         f"{num_frames!r}.")
    if (num_frames - 1) % TEMPORAL:
        lo = (num_frames - 1) // TEMPORAL * TEMPORAL + 1
        raise ValueError(f"{name}={num_frames} is not of the form 4k + 1 (Wan makes k + 1 latent frames); use {lo} or "
                         f"{lo + TEMPORAL}. AToken decodes 4k + 1 requested frames to 4 (k + 1) frames.")
    return num_frames
