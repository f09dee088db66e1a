"""The embedded model loads through diffusers' BitsAndBytesConfig (8-bit and NF4), keeps its pixel boundaries
unquantized, and reconstructs a held-out photograph close to the float32 model at a fraction of its memory.

Bounds come from benchmarks/results/quantization.md (atoken-small, AMD EPYC CPU, bitsandbytes 0.50): on chelsea the
decoded output sits 44.5 dB (int8) / 46.0 dB (NF4) from the float32 model's, mean |diff| 0.0095 / 0.0076; the tests
allow 40 dB and 0.02 (about 3x the measured squared error); weights take 0.30 / 0.20 of float32's bytes.
"""

import pytest
import torch

pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install bitsandbytes)")

from atoken_diffusers.models.quantization import UNQUANTIZED_MODULES, bitsandbytes_without_gpu, load_quantized  # noqa: E402
from atoken_diffusers.utils.metrics import psnr  # noqa: E402
from atoken_diffusers.weights import default_model_dir  # noqa: E402
from atoken_diffusers.weights.evaluate import held_out_image  # noqa: E402
from benchmarks.quantization import reconstruct, scheme_kwargs, stored_bytes  # noqa: E402

# scheme -> (bitsandbytes Linear class, largest share of float32's bytes)
EXPECTED = {"bnb-int8": ("Linear8bitLt", 0.35), "bnb-nf4": ("Linear4bit", 0.25)}


@pytest.fixture(scope="module")
def reference():
    folder = default_model_dir()
    if folder is None:
        pytest.skip("this package carries no embedded model")
    x = held_out_image("skimage", "chelsea.png")
    model = load_quantized(folder, torch_dtype=torch.float32)
    return folder, x, reconstruct(model, x)[0], stored_bytes(model), model.get_memory_footprint()


@pytest.mark.parametrize("scheme", sorted(EXPECTED))
def test_bitsandbytes_load_quantizes_and_reconstructs(scheme, reference):
    folder, x, fp32_out, fp32_bytes, fp32_footprint = reference
    layer_class, max_share = EXPECTED[scheme]
    model = load_quantized(folder, **scheme_kwargs()[0][scheme])

    linears = {name: type(m).__name__ for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert {linears[name] for name in UNQUANTIZED_MODULES} == {"Linear"}
    assert {kind for name, kind in linears.items() if name not in UNQUANTIZED_MODULES} == {layer_class}

    out = reconstruct(model, x)[0]
    assert torch.isfinite(out).all()
    diff = (out - fp32_out).abs()
    assert psnr(out, fp32_out) > 40 and diff.mean() < 0.02
    assert diff.max() > 1e-3  # the weights really were rounded: the output is not the float32 one

    assert stored_bytes(model) < max_share * fp32_bytes
    assert model.get_memory_footprint() < max_share * fp32_footprint


def test_gpu_check_is_restored_after_loading():
    from diffusers.quantizers.bitsandbytes.bnb_quantizer import BnB8BitDiffusersQuantizer

    before = BnB8BitDiffusersQuantizer.__dict__["validate_environment"]
    with bitsandbytes_without_gpu():
        pass
    assert BnB8BitDiffusersQuantizer.__dict__["validate_environment"] is before
