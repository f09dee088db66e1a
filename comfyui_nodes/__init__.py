"""ComfyUI custom nodes for AToken (drop this folder into ComfyUI/custom_nodes/).

The node pack is being built (loader, encode/decode, tokenize, embed, mesh to Gaussian splat); until then it
registers no nodes, so ComfyUI loads it without effect.
"""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
