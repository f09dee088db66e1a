"""Command-line overrides of a YAML config: ``--set KEY=VALUE`` items and flags, as one {dotted key: value} dict.

Every training entry point (``atoken train``, ``atoken train-generator``, the Wan and image-to-3D trainers) reads its
overrides here, so a flag means the same config key everywhere.
"""

from __future__ import annotations

import argparse

import yaml

# Flags every trainer shares and the config keys they set.
COMMON_FLAGS = {"output_dir": "run.output_dir", "max_steps": "run.max_steps"}


def parse_value(text: str):
    """A YAML scalar or list; numbers written like ``2e-4`` (which YAML 1.1 reads as strings) become floats."""
    parsed = yaml.safe_load(text)
    if isinstance(parsed, str):
        try:
            return float(parsed)
        except ValueError:
            pass
    return parsed


def parse_set_items(items: list[str]) -> dict:
    """``["optim.lr=1e-4", ...]`` -> ``{"optim.lr": 0.0001, ...}``; an item without ``=`` is a usage error."""
    overrides = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. run.max_steps=100.")
        key, value = item.split("=", 1)
        overrides[key] = parse_value(value)
    return overrides


def overrides_from_args(args: argparse.Namespace, flags: dict[str, str] | None = None) -> dict:
    """Overrides from parsed arguments: ``--set`` items, then every flag of ``COMMON_FLAGS`` and ``flags``
    ({argument name: config key}) that was given (not None) on the command line."""
    overrides = parse_set_items(getattr(args, "set", []))
    for flag, key in {**COMMON_FLAGS, **(flags or {})}.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    return overrides
