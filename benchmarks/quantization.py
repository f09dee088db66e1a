"""Quantized AToken through diffusers' own loading API: weight memory and reconstruction quality per scheme.

    python -m benchmarks.quantization [--models embedded random] [--preset so-c] [--side 256] [--out benchmarks/results]

Every scheme is one ``AutoencoderAToken.from_pretrained(folder, ...)`` call, as a user writes it:

* ``fp32``, ``bf16``: ``torch_dtype``;
* ``bnb-int8``: ``quantization_config=diffusers.BitsAndBytesConfig(load_in_8bit=True)`` (LLM.int8, default
  outlier threshold 6.0; diffusers keeps the unquantized layers in float16);
* ``bnb-nf4``: ``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
  bnb_4bit_compute_dtype=torch.bfloat16)`` (unquantized layers in float16);
* ``torchao-int8wo``: ``diffusers.TorchAoConfig(torchao.quantization.Int8WeightOnlyConfig())`` when torchao is
  installed (unquantized layers in bfloat16).

Models: the embedded ``atoken-small`` on the 10 held-out photographs of :mod:`atoken_diffusers.weights.evaluate`
(PSNR against the photographs), and a random So/C (846M parameters, saved to a temporary folder first) on one
held-out photograph, where PSNR against the image means nothing: its rows compare the decoded output with the bf16
and fp32 models' outputs instead. Writes ``benchmarks/results/quantization.{json,md}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.models.quantization import UNQUANTIZED_MODULES
from atoken_diffusers.models.quantization import load_quantized as load
from atoken_diffusers.utils.metrics import psnr
from atoken_diffusers.weights import default_model_dir
from atoken_diffusers.weights.evaluate import HELD_OUT_IMAGES, held_out_image

from .run import _table, machine


def scheme_kwargs() -> tuple[dict[str, dict], dict[str, str]]:
    """``from_pretrained`` keyword arguments per scheme, and the reason for each scheme that cannot run here."""
    import diffusers

    schemes = {"fp32": dict(torch_dtype=torch.float32), "bf16": dict(torch_dtype=torch.bfloat16)}
    missing = {}
    # Without an accelerator diffusers would place bitsandbytes weights on "cuda:0"; name the CPU explicitly.
    cpu = {} if torch.cuda.is_available() else dict(device_map="cpu")
    try:
        import bitsandbytes  # noqa: F401

        schemes["bnb-int8"] = dict(quantization_config=diffusers.BitsAndBytesConfig(load_in_8bit=True), **cpu)
        schemes["bnb-nf4"] = dict(quantization_config=diffusers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16), **cpu)
    except ImportError:
        missing["bnb-int8"] = missing["bnb-nf4"] = "bitsandbytes is not installed"
    try:
        from torchao.quantization import Int8WeightOnlyConfig

        schemes["torchao-int8wo"] = dict(quantization_config=diffusers.TorchAoConfig(Int8WeightOnlyConfig()))
    except ImportError:
        missing["torchao-int8wo"] = "torchao is not installed"
    return schemes, missing


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a tensor occupies; torchao's tensor subclasses report their logical dtype, so sum their parts."""
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, name)) for name in names)
    return t.numel() * t.element_size()


def stored_bytes(model: torch.nn.Module) -> int:
    """Bytes of the state dict as held in memory: parameters, buffers and the quantizers' scales (bitsandbytes keeps
    int8 row scales and 4-bit block maxima outside parameters; its state dict carries them)."""
    return sum(tensor_bytes(t) for t in model.state_dict().values())


def linear_kinds(model: torch.nn.Module) -> dict[str, int]:
    """How many Linear layers of each class (bitsandbytes swaps the class; torchao swaps the weight's type)."""
    return dict(Counter(
        f"{type(m).__name__}[{type(m.weight).__name__}]" for m in model.modules() if isinstance(m, torch.nn.Linear)))


