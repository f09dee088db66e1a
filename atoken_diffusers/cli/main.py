"""The `atoken` command line."""

from __future__ import annotations

import argparse
import sys

from . import (
    classify,
    convert,
    demo,
    encode_dataset,
    export,
    generate,
    latent_stats,
    pack3d,
    reconstruct,
    selftest,
    train,
    train_generator,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atoken", description="AToken for diffusers: convert, reconstruct, classify, train, generate, demo, check.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (convert, reconstruct, classify, pack3d, selftest, train, demo, encode_dataset, latent_stats,
                   train_generator, generate, export):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
