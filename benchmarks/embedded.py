"""CPU cost of the embedded default: a 256 x 256 encode + decode of the shipped ``atoken-small`` beside the model it
replaced (v1: ``--previous DIR``, or, without it, the ``small`` preset it was built from, which has v1's exact
architecture and therefore its speed) and the PCA-48 baseline, measured in one run, alternating the contestants.

    python -m benchmarks.embedded [--previous DIR] [--repeats 7]

Writes ``benchmarks/results/embedded.{json,md}``. The issue's budget: at most 3x v1's time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.weights import default_model_dir
from atoken_diffusers.weights.baseline import PCACodec
from atoken_diffusers.weights.evaluate import IMAGE_PCA, held_out_image

from .run import machine
from .timing import measure

RESULTS = Path(__file__).parent / "results"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--previous", help="the v1 embedded model folder (default: the `small` preset, v1's architecture)")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    device = torch.device("cpu")
    shipped = AutoencoderAToken.from_pretrained(default_model_dir(), torch_dtype=torch.float32).eval()
    previous = (AutoencoderAToken.from_pretrained(args.previous, torch_dtype=torch.float32) if args.previous
                else AutoencoderAToken.from_preset("small")).eval()
    pca = PCACodec.load(IMAGE_PCA)
    x = held_out_image("skimage", "chelsea.png")
    contestants = {"atoken-small v2 (shipped)": lambda: shipped(x), "v1 architecture": lambda: previous(x),
                   "PCA-48": lambda: pca.reconstruct(x)}
    rounds = {name: [] for name in contestants}
    with torch.inference_mode():
        for _ in range(3):  # alternate, so drifting machine load hits every contestant alike
            for name, fn in contestants.items():
                rounds[name].append(measure(fn, device, repeats=max(1, args.repeats // 3)))
    medians = {name: sorted(m.median_s for m in ms)[len(ms) // 2] for name, ms in rounds.items()}
    ratio = medians["atoken-small v2 (shipped)"] / medians["v1 architecture"]
    result = {"machine": machine(), "threads": torch.get_num_threads(), "seconds": medians,
              "v2_over_v1": ratio, "previous": args.previous or "preset small"}
    lines = ["# Embedded default: CPU cost of one 256 x 256 encode + decode", "",
             f"`python -m benchmarks.embedded` on {result['machine'].get('cpu', 'this CPU')}, "
             f"{result['threads']} threads, float32; medians of alternating rounds.", "",
             "| codec | seconds | vs v1 |", "|---|---|---|"]
    lines += [f"| {name} | {s:.4f} | {s / medians['v1 architecture']:.2f}x |" for name, s in medians.items()]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "embedded.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "embedded.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
