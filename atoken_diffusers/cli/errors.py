"""How the ``atoken`` commands fail: one line on stderr and an exit status, never a Python traceback (unless
``atoken --debug``).

- :class:`UsageError` (raised by the commands' own checks of their arguments): exit status 2, as argparse's own
  argument errors.
- Errors a user causes and can fix (a missing or unreadable file, a bad value found while working, an existing
  output, a full disk): exit status 1, the message as the library phrased it.
- Anything else (a bug): exit status 1, the exception's type and message and "rerun with --debug".
- Ctrl-C: exit status 130; SIGTERM/SIGHUP: 128 + the signal (see ``utils.atomic.install_interrupt_cleanup``).
"""

from __future__ import annotations

import sys

USAGE, FAILURE, INTERRUPTED = 2, 1, 130


class UsageError(ValueError):
    """A command-line argument is wrong (its value, its range, its extension, a clash with another): exit status 2.
    The message names the flag and the fix."""


class CommandError(SystemExit):
    """What :func:`run_command` raises after printing the one-line message: a SystemExit with an integer status
    (so the interpreter prints nothing more), whose ``str`` is the message (for callers and tests)."""

    def __init__(self, message: str, code: int):
        super().__init__(code)
        self.message = message

    def __str__(self) -> str:
        return self.message


# Exceptions whose message is meant for the user (the library phrases them with the argument and the fix). OSError
# covers missing/unreadable/unwritable files, full disks, and the image and video readers' "not an image/video".
USER_ERRORS = (OSError, ValueError, MemoryError)


# How the fix of an input too large for the memory reads on the command line (the library names Python arguments).
CLI_FIXES = {
    "tiling": "pass --tiling, or a smaller input",
    "smaller_tile": "pass a smaller input (fewer pixels, or fewer frames with --max-frames)",
    "smaller_input": "pass a smaller input (fewer pixels, or fewer frames with --max-frames): even the smallest "
                     "tiles would not fit",
}


def one_line(text: str) -> str:
    """``text`` with its lines joined: every message is one line, whatever the exception carried."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _message(command: str, err: BaseException) -> tuple[str, int]:
    if isinstance(err, UsageError):
        return one_line(err), USAGE
    if isinstance(err, KeyboardInterrupt):
        return "interrupted; partial outputs were removed.", INTERRUPTED
    if hasattr(err, "phrased"):  # utils.validation.InputTooLargeError (not imported: the CLI starts light)
        return one_line(err.phrased(CLI_FIXES)), FAILURE
    if isinstance(err, USER_ERRORS) or _is_out_of_memory(err):
        text = one_line(err) or type(err).__name__
        if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
            text = f"{err.filename}: {text}"
        return text, FAILURE
    return f"unexpected {type(err).__name__}: {one_line(err)} (rerun with --debug for the traceback).", FAILURE


def _is_out_of_memory(err: BaseException) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(err, getattr(torch, "OutOfMemoryError", ()))


def run_command(func, args, command: str, debug: bool = False):
    """Run ``func(args)``; turn what it raises into one line on stderr (prefixed ``atoken COMMAND:``) and a
    :class:`CommandError` with the exit status. A SystemExit a command raised with a message exits 1 the same way;
    one with an integer status (argparse, SIGTERM) passes through. ``debug``: everything passes through."""
    try:
        return func(args)
    except SystemExit as err:
        if debug or isinstance(err, CommandError) or err.code is None or isinstance(err.code, int):
            raise
        message, code = one_line(err.code), FAILURE
    except BaseException as err:
        if debug:
            raise
        message, code = _message(command, err)
    prefix = f"atoken {command}: "
    message = message if message.startswith("atoken ") else prefix + message
    print(message, file=sys.stderr)
    raise CommandError(message, code) from None
