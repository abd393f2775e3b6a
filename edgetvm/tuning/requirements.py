"""The optional dependencies of tuning (``pip install 'edgetvm[tune]'``), checked before any work.

A plain install leaves them out: xgboost (meta_schedule's cost model) alone pulls scipy and, on
x86-64, NVIDIA's NCCL, over a gigabyte that compiling and running models never use.
"""

from __future__ import annotations

import importlib.util

from ..errors import TuningError

# module -> what needs it
TUNE_MODULES = {
    "xgboost": "meta_schedule's cost model",
    "tornado": "TVM's RPC tracker",
    "psutil": "TVM's RPC server and process pools",
    "cloudpickle": "TVM's process pools",
}


def missing_tuning_modules() -> list[str]:
    missing = []
    for name in TUNE_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken install, or sys.modules[name] = None
            found = False
        if not found:
            missing.append(name)
    return missing


def require_tuning_dependencies(what: str) -> None:
    """Raise one line naming the missing modules and the install command when ``what`` cannot run."""
    missing = missing_tuning_modules()
    if missing:
        raise TuningError(f"{what} needs {', '.join(missing)} ({'; '.join(TUNE_MODULES[m] for m in missing)}), "
                          f"not installed: pip install 'edgetvm[tune]'")
