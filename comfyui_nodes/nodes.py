"""The AToken node pack: load, encode/decode, FSQ tokens, embeddings and zero-shot labels, mesh to Gaussian splat.

ComfyUI conventions: IMAGE is (B, H, W, C) float in [0, 1] (a batch of frames doubles as a video), LATENT is
{"samples": tensor}; AToken latents are raw (not scaled), (B, 48, h, w) for images and (B, 48, t, h, w) for videos.
Every encode path centre-crops the sides down to multiples of 16 and counts frames as Wan 2.2 does (4k + 1 frames ->
k + 1 latent frames -> 4k + 1 frames), exactly like the built-in VAE nodes with the loader's VAE (see comfy_vae.py).
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch

from . import paths
from .comfy_vae import ATokenComfyVAE, check_latents, to_model_pixels

CATEGORY = "AToken"
CROP_NOTE = ("Sides that are not multiples of 16 are centre-cropped down to them first, as ComfyUI's VAE nodes do "
             "(424 x 360 -> 416 x 352).")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEVICES = ("auto", "cpu", "cuda")
MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl")


class ATokenHandle:
    """What flows along an ATOKEN edge: the model and its ComfyUI VAE view."""

    def __init__(self, model):
        self.model = model
        self.vae = ATokenComfyVAE(model)


def check_image(image, name: str = "image") -> torch.Tensor:
    """A ComfyUI IMAGE (B, H, W, 3 or 4), not empty -> its RGB part (values are checked where they are converted,
    :func:`.comfy_vae.to_model_pixels`)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        raise ValueError(f"{name} must be a ComfyUI IMAGE batch (B, H, W, C); got {getattr(image, 'shape', type(image))}.")
    if image.shape[-1] not in (3, 4):
        raise ValueError(f"{name} must have 3 (RGB) or 4 (RGBA) channels in the last dim; got {image.shape[-1]}.")
    if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(image.shape)}; connect an IMAGE with at least one picture.")
    return image[..., :3]


def check_latent(latent, channels: int, name: str = "samples") -> torch.Tensor:
    z = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(z, torch.Tensor) or z.ndim not in (4, 5):
        raise ValueError(f"{name} must be a LATENT with samples (B, C, h, w) or (B, C, t, h, w).")
    return check_latents(z, channels, name)


def check_choice(value, choices, name: str):
    """``value`` if it is one of ``choices`` (what a workflow edited by hand or sent to the API may get wrong)."""
    if value not in choices:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(map(str, choices))}; pick one in the node.")
    return value


@lru_cache(maxsize=2)
def _load(path: str, dtype: str, device: str):
    from atoken_diffusers import AutoencoderAToken

    if os.path.isdir(path):
        model = AutoencoderAToken.from_pretrained(path, torch_dtype=DTYPES[dtype])
    else:
        model = AutoencoderAToken.from_single_file(path, config=path[:-3] + ".yaml", torch_dtype=DTYPES[dtype])
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    return model.to(dev).eval()


class ATokenLoader:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (paths.list_models(paths.AUTOENCODER) or ["(put models in models/atoken)"],),
            "dtype": (list(DTYPES), {"default": "fp32"}),
            "device": (list(DEVICES), {"default": "auto"}),
        }}

    RETURN_TYPES = ("ATOKEN", "VAE")
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Load AToken (a converted folder, or an official .pt with its .yaml) from models/atoken; the "
                   "(embedded default) entries need no download. The VAE output works with the built-in VAEEncode/"
                   "VAEDecode (and Tiled) nodes the way Wan 2.2's VAE does: an IMAGE batch is the frames of one video "
                   "(4k + 1 frames -> k + 1 latent frames -> 4k + 1 frames; one image -> one image). " + CROP_NOTE)

    def load(self, model, dtype="fp32", device="auto"):
        check_choice(dtype, DTYPES, "dtype")
        check_choice(device, DEVICES, "device")
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' but this ComfyUI has no CUDA device; choose auto or cpu.")
        handle = ATokenHandle(_load(paths.resolve(model), dtype, device))
        return (handle, handle.vae)


