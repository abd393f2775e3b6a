"""The ``edgetvm`` command line. Each subcommand is one function; errors print as one clear line."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback

from ..errors import EdgeTVMError, first_line
from .compile import add_compile_commands
from .face import add_face_commands
from .tune import add_tuning_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgetvm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_compile_commands(sub)
    add_face_commands(sub)
    add_tuning_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EdgeTVMError as exc:
        print(f"edgetvm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgetvm: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug of ours: one line for the user, the trace in a file
        log = _save_traceback(exc)
        print(f"edgetvm: internal error: {type(exc).__name__}: {first_line(exc)}\n"
              f"  this is a bug in edgetvm, not in your input; please report it with {log}", file=sys.stderr)
        return 70


def _save_traceback(exc: BaseException) -> str:
    """Write ``exc``'s trace to a new temporary file; its path."""
    fd, path = tempfile.mkstemp(prefix="edgetvm-crash-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(traceback.format_exception(exc)))
    return path


if __name__ == "__main__":
    sys.exit(main())
