"""Starting and killing multi-process runs in tests.

Two CPU processes are started with ``accelerate launch --multi_gpu`` (torchrun): accelerate's ``--cpu`` launcher
starts a single process unless MPI is installed, and without CUDA our entry points run the torchrun processes on the
CPU. torchrun puts its workers in sessions of their own, so killing a run means killing its whole process tree.
"""

from __future__ import annotations

import os
import sys

import psutil


def launch_cmd(module: str, *args: str, port_base: int = 29500) -> list[str]:
    """``python -m accelerate.commands.launch`` of ``python -m MODULE ARGS`` on two processes."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
            str(port_base + os.getpid() % 1000), "-m", module, *args]


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it (as a crash or an out-of-memory kill would)."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    family = root.children(recursive=True) + [root]
    for p in family:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=30)