class ATokenEncode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"atoken": ("ATOKEN",), "image": ("IMAGE",),
                             "as_video": ("BOOLEAN", {"default": False, "tooltip": (
                                 "on: the batch is the frames of one video -> (1, C, t, h, w), as VAEEncode does; "
                                 "off: separate images -> (B, C, h, w)")})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Encode images (B, C, h, w) or, with as_video, the batch as one video (1, C, t, h, w), t = "
                   "ceil(frames / 4); frames past the last 4k + 1 are dropped, as for Wan 2.2. " + CROP_NOTE)

    def encode(self, atoken, image, as_video=False):
        image = check_image(image)
        return ({"samples": atoken.vae.encode(image) if as_video else atoken.vae.encode_images(image)},)


class ATokenDecode:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"atoken": ("ATOKEN",), "samples": ("LATENT",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "decode"
    CATEGORY = CATEGORY
    DESCRIPTION = ("Decode (B, C, h, w) latents to B images, or video latents (B, C, t, h, w) to 4t - 3 frames each "
                   "(Wan 2.2's count), joined into one IMAGE batch as VAEDecode does.")

    def decode(self, atoken, samples):
        z = check_latent(samples, atoken.model.config.latent_channels)
        images = atoken.vae.decode(z)
        return (images.reshape(-1, *images.shape[-3:]),)  # video frames join the batch, as VAEDecode does


class ATokenTokenize:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"atoken": ("ATOKEN",), "image": ("IMAGE",)}}

    RETURN_TYPES = ("ATOKEN_TOKENS",)
    FUNCTION = "tokenize"
    CATEGORY = CATEGORY
    DESCRIPTION = "Discrete FSQ indices (B, 8, h, w) in [0, 4096) (FSQ models such as So/D). " + CROP_NOTE

    @torch.inference_mode()
    def tokenize(self, atoken, image):
        image = atoken.vae.vae_encode_crop_pixels(check_image(image))
        return (atoken.model.tokenize(to_model_pixels(atoken.model, image)).cpu(),)


class ATokenDetokenize:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"atoken": ("ATOKEN",), "tokens": ("ATOKEN_TOKENS",)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "detokenize"
    CATEGORY = CATEGORY
    DESCRIPTION = "FSQ indices -> latents (B, C, h, w) for AToken Decode or VAEDecode."

    def detokenize(self, atoken, tokens):
        from atoken_diffusers.utils.validation import check_indices

        fsq = atoken.model.quantizer
        if fsq is None:
            raise ValueError("this AToken model has no FSQ quantizer; load an FSQ model such as the (embedded default, "
                             "FSQ tokens) one.")
        check_indices(tokens, fsq.num_codebooks, fsq.codebook_size, name="tokens")
        return ({"samples": atoken.model.detokenize(tokens.to(atoken.model.device)).float().cpu()},)


class ATokenEmbed:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"atoken": ("ATOKEN",), "image": ("IMAGE",)}}

    RETURN_TYPES = ("ATOKEN_EMBEDDING",)
    FUNCTION = "embed"
    CATEGORY = CATEGORY
    DESCRIPTION = "L2-normalised semantic embedding per image (B, 1152 for So/C)."

    @torch.inference_mode()
    def embed(self, atoken, image):
        return (atoken.model.embed(to_model_pixels(atoken.model, check_image(image))).float().cpu(),)


@lru_cache(maxsize=1)
def _text_tower(path: str):
    from atoken_diffusers.understanding import TextTower

    return TextTower.from_pretrained(path)


