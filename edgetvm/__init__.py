"""edgetvm: face-analysis CNNs compiled small and fast for 32-bit ARMv7 NEON boards, on Apache TVM."""

__version__ = "0.1.0"

from .api import CompiledModel, CompileReport, compile, load, prune_model, tune  # noqa: E402
from .errors import EdgeTVMError  # noqa: E402

__all__ = ["CompiledModel", "CompileReport", "EdgeTVMError", "__version__", "compile", "load", "prune_model", "tune"]
