"""Where the embedded default checkpoint lives once the package ships one (a small AToken trained by this project;
see the embedded-default issue). Entry points that accept "the embedded default" ask :func:`default_model_dir`."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_DIR = Path(__file__).parent / "atoken-small"


def default_model_dir() -> Path | None:
    """The embedded converted folder, or None while the package carries none."""
    return DEFAULT_MODEL_DIR if (DEFAULT_MODEL_DIR / "config.json").is_file() else None