@torch.no_grad()
def reconstruct(model: AutoencoderAToken, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The model's reconstruction of ``x`` (float32, clamped to [-1, 1]) and the seconds it took."""
    start = time.perf_counter()
    out = model(x.to(model.dtype)).sample.float().clamp(-1, 1)
    return out, time.perf_counter() - start


def _abs_diff(a: torch.Tensor, b: torch.Tensor) -> dict:
    d = (a - b).abs()
    return {"max_abs_diff": d.max().item(), "mean_abs_diff": d.mean().item()}


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def measure_embedded(folder, schemes: dict[str, dict]) -> list[dict]:
    """Per scheme: memory, mean held-out PSNR, and the decoded output against the fp32 model's."""
    images = {name: held_out_image(bundle, name) for bundle, name in HELD_OUT_IMAGES}
    rows, fp32_out = [], {}
    for scheme, kwargs in schemes.items():
        model = load(folder, **kwargs)
        outs, seconds = {}, 0.0
        for name, x in images.items():
            outs[name], s = reconstruct(model, x)
            seconds += s
        if scheme == "fp32":
            fp32_out = outs
        scores = [psnr(outs[n], x) for n, x in images.items()]
        diffs = [_abs_diff(outs[n], fp32_out[n]) for n in images]
        row = dict(model="atoken-small", scheme=scheme, bytes=stored_bytes(model),
                   footprint=model.get_memory_footprint(), dtype=str(model.dtype), linear=linear_kinds(model),
                   psnr=sum(scores) / len(scores), per_image=dict(zip(images, scores)),
                   psnr_vs_fp32_output=None if scheme == "fp32" else  # identical: infinite, not JSON
                   sum(psnr(outs[n], fp32_out[n]) for n in images) / len(images),
                   max_abs_diff_vs_fp32=max(d["max_abs_diff"] for d in diffs),
                   mean_abs_diff_vs_fp32=sum(d["mean_abs_diff"] for d in diffs) / len(diffs),
                   seconds_per_image=seconds / len(images))
        rows.append(row)
        print(f"  atoken-small {scheme}: {row['bytes'] / 2**20:.2f} MiB, PSNR {row['psnr']:.2f} dB", flush=True)
        del model
        _free()
    bf16 = next((r["psnr"] for r in rows if r["scheme"] == "bf16"), None)
    for r in rows:
        r["psnr_delta_vs_bf16"] = None if bf16 is None else r["psnr"] - bf16
    return rows


def measure_random(preset: str, side: int, schemes: dict[str, dict]) -> list[dict]:
    """A random ``preset`` model saved to a temporary folder, loaded once per scheme, on one held-out photograph:
    memory and the decoded output against the fp32 and bf16 models' outputs."""
    bundle, name = HELD_OUT_IMAGES[0]
    x = held_out_image(bundle, name)
    if side != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", antialias=True).clamp(-1, 1)
    rows, outs = [], {}
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)  # the same random weights as benchmarks.sections
        AutoencoderAToken.from_preset(preset).save_pretrained(folder)
        _free()
        for scheme, kwargs in schemes.items():
            model = load(folder, **kwargs)
            outs[scheme], seconds = reconstruct(model, x)
            rows.append(dict(model=f"random {preset}", scheme=scheme, side=side, bytes=stored_bytes(model),
                             footprint=model.get_memory_footprint(), dtype=str(model.dtype),
                             linear=linear_kinds(model), params=sum(p.numel() for p in model.parameters()),
                             seconds_per_image=seconds))
            print(f"  random {preset} {scheme}: {rows[-1]['bytes'] / 2**20:.0f} MiB", flush=True)
            del model
            _free()
    for row in rows:
        out = outs[row["scheme"]]
        row["psnr_vs_fp32_output"] = None if row["scheme"] == "fp32" else psnr(out, outs["fp32"])
        row.update({f"{k}_vs_bf16": v for k, v in _abs_diff(out, outs["bf16"]).items()})
    return rows


def _mib(r: dict) -> str:
    return f"{r['bytes'] / 2**20:.2f}"


def _ratio(r: dict, rows: list[dict]) -> str:
    fp32 = next(x["bytes"] for x in rows if x["scheme"] == "fp32" and x["model"] == r["model"])
    return f"{r['bytes'] / fp32:.3f}"


def _quantized(r: dict) -> str:
    kinds = {k: n for k, n in r["linear"].items() if k != "Linear[Parameter]"}
    return ", ".join(f"{n} {k}" for k, n in kinds.items()) or "none"


