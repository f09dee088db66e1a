"""The benchmark harness runs end to end (quick suite, tiny preset) and reports what it claims."""

import json

import pytest

from benchmarks.run import main
from benchmarks.timing import measure


def test_quick_suite_writes_tables(tmp_path):
    main(["--suite", "quick", "--out", str(tmp_path), "--only", "scaling", "efficiency"])
    data = json.loads((tmp_path / "quick.json").read_text())
    assert [r["side"] for r in data["scaling"]["image_side"]] == [64, 128]
    packed = data["scaling"]["packed"]
    # Packing four images of different sizes into one call gives each image what its own call gives.
    assert packed["max_abs_diff"] < 1e-4
    # Reported ratios are the ratios of the reported times, not numbers made up elsewhere.
    assert packed["speedup"] == pytest.approx(packed["singles"]["median_s"] / packed["packed"]["median_s"], rel=1e-9)
    row = data["efficiency"][0]
    assert row["utilisation"] == pytest.approx(row["achieved_tflops"] / row["matmul_tflops"], rel=1e-9)
    assert row["achieved_tflops"] * 1e12 * row["seconds"] == pytest.approx(_tiny_flops(row["side"]), rel=1e-9)
    md = (tmp_path / "quick.md").read_text()
    assert "| video frames |" in md and "Packed batch of 4 images" in md
    assert f"{100 * row['utilisation']:.0f}%" in md


def _tiny_flops(side: int) -> float:
    """Encode + decode FLOPs of the tiny preset at ``side`` x ``side``, counted by hand from its config: every
    linear layer outside the pooling head at 2 FLOPs per weight per token, and attention (QK^T and AV) at 4 x tokens
    x width per token per block."""
    from atoken_diffusers.models.presets import preset_config

    c = preset_config("tiny")
    patch, tokens = 3072, (side // 16) ** 2
    enc, dec, lat = c["encoder_dim"], c["decoder_dim"], c["latent_channels"]
    block = lambda d, mlp: 3 * d * d + d * d + 2 * d * mlp  # noqa: E731  qkv, out, fc1 + fc2 weights
    weights = (patch * enc + c["encoder_depth"] * block(enc, c["encoder_mlp_dim"]) + enc * 2 * lat
               + lat * dec + c["decoder_depth"] * block(dec, c["decoder_mlp_dim"]) + dec * patch)
    attention = 4 * tokens * (c["encoder_depth"] * enc + c["decoder_depth"] * dec)
    return tokens * (2 * weights + attention)


def test_measure_reports_median_and_spread():
    import torch

    calls = []
    m = measure(lambda: calls.append(1), torch.device("cpu"), repeats=4)
    assert len(calls) == 5 and m.runs == 4 and m.min_s <= m.median_s <= m.max_s
