"""Speed, memory and scaling of AToken, side by side with the official code and diffusers peers.

    python -m benchmarks.run --suite cpu --official /path/to/ml-atoken      # ~15 min on 2 CPU cores
    python -m benchmarks.run --suite gpu --official /path/to/ml-atoken      # one script on a GPU machine
    python -m benchmarks.run --suite quick                                  # seconds; smoke test

Writes ``benchmarks/results/<suite>.json`` and ``<suite>.md``. Every comparison is measured in the same process on
the same machine, alternating the contestants, so ratios hold on a noisy shared machine; times are medians of
repeated runs with (min–max) shown. Without ``--official`` the official comparison is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from . import sections

SUITES = {
    "cpu": dict(
        device="cpu", repeats=3, official_dtypes=("fp32", "bf16"),
        official_cases=[("image 256", (1, 3, 256, 256)), ("image 512", (1, 3, 512, 512)),
                        ("clip 16x256", (1, 3, 16, 256, 256))],
        peer_image=(1, 3, 256, 256), peer_video=(1, 3, 9, 128, 128),
        scaling=dict(dtype="fp32", preset="base", sides=[256, 512, 768, 1024], lengths=[16, 32, 64, 128], video_side=256),
        efficiency_dtypes=("fp32", "bf16"), efficiency_sides=(256,), compile=False,
    ),
    "gpu": dict(
        device="cuda", repeats=5, official_dtypes=("bf16", "fp32"),
        official_cases=[("image 256", (1, 3, 256, 256)), ("image 512", (1, 3, 512, 512)),
                        ("image 1024", (1, 3, 1024, 1024)), ("clip 16x256", (1, 3, 16, 256, 256)),
                        ("clip 64x256", (1, 3, 64, 256, 256))],
        peer_image=(1, 3, 512, 512), peer_video=(1, 3, 17, 256, 256),
        scaling=dict(dtype="bf16", preset="so-c", sides=[256, 512, 1024, 2048], lengths=[16, 32, 64, 128, 256], video_side=256),
        efficiency_dtypes=("bf16",), efficiency_sides=(256, 512), compile=True,
    ),
    "quick": dict(
        device="cpu", repeats=2, official_dtypes=("fp32",),
        official_cases=[("image 64", (1, 3, 64, 64))],
        peer_image=None, peer_video=None,
        scaling=dict(dtype="fp32", preset="tiny", sides=[64, 128], lengths=[16, 32], video_side=64),
        efficiency_dtypes=("fp32",), efficiency_sides=(64,), compile=False, preset="tiny",
    ),
}


def machine() -> dict:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = dict(cpu=cpu, cores=os.cpu_count(), torch=torch.__version__, threads=torch.get_num_threads())
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        try:
            import flash_attn

            info["flash_attn"] = flash_attn.__version__
        except ImportError:
            info["flash_attn"] = None
    return info


def _t(m: dict) -> str:
    return f"{m['median_s']:.3f} s ({m['min_s']:.3f}–{m['max_s']:.3f})"


def _mb(m: dict) -> str:
    return "n/a" if m.get("peak_mb") is None else f"{m['peak_mb']:.0f}"


def _table(title: str, header: list[str], rows: list[list]) -> list[str]:
    """A Markdown section: title, header row, rows of cells."""
    return [title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows] + [""]


def _video_row(r: dict) -> list:
    per_frame = f"{r['median_s'] / r['frames'] * 1e3:.0f} ms"
    if r.get("peak_mb") is None:
        return [r["frames"], _t(r), per_frame, "n/a", "", ""]
    return [r["frames"], _t(r), per_frame, _mb(r), f"{r['output_mb']:.0f}", f"{r['peak_mb'] - r['output_mb']:.0f}"]


def render(results: dict) -> str:
    mc = results["machine"]
    lines = [f"# AToken benchmarks — suite `{results['suite']}`", "",
             f"Machine: {mc['cpu']}, {mc['cores']} cores, torch {mc['torch']}"
             + (f", GPU {mc['gpu']} (flash-attn {mc['flash_attn']})" if "gpu" in mc else "") + ".",
             "Times: median of repeated runs (min–max); peak: extra memory at the peak of one call (MB).", ""]
    if results.get("official"):
        lines += _table("## Ours vs the official implementation (same weights, same input, encode + decode)",
                        ["case", "dtype", "ours", "official", "speed-up", "max abs diff"],
                        [[r["case"], r["dtype"], _t(r["ours"]), _t(r["official"]), f"x{r['speedup']:.2f}",
                          f"{r['max_abs_diff']:.1e}"] for r in results["official"]])
    if results.get("peers"):
        lines += _table("## Ours vs diffusers autoencoders (random weights, fp32, encode + decode)",
                        ["model", "params", "compression", "latent ch", "input", "time", "peak MB"],
                        [[r["model"], f"{r['params_m']:.0f}M", r["compression"], r["latent_channels"], r["input"],
                          _t(r), _mb(r)] for r in results["peers"]])
    s = results.get("scaling")
    if s:
        lines += _table(f"## Scaling ({s['preset']} preset, {s['dtype']})", ["image side", "tokens", "time", "peak MB"],
                        [[r["side"], r["tokens"], _t(r), _mb(r)] for r in s["image_side"]])
        lines += _table("", ["video frames", "time", "time per frame", "peak MB", "of which the output clip",
                             "working memory"], [_video_row(r) for r in s["video_length"]])[2:]
        p = s["packed"]
        lines += [f"Packed batch of {len(p['sizes'])} images of sizes {p['sizes']}: {_t(p['packed'])} in one call vs "
                  f"{_t(p['singles'])} as single calls (x{p['speedup']:.2f}; outputs within "
                  f"{p['max_abs_diff']:.1e} of the single calls).", ""]
    if results.get("efficiency"):
        rows = results["efficiency"]
        compiled = any("compiled_seconds" in r for r in rows)
        extra = ["compiled (fullgraph)", "compiled / eager speed-up", "compiled utilisation"] if compiled else []
        lines += _table("## Efficiency vs the machine's matmul rate (encode + decode of one image)",
                        ["preset", "dtype", "side", "time", "achieved TFLOP/s", "plain matmul TFLOP/s", "utilisation",
                         *extra],
                        [[r["preset"], r["dtype"], r["side"], f"{r['seconds']:.3f} s", f"{r['achieved_tflops']:.3f}",
                          f"{r['matmul_tflops']:.3f}", f"{100 * r['utilisation']:.0f}%",
                          *([f"{r['compiled_seconds']:.3f} s", f"x{r['compiled_speedup']:.2f}",
                             f"{100 * r['compiled_utilisation']:.0f}%"] if compiled else [])] for r in rows])
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", choices=sorted(SUITES), default="cpu")
    parser.add_argument("--official", help="path to a checkout of apple/ml-atoken (never vendored)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--only", nargs="*", choices=["official", "peers", "scaling", "efficiency"])
    args = parser.parse_args(argv)
    cfg = SUITES[args.suite]
    device = torch.device(cfg["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--suite gpu needs a CUDA device.")
    preset = cfg.get("preset", "so-c")
    want = set(args.only or ["official", "peers", "scaling", "efficiency"])
    results = {"suite": args.suite, "machine": machine()}
    print(f"suite {args.suite} on {results['machine']}", flush=True)
    if "official" in want and args.official:
        results["official"] = sections.official_vs_ours(
            args.official, device, cfg["official_dtypes"], cfg["official_cases"], cfg["repeats"], preset)
    if "peers" in want and cfg["peer_image"]:
        results["peers"] = sections.peers(device, cfg["peer_image"], cfg["peer_video"], cfg["repeats"])
    if "scaling" in want:
        results["scaling"] = sections.scaling(device, repeats=cfg["repeats"], **cfg["scaling"])
    if "efficiency" in want:
        results["efficiency"] = sections.efficiency(
            device, cfg["efficiency_dtypes"], cfg["efficiency_sides"], cfg["repeats"], preset, cfg["compile"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.suite}.json").write_text(json.dumps(results, indent=2))
    (out / f"{args.suite}.md").write_text(render(results))
    print(f"\nwrote {out / (args.suite + '.md')} and .json\n\n{render(results)}")


if __name__ == "__main__":
    main()
