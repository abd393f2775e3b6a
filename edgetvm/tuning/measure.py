"""Building candidates on the host and timing them on the boards, for the tuner.

Build: each candidate kernel is compiled on this machine and linked into a shared library with the
target's compiler (``arm-linux-gnueabihf-g++`` for ARMv7). A board's RPC server has no compiler, so
it must receive a ready ``.so``; meta_schedule's stock builder ships a ``.tar`` of object files that
the server would have to link itself.

Measure: one candidate per board at a time. The tracker hands out a free board of the key; the
candidate's library is uploaded, loaded, fed random inputs and timed with TVM's time evaluator. Each
measurement runs in its own worker process with a deadline, so a board that dies or hangs costs
only the candidate it was running.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass

from ..targets import ARM_CROSS_CXX, ResolvedTarget, require_tool

# The float ABI and FPU the ARMv7 presets generate code for; the linker must agree.
ARM_LINK_OPTIONS = ("-mfloat-abi=hard", "-mfpu=neon-vfpv4")


def export_shared_library(rt_mod, *, cross_cxx: str | None = None, options: tuple[str, ...] = ()) -> str:
    """Link a built candidate into ``<tmpdir>/candidate.so`` (runs in a builder worker process)."""
    from tvm.support import cc

    path = os.path.join(tempfile.mkdtemp(prefix="edgetvm-cand-"), "candidate.so")
    if cross_cxx:
        rt_mod.export_library(path, fcompile=cc.cross_compiler(cross_cxx, options=list(options)))
    else:
        rt_mod.export_library(path)
    return path


def shared_library_exporter(target: ResolvedTarget):
    """The builder's export function for ``target`` (picklable: it runs in worker processes)."""
    if target.is_arm:
        cxx = require_tool(ARM_CROSS_CXX, f"building tuning candidates for {target.preset}")
        return functools.partial(export_shared_library, cross_cxx=cxx, options=ARM_LINK_OPTIONS)
    return export_shared_library


def build_candidate(mod, target, export) -> str:
    """Compile one scheduled candidate and link it (runs in a builder worker process); returns the .so path.

    meta_schedule's default build function first imports ``tvm.s_tir.tensor_intrin``, which parses
    every CUDA and ROCm tensor intrinsic too: over a minute per fresh worker on a busy 2-core host.
    Building a CPU kernel needs none of them.
    """
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return export(tvm.compile(mod, target=target))


@dataclass(frozen=True)
class MeasureConfig:
    tracker_host: str
    tracker_port: int
    key: str
    number: int = 3
    repeat: int = 3
    min_repeat_ms: int = 50
    # the board's RPC server ends a session older than this (a hung kernel frees the board)
    session_timeout: float = 60.0


def _request_board(config: MeasureConfig):
    """A session on a free board of ``config.key``, and that board's address."""
    from tvm import rpc
    from tvm.rpc import base

    tracker = rpc.connect_tracker(config.tracker_host, config.tracker_port)
    try:
        base.sendjson(tracker._sock, [base.TrackerCode.REQUEST, config.key, "", 1])  # noqa: SLF001
        reply = base.recvjson(tracker._sock)  # noqa: SLF001
    finally:
        tracker.close()
    if reply[0] != base.TrackerCode.SUCCESS:
        raise RuntimeError(f"the tracker refused the request for key {config.key!r}: {reply}")
    host, port, matchkey = reply[1]
    return rpc.connect(host, port, matchkey, config.session_timeout), f"{host}:{port}"


def measure_on_board(config: MeasureConfig, artifact_path: str, device_type: str, args_info: tuple) -> tuple[str, list[float]]:
    """Time one candidate on a board (runs in a runner worker process): (board address, seconds per run)."""
    from tvm.s_tir.meta_schedule.runner.config import EvaluatorConfig
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common, run_evaluator_common

    session, board = _request_board(config)
    remote_path = os.path.basename(os.path.dirname(artifact_path)) + ".so"
    try:
        device = session.device(device_type, 0)
        session.upload(artifact_path, remote_path)
        rt_mod = session.load_module(remote_path)
        random_fill = session.get_function("tvm.contrib.random.random_fill_for_measure")
        args = alloc_argument_common(random_fill, device, args_info, 1)
        evaluator = EvaluatorConfig(number=config.number, repeat=config.repeat,
                                    min_repeat_ms=config.min_repeat_ms, enable_cpu_cache_flush=False)
        costs = run_evaluator_common(rt_mod, device, evaluator, args)
        try:
            session.remove(remote_path)
        except Exception:  # noqa: BLE001 - cleanup on the board is best effort
            pass
        return board, [float(c) for c in costs]
    except Exception as exc:  # noqa: BLE001 - name the board in whatever went wrong
        raise RuntimeError(f"board {board}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
