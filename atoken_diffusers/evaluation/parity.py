"""Parity with the official AToken implementation on the fixtures of ``shared/parity`` (copied to tests/data).

The fixtures hold tiny random weights in the official format, inputs, and the official code's outputs. For a
model converted from them, :func:`parity_report` recomputes every output and returns the maximum absolute
difference (float tensors) or the number of mismatches (FSQ indices).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ..tokens.patchify import grid_to_tokens, tokens_to_grid
from ..tokens.sparse import SparseTokens
from ..tokens.voxels import voxels_to_tokens

TOLERANCE = 1e-4


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise AssertionError(f"shape {tuple(a.shape)} != reference {tuple(b.shape)}")
    if not b.is_floating_point():
        return float((a != b).sum().item())
    return (a.float() - b.float()).abs().max().item()


@torch.no_grad()
def parity_report(model, fixtures: str | Path) -> dict[str, float]:
    """{output name: max |ours - official|} (mismatch counts for ``*.fsq_indices``)."""
    fixtures = Path(fixtures)
    inputs = load_file(fixtures / "inputs.safetensors")
    ref = load_file(fixtures / "outputs.safetensors")
    fsq = model.quantizer
    report: dict[str, float] = {}

    def grid(x):  # our (B, C, [t,] h, w) -> the fixtures' dense (B, C, t, h, w)
        return x if x.ndim == 5 else x[:, :, None]

    for name in ("image_a", "image_b", "video"):
        x = inputs[name]
        posterior = model.encode(x).latent_dist
        report[f"{name}.moments"] = _diff(grid(posterior.parameters), ref[f"{name}.moments"])
        report[f"{name}.enc_feats"] = _diff(grid(model.encode_features(x)), ref[f"{name}.enc_feats"])
        report[f"{name}.embed"] = _diff(model.embed(x), ref[f"{name}.embed"])
        report[f"{name}.decoded_from_mean"] = _diff(model.decode(posterior.mean).sample, ref[f"{name}.decoded_from_mean"])
        if fsq is not None:
            indices = model.tokenize(x)
            report[f"{name}.fsq_indices"] = _diff(grid(indices), ref[f"{name}.fsq_indices"])
            codes = model.detokenize(indices)
            report[f"{name}.fsq_codes"] = _diff(grid(codes), ref[f"{name}.fsq_codes"])
            report[f"{name}.decoded_from_codes"] = _diff(model.decode(codes).sample, ref[f"{name}.decoded_from_codes"])
        if name == "video":
            cached = model.decode(posterior.mean, decode_stride_frames=12, decode_cache_frames=4).sample
            report["video.decoded_kvcache"] = _diff(cached, ref["video.decoded_kvcache"])

    # Two images of different sizes packed into one sparse batch.
    parts = [grid_to_tokens(F.pad(inputs[k][:, :, None], (0, 0, 0, 0, 0, 3))) for k in ("image_a", "image_b")]
    packed = model.encode_tokens(SparseTokens.cat(parts))
    n_a = parts[0].num_tokens
    moments = packed.latent_dist.parameters
    report["batch.moments_a"] = _diff(tokens_to_grid(moments[:n_a], (1, 1, 3, 4), (1, 1, 1)), ref["batch.moments_a"])
    report["batch.moments_b"] = _diff(tokens_to_grid(moments[n_a:], (1, 1, 2, 2), (1, 1, 1)), ref["batch.moments_b"])
    report["batch.embed"] = _diff(packed.embedding, ref["batch.embed"])

    # A 3D asset through the sparse entry points.
    voxels = voxels_to_tokens(inputs["voxel_coords"], inputs["voxel_feats"])
    enc = model.encode_tokens(voxels)
    report["voxels.moments"] = _diff(enc.latent_dist.parameters, ref["voxels.moments"])
    report["voxels.enc_feats"] = _diff(enc.features, ref["voxels.enc_feats"])
    report["voxels.embed"] = _diff(enc.embedding, ref["voxels.embed"])
    decoded = model.decode_tokens(voxels.replace(enc.latent_dist.mean))
    report["voxels.decoded_from_mean"] = _diff(decoded.feats, ref["voxels.decoded_from_mean"])

    if fsq is not None:
        codes, indices = fsq.quantize(inputs["fsq_unit.z"])
        report["fsq_unit.codes"] = _diff(codes, ref["fsq_unit.codes"])
        report["fsq_unit.indices"] = _diff(indices, ref["fsq_unit.indices"])
    return report


def failures(report: dict[str, float]) -> dict[str, float]:
    """Entries outside the tolerance (any index mismatch, or a float difference above 1e-4)."""
    return {k: v for k, v in report.items() if (v != 0 if k.endswith("indices") else v > TOLERANCE)}
