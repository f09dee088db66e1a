"""Parity with the official AToken implementation (outputs in tests/data/parity, produced by apple/ml-atoken)."""

import pytest
from safetensors.torch import load_file

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.evaluation.parity import failures, parity_report


@pytest.mark.parametrize("variant", ["plain", "fsq"])
def test_every_official_output_matches(variant, converted_dirs, parity_dir):
    model = AutoencoderAToken.from_pretrained(converted_dirs[variant]).eval()
    report = parity_report(model, parity_dir)
    assert failures(report) == {}, report
    official = {k for k in load_file(parity_dir / "outputs.safetensors") if not k.startswith("gs.")}
    expected = official if variant == "fsq" else {k for k in official if "fsq" not in k and "codes" not in k}
    assert set(report) == expected  # nothing the official outputs cover is skipped


def test_parity_detects_a_wrong_weight(converted_dirs, parity_dir):
    model = AutoencoderAToken.from_pretrained(converted_dirs["plain"]).eval()
    model.decoder.blocks[1].attn.q_norm.gamma.data *= 1.01
    bad = failures(parity_report(model, parity_dir))
    assert "image_a.decoded_from_mean" in bad and "image_a.moments" not in bad
