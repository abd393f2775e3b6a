"""Feed mutated models to ``edgetvm inspect`` and ``edgetvm compile`` in bounded child processes.

The parent imports edgetvm once and forks one child per case. A child runs with an address-space
limit; the parent kills it after a time limit. Every outcome must be success or a clean ``edgetvm``
error: a signal (crash), a time-out (hang), an internal error, or a Python/TVM trace in the output
is a failure.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .mutators import mutate

GOOD = ("ok", "edgetvm-error")
TRACE_MARKERS = ("Traceback (most recent call last)", "Stack trace:", "[bt] (", "Check failed", "InternalError")
# TVM internals that must not reach the user either: C++ log lines ("src/relax/ir/block_builder.cc:67:
# Warning: ..."), TIR notation for plain numbers, dumps of an ir.Op record.
TRACE_PATTERNS = (r"[\w/]+\.(?:cc|h|cpp):\d+", r"\bT\.u?int\d+\(", r"\bir\.Op\(")

# Real models of models.md and the static input shapes they are compiled with. RetinaFace runs at
# 64x64 so that cases that survive mutation still compile quickly.
BASES = {
    "yunet": ("onnx", {}),
    "retinaface": ("onnx", {"input": (1, 3, 64, 64)}),
    "blazeface": ("tflite", {}),
    "sface": ("onnx", {}),
}


@dataclass
class Outcome:
    seed: int
    base: str
    mutation: str
    status: str  # ok | edgetvm-error | internal-error | trace | crash | hang
    detail: str
    seconds: float

    @property
    def good(self) -> bool:
        return self.status in GOOD


def _child(path: str, fmt: str, shapes: dict, build: bool, mem_bytes: int, result_fd: int, log_path: str) -> None:
    from edgetvm import api, cli
    from edgetvm.errors import EdgeTVMError

    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    # Python-level writes too (pytest replaces sys.stdout with its own capture object).
    sys.stdout = sys.stderr = open(log_path, "a", buffering=1)
    resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
    shape_args = [a for name, dims in shapes.items() for a in ("--input-shape", f"{name}=" + ",".join(map(str, dims)))]
    result = {"status": "ok", "detail": ""}
    rc = cli.main(["inspect", path, *shape_args])
    if rc == 2:
        sys.stderr.flush()
        prefix = "edgetvm: error: "
        said = [line[len(prefix):] for line in Path(log_path).read_text(errors="replace").splitlines()
                if line.startswith(prefix)]
        result = {"status": "edgetvm-error", "detail": "inspect: " + (said[-1][:200] if said else "")}
    elif rc != 0:
        result = {"status": "internal-error", "detail": f"inspect exit {rc}"}
    else:
        try:
            compiled = api.compile(path, "host", input_shapes=shapes or None, num_threads=1)
            if build:
                compiled.export(Path(tempfile.mkdtemp()) / "fuzz.so")
        except EdgeTVMError as exc:
            # Shown as the CLI shows it, so that TVM internals leaking into the message count as a trace.
            print(f"edgetvm: error: {exc}", file=sys.stderr)
            result = {"status": "edgetvm-error", "detail": f"compile: {type(exc).__name__}: {str(exc)[:200]}"}
        except MemoryError:
            result = {"status": "internal-error", "detail": "compile: MemoryError (limit check missed it)"}
        except Exception as exc:  # noqa: BLE001 - exactly what the fuzzer hunts for
            result = {"status": "internal-error", "detail": f"compile: {type(exc).__name__}: {str(exc)[:300]}"}
    os.write(result_fd, json.dumps(result).encode())
    os.close(result_fd)


def _spawn(case_path: str, fmt: str, shapes: dict, build: bool, mem_bytes: int):
    read_fd, write_fd = os.pipe()
    log_path = case_path + ".log"
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        try:
            _child(case_path, fmt, shapes, build, mem_bytes, write_fd, log_path)
        finally:
            sys.stdout.flush()
            os._exit(0)
    os.close(write_fd)
    return pid, read_fd, log_path


def _collect(pid: int, status: int | None, read_fd: int, log_path: str) -> tuple[str, str]:
    """Classify a finished child; ``status`` is its wait status, or None when it ran out of time."""
    if status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    raw = b""
    while chunk := os.read(read_fd, 65536):
        raw += chunk
    os.close(read_fd)
    output = Path(log_path).read_text(errors="replace") if os.path.exists(log_path) else ""
    if status is None:
        return "hang", "killed after the time limit"
    if os.WIFSIGNALED(status):
        return "crash", f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    if not raw:
        return "crash", f"child exited {os.waitstatus_to_exitcode(status)} without a result"
    result = json.loads(raw)
    at = [output.find(m) for m in TRACE_MARKERS if m in output]
    at += [found.start() for found in (re.search(p, output) for p in TRACE_PATTERNS) if found]
    if at and result["status"] in GOOD:
        return "trace", f"output contains TVM or Python internals: {output[min(at):][:300]}"
    return result["status"], result["detail"]


def run_cases(seeds: list[int], bases: list[str], *, build: bool = False, timeout: float = 60.0,
              mem_bytes: int = 8 << 30, jobs: int = 2, workdir: str | None = None,
              progress=None) -> list[Outcome]:
    """Mutate base model ``bases[i % len(bases)]`` with ``seeds[i]`` and run each case, ``jobs`` at a time."""
    from edgetvm.zoo import fetch

    originals = {name: fetch(name).read_bytes() for name in set(bases)}
    workdir = Path(workdir or tempfile.mkdtemp(prefix="edgetvm-fuzz-"))
    pending = [(seed, bases[i % len(bases)]) for i, seed in enumerate(seeds)]
    running: dict[int, tuple] = {}
    outcomes: list[Outcome] = []
    while pending or running:
        while pending and len(running) < jobs:
            seed, base = pending.pop(0)
            fmt, shapes = BASES[base]
            data, what = mutate(originals[base], fmt, seed)
            case_path = workdir / f"case_{seed}_{base}.{fmt}"
            case_path.write_bytes(data)
            pid, read_fd, log_path = _spawn(str(case_path), fmt, shapes, build, mem_bytes)
            running[pid] = (seed, base, what, read_fd, log_path, time.monotonic())
        time.sleep(0.02)
        for pid, (seed, base, what, read_fd, log_path, started) in list(running.items()):
            elapsed = time.monotonic() - started
            reaped, status = os.waitpid(pid, os.WNOHANG)
            if reaped == 0 and elapsed <= timeout:
                continue
            status_word, detail = _collect(pid, status if reaped else None, read_fd, log_path)
            outcome = Outcome(seed, base, what, status_word, detail, round(elapsed, 2))
            outcomes.append(outcome)
            del running[pid]
            if progress:
                progress(outcome, len(outcomes), len(seeds))
    return outcomes


def summarize(outcomes: list[Outcome]) -> dict:
    by_status: dict[str, int] = {}
    for o in outcomes:
        by_status[o.status] = by_status.get(o.status, 0) + 1
    # What the clean errors were, by stage and class: shows which protections the cases reached.
    errors: dict[str, int] = {}
    for o in outcomes:
        if o.status == "edgetvm-error":
            stage, _, rest = o.detail.partition(": ")
            kind = stage if stage == "inspect" else f"{stage}: {rest.split(':', 1)[0]}"
            errors[kind] = errors.get(kind, 0) + 1
    # Mean wall time per case by base model: what to rebalance when the CI run gets too slow.
    seconds: dict[str, list[float]] = {}
    for o in outcomes:
        seconds.setdefault(o.base, []).append(o.seconds)
    mean_seconds = {base: round(sum(v) / len(v), 2) for base, v in seconds.items()}
    return {"cases": len(outcomes), "by_status": by_status, "errors": errors, "mean_seconds_by_base": mean_seconds,
            "failures": [asdict(o) for o in outcomes if not o.good]}
