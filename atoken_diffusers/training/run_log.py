"""What a training run prints and logs: the progress bar and the ``log.jsonl`` record file."""

from __future__ import annotations

import json
from pathlib import Path

from ..utils.atomic import write_atomically


def _step(line: str) -> int | None:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return None  # a line cut short by a kill


def truncate_log(path: Path, step: int) -> None:
    """Drop records a killed run logged after its last checkpoint (the resumed run logs those steps again), and
    any half-written line; the file is replaced atomically."""
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if (s := _step(line)) is not None and s <= step]
        write_atomically(path, "".join(line + "\n" for line in kept))


def progress_bar(accelerator, total: int, initial: int):
    """A tqdm bar on the local main process only (others get a disabled one)."""
    import sys

    from tqdm.auto import tqdm

    # In a log file (no terminal) a bar redrawn twice a second is noise: redraw every 30 s there.
    return tqdm(total=total, initial=initial, disable=not accelerator.is_local_main_process, desc="train",
                dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30)
