"""The diffusers contract, checked on every ModelMixin class of the package at a tiny config with a tiny input.

For each model: a save_pretrained / from_pretrained round trip gives the same outputs; gradient checkpointing gives
the same gradients as without it (and really runs); every parameter receives a gradient from a loss on the outputs;
a bf16 copy runs and stays finite; the same seed builds the same model (a different seed does not).

Models start with zero-initialised layers (adaLN gates, output heads) whose outputs and many gradients would be
exactly zero, which no comparison could tell apart; :func:`_build` therefore moves every parameter by seeded noise.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

import atoken_diffusers
from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.generation.image.ar_transformer import ATokenARTransformer
from atoken_diffusers.generation.image.dit import ATokenDiT
from atoken_diffusers.generation.three_d.sparse_flow import SparseLatentFlowTransformer
from atoken_diffusers.generation.three_d.sparse_structure import SparseStructureVAE
from atoken_diffusers.generation.three_d.structure_flow import SparseStructureFlowTransformer
from atoken_diffusers.three_d.gaussian_decoder import ATokenGaussianDecoder
from tests.conftest import RUN_TO_RUN

GRAD_TOL = dict(atol=1e-4, rtol=1e-4)  # checkpointed backward recomputes the forward: float32 noise only


@dataclass
class ModelSpec:
    """How to build a tiny model, a tiny input, and the outputs a loss is taken on."""

    make: Callable[[], torch.nn.Module]
    inputs: Callable[[torch.Generator], dict]
    outputs: Callable[[torch.nn.Module, dict], list[torch.Tensor]]


def _unique_voxels(g: torch.Generator, n: int, resolution: int, batch: int) -> torch.Tensor:
    """(n, 4) distinct (batch, x, y, z) voxels, sample after sample."""
    cells = torch.randperm(batch * resolution**3, generator=g)[:n].sort().values
    r = resolution
    return torch.stack([cells // r**3, cells // r**2 % r, cells // r % r, cells % r], dim=1)


def _autoencoder_outputs(model, inp):
    return [model(inp["x"]).sample, model.embed(inp["x"])]


def _structure_vae_outputs(model, occupancy):
    posterior = model.encode(occupancy)
    return [model.decode(posterior.mean), posterior.logvar]  # the log-variance half of enc_out reaches the loss too


SPECS = {
    "AutoencoderAToken": ModelSpec(
        lambda: AutoencoderAToken.from_preset("tiny"),
        lambda g: {"x": torch.rand(1, 3, 32, 32, generator=g) * 2 - 1},
        _autoencoder_outputs,
    ),
    "ATokenGaussianDecoder": ModelSpec(
        lambda: ATokenGaussianDecoder(resolution=16, model_channels=32, latent_channels=16, num_blocks=2,
                                      num_heads=2, mlp_channels=64, window_size=4, num_gaussians=4),
        lambda g: {"feats": torch.randn(40, 16, generator=g), "coords": _unique_voxels(g, 40, 16, 2)},
        lambda m, i: [m(i["feats"], i["coords"]).raw],
    ),
    "ATokenDiT": ModelSpec(
        lambda: ATokenDiT(in_channels=4, sample_size=4, hidden_size=32, num_layers=2, num_heads=2, num_classes=3,
                          text_embed_dim=8),
        lambda g: {"hidden_states": torch.randn(2, 4, 4, 4, generator=g), "timestep": torch.tensor([100.0, 900.0]),
                   "class_labels": torch.tensor([0, 3]), "pooled_projections": torch.randn(2, 8, generator=g)},
        lambda m, i: [m(**i).sample],
    ),
    "ATokenARTransformer": ModelSpec(
        lambda: ATokenARTransformer(num_codebooks=2, codebook_size=8, sample_size=3, hidden_size=32, num_layers=2,
                                    num_heads=2, head_hidden_size=16, head_layers=1, head_heads=2, num_classes=3),
        lambda g: {"indices": torch.randint(0, 8, (2, 2, 3, 3), generator=g), "class_labels": torch.tensor([1, 3])},
        lambda m, i: [m(**i)],
    ),
    "SparseStructureVAE": ModelSpec(
        lambda: SparseStructureVAE(resolution=16, downsample=4, latent_channels=2, hidden_channels=8, num_blocks=1),
        lambda g: {"occupancy": (torch.rand(2, 1, 16, 16, 16, generator=g) < 0.1).float()},
        lambda m, i: _structure_vae_outputs(m, i["occupancy"]),
    ),
    "SparseStructureFlowTransformer": ModelSpec(
        lambda: SparseStructureFlowTransformer(in_channels=2, sample_size=4, patch_size=2, cond_dim=8, hidden_size=32,
                                               num_layers=2, num_heads=2),
        lambda g: {"hidden_states": torch.randn(2, 2, 4, 4, 4, generator=g), "timestep": torch.tensor([10.0, 500.0]),
                   "encoder_hidden_states": torch.randn(2, 3, 8, generator=g)},
        lambda m, i: [m(**i).sample],
    ),
    "SparseLatentFlowTransformer": ModelSpec(
        lambda: SparseLatentFlowTransformer(in_channels=4, resolution=16, patch_size=2, cond_dim=8, hidden_size=32,
                                            num_layers=2, num_heads=2, window_size=4),
        lambda g: {"hidden_states": torch.randn(30, 4, generator=g), "coords": _unique_voxels(g, 30, 16, 2),
                   "timestep": torch.tensor([10.0, 500.0]), "encoder_hidden_states": torch.randn(2, 3, 8, generator=g)},
        lambda m, i: [m(**i).sample],
    ),
}


def _build(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = SPECS[name].make()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _inputs(name: str, dtype: torch.dtype = torch.float32) -> dict:
    raw = SPECS[name].inputs(torch.Generator().manual_seed(1))
    return {k: v.to(dtype) if v.is_floating_point() and k != "timestep" else v for k, v in raw.items()}


def _outputs(model, name: str, inputs: dict) -> list[torch.Tensor]:
    return SPECS[name].outputs(model, inputs)


def _gradients(model, name: str) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    loss = sum((out.float() ** 2).mean() for out in _outputs(model, name, _inputs(name)))
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters()}


def test_every_model_class_is_covered():
    root = Path(atoken_diffusers.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", None) == "ModelMixin" for b in node.bases):
                found.add(node.name)
    assert found == set(SPECS)


@pytest.mark.parametrize("name", SPECS)
def test_save_and_load_round_trip(name, tmp_path):
    model = _build(name).eval()
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path).eval()
    inputs = _inputs(name)
    with torch.no_grad():
        for a, b in zip(_outputs(model, name, inputs), _outputs(loaded, name, inputs), strict=True):
            torch.testing.assert_close(b, a, **RUN_TO_RUN)


@pytest.mark.parametrize("name", SPECS)
def test_gradient_checkpointing_and_every_parameter_learns(name):
    model = _build(name).train()
    plain = _gradients(model, name)
    missing = [n for n, g in plain.items() if g is None]
    assert not missing, f"parameters without a gradient: {missing[:5]}"
    assert all(torch.isfinite(g).all() for g in plain.values())

    model.enable_gradient_checkpointing()
    calls = []
    for module in model.modules():
        if getattr(module, "gradient_checkpointing", False):
            inner = module._gradient_checkpointing_func
            module._gradient_checkpointing_func = lambda *a, _inner=inner: calls.append(1) or _inner(*a)
    checkpointed = _gradients(model, name)
    assert calls, "gradient checkpointing is enabled but no block ran through it"
    for n, g in plain.items():
        torch.testing.assert_close(checkpointed[n], g, **GRAD_TOL, msg=lambda m, n=n: f"{n}: {m}")


@pytest.mark.parametrize("name", SPECS)
def test_bf16_forward_is_finite(name):
    model = copy.deepcopy(_build(name)).to(torch.bfloat16).eval()
    with torch.no_grad():
        outs = _outputs(model, name, _inputs(name, torch.bfloat16))
    assert all(torch.isfinite(out.float()).all() for out in outs)


@pytest.mark.parametrize("name", SPECS)
def test_same_seed_same_model(name):
    inputs = _inputs(name)
    with torch.no_grad():
        first = _outputs(_build(name, seed=3).eval(), name, inputs)
        again = _outputs(_build(name, seed=3).eval(), name, inputs)
        other = _outputs(_build(name, seed=4).eval(), name, inputs)
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(b, a, **RUN_TO_RUN)
    assert max((a - c).abs().max() for a, c in zip(first, other)) > 1e-3
