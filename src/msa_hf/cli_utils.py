"""One exit-code convention and one error style for every ``msa-*`` command.

Exit codes:

* ``0`` (``EXIT_OK``): success.
* ``1`` (``EXIT_FAILURE``): a runtime failure of a valid request (a disk that fills up, a
  Hub that cannot be reached, another build that holds the index's lock).
* ``2`` (``EXIT_USAGE``): bad usage or bad input, whatever the command: an unknown flag
  (argparse's own code), a missing file, a malformed corpus, a split that does not exist, a
  model folder that does not load, a folder that is not an index (or an index of another
  folder or model), a folder where no image decodes.
* ``3`` (``EXIT_STALE``): ``msa-index status`` only: the index is out of date with its folder.
  It is not an error, so it is not ``1``.
* ``130``: interrupted (Ctrl-C), as shells report it.

Errors print one ``prog: error: message`` line on stderr and no traceback; set
``MSA_HF_DEBUG=1`` to get the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_STALE = 3
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """Bad usage or bad input that the user can fix (exit code 2)."""


# Exceptions that mean "your input is wrong" (exit 2) rather than "something broke" (exit 1).
INPUT_ERRORS: tuple[type[BaseException], ...] = (
    UsageError,
    ValueError,
    TypeError,
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    FileExistsError,
    UnicodeDecodeError,
)
# Exceptions that are runtime failures of an otherwise valid request (exit 1).
RUNTIME_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError, ImportError)


@contextlib.contextmanager
def cli_warnings(prog: str) -> Iterator[None]:
    """Show warnings as ``prog: warning: message`` lines on stderr."""

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        # Garbage collection reports objects other code left open (event loops, files) at
        # arbitrary moments; that is not this command's news, and Python hides it by default too.
        warnings.simplefilter("ignore", ResourceWarning)
        warnings.showwarning = show
        yield


def positive_int(name: str) -> Callable[[str], int]:
    """An argparse ``type`` for an option that takes a whole number >= 1, named in its errors."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {value!r}") from None
        if number < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {number}")
        return number

    return parse


def _missing(value: str, expected: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"{value} does not exist (expected {expected})")


def existing_path(expected: str) -> Callable[[str], str]:
    """An argparse ``type`` for a local file or folder that must exist.

    It answers at parse time, before a command imports torch, so a typo in a path costs a
    fraction of a second rather than the seconds of a model load.
    """

    def parse(value: str) -> str:
        if not os.path.exists(os.path.expanduser(value)):
            raise _missing(value, expected)
        return value

    return parse


def exit_code_for(error: BaseException) -> int:
    """The exit code of an exception under the convention above."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, INPUT_ERRORS):
        return EXIT_USAGE
    return EXIT_FAILURE


def run_command(
    prog: str,
    body: Callable[[argparse.Namespace], int],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
    expected: tuple[type[BaseException], ...] | Callable[[], tuple[type[BaseException], ...]] = (),
) -> int:
    """Parse ``argv`` and run ``body``, turning expected exceptions into one line and an exit code.

    ``expected`` adds exception types of the command's own (e.g. an index error) to the
    built-in input and runtime errors; they map to ``1`` unless they subclass an input error.
    Give a function returning them when importing them is slow: it runs after the arguments
    are parsed, so ``--help`` and usage errors answer before the command's heavy imports. Ctrl-C
    at any point after parsing (in those imports too) prints one line and exits ``130``.

    Example:

    ```python
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="msa-demo")
    >>> _ = parser.add_argument("path")
    >>> def body(args):
    ...     raise FileNotFoundError(f"{args.path} does not exist")
    >>> run_command("msa-demo", body, parser, ["missing.json"])
    2
    ```
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    with cli_warnings(prog):
        try:
            handled = (*INPUT_ERRORS, *RUNTIME_ERRORS, *(expected() if callable(expected) else expected))
            try:
                return int(body(args))
            except handled as exc:
                if os.environ.get("MSA_HF_DEBUG"):
                    raise
                print(f"{prog}: error: {exc}", file=sys.stderr)
                return exit_code_for(exc)
        except KeyboardInterrupt:
            print(f"{prog}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED


__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STALE",
    "EXIT_USAGE",
    "INPUT_ERRORS",
    "RUNTIME_ERRORS",
    "UsageError",
    "cli_warnings",
    "existing_path",
    "exit_code_for",
    "positive_int",
    "run_command",
]
