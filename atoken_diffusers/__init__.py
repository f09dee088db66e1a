"""atoken-diffusers: AToken (Apple's unified image/video/3D tokenizer) for diffusers, ComfyUI and Gradio."""

from .models.autoencoder_atoken import AutoencoderAToken, SparseEncoderOutput
from .models.presets import PRESETS
from .quantizers.fsq import FSQ
from .tokens.sparse import SparseTokens

__version__ = "0.1.0"
__all__ = ["AutoencoderAToken", "SparseEncoderOutput", "SparseTokens", "FSQ", "PRESETS", "__version__"]
