"""Initialise AToken's encoder from a SigLIP2 vision tower (the paper starts from SigLIP2-So400m/16).

Mapping (transformers ``Siglip2VisionModel`` -> ``AutoencoderAToken.encoder``):
  patch_embedding (dim, 3*16*16)  -> proj_in columns of the first frame of the 4 x 16 x 16 patch; other frames zero
                                     (an image is the first frame of its group, so images see the SigLIP2 embedding)
  position_embedding (256, dim)   -> pos_table (same row-major 16 x 16 layout, same antialiased resize)
  layers.i.{layer_norm1, self_attn.{q,k,v}_proj, self_attn.out_proj, layer_norm2, mlp.fc1/fc2}
                                  -> blocks.i.{norm1, attn.to_qkv (q|k|v stacked), attn.to_out, norm2, mlp.fc1/fc2}
  post_layernorm                  -> norm_out
  head.{probe, attention.in_proj, attention.out_proj, layernorm, mlp} -> pool.{probe, to_q|to_kv, to_out, norm, mlp}
AToken adds 4D RoPE on top; with RoPE off (``encoder.use_rope = False``) the mapped encoder computes SigLIP2's
function exactly, which the tests check.
"""

from __future__ import annotations

from pathlib import Path

import torch


def siglip2_encoder_state(vision_model: torch.nn.Module, patch_dim: int) -> dict[str, torch.Tensor]:
    """AToken encoder state dict (keys relative to ``encoder.``) from a ``Siglip2VisionModel`` (or its
    ``vision_model``)."""
    vm = getattr(vision_model, "vision_model", vision_model)
    sd = {k: v.detach().float() for k, v in vm.state_dict().items()}
    w = sd["embeddings.patch_embedding.weight"]
    proj = torch.zeros(w.shape[0], patch_dim)
    proj[:, : w.shape[1]] = w  # (ph, pw, c) flattening order of SigLIP2 patches == the first frame of ours
    out = {"proj_in.weight": proj, "proj_in.bias": sd["embeddings.patch_embedding.bias"],
           "pos_table.weight": sd["embeddings.position_embedding.weight"],
           "norm_out.weight": sd["post_layernorm.weight"], "norm_out.bias": sd["post_layernorm.bias"]}
    i = 0
    while f"encoder.layers.{i}.layer_norm1.weight" in sd:
        src, dst = f"encoder.layers.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"norm1.{kind}"] = sd[src + f"layer_norm1.{kind}"]
            out[dst + f"norm2.{kind}"] = sd[src + f"layer_norm2.{kind}"]
            out[dst + f"attn.to_qkv.{kind}"] = torch.cat([sd[src + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
            out[dst + f"attn.to_out.{kind}"] = sd[src + f"self_attn.out_proj.{kind}"]
            out[dst + f"mlp.fc1.{kind}"] = sd[src + f"mlp.fc1.{kind}"]
            out[dst + f"mlp.fc2.{kind}"] = sd[src + f"mlp.fc2.{kind}"]
        i += 1
    if "head.probe" in sd:
        dim = sd["head.probe"].shape[-1]
        in_w, in_b = sd["head.attention.in_proj_weight"], sd["head.attention.in_proj_bias"]
        out.update({
            "pool.probe": sd["head.probe"].reshape(dim),
            "pool.to_q.weight": in_w[:dim], "pool.to_q.bias": in_b[:dim],
            "pool.to_kv.weight": in_w[dim:], "pool.to_kv.bias": in_b[dim:],
            "pool.to_out.weight": sd["head.attention.out_proj.weight"], "pool.to_out.bias": sd["head.attention.out_proj.bias"],
            "pool.norm.weight": sd["head.layernorm.weight"], "pool.norm.bias": sd["head.layernorm.bias"],
            "pool.mlp.fc1.weight": sd["head.mlp.fc1.weight"], "pool.mlp.fc1.bias": sd["head.mlp.fc1.bias"],
            "pool.mlp.fc2.weight": sd["head.mlp.fc2.weight"], "pool.mlp.fc2.bias": sd["head.mlp.fc2.bias"],
        })
    return out


def init_encoder_from_siglip2(model, source) -> list[str]:
    """Copy a SigLIP2 vision tower (a model or a local folder) into ``model.encoder``; returns the encoder keys that
    SigLIP2 does not provide (e.g. the pooling head of a head-less checkpoint). Sizes must match the preset."""
    if isinstance(source, (str, Path)):
        from transformers import Siglip2VisionModel

        source = Siglip2VisionModel.from_pretrained(source, local_files_only=True)
    state = siglip2_encoder_state(source, model.encoder.proj_in.in_features)
    own = model.encoder.state_dict()
    bad = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape}
    if bad:
        raise ValueError(f"SigLIP2 and encoder sizes differ (siglip2, atoken): {dict(list(bad.items())[:3])}; "
                         "pick a preset of the same width/depth (So400m/16 -> 'so-c').")
    missing = sorted(set(own) - set(state))
    model.encoder.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in state.items()}})
    return missing
