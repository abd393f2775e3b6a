"""The one exception family of edgetvm.

Every message names what is wrong (the file, the node or op, the input) and what to do about it.
A user never sees a TVM C++ stack trace for a mistake in their own input: code that calls into TVM
on user data catches TVM's errors and re-raises one of these, keeping the TVM text only as a cause.
"""


class EdgeTVMError(Exception):
    """Base class of every error edgetvm raises on purpose."""


class ModelLoadError(EdgeTVMError):
    """The model file could not be read or parsed (missing, truncated, corrupt, wrong format)."""


class UnsupportedModelError(EdgeTVMError):
    """The model uses operators or features edgetvm cannot compile.

    ``unsupported`` maps each op type to the names of the nodes that use it.
    """

    def __init__(self, message: str, unsupported: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.unsupported = dict(unsupported or {})


class InputError(EdgeTVMError):
    """A run-time or compile-time input has the wrong name, shape, dtype or layout."""


class TargetError(EdgeTVMError):
    """An unknown target, or a target whose toolchain is missing on this machine."""


class ToolchainError(TargetError):
    """A cross compiler, linker or emulator needed for the target is not installed."""


class CompileError(EdgeTVMError):
    """Lowering or code generation failed for a reason that is not the user's input."""


class ArtifactError(EdgeTVMError):
    """An artifact is missing, tampered with, or built for another target."""


class TuningError(EdgeTVMError):
    """Tuning could not run: no boards, a broken database, a locked database directory."""


class ResourceLimitError(EdgeTVMError):
    """The model would need more memory than the configured limit."""


def first_line(exc: BaseException) -> str:
    """The first meaningful line of a (possibly multi-line, C++-traced) TVM error message."""
    for line in str(exc).splitlines():
        line = line.strip()
        if line and not line.startswith(("Traceback", "File ", "[bt]", "Stack trace")):
            return line[:400]
    return type(exc).__name__
