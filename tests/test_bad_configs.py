"""Bad configs and corrupted weights get a one-line answer naming the key, tensor or folder, and nothing is written
(issue "Hardened edges", items 1, 2 and 9). Every case is a row of a table; each asserts the message and, where a
file is involved, that the folder is byte-for-byte what it was and no output appeared."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import struct
import time
from pathlib import Path

import pytest
import torch

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.cli.main import main
from atoken_diffusers.conversion import load_original_gaussian_decoder
from atoken_diffusers.models.config_validation import check_config
from atoken_diffusers.models.presets import PRESETS, preset_config
from atoken_diffusers.three_d.gaussian_decoder import ATokenGaussianDecoder

GS_TINY = {"resolution": 16, "model_channels": 32, "latent_channels": 16, "num_blocks": 2, "num_heads": 2,
           "mlp_channels": 64, "window_size": 4, "num_gaussians": 4}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A saved tiny autoencoder (2 + 2 blocks, 12 latent channels) and a saved tiny Gaussian decoder."""
    root = tmp_path_factory.mktemp("saved")
    torch.manual_seed(0)
    AutoencoderAToken.from_preset("tiny").save_pretrained(root / "vae")
    ATokenGaussianDecoder(**GS_TINY).save_pretrained(root / "gs")
    return {"vae": root / "vae", "gs": root / "gs"}


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` -> sha256 of its bytes (to assert nothing was written, truncated or left)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text.strip(), text
    return text


# --------------------------------------------------------------------------------------------- config.json edits

# (case, model folder, config.json changes, exception, message pattern)
CONFIG_CASES = [
    ("use_quantizer as a string", "vae", {"use_quantizer": "false"}, ValueError,
     r"use_quantizer='false' is invalid: expected true or false \(a boolean, not a string\)"),
    ("fewer encoder blocks than stored", "vae", {"encoder_depth": 1}, ValueError,
     r"weights have 2 blocks under 'encoder.blocks' but config encoder_depth=1; set encoder_depth=2"),
    ("more encoder blocks than stored", "vae", {"encoder_depth": 3}, ValueError,
     r"weights have 2 blocks under 'encoder.blocks' but config encoder_depth=3; set encoder_depth=2"),
    ("fewer decoder blocks than stored", "vae", {"decoder_depth": 1}, ValueError,
     r"2 blocks under 'decoder.blocks' but config decoder_depth=1"),
    ("negative depth", "vae", {"encoder_depth": -1}, ValueError, r"encoder_depth=-1 is invalid: expected an integer >= 1"),
    ("depth as a float", "vae", {"decoder_depth": 2.0}, ValueError, r"decoder_depth=2.0 is invalid: expected an integer"),
    ("scaling_factor as a string", "vae", {"scaling_factor": "0.5"}, ValueError,
     r"scaling_factor='0.5' is invalid: expected a number > 0"),
    ("scaling_factor zero", "vae", {"scaling_factor": 0}, ValueError, r"scaling_factor=0 is invalid"),
    ("scaling_factor NaN", "vae", {"scaling_factor": math.nan}, ValueError, r"scaling_factor=nan is invalid"),
    ("shift_factor infinite", "vae", {"shift_factor": math.inf}, ValueError,
     r"shift_factor=inf is invalid: expected a number;"),
    ("latents_mean of 3 values", "vae", {"latents_mean": [0.0, 0.0, 0.0]}, ValueError,
     r"latents_mean has 3 values but latent_channels=12; give one per channel or null"),
    ("latents_std with a zero", "vae", {"latents_std": [0.0] * 12}, ValueError,
     r"latents_std=\[0.0, .*\] is invalid: expected null or a list of one or more numbers > 0"),
    ("latents_mean as a number", "vae", {"latents_mean": 0.5}, ValueError, r"latents_mean=0.5 is invalid"),
    ("latent_channels as a string", "vae", {"latent_channels": "48"}, ValueError,
     r"latent_channels='48' is invalid: expected an integer >= 1"),
    ("encoder_dim null", "vae", {"encoder_dim": None}, ValueError, r"encoder_dim=None is invalid"),
    ("tile_sample_min_size zero", "vae", {"tile_sample_min_size": 0}, ValueError,
     r"tile_sample_min_size must be a positive multiple of 16; got 0"),
    ("tile_overlap_factor 5", "vae", {"tile_overlap_factor": 5}, ValueError,
     r"tile_overlap_factor must be a number in \[0, 1\); got 5"),
    ("decoder tiles longer than an encoder tile", "vae", {"decode_stride_frames": 16, "decode_cache_frames": 4},
     ValueError, r"decode_stride_frames \+ decode_cache_frames must be <= 16"),
    ("misspelt key", "vae", {"encoder_depht": 2}, ValueError,
     r"config key 'encoder_depht' is not an AutoencoderAToken setting .* remove it from config.json"),
    ("patch_size of 2 values", "vae", {"patch_size": [4, 16]}, ValueError,
     r"patch_size=\[4, 16\] is invalid: expected a list of 3 integers >= 1"),
    ("non-square patch", "vae", {"patch_size": [4, 16, 8]}, ValueError, r"must have equal height and width"),
    ("block_out_channels of 2 entries", "vae", {"block_out_channels": [128, 256]}, ValueError,
     r"block_out_channels has 2 entries, so pipelines read a spatial factor of 2, but patch_size\[1\]=16; give 5"),
    ("heads not dividing the width", "vae", {"encoder_heads": 3}, ValueError,
     r"encoder_dim=64 / encoder_heads=3 must give a whole head size divisible by 8"),
    ("head size not divisible by 8", "vae", {"decoder_heads": 16}, ValueError,
     r"decoder_dim=64 / decoder_heads=16 must give a whole head size divisible by 8"),
    ("z_dim contradicting latent_channels", "vae", {"z_dim": 7}, ValueError,
     r"z_dim=7 contradicts the model \(z_dim must be 12\)"),
    ("temporal tile not whole patches", "vae", {"temporal_tile_frames": 10}, ValueError,
     r"temporal_tile_frames=10 must be a multiple of patch_size\[0\]=4"),
    ("fsq_levels as a string", "vae", {"use_quantizer": True, "fsq_levels": "444444"}, ValueError,
     r"fsq_levels='444444' is invalid: expected null or a list of one or more integers >= 2"),
    ("zero codebooks", "vae", {"fsq_num_codebooks": 0}, ValueError, r"fsq_num_codebooks=0 is invalid"),
    ("FSQ that does not cover the channels", "vae", {"use_quantizer": True, "fsq_num_codebooks": 8}, ValueError,
     r"needs latent_channels = 48; got 12"),
    ("force_upcast as a string", "vae", {"force_upcast": "no"}, ValueError, r"force_upcast='no' is invalid"),
    ("negative sample_size", "vae", {"sample_size": -5}, ValueError, r"sample_size=-5 is invalid"),
    ("zero in_channels", "vae", {"in_channels": 0}, ValueError, r"in_channels=0 is invalid"),
    ("MLP width of other weights", "vae", {"encoder_mlp_dim": 256}, ValueError,
     r"weight 'encoder.blocks.0.mlp.fc1.bias' is stored as \(128\) but the config builds \(256\); config.json does"),
    ("Gaussian decoder: heads not dividing", "gs", {"num_heads": 5}, ValueError,
     r"model_channels=32 must be divisible by num_heads=5"),
    ("Gaussian decoder: voxel_size <= 1", "gs", {"voxel_size": 0.5}, ValueError,
     r"voxel_size=0.5 must exceed 1 with perturb_offset=true"),
    ("Gaussian decoder: unknown lr key", "gs", {"lr": {"bogus": 1.0}}, ValueError, r"lr has unknown keys \['bogus'\]"),
    ("Gaussian decoder: lr value a string", "gs", {"lr": {"xyz": "1"}}, ValueError,
     r"lr=\{'xyz': '1'\} is invalid: expected null or a mapping of names to numbers"),
    ("Gaussian decoder: opacity_bias 1", "gs", {"opacity_bias": 1.0}, ValueError,
     r"opacity_bias=1.0 is invalid: expected a number > 0 and < 1"),
    ("Gaussian decoder: perturb_offset a string", "gs", {"perturb_offset": "yes"}, ValueError,
     r"perturb_offset='yes' is invalid"),
    ("Gaussian decoder: too narrow", "gs", {"model_channels": 4}, ValueError,
     r"model_channels=4 is invalid: expected an integer >= 6"),
    ("Gaussian decoder: fewer blocks than stored", "gs", {"num_blocks": 1}, ValueError,
     r"weights have 2 blocks under 'blocks' but config num_blocks=1; set num_blocks=2"),
    ("Gaussian decoder: surfel prior with perturbed offsets", "gs", {"surfel_prior": {}}, ValueError,
     r"surfel_prior spreads the Gaussians over the surface itself; set perturb_offset=false"),
    ("Gaussian decoder: surfel prior unknown key", "gs", {"surfel_prior": {"radius": 2}, "perturb_offset": False},
     ValueError, r"surfel_prior has unknown keys \['radius'\]"),
    ("Gaussian decoder: surfel prior zero width", "gs", {"surfel_prior": {"normal": 0}, "perturb_offset": False},
     ValueError, r"surfel_prior tangent and normal are standard deviations in voxels and must be > 0"),
    ("Gaussian decoder: misspelt key", "gs", {"num_gausians": 8}, ValueError,
     r"config key 'num_gausians' is not an ATokenGaussianDecoder setting"),
]


@pytest.mark.parametrize("case, which, changes, error, pattern", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_json_is_refused_by_name(tmp_path, folders, case, which, changes, error, pattern):
    folder = tmp_path / which
    shutil.copytree(folders[which], folder)
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    before = snapshot(folder)
    cls = AutoencoderAToken if which == "vae" else ATokenGaussianDecoder
    with pytest.raises(error, match=pattern) as excinfo:
        cls.from_pretrained(folder)
    one_line_error(excinfo)
    assert snapshot(folder) == before


def test_the_same_rules_hold_for_direct_construction():
    """from_config and the constructor share the checks (one place: ``__init__``)."""
    with pytest.raises(ValueError, match="use_quantizer='false' is invalid"):
        AutoencoderAToken.from_preset("tiny", use_quantizer="false")
    with pytest.raises(ValueError, match="config key 'encoder_depht' is not an AutoencoderAToken setting"):
        AutoencoderAToken.from_config({**preset_config("tiny"), "encoder_depht": 2})
    with pytest.raises(ValueError, match="voxel_size=1 must exceed 1"):
        ATokenGaussianDecoder(**GS_TINY, voxel_size=1)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_passes_validation(name):
    """Valid configs keep loading: every preset (so-c included, checked without building its 846M weights)."""
    import inspect

    defaults = {k: p.default for k, p in inspect.signature(AutoencoderAToken.__init__).parameters.items() if k != "self"}
    check_config(AutoencoderAToken, {**defaults, **preset_config(name)})


# ------------------------------------------------------------------------------------------ corrupted weights


def _flip_to_nan(safetensors_file: Path, tensor: str, count: int = 3) -> None:
    """Overwrite the first ``count`` float32 values of ``tensor`` with 0xFFFFFFFF (a NaN), as a bad disk would."""
    raw = bytearray(safetensors_file.read_bytes())
    header_len = struct.unpack("<Q", raw[:8])[0]
    start = 8 + header_len + json.loads(raw[8:8 + header_len])[tensor]["data_offsets"][0]
    raw[start:start + 4 * count] = b"\xff" * (4 * count)
    safetensors_file.write_bytes(bytes(raw))


def _edit_weights(safetensors_file: Path, edit) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(safetensors_file)
    edit(state)
    save_file(state, safetensors_file, metadata={"format": "pt"})


WEIGHT_CASES = [
    ("flipped bytes in a decoder weight", "vae", lambda f: _flip_to_nan(f, "decoder.proj_out.weight"),
     r"weight 'decoder.proj_out.weight' holds 3 NaN/Inf values; the file is corrupt"),
    ("an Inf in an encoder bias", "vae",
     lambda f: _edit_weights(f, lambda s: s["encoder.blocks.1.mlp.fc2.bias"].__setitem__(0, math.inf)),
     r"weight 'encoder.blocks.1.mlp.fc2.bias' holds 1 NaN/Inf values"),
    ("flipped bytes in the Gaussian head", "gs", lambda f: _flip_to_nan(f, "proj_out.weight", 5),
     r"weight 'proj_out.weight' holds 5 NaN/Inf values"),
    ("an extra tensor in the file", "vae",
     lambda f: _edit_weights(f, lambda s: s.__setitem__("extra.weight", torch.zeros(2))),
     r"1 unused weights \(e.g. 'extra.weight'\); config.json does not match the weights file"),
    ("a tensor missing from the file", "vae", lambda f: _edit_weights(f, lambda s: s.pop("to_moments.weight")),
     r"1 weights missing \(e.g. 'to_moments.weight'\)"),
]


@pytest.mark.parametrize("case, which, corrupt, pattern", WEIGHT_CASES, ids=[c[0] for c in WEIGHT_CASES])
def test_corrupted_weights_are_blamed_on_the_file(tmp_path, folders, case, which, corrupt, pattern):
    folder = tmp_path / which
    shutil.copytree(folders[which], folder)
    corrupt(folder / "diffusion_pytorch_model.safetensors")
    before = snapshot(folder)
    cls = AutoencoderAToken if which == "vae" else ATokenGaussianDecoder
    with pytest.raises(ValueError, match=pattern) as excinfo:
        cls.from_pretrained(folder)
    assert one_line_error(excinfo).startswith(str(folder))
    assert snapshot(folder) == before


def _nan_checkpoint(parity_dir: Path, tmp_path: Path, name: str, key: str, value: float) -> Path:
    state = torch.load(parity_dir / name, weights_only=True)
    state[key] = state[key].clone()
    state[key].view(-1)[0] = value
    path = tmp_path / f"bad-{name}"
    torch.save(state, path)
    return path


# (case, official checkpoint, its YAML, the key to spoil, value, how to convert)
CONVERT_CASES = [
    ("from_single_file, NaN in the decoder head", "atoken.pt", "atoken_config.yaml", "decoder.out_layer.weight",
     math.nan, "api"),
    ("from_single_file, Inf in the pooling probe", "atoken.pt", "atoken_config_fsq.yaml", "encoder.head.probe",
     -math.inf, "api"),
    ("atoken convert, NaN in an encoder block", "atoken.pt", "atoken_config.yaml",
     "encoder.blocks.0.attn.to_qkv.weight", math.nan, "cli"),
    ("Gaussian decoder conversion, NaN in its head", "gs_decoder.pt", "gs_config.yaml", "out_layer.weight",
     math.nan, "api"),
    ("atoken convert --gs-decoder, Inf in its input layer", "gs_decoder.pt", "gs_config.yaml", "input_layer.weight",
     math.inf, "cli"),
]


@pytest.mark.parametrize("case, checkpoint, config, key, value, how", CONVERT_CASES, ids=[c[0] for c in CONVERT_CASES])
def test_converting_a_non_finite_checkpoint_fails_naming_the_tensor(
    tmp_path, parity_dir, capsys, case, checkpoint, config, key, value, how
):
    bad = _nan_checkpoint(parity_dir, tmp_path, checkpoint, key, value)
    yaml, out = parity_dir / config, tmp_path / "converted"
    pattern = rf"{bad}: weight '{key}' holds 1 NaN/Inf values; the file is corrupt"
    is_gs = checkpoint.startswith("gs")
    if how == "cli":
        with pytest.raises(SystemExit) as excinfo:
            main(["convert", "--gs-decoder" if is_gs else "--checkpoint", str(bad), "--config", str(yaml),
                  "--output", str(out)])
        assert excinfo.value.code == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert re.search(pattern, err), err
    else:
        load = load_original_gaussian_decoder if is_gs else lambda p, y: AutoencoderAToken.from_single_file(p, config=y)
        with pytest.raises(ValueError, match=pattern) as excinfo:
            load(bad, yaml)
        one_line_error(excinfo)
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]  # no output folder, no temporary left behind


# --------------------------------------------------------------------------------- offline loads of our folders


@pytest.mark.parametrize("path", ["missing-folder", "runs/not-there"], ids=["bare name", "hub-like name"])
def test_offline_load_of_a_missing_folder_is_one_line_and_quick(tmp_path, monkeypatch, path):
    """What the project's own loads pass (local_files_only=True): no network round trips, one line."""
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=rf"{path}: no such model folder .* `atoken convert`") as excinfo:
        AutoencoderAToken.from_pretrained(path, local_files_only=True)
    one_line_error(excinfo)
    assert time.perf_counter() - start < 5
    assert list(tmp_path.iterdir()) == []


def test_loading_info_is_still_returned_when_asked(folders):
    model, info = AutoencoderAToken.from_pretrained(folders["vae"], output_loading_info=True)
    assert isinstance(model, AutoencoderAToken)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []


def test_finite_check_has_no_false_alarm_on_huge_finite_weights():
    """The fast check sums each tensor; a sum that overflows is recounted exactly, so only real NaN/Inf fail."""
    from atoken_diffusers.models.strict_loading import check_finite_weights

    check_finite_weights({"huge": torch.full((8,), 3e38), "half": torch.full((4,), 6e4, dtype=torch.float16)}, "x")
    with pytest.raises(ValueError, match=r"x: weight 'b' holds 2 NaN/Inf values"):
        check_finite_weights({"a": torch.zeros(2), "b": torch.tensor([1.0, math.inf, math.nan])}, "x")