def render(results: dict) -> str:
    mc = results["machine"]
    lines = ["# Quantized AToken through diffusers' loading API", "",
             f"Machine: {mc['cpu']}, {mc['cores']} cores, torch {mc['torch']}, bitsandbytes {mc['bitsandbytes']}, "
             f"torchao {mc['torchao']}, diffusers {mc['diffusers']}.",
             "Memory: bytes of the loaded state dict (parameters, buffers and the quantizers' scales; torchao tensors "
             "counted by their parts); diffusers' `get_memory_footprint()` beside it (it misses bitsandbytes' 4-bit "
             "block maxima and sees torchao weights at their bf16 size).",
             f"Unquantized: {', '.join(results['unquantized_modules'])} (set as the class's `_keep_in_fp32_modules`).",
             ""]
    if "gpu" not in mc:
        lines += ["Without a GPU, diffusers' check that refuses bitsandbytes is lifted for the load, and bnb-nf4 also "
                  "leaves unquantized every Linear whose input size is not a multiple of 64 (So/C: the 54 MLP `fc2`, "
                  "a third of the weights), which bitsandbytes 0.50's CPU `dequantize_4bit` kernel reads wrongly "
                  "(see `cpu_4bit_misread_modules`); on a GPU every transformer Linear is quantized.", ""]
    for scheme, why in results["skipped"].items():
        lines += [f"Skipped {scheme}: {why}.", ""]
    emb = results.get("embedded")
    if emb:
        lines += _table("## atoken-small on the 10 held-out photographs (256 x 256)",
                        ["scheme", "weights MiB", "vs fp32", "get_memory_footprint MiB", "PSNR dB", "delta vs bf16 dB",
                         "PSNR vs fp32 output dB", "max / mean abs diff vs fp32", "quantized Linear"],
                        [[r["scheme"], _mib(r), _ratio(r, emb), f"{r['footprint'] / 2**20:.2f}", f"{r['psnr']:.2f}",
                          f"{r['psnr_delta_vs_bf16']:+.2f}",
                          "-" if r["scheme"] == "fp32" else f"{r['psnr_vs_fp32_output']:.2f}",
                          f"{r['max_abs_diff_vs_fp32']:.3f} / {r['mean_abs_diff_vs_fp32']:.4f}", _quantized(r)]
                         for r in emb])
    rnd = results.get("random")
    if rnd:
        side = rnd[0]["side"]
        lines += [f"## Random {results['preset']} ({rnd[0]['params'] / 1e6:.0f}M parameters), one {side} x {side} "
                  "photograph (outputs compared, not the image)", "",
                  "Random weights are no trained network: they magnify rounding noise (the trained atoken-small above "
                  "is the quality figure); read this table for memory and for the order of the schemes.", ""]
        lines += _table("",
                        ["scheme", "weights MiB", "vs fp32", "get_memory_footprint MiB", "PSNR vs fp32 output dB",
                         "max / mean abs diff vs bf16", "quantized Linear"],
                        [[r["scheme"], _mib(r), _ratio(r, rnd), f"{r['footprint'] / 2**20:.0f}",
                          "-" if r["scheme"] == "fp32" else f"{r['psnr_vs_fp32_output']:.2f}",
                          "-" if r["scheme"] == "bf16" else
                          f"{r['max_abs_diff_vs_bf16']:.3f} / {r['mean_abs_diff_vs_bf16']:.4f}", _quantized(r)]
                         for r in rnd])[2:]
    return "\n".join(lines)


def _versions() -> dict:
    import diffusers

    out = {"diffusers": diffusers.__version__}
    for name in ("bitsandbytes", "torchao"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", choices=["embedded", "random"], default=["embedded", "random"])
    parser.add_argument("--preset", default="so-c", help="preset of the random model (so-c: 846M parameters)")
    parser.add_argument("--side", type=int, default=256, help="side of the random model's input image")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    schemes, skipped = scheme_kwargs()
    results = {"machine": {**machine(), **_versions()}, "unquantized_modules": UNQUANTIZED_MODULES,
               "skipped": skipped, "preset": args.preset}
    print(f"quantization benchmark on {results['machine']}", flush=True)
    if "embedded" in args.models:
        folder = default_model_dir()
        if folder is None:
            raise SystemExit("--models embedded: this package carries no embedded model; drop it from --models.")
        results["embedded"] = measure_embedded(folder, schemes)
    if "random" in args.models:
        results["random"] = measure_random(args.preset, args.side, schemes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quantization.json").write_text(json.dumps(results, indent=2))
    (out / "quantization.md").write_text(render(results))
    print(f"\nwrote {out / 'quantization.md'} and .json\n\n{render(results)}")
    return results


if __name__ == "__main__":
    main()
