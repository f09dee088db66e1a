"""ATokenGaussianDecoder: parity with the official SLatGaussianDecoder (tests/data/parity/gs.*), conversion checks,
input errors, save/load and bf16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from atoken_diffusers.conversion import load_original_gaussian_decoder
from atoken_diffusers.three_d.gaussian_decoder import ATokenGaussianDecoder, hammersley_offsets

FIELDS = ("raw", "xyz", "features_dc", "scaling", "rotation", "opacity")


@pytest.fixture(scope="module")
def official(parity_dir) -> dict[str, torch.Tensor]:
    """Decoder inputs (feats (288, 768), coords (288, 4)) and the official outputs, keyed by field name."""
    outputs = load_file(parity_dir / "outputs.safetensors")
    coords = load_file(parity_dir / "inputs.safetensors")["voxel_coords"]
    data = {k[3:]: v for k, v in outputs.items() if k.startswith("gs.")}
    data["feats"] = outputs["voxels.decoded_from_mean"][:, :768].float()
    data["coords"] = F.pad(coords, (1, 0))  # batch index 0
    return data


@pytest.fixture()
def gs_model(parity_dir) -> ATokenGaussianDecoder:
    return load_original_gaussian_decoder(parity_dir / "gs_decoder.pt", parity_dir / "gs_config.yaml")


@torch.no_grad()
def test_matches_official_outputs(gs_model, official):
    out = gs_model(official["feats"], official["coords"])
    for name in FIELDS:
        assert getattr(out, name).shape == official[name].shape, name
        diff = (getattr(out, name) - official[name]).abs().max().item()
        assert diff < 1e-4, f"{name}: max abs diff {diff}"


@torch.no_grad()
def test_row_order_and_batch_independence(gs_model, official):
    feats, coords, n = official["feats"], official["coords"], official["feats"].shape[0]
    # Two samples at the same positions, rows shuffled together: each must decode as if it were alone.
    both_feats = torch.cat([feats, feats.flip(0)])
    both_coords = torch.cat([coords, F.pad(coords.flip(0)[:, 1:], (1, 0), value=1)])
    perm = torch.randperm(2 * n, generator=torch.Generator().manual_seed(0))
    out = gs_model(both_feats[perm], both_coords[perm])
    raw = torch.empty_like(out.raw)
    raw[perm] = out.raw
    torch.testing.assert_close(raw[:n], official["raw"], atol=1e-5, rtol=0)
    torch.testing.assert_close(raw[n:], gs_model(feats.flip(0), coords.flip(0)).raw, atol=1e-5, rtol=0)
    xyz = out.xyz.view(2 * n, 32, 3)[perm.argsort()]  # Gaussians stay voxel-major in the input order
    torch.testing.assert_close(xyz[:n].flatten(0, 1), official["xyz"], atol=1e-5, rtol=0)


def test_fresh_model_has_the_official_offset_perturbation(parity_dir):
    stored = torch.load(parity_dir / "gs_decoder.pt", weights_only=True)["offset_perturbation"]
    torch.testing.assert_close(hammersley_offsets(32, 1.5), stored, atol=1e-6, rtol=0)
    torch.testing.assert_close(ATokenGaussianDecoder(model_channels=64, num_blocks=0).offset_perturbation, stored)


def test_save_pretrained_round_trip(gs_model, official, tmp_path):
    gs_model.save_pretrained(tmp_path)
    loaded = ATokenGaussianDecoder.from_pretrained(tmp_path).eval()
    assert loaded.config.lr == gs_model.config.lr and loaded.config.model_channels == 64
    with torch.no_grad():
        a, b = gs_model(official["feats"], official["coords"]), loaded(official["feats"], official["coords"])
    for name in FIELDS:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=0, rtol=0)


@torch.no_grad()
def test_bfloat16_runs_and_stays_close(parity_dir, official):
    model = load_original_gaussian_decoder(parity_dir / "gs_decoder.pt", parity_dir / "gs_config.yaml", torch.bfloat16)
    assert model.proj_in.weight.dtype == torch.bfloat16
    out = model(official["feats"], official["coords"])
    for name in FIELDS:
        value = getattr(out, name)
        assert value.dtype == torch.float32 and torch.isfinite(value).all(), name
    assert (out.xyz - official["xyz"]).abs().max() < 1e-3
    assert (out.opacity - official["opacity"]).abs().max() < 1e-2


def test_gradient_checkpointing_matches(gs_model, official):
    feats, coords = official["feats"][:64], official["coords"][:64]
    gs_model.train()
    plain = gs_model(feats, coords).raw
    gs_model.enable_gradient_checkpointing()
    checkpointed = gs_model(feats, coords).raw
    torch.testing.assert_close(checkpointed, plain)
    checkpointed.sum().backward()
    assert gs_model.blocks[0].attn.to_qkv.weight.grad is not None


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda f, c: (f[:, :100], c), ValueError, r"feats must have shape \(N, 768\)"),
        (lambda f, c: (f, c[:, 1:]), ValueError, r"\(batch, x, y, z\).*Prepend the batch index"),
        (lambda f, c: (f, c.float()), TypeError, "coords must be an integer tensor"),
        (lambda f, c: (f, c[:10]), ValueError, "coords has 10 rows but feats has 288"),
        (lambda f, c: (f, c + torch.tensor([0, 0, 0, 30])), ValueError, r"must lie in \[0, 64\)"),
        (lambda f, c: (f, c - torch.tensor([0, 21, 0, 0])), ValueError, r"must lie in \[0, 64\).*\[-1,"),
        (lambda f, c: (f, c - torch.tensor([1, 0, 0, 0])), ValueError, "batch indices"),
        (lambda f, c: (f.index_fill(0, torch.tensor([3]), float("nan")), c), ValueError, "feats contains 768 NaN"),
        (lambda f, c: (f[:0], c[:0]), ValueError, "feats is empty"),
    ],
)
def test_input_errors(gs_model, official, change, error, message):
    feats, coords = change(official["feats"], official["coords"])
    with pytest.raises(error, match=message):
        gs_model(feats, coords)


def _write_config(parity_dir, tmp_path, edit) -> str:
    config = yaml.safe_load((parity_dir / "gs_config.yaml").read_text())
    edit(config["model"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(attn_mode="full"), "attn_mode='full' is not supported"),
        (lambda m: m.update(pe_mode="rope"), "pe_mode='rope' is not supported"),
        (lambda m: m["representation_config"].update(scaling_activation="exp"), "scaling_activation='exp'"),
        (lambda m: m["representation_config"]["lr"].pop("_rotation"), r"lr is missing \['_rotation'\]"),
        (lambda m: m["representation_config"].pop("opacity_bias"), r"missing required keys.*config\.opacity_bias"),
    ],
)
def test_conversion_refuses_unsupported_configs(parity_dir, tmp_path, edit, message):
    config = _write_config(parity_dir, tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        load_original_gaussian_decoder(parity_dir / "gs_decoder.pt", config)


def _write_checkpoint(parity_dir, tmp_path, edit) -> str:
    state = torch.load(parity_dir / "gs_decoder.pt", weights_only=True)
    edit(state)
    path = tmp_path / "decoder.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda s: s.pop("blocks.1.norm2.weight"), KeyError, r"Missing keys.*blocks\.1\.norm2\.weight"),
        (lambda s: s.update({"blocks.0.attn.q_rms_norm.gamma": torch.ones(2, 32)}), KeyError, "q_rms_norm"),
        (lambda s: s.update({"blocks.2.norm1.weight": torch.ones(64)}), KeyError, r"blocks\.2\.norm1\.weight"),
        (lambda s: s.update({"out_layer.bias": torch.zeros(447)}), ValueError, r"Shape mismatch for 'out_layer\.bias'"),
    ],
)
def test_conversion_checks_every_key(parity_dir, tmp_path, edit, error, message):
    checkpoint = _write_checkpoint(parity_dir, tmp_path, edit)
    with pytest.raises(error, match=message):
        load_original_gaussian_decoder(checkpoint, parity_dir / "gs_config.yaml")


def test_conversion_ignores_training_only_lpips_weights(parity_dir, tmp_path, gs_model):
    checkpoint = _write_checkpoint(
        parity_dir, tmp_path, lambda s: s.update({"lpips_loss.net.scaling_layer.shift": torch.zeros(1, 3, 1, 1)})
    )
    model = load_original_gaussian_decoder(checkpoint, parity_dir / "gs_config.yaml")
    for name, value in gs_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, atol=0, rtol=0)
