"""ComfyUI custom nodes for AToken: drop this folder into ``ComfyUI/custom_nodes/`` (with ``atoken-diffusers``
installed in ComfyUI's Python) and put converted models in ``ComfyUI/models/atoken``.

Nodes: AToken Loader (also outputs a VAE usable by the built-in VAEEncode/VAEDecode/VAEDecodeTiled nodes), Encode,
Decode, Tokenize/Detokenize (FSQ), Embed, Zero-shot Labels, Mesh to Gaussian Splat.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

try:  # inside ComfyUI: make models/atoken known to folder_paths
    from .paths import register

    register()
except ImportError:  # imported outside ComfyUI (tests, docs)
    pass

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
