"""Quantized AToken weights through diffusers' own API, on GPUs and on the CPU.

On a GPU, ``AutoencoderAToken.from_pretrained(folder, quantization_config=diffusers.BitsAndBytesConfig(...))`` (or
``TorchAoConfig``) works as for any diffusers model; the class names the layers that stay unquantized
(``_keep_in_fp32_modules``, the pixel <-> transformer boundaries). :func:`load_quantized` does the same call and also
runs bitsandbytes on a machine without a GPU, where diffusers (0.42) refuses it and bitsandbytes (0.50) mishandles
some layer shapes in its CPU 4-bit kernels (see the functions below); on a GPU it changes nothing.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import torch

from .autoencoder_atoken import AutoencoderAToken

# The layers every quantized load keeps in full precision (see AutoencoderAToken._keep_in_fp32_modules).
UNQUANTIZED_MODULES = AutoencoderAToken._keep_in_fp32_modules


@contextmanager
def bitsandbytes_without_gpu():
    """diffusers (0.42) refuses bitsandbytes configs when no GPU is present, although bitsandbytes >= 0.48 runs
    Linear8bitLt and Linear4bit on the CPU. Without an accelerator, lift that one check for the duration; with one,
    change nothing."""
    from diffusers.quantizers.bitsandbytes import bnb_quantizer

    if torch.cuda.is_available() or torch.xpu.is_available():
        yield
        return
    classes = (bnb_quantizer.BnB4BitDiffusersQuantizer, bnb_quantizer.BnB8BitDiffusersQuantizer)
    saved = [c.__dict__["validate_environment"] for c in classes]
    for c in classes:
        c.validate_environment = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        for c, original in zip(classes, saved):
            c.validate_environment = original


def route_unpackable_4bit_to_generic_kernel(model: torch.nn.Module) -> None:
    """bitsandbytes 0.50's fast 4-bit path on AVX512-BF16 CPUs repacks each weight in blocks of 32 output rows and
    of the quantization block (64) along the inputs, and asserts on other shapes: So/C's MLP (4304 = 32 x 134.5)
    fails. Send such layers to its generic CPU kernel instead; GPUs are unaffected."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return
    for m in model.modules():
        if isinstance(m, Linear4bit) and (m.out_features % 32 or m.in_features % m.weight.blocksize):
            m.support_avx512bf16_for_cpu = False


def cpu_4bit_misread_modules(folder) -> list[str]:
    """Linear layers whose input size is not a multiple of bitsandbytes' 4-bit block (64).

    bitsandbytes 0.50 quantizes a weight in blocks of the flattened tensor, but its CPU ``dequantize_4bit`` kernel
    reads the blocks row by row: for such layers it returns the wrong weight (relative error 0.25 instead of NF4's
    0.09 on a Gaussian 1152 x 4304 weight; its generic kernel gets 0.09). So/C's MLP fc2 (4304 inputs) is such a
    layer; atoken-small has none besides decoder.proj_in. GPUs are unaffected."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = AutoencoderAToken.from_config(AutoencoderAToken.load_config(folder))
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.in_features % 64]


def load_quantized(folder, **kwargs) -> AutoencoderAToken:
    """``AutoencoderAToken.from_pretrained(folder, **kwargs)`` (e.g. ``quantization_config=BitsAndBytesConfig(
    load_in_8bit=True)``) with the boundary layers unquantized and, on a machine without a GPU, bitsandbytes allowed
    on the CPU (weights placed there) minus the layers its CPU 4-bit kernels mishandle. Returns the model in eval
    mode."""
    config = kwargs.get("quantization_config")
    if config is not None and not torch.cuda.is_available():
        kwargs.setdefault("device_map", "cpu")  # diffusers would place bitsandbytes weights on "cuda:0"
    if getattr(config, "load_in_4bit", False) and not torch.cuda.is_available():
        config = copy.deepcopy(config)
        config.llm_int8_skip_modules = (config.llm_int8_skip_modules or []) + cpu_4bit_misread_modules(folder)
        kwargs = {**kwargs, "quantization_config": config}
    with bitsandbytes_without_gpu():
        model = AutoencoderAToken.from_pretrained(folder, **kwargs).eval()
    route_unpackable_4bit_to_generic_kernel(model)
    return model
