"""Conversion of official checkpoints: CLI, safety, and clear errors."""

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.cli.main import main
from atoken_diffusers.conversion import load_original_autoencoder


def _official(parity_dir):
    return torch.load(parity_dir / "atoken.pt", weights_only=True)


def test_cli_convert_writes_a_loadable_folder(tmp_path, parity_dir, capsys):
    out = tmp_path / "atoken-tiny"
    main(["convert", "--checkpoint", str(parity_dir / "atoken.pt"), "--config", str(parity_dir / "atoken_config_fsq.yaml"),
          "--output", str(out), "--dtype", "bf16"])
    assert "wrote" in capsys.readouterr().out
    assert (out / "diffusion_pytorch_model.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["latent_channels"] == 12 and config["use_quantizer"] and config["z_dim"] == 12
    stored = load_file(out / "diffusion_pytorch_model.safetensors")
    assert {v.dtype for v in stored.values()} == {torch.bfloat16}
    model = AutoencoderAToken.from_pretrained(out, torch_dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert [p.name for p in tmp_path.iterdir()] == ["atoken-tiny"]  # no temporary folder left behind
    with pytest.raises(FileExistsError, match="overwrite"):
        main(["convert", "--checkpoint", str(parity_dir / "atoken.pt"), "--config",
              str(parity_dir / "atoken_config.yaml"), "--output", str(out)])


def test_not_a_state_dict(tmp_path, parity_dir):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match="not a state dict"):
        load_original_autoencoder(path, parity_dir / "atoken_config.yaml")


def test_arbitrary_pickles_are_refused(tmp_path, parity_dir):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"encoder.proj": print}))  # unpickling would resolve a callable
    with pytest.raises(ValueError, match="weights-only"):
        load_original_autoencoder(path, parity_dir / "atoken_config.yaml")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda sd: sd.pop("decoder.out_norm.weight"), "Missing keys.*decoder.norm_out.weight"),
        (lambda sd: sd.__setitem__("encoder.extra.weight", torch.zeros(1)), "Unexpected key 'encoder.extra.weight'"),
        (lambda sd: sd.__setitem__("proj.weight", torch.zeros(5, 64)), "Shape mismatch for 'proj.weight'"),
    ],
)
def test_bad_keys_are_named(edit, message, tmp_path, parity_dir):
    sd = _official(parity_dir)
    edit(sd)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises((KeyError, ValueError), match=message):
        load_original_autoencoder(path, parity_dir / "atoken_config.yaml")


def test_unsupported_official_config_is_refused(tmp_path, parity_dir):
    text = (parity_dir / "atoken_config.yaml").read_text().replace('encoder_attn_mode: "full"', 'encoder_attn_mode: "swin"')
    path = tmp_path / "swin.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="encoder_attn_mode"):
        load_original_autoencoder(parity_dir / "atoken.pt", path)
