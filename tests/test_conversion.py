"""Conversion of official checkpoints: CLI, safety, and clear errors."""

import json
import math
import pickle

import pytest
import torch
from safetensors.torch import load_file

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.cli.main import main


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
    assert config["fsq_levels"] == [4] * 6 and config["fsq_codebook_size"] == 4096
    stored = load_file(out / "diffusion_pytorch_model.safetensors")
    assert {v.dtype for v in stored.values()} == {torch.bfloat16}
    model = AutoencoderAToken.from_pretrained(out, torch_dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    assert [p.name for p in tmp_path.iterdir()] == ["atoken-tiny"]  # no temporary folder left behind
    with pytest.raises(SystemExit, match="overwrite") as refused:  # one line, exit status 2
        main(["convert", "--checkpoint", str(parity_dir / "atoken.pt"), "--config",
              str(parity_dir / "atoken_config.yaml"), "--output", str(out)])
    assert refused.value.code == 2


def test_not_a_state_dict(tmp_path, parity_dir):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match="not a state dict"):
        AutoencoderAToken.from_single_file(path, config=parity_dir / "atoken_config.yaml")


def test_arbitrary_pickles_are_refused(tmp_path, parity_dir):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"encoder.proj": print}))  # unpickling would resolve a callable
    with pytest.raises(ValueError, match="weights-only"):
        AutoencoderAToken.from_single_file(path, config=parity_dir / "atoken_config.yaml")


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
        AutoencoderAToken.from_single_file(path, config=parity_dir / "atoken_config.yaml")


def test_unsupported_official_config_is_refused(tmp_path, parity_dir):
    text = (parity_dir / "atoken_config.yaml").read_text().replace('encoder_attn_mode: "full"', 'encoder_attn_mode: "swin"')
    path = tmp_path / "swin.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="encoder_attn_mode"):
        AutoencoderAToken.from_single_file(parity_dir / "atoken.pt", config=path)


def test_single_file_takes_a_path_or_a_state_dict_and_from_original_is_the_same(parity_dir):
    yaml_path = parity_dir / "atoken_config_fsq.yaml"
    from_path = AutoencoderAToken.from_single_file(parity_dir / "atoken.pt", config=yaml_path,
                                                   torch_dtype=torch.bfloat16)
    from_dict = AutoencoderAToken.from_single_file(_official(parity_dir), original_config=yaml_path)
    alias = AutoencoderAToken.from_original(parity_dir / "atoken.pt", yaml_path)
    assert from_path.dtype == torch.bfloat16 and not from_path.training
    official = _official(parity_dir)
    torch.testing.assert_close(from_dict.to_moments.weight, official["proj.weight"], rtol=0, atol=0)
    for name, value in from_dict.state_dict().items():
        assert torch.equal(alias.state_dict()[name], value), name
        torch.testing.assert_close(from_path.state_dict()[name].float(), value, rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="config='atoken-soc.yaml'"):
        AutoencoderAToken.from_single_file(parity_dir / "atoken.pt")
    with pytest.raises(ValueError, match="not both"):
        AutoencoderAToken.from_single_file(parity_dir / "atoken.pt", config=yaml_path, original_config=yaml_path)


@pytest.mark.parametrize("nominal, levels", [(1024, [8, 5, 5, 5]), (256, [8, 6, 5])])
def test_official_codebook_size_becomes_the_levels_it_really_gives(nominal, levels, tmp_path, parity_dir):
    """The official quantizer builds the suggested levels of its nominal size; the converted config records those
    levels and their true product (1000, 240), never the nominal size."""
    from atoken_diffusers.conversion import load_original_config

    text = (parity_dir / "atoken_config_fsq.yaml").read_text()
    text = text.replace("quantizer_codebook_size: 4096", f"quantizer_codebook_size: {nominal}")
    text = text.replace("quantizer_num_codebooks: 2", f"quantizer_num_codebooks: {12 // len(levels)}")
    path = tmp_path / "fsq.yaml"
    path.write_text(text)
    config = load_original_config(path)
    assert config["fsq_levels"] == levels and config["fsq_codebook_size"] == math.prod(levels) != nominal
    model = AutoencoderAToken(**{**config, "encoder_depth": 1, "decoder_depth": 1})
    assert model.quantizer.codebook_size == model.config.fsq_codebook_size == math.prod(levels)
