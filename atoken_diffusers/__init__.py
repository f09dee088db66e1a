"""atoken-diffusers: AToken (Apple's unified image/video/3D tokenizer) for diffusers, ComfyUI and Gradio.

The public names below load on first use (PEP 562 module ``__getattr__``): importing the package, or the ``atoken``
command line, must not pay for torch, diffusers and peft until a model is really needed."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# public name -> module (relative to this package) that defines it
_LAZY = {
    "AutoencoderAToken": ".models.autoencoder_atoken",
    "SparseEncoderOutput": ".models.outputs",
    "PRESETS": ".models.presets",
    "FSQ": ".quantizers.fsq",
    "SparseTokens": ".tokens.sparse",
}

__all__ = ["FSQ", "PRESETS", "AutoencoderAToken", "SparseEncoderOutput", "SparseTokens", "__version__"]

if TYPE_CHECKING:  # static analysers and IDEs see the real objects
    from .models.autoencoder_atoken import AutoencoderAToken
    from .models.outputs import SparseEncoderOutput
    from .models.presets import PRESETS
    from .quantizers.fsq import FSQ
    from .tokens.sparse import SparseTokens


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
