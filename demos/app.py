"""The AToken Gradio demo: `python demos/app.py --model DIR` (the same as `atoken demo --model DIR`).

Tabs: Image (before/after sliders for the continuous and FSQ reconstructions, a PSNR/SSIM table, error map,
latent colours), Video (H.264 reconstruction,
PSNR per frame), 3D (mesh -> Gaussian splat, 3D PSNR; the embedded or a --gs-decoder Gaussian decoder), Tokens
(FSQ index maps, codebook usage),
Understanding (zero-shot labels; needs --text-model) and Generation (filled in by generator pipelines). The UI is
built by atoken_diffusers.demo.ui so that an installed package (which does not ship this folder) runs it too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    from atoken_diffusers.cli import demo
except ImportError:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from atoken_diffusers.cli import demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="demos/app.py", description=__doc__.splitlines()[0])
    demo.add_arguments(parser)
    demo.run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
