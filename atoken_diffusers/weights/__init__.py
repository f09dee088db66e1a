"""The embedded default: ``atoken-small`` (continuous, 48 channels), ``atoken-small-d`` (the same after an FSQ
fine-tune, 8 x 131072-way tokens) and ``atoken-small-gs`` (its Gaussian-splat decoder: surfels), trained by this
project (stage 1 on a GPU, the rest on CPU) from media that installed packages carry (see MODEL_CARD.md; rebuilt
by ``python -m atoken_diffusers.weights.build``). Entry points that accept "the embedded default" ask the functions below."""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent
DEFAULT_MODEL_DIR = WEIGHTS_DIR / "atoken-small"
DEFAULT_DISCRETE_DIR = WEIGHTS_DIR / "atoken-small-d"
DEFAULT_GS_DECODER_DIR = WEIGHTS_DIR / "atoken-small-gs"


def _present(folder: Path) -> Path | None:
    return folder if (folder / "config.json").is_file() else None


def default_model_dir(discrete: bool = False) -> Path | None:
    """The embedded AToken folder (the FSQ one when ``discrete``), or None while the package carries none."""
    return _present(DEFAULT_DISCRETE_DIR if discrete else DEFAULT_MODEL_DIR)


def default_gs_decoder_dir() -> Path | None:
    """The embedded Gaussian decoder folder, or None."""
    return _present(DEFAULT_GS_DECODER_DIR)
