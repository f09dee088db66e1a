"""Start-up time of the ``atoken`` command line against a bare ``python -c "import torch"``.

    python -m benchmarks.cli_startup [--runs 7] [--out benchmarks/results]

Every command runs as a fresh subprocess; the commands alternate within each round (so a noisy neighbour slows all of
them alike) and each row reports the median over the rounds. The target of the issue "Feels native": ``atoken
--help`` and an argument error answer within 1.5x the bare torch import. Writes ``cli_startup.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from atoken_diffusers.utils.atomic import write_atomically

TARGET_RATIO = 1.5


def atoken_executable() -> str:
    """The ``atoken`` console script of this interpreter's environment (falls back to ``python -m``)."""
    beside = Path(sys.executable).parent / "atoken"
    found = str(beside) if beside.is_file() else shutil.which("atoken")
    return found or ""


def commands() -> dict[str, list[str]]:
    atoken = atoken_executable()
    cli = [atoken] if atoken else [sys.executable, "-m", "atoken_diffusers"]
    return {
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "atoken --help": [*cli, "--help"],
        "atoken reconstruct (argument error)": [*cli, "reconstruct"],
    }


def time_once(cmd: list[str]) -> tuple[float, str]:
    """Wall seconds of one run and what it wrote to stderr."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return time.perf_counter() - start, done.stderr


def measure(runs: int) -> dict[str, dict]:
    cmds = commands()
    times: dict[str, list[float]] = {name: [] for name in cmds}
    stderr: dict[str, str] = {}
    for name, cmd in cmds.items():  # warm the file cache once, untimed
        stderr[name] = time_once(cmd)[1]
    for _ in range(runs):
        for name, cmd in cmds.items():
            times[name].append(time_once(cmd)[0])
    return {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "stderr": stderr[name]}
            for name, t in times.items()}


def render(results: dict[str, dict], runs: int) -> str:
    names = list(results)
    base = results[names[0]]["median_s"]
    cpu = platform.processor() or platform.machine()
    setup = (f"Machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}. Median of {runs} "
             "alternating runs per command (min–max), each a fresh process; ratio to the bare torch import "
             f"(target <= {TARGET_RATIO}x).")
    lines = ["# `atoken` start-up time", "", setup, "",
             "| command | median | min–max | ratio | stderr |", "|---|---|---|---|---|"]
    for name in names:
        r = results[name]
        # --help must be silent; the argument error's usage message is its expected stderr
        noise = "empty" if not r["stderr"] else f"{len(r['stderr'].splitlines())} line(s)"
        lines.append(f"| `{name}` | {r['median_s']:.3f} s | {r['min_s']:.3f}–{r['max_s']:.3f} s | "
                     f"{r['median_s'] / base:.2f}x | {noise} |")
    lines += ["", "Regenerate with `python -m benchmarks.cli_startup`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="alternating rounds (median over them)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"), help="folder for cli_startup.md")
    args = parser.parse_args(argv)
    if args.runs < 1:
        raise SystemExit(f"--runs must be >= 1; got {args.runs}.")
    results = measure(args.runs)
    text = render(results, args.runs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "cli_startup.md", text)
    print(text)
    help_ratio = results["atoken --help"]["median_s"] / results['python -c "import torch"']["median_s"]
    print(f"atoken --help / import torch = {help_ratio:.2f}x "
          f"({'within' if help_ratio <= TARGET_RATIO else 'ABOVE'} the {TARGET_RATIO}x target)")


if __name__ == "__main__":
    main()