class ATokenZeroShot:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "atoken": ("ATOKEN",), "image": ("IMAGE",),
            "labels": ("STRING", {"default": "cat, dog, car", "multiline": True}),
            "text_model": ("STRING", {"default": "siglip2-so400m", "tooltip": "folder under models/atoken"}),
            "top_k": ("INT", {"default": 3, "min": 1, "max": 100}),
        }}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "classify"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True

    def classify(self, atoken, image, labels, text_model, top_k=3):
        from atoken_diffusers.understanding import ZeroShotClassifier

        names = [s.strip() for s in labels.replace("\n", ",").split(",") if s.strip()]
        if not names:
            raise ValueError("labels is empty; write class names separated by commas.")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a whole number >= 1; got {top_k!r}.")
        clf = ZeroShotClassifier(atoken.model, _text_tower(paths.resolve(text_model)), names)
        rows = clf.classify(to_model_pixels(atoken.model, check_image(image)), top_k=top_k)
        lines = [", ".join(f"{label} {p:.3f}" for label, p in row) for row in rows]
        text = "\n".join(lines)
        return {"ui": {"text": [text]}, "result": (text,)}


class ATokenMeshToSplat:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "atoken": ("ATOKEN",),
            "gs_decoder": (paths.list_models(paths.GAUSSIAN_DECODER)
                           or ["(put a converted Gaussian decoder in models/atoken)"],),
            "mesh": ("STRING", {"default": "", "tooltip": "mesh file (glb/gltf/obj/ply/stl): a name in ComfyUI's input folder"}),
            "filename_prefix": ("STRING", {"default": "atoken/splat"}),
        }}

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("model_file",)
    FUNCTION = "convert"
    CATEGORY = CATEGORY
    OUTPUT_NODE = True
    DESCRIPTION = ("Mesh (a file in ComfyUI's input folder) -> AToken voxel tokens -> Gaussian splat (.ply in the "
                   "output folder; connect to Preview3D).")

    def convert(self, atoken, gs_decoder, mesh, filename_prefix="atoken/splat"):
        from atoken_diffusers.three_d.gaussian_decoder import ATokenGaussianDecoder
        from atoken_diffusers.three_d.pipeline import gaussians_from_voxels, pack_mesh

        mesh_path = paths.input_file(mesh, MESH_SUFFIXES, "mesh")
        out_dir, base = paths.output_base(filename_prefix)  # checked before the work, not after it
        gs_path = paths.resolve(gs_decoder, paths.GAUSSIAN_DECODER)
        gs = ATokenGaussianDecoder.from_pretrained(gs_path).to(atoken.model.device).eval()
        with torch.inference_mode():
            coords, feats = pack_mesh(mesh_path)
            splat = gaussians_from_voxels(atoken.model, gs, coords, feats)
        os.makedirs(os.path.dirname(base), exist_ok=True)
        index = 1
        while os.path.exists(f"{base}_{index:05d}.ply"):
            index += 1
        path = f"{base}_{index:05d}.ply"
        splat.save_ply(path)
        rel = os.path.relpath(path, out_dir)
        return {"ui": {"3d": [{"filename": os.path.basename(rel), "subfolder": os.path.dirname(rel), "type": "output"}]},
                "result": (rel,)}


NODE_CLASS_MAPPINGS = {
    "ATokenLoader": ATokenLoader,
    "ATokenEncode": ATokenEncode,
    "ATokenDecode": ATokenDecode,
    "ATokenTokenize": ATokenTokenize,
    "ATokenDetokenize": ATokenDetokenize,
    "ATokenEmbed": ATokenEmbed,
    "ATokenZeroShot": ATokenZeroShot,
    "ATokenMeshToSplat": ATokenMeshToSplat,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ATokenLoader": "AToken Loader",
    "ATokenEncode": "AToken Encode",
    "ATokenDecode": "AToken Decode",
    "ATokenTokenize": "AToken Tokenize (FSQ)",
    "ATokenDetokenize": "AToken Detokenize (FSQ)",
    "ATokenEmbed": "AToken Embed",
    "ATokenZeroShot": "AToken Zero-shot Labels",
    "ATokenMeshToSplat": "AToken Mesh to Gaussian Splat",
}
