"""The `atoken` command line.

Building the parser imports only the light ``cli`` modules (argparse definitions): torch, diffusers and friends load
inside each command's ``run``, so ``atoken --help`` and argument errors answer at once. Every error is one line on
stderr: exit status 2 for usage errors, 1 for failures (``cli.errors``); ``atoken --debug`` shows tracebacks."""

from __future__ import annotations

import argparse
import logging
import sys

from ..utils.atomic import install_interrupt_cleanup
from . import (
    classify,
    convert,
    demo,
    encode_dataset,
    evaluate,
    export,
    generate,
    latent_stats,
    pack3d,
    reconstruct,
    selftest,
    train,
    train_generator,
)
from .errors import USAGE, run_command

# bitsandbytes (imported by peft, which diffusers imports whenever it is installed) warns on CPUs with AVX512-BF16
# that it could not fetch a 4-bit matmul kernel from the Hugging Face hub through the `kernels` package. No command
# runs 4-bit matmuls on the CPU, and the advice it gives (install `kernels`) is wrong here, so this one message is
# filtered; every other bitsandbytes message still shows.
_BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
_BNB_KERNEL_MESSAGE = "Failed to load CPU gemm_4bit_forward"


class _DropBitsandbytesKernelWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_BNB_KERNEL_MESSAGE)


def quiet_third_party_noise() -> None:
    """Install the bitsandbytes message filter once (idempotent; the logger need not exist yet)."""
    logger = logging.getLogger(_BNB_CPU_LOGGER)
    if not any(isinstance(f, _DropBitsandbytesKernelWarning) for f in logger.filters):
        logger.addFilter(_DropBitsandbytesKernelWarning())


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser whose argument errors are one line (the message and where to read more), exit status 2;
    sub-parsers inherit the class."""

    def error(self, message: str):
        self.exit(USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="atoken", description="AToken for diffusers: convert, reconstruct, classify, train, "
                                                      "generate, demo, check.")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars or informational lines; only result lines (PSNR, 'wrote ...') and "
                             "errors. Give it before the command: atoken --quiet reconstruct ...")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error instead of its one-line message")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (convert, reconstruct, classify, pack3d, selftest, train, demo, encode_dataset, latent_stats,
                   train_generator, generate, export, evaluate):
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None):
    """Run one command. Errors print one line on stderr and raise SystemExit (``cli.errors.CommandError``, whose
    ``str`` is that line) with status 2 (usage) or 1 (failure); ``--debug`` lets them propagate."""
    args = build_parser().parse_args(argv)
    quiet_third_party_noise()
    install_interrupt_cleanup()  # SIGTERM/SIGHUP remove temporary files as Ctrl-C does
    command = " ".join(filter(None, (args.command, getattr(args, "what", None) if args.command == "generate" else None)))
    return run_command(args.func, args, command, debug=args.debug)


def entry() -> None:
    """The ``atoken`` console script and ``python -m atoken_diffusers``: exit status 0 once a command succeeds,
    whatever it returned (setuptools' wrapper passes the function's value to ``sys.exit``, which would print a
    returned summary and exit 1)."""
    main()


if __name__ == "__main__":
    main(sys.argv[1:])
