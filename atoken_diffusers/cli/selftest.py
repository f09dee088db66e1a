"""`atoken selftest`: convert the official-format parity checkpoint and compare every output with the official
implementation's (the project's ground truth); exits non-zero on any mismatch."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .errors import UsageError

DEFAULT_FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "data" / "parity"


def add_parser(sub) -> None:
    p = sub.add_parser("selftest", help="check parity with the official AToken outputs on the bundled fixtures")
    p.add_argument("--fixtures", default=str(DEFAULT_FIXTURES), help="folder with atoken.pt, *.yaml, inputs/outputs")
    p.add_argument("--output", help="keep the converted diffusers folders here (default: a temporary folder)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..evaluation.parity import TOLERANCE, failures, parity_report
    from ..models.autoencoder_atoken import AutoencoderAToken
    from ..utils.atomic import save_atomically

    fixtures = Path(args.fixtures)
    if not (fixtures / "atoken.pt").is_file():
        raise UsageError(f"--fixtures {fixtures}: no atoken.pt there (run from a checkout, or pass the folder).")
    out_root = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="atoken-selftest-"))
    bad = {}
    for config in ("atoken_config.yaml", "atoken_config_fsq.yaml"):
        folder = out_root / Path(config).stem
        official = AutoencoderAToken.from_single_file(fixtures / "atoken.pt", config=fixtures / config)
        save_atomically(official, folder, overwrite=True)
        model = AutoencoderAToken.from_pretrained(folder).eval()  # exercise the converted folder, not the pickle
        report = parity_report(model, fixtures)
        print(f"\n{config} -> {folder}")
        for name, value in report.items():
            kind = f"{int(value)} mismatches" if name.endswith("indices") else f"max|diff| {value:.2e}"
            print(f"  {name:32s} {kind}")
        bad.update({f"{config}:{k}": v for k, v in failures(report).items()})
    if bad:
        raise SystemExit(f"\nFAILED: {len(bad)} outputs differ from the official implementation: {sorted(bad)}")
    print(f"\nOK: every output matches the official implementation (float tolerance {TOLERANCE}, indices exact).")
