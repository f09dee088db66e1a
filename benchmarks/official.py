"""Running the official AToken implementation (``apple/ml-atoken``) beside ours, from a local checkout.

The official code is never vendored: pass the path of a checkout (``--official PATH``). It imports ``flash_attn``
at module level and only works on CUDA with it; on CPU (or without flash-attn) this module installs a stand-in
``flash_attn`` that computes the same exact softmax attention with ``scaled_dot_product_attention``, one sequence
at a time (the varlen calls pass ``cu_seqlens``), honouring ``causal`` and ``softcap``. The official model then
runs unmodified; both implementations get the same weights (ours renamed to the official names) and the same tokens.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from atoken_diffusers.conversion.original import convert_key
from atoken_diffusers.tokens.patchify import grid_to_tokens, pad_to_patches


def _attend(q, k, v, causal=False, softcap=0.0):
    """(L, H, D) sequences -> (L, H, D)."""
    q, k, v = (x.transpose(0, 1) for x in (q, k, v))
    if softcap:
        logits = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
        logits = softcap * torch.tanh(logits / softcap)
        if causal:
            logits = logits.masked_fill(torch.ones_like(logits, dtype=torch.bool).triu(1), float("-inf"))
        out = (logits.softmax(-1) @ v.float()).to(q.dtype)
    else:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return out.transpose(0, 1)


def _varlen(q, k, v, cu_q, cu_k, max_q=None, max_k=None, dropout_p=0.0, softmax_scale=None, causal=False, softcap=0.0, **_):
    out = torch.empty_like(q)
    cu_q, cu_k = cu_q.tolist(), cu_k.tolist()
    for i in range(len(cu_q) - 1):
        qs, ks = slice(cu_q[i], cu_q[i + 1]), slice(cu_k[i], cu_k[i + 1])
        out[qs] = _attend(q[qs], k[ks], v[ks], causal, softcap)
    return out


# Imported at module level by the official data/text utilities but never used on the model's compute path.
IMPORT_ONLY = ("ftfy", "decord", "webdataset", "webdataset.pytorch", "plyfile", "imageio")


class _ImportOnly(types.ModuleType):
    """An empty package whose every attribute is a placeholder class (enough for ``from x import Y``)."""

    __path__: list = []

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})


def install_flash_attn_shim() -> None:
    """Put the SDPA stand-in on the import path unless a real flash-attn is importable; add empty stand-ins for
    the official code's unused data-loading imports that are not installed."""
    for name in IMPORT_ONLY:
        root = name.split(".")[0]
        if isinstance(sys.modules.get(root), _ImportOnly) or importlib.util.find_spec(root) is None:
            sys.modules[name] = _ImportOnly(name)
    try:
        import flash_attn  # noqa: F401

        return
    except ImportError:
        pass
    shim = types.ModuleType("flash_attn")
    shim.flash_attn_varlen_func = _varlen
    shim.flash_attn_varlen_qkvpacked_func = lambda qkv, cu, max_len, **kw: _varlen(*qkv.unbind(1), cu, cu, **kw)
    shim.flash_attn_varlen_kvpacked_func = lambda q, kv, cu_q, cu_k, mq, mk, **kw: _varlen(q, *kv.unbind(1), cu_q, cu_k, **kw)
    shim.flash_attn_qkvpacked_func = lambda qkv, **kw: torch.stack(
        [_attend(*s.unbind(1), kw.get("causal", False), kw.get("softcap", 0.0)) for s in qkv]
    )
    sys.modules["flash_attn"] = shim


class OfficialAToken:
    """The official ``AutoencoderKL`` loaded with the weights of one of our models."""

    def __init__(self, checkout: str | Path, ours):
        checkout = Path(checkout)
        if not (checkout / "atoken_inference" / "model" / "autoencoder_kl.py").is_file():
            raise SystemExit(f"--official {checkout}: not an apple/ml-atoken checkout (atoken_inference/ missing).")
        install_flash_attn_shim()
        sys.path.insert(0, str(checkout))
        ak = importlib.import_module("atoken_inference.model.autoencoder_kl")
        self.SparseTensor = importlib.import_module("atoken_inference.model.basic").SparseTensor
        self.sparse_to_img_list = importlib.import_module("atoken_inference.model.utils").sparse_to_img_list
        c = ours.config
        arch = dict(
            patch_size=list(c.patch_size), in_channels=3072, out_channels=3072, latent_channels=c.latent_channels,
            encoder_model_channels=c.encoder_dim, encoder_num_blocks=c.encoder_depth, encoder_num_heads=c.encoder_heads,
            encoder_mlp_channels=c.encoder_mlp_dim, encoder_attn_mode="full", encoder_pe_mode="joint",
            encoder_qk_rms_norm=False, encoder_use_bias=True, encoder_use_rms_norm=False,
            decoder_model_channels=c.decoder_dim, decoder_num_blocks=c.decoder_depth, decoder_num_heads=c.decoder_heads,
            decoder_mlp_channels=c.decoder_mlp_dim, decoder_attn_mode="full", decoder_pe_mode="joint",
            decoder_qk_rms_norm=True, decoder_use_bias=False, decoder_use_rms_norm=True,
        )
        self.model = ak.AutoencoderKL(**arch).eval()
        ours_sd = ours.state_dict()
        self.model.load_state_dict({k: ours_sd[convert_key(k)] for k in self.model.state_dict()}, strict=True)
        torch.nn.Module.to(self.model, device=ours.device, dtype=ours.dtype)  # ModelMixin.to warns needlessly
        self.latent_channels = c.latent_channels

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Encode + decode (posterior mean) images (B, 3, H, W) or videos (B, 3, T, H, W), as the official
        ``inference`` does, returning pixels in our layout."""
        is_image = x.ndim == 4
        clip = pad_to_patches(x[:, :, None] if is_image else x)
        tokens = grid_to_tokens(clip)
        st = self.SparseTensor(feats=tokens.feats, coords=tokens.coords.int())
        moments, _, _ = self.model.encode(st)
        mean = moments.replace(moments.feats[:, : self.latent_channels])
        dec = self.model.decode(mean, training=False).sample
        kinds = ["image" if is_image else "video"] * x.shape[0]
        frames = self.sparse_to_img_list(dec, self.model.patch_size, task_types=kinds)
        out = torch.stack(frames)  # (B, T, 3, H, W)
        return out[:, 0] if is_image else out.transpose(1, 2)
