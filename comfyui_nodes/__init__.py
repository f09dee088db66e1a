"""ComfyUI custom nodes for AToken: drop this folder into ``ComfyUI/custom_nodes/`` (with ``atoken-diffusers``
installed in ComfyUI's Python) and put converted models in ``ComfyUI/models/atoken``.

Nodes: AToken Loader (also outputs a VAE that the built-in VAEEncode/VAEDecode and Tiled nodes use as they use Wan
2.2's VAE), Encode, Decode, Tokenize/Detokenize (FSQ), Embed, Zero-shot Labels, Mesh to Gaussian Splat. Every encode
path centre-crops sides down to multiples of 16, as ComfyUI's own VAEs do. ``example_workflows/`` holds image, video,
tokens and 3D templates (ComfyUI lists them under its workflow templates) that use the shipped default model.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

try:  # inside ComfyUI: make models/atoken known to folder_paths
    from .paths import register

    register()
except ImportError:  # imported outside ComfyUI (tests, docs)
    pass

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
