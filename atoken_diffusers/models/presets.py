"""Named AToken configurations. Configs, not code, carry the sizes.

* ``so-c``: So400m/16 encoder + decoder, 48-channel continuous latents (official ``atoken-soc``).
* ``so-d``: the same with FSQ (8 codebooks of levels [4] * 6 = 4096 codes; official ``atoken-sod``).
* ``so-c-s1``: stage-1 checkpoint with 32 latent channels (official ``atoken-soc-s1``).
* ``base``: the paper's Base variant (12 blocks, 768 wide, 12 heads).
* ``small`` / ``small-d``: 6 + 6 blocks of width 192 (7.1M parameters), 48 latent channels (``small-d`` with FSQ,
  8 codebooks x 4096 codes): the embedded default this project trains on CPU.
* ``tiny`` / ``tiny-d``: 2 blocks of 64 channels, 12 latent channels (``tiny-d`` with FSQ, 2 codebooks); the shape
  of the parity fixtures, for tests.
"""

from __future__ import annotations

_SO400M = dict(
    encoder_dim=1152, encoder_depth=27, encoder_heads=16, encoder_mlp_dim=4304,
    decoder_dim=1152, decoder_depth=27, decoder_heads=16, decoder_mlp_dim=4304,
)

_SMALL = dict(
    encoder_dim=192, encoder_depth=6, encoder_heads=3, encoder_mlp_dim=768,
    decoder_dim=192, decoder_depth=6, decoder_heads=3, decoder_mlp_dim=768,
)

# So/D's quantizer: 8 codebooks, each 6 dimensions of 4 levels (4^6 = 4096 codes); channels = 8 x 6 = 48.
_FSQ_4096 = dict(use_quantizer=True, fsq_levels=(4, 4, 4, 4, 4, 4))

_TINY = dict(
    encoder_dim=64, encoder_depth=2, encoder_heads=2, encoder_mlp_dim=128,
    decoder_dim=64, decoder_depth=2, decoder_heads=2, decoder_mlp_dim=128,
    latent_channels=12,
)

PRESETS: dict[str, dict] = {
    "so-c": dict(_SO400M, latent_channels=48),
    "so-d": dict(_SO400M, **_FSQ_4096, latent_channels=48, fsq_num_codebooks=8),
    "so-c-s1": dict(_SO400M, latent_channels=32),
    "base": dict(
        encoder_dim=768, encoder_depth=12, encoder_heads=12, encoder_mlp_dim=3072,
        decoder_dim=768, decoder_depth=12, decoder_heads=12, decoder_mlp_dim=3072,
        latent_channels=48,
    ),
    "small": dict(_SMALL, latent_channels=48),
    "small-d": dict(_SMALL, **_FSQ_4096, latent_channels=48, fsq_num_codebooks=8),
    "tiny": _TINY,
    "tiny-d": dict(_TINY, **_FSQ_4096, fsq_num_codebooks=2),
}


def preset_config(name: str, **overrides) -> dict:
    """The constructor arguments of preset ``name``, updated with ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    return {**PRESETS[name], **overrides}
