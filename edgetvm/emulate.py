"""Run ARM code under qemu-arm and count its guest instructions: the tools every ARM test uses.

Wall time under qemu says nothing about a board. What qemu tells exactly is how many guest
instructions a run executes (``backends/standalone/qemu_insn_count.c``, a TCG plugin shipped in the package): the same number on
every run and machine, and on an in-order core such as the Cortex-A7 it tracks the real cost of
compute-bound kernels. Start-up (the dynamic loader, reading files) is left out by the N+1 minus 1
method: count a program doing 1 inference and one doing 1 + N, and divide the difference by N.

Typical uses::

    from edgetvm import emulate

    # any ARM program (built with arm-linux-gnueabihf-gcc)
    run = emulate.run_arm(["./prog", "arg"], cpu="cortex-a7", count=True)
    run.returncode, run.stdout, run.instructions

    # a standalone ARM model (CompiledModel.export(path, standalone=True) for an ARM target)
    result = emulate.run_standalone_arm("face.so", [x], cpu="cortex-a7", count=True)
    result.outputs[0], result.instructions

    emulate.instructions_per_inference("face.so", [x], cpu="cortex-a7")   # N+1 minus 1

Tools (qemu-arm, arm-linux-gnueabihf-gcc, the host gcc) are looked up on PATH; a missing one raises
a ToolchainError that says how to install it. The plugin and harness binaries are built once into
``<cache>/tools`` (``$EDGETVM_CACHE`` or the repository's ``.cache/edgetvm``), keyed by a hash of
their source, so concurrent test processes share them.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .artifact import Runner
from .errors import ArtifactError, ToolchainError
from .specs import TensorSpec
from .targets import ARM_CROSS_CC, ARM_SYSROOT, require_tool
from .zoo.fetch import cache_dir

QEMU = "qemu-arm"
# Package data (pyproject.toml), so an installed wheel counts instructions as a checkout does.
_STANDALONE_C = Path(__file__).resolve().parent / "backends" / "standalone"
INSN_COUNT_SOURCE = Path(os.environ.get("EDGETVM_INSN_COUNT_SRC", _STANDALONE_C / "qemu_insn_count.c"))
HARNESS_SOURCE = _STANDALONE_C / "edgetvm_harness.c"


def tools_dir() -> Path:
    """Where the plugin and harness binaries are cached."""
    path = cache_dir() / "tools"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _build_cached(source: Path, name: str, command: Callable[[Path], list[str]]) -> Path:
    """Build ``source`` once per content into the tools dir; atomic, so parallel builders are safe."""
    if not source.exists():
        raise ToolchainError(f"{source}: missing; edgetvm needs it to build {name}")
    digest = hashlib.sha256(source.read_bytes() + " ".join(command(Path("OUT"))).encode()).hexdigest()[:16]
    out = tools_dir() / f"{name}-{digest}"
    if out.exists():
        return out
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        proc = subprocess.run(command(Path(tmp)), capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolchainError(f"building {name} from {source} failed: {proc.stderr.strip()[-1000:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def insn_count_plugin() -> Path:
    """The qemu TCG plugin counting guest instructions (built from qemu_insn_count.c with the host gcc)."""
    gcc = require_tool("gcc", "building qemu's instruction-count plugin")
    return _build_cached(INSN_COUNT_SOURCE, "insn_count.so",
                         lambda out: [gcc, "-shared", "-fPIC", "-O2", "-o", str(out), str(INSN_COUNT_SOURCE)])


def harness_binary() -> Path:
    """The ARM build of edgetvm_harness.c (runs any standalone ARM library on raw files, see that file)."""
    cc = require_tool(ARM_CROSS_CC, "building the ARM harness for standalone libraries")
    return _build_cached(HARNESS_SOURCE, "edgetvm_harness-armv7",
                         lambda out: [cc, "-O2", "-std=gnu11", "-mfloat-abi=hard", "-o", str(out),
                                      str(HARNESS_SOURCE), "-ldl"])


@dataclass
class ArmRun:
    """The result of one program run under qemu-arm."""

    returncode: int
    stdout: str
    stderr: str
    instructions: int | None = None  # guest instructions of the whole run, when counted


def qemu_command(argv: Sequence[str], *, cpu: str | None = None, plugin_out: Path | None = None) -> list[str]:
    """``qemu-arm -L <sysroot> [-cpu CPU] [-plugin insn_count.so,out=FILE] argv...``."""
    cmd = [require_tool(QEMU, "running ARM code under emulation"), "-L", ARM_SYSROOT]
    if cpu:
        cmd += ["-cpu", cpu]
    if plugin_out is not None:
        cmd += ["-plugin", f"{insn_count_plugin()},out={plugin_out}"]
    return cmd + [str(a) for a in argv]


def run_arm(argv: Sequence[str], *, cpu: str | None = None, count: bool = False, timeout: float = 900,
            cwd: str | os.PathLike | None = None, check: bool = True) -> ArmRun:
    """Run the ARM program ``argv`` under qemu-arm (with the ARM sysroot as ``-L``).

    cpu: qemu CPU model (``ResolvedTarget.qemu_cpu``, e.g. ``cortex-a7``; None = qemu's default).
    count: also count the guest instructions of the whole run (``ArmRun.instructions``).
    check: raise ArtifactError with the program's stderr when it exits non-zero.
    Raises ToolchainError when qemu-arm (or gcc for the plugin) is missing, ArtifactError on timeout.
    """
    with tempfile.TemporaryDirectory(prefix="edgetvm-qemu-") as tmp:
        count_file = Path(tmp) / "count.txt" if count else None
        cmd = qemu_command(argv, cpu=cpu, plugin_out=count_file)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
        except subprocess.TimeoutExpired:
            raise ArtifactError(f"{argv[0]} did not finish within {timeout:.0f} s under qemu-arm") from None
        instructions = None
        if count_file is not None and count_file.exists():
            instructions = int(count_file.read_text().split()[-1])
    run = ArmRun(proc.returncode, proc.stdout, proc.stderr, instructions)
    if check and proc.returncode != 0:
        raise ArtifactError(f"{argv[0]} failed under qemu-arm (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}")
    if count and instructions is None:
        raise ToolchainError(f"qemu-arm wrote no instruction count for {argv[0]}: is the plugin API of this qemu "
                             f"version 1 (Debian qemu-user 7.2)? stderr: {proc.stderr.strip()[-500:]}")
    return run


def count_instructions(argv: Sequence[str], *, cpu: str | None = None, timeout: float = 900,
                       cwd: str | os.PathLike | None = None) -> int:
    """Guest instructions of one whole run of the ARM program ``argv`` (start-up included)."""
    return run_arm(argv, cpu=cpu, count=True, timeout=timeout, cwd=cwd).instructions


def instructions_per_repeat(make_argv: Callable[[int], Sequence[str]], *, n: int = 2, cpu: str | None = None,
                            timeout: float = 900) -> int:
    """The N+1 minus 1 method for any program: ``make_argv(k)`` is a command doing the work k times.

    Returns ``(count(make_argv(1 + n)) - count(make_argv(1))) // n``, the instructions of one
    repetition without start-up. Works for programs whose repetitions are identical (deterministic).
    """
    once = count_instructions(make_argv(1), cpu=cpu, timeout=timeout)
    more = count_instructions(make_argv(1 + n), cpu=cpu, timeout=timeout)
    return (more - once) // n


@dataclass
class StandaloneArmResult:
    """Outputs of a standalone ARM library run under qemu by the harness."""

    outputs: list[np.ndarray]
    input_specs: list[TensorSpec] = field(default_factory=list)
    output_specs: list[TensorSpec] = field(default_factory=list)
    instructions: int | None = None  # guest instructions of the whole harness run, when counted

    def as_dict(self) -> dict[str, np.ndarray]:
        return {spec.name: out for spec, out in zip(self.output_specs, self.outputs)}


def _parse_interface(stdout: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    specs: dict[str, list[TensorSpec]] = {"input": [], "output": []}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0] in specs:
            ndim = int(parts[4])
            specs[parts[0]].append(TensorSpec(parts[2], tuple(int(d) for d in parts[5:5 + ndim]), parts[3]))
    return specs["input"], specs["output"]


def standalone_interface(so_path: str | os.PathLike, *, timeout: float = 300) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of a standalone ARM library, asked from the library itself under qemu."""
    path = Path(so_path).resolve()
    stat = path.stat()
    inputs, outputs = _interface_cached(str(path), stat.st_mtime_ns, stat.st_size, timeout)
    return list(inputs), list(outputs)


@functools.lru_cache(maxsize=64)
def _interface_cached(path: str, mtime_ns: int, size: int, timeout: float):
    run = run_arm([harness_binary(), path, 0, 1], timeout=timeout)
    inputs, outputs = _parse_interface(run.stdout)
    return tuple(inputs), tuple(outputs)


def run_standalone_arm(so_path: str | os.PathLike, inputs: Sequence[np.ndarray], *, repeat: int = 1,
                       threads: int = 1, cpu: str | None = None, count: bool = False,
                       timeout: float = 900) -> StandaloneArmResult:
    """Run a standalone ARM library (``export(path, standalone=True)`` for an ARM target) under qemu.

    inputs: one array per model input, in order (converted to C-contiguous; dtype and size must
    match: the harness refuses a file of the wrong size). repeat: inferences on one context (the
    outputs are those of the last). threads: the context's thread count; keep 1 when counting,
    since the plugin's counter is not exact across guest threads and spinning workers would add
    instructions. cpu: qemu CPU model. count: count guest instructions of the whole run.
    """
    so_path = Path(so_path).resolve()
    if not so_path.exists():
        raise ArtifactError(f"{so_path}: no such library")
    with tempfile.TemporaryDirectory(prefix="edgetvm-arm-run-") as tmp:
        tmp = Path(tmp)
        in_files = []
        for i, arr in enumerate(inputs):
            path = tmp / f"in{i}.bin"
            np.ascontiguousarray(arr).tofile(path)
            in_files.append(path)
        in_specs, out_specs = standalone_interface(so_path, timeout=timeout)
        if len(in_specs) != len(inputs):
            raise ArtifactError(f"{so_path.name} takes {len(in_specs)} input(s) {[s.name for s in in_specs]}, "
                                f"got {len(inputs)}")
        out_files = [tmp / f"out{i}.bin" for i in range(len(out_specs))]
        run = run_arm([harness_binary(), so_path, repeat, threads, *in_files, *out_files], cpu=cpu, count=count,
                      timeout=timeout)
        outputs = [np.fromfile(path, dtype=spec.dtype).reshape(spec.shape) for path, spec in zip(out_files, out_specs)]
    return StandaloneArmResult(outputs, in_specs, out_specs, run.instructions)


def instructions_per_inference(so_path: str | os.PathLike, inputs: Sequence[np.ndarray], *, n: int = 2,
                               cpu: str | None = None, timeout: float = 900) -> int:
    """Guest instructions of one inference of a standalone ARM library, single-threaded.

    The N+1 minus 1 method: the harness run with 1 inference and with 1 + n, difference over n;
    start-up, file reading and the first run's workspace allocations are left out.
    """
    once = run_standalone_arm(so_path, inputs, repeat=1, cpu=cpu, count=True, timeout=timeout).instructions
    more = run_standalone_arm(so_path, inputs, repeat=1 + n, cpu=cpu, count=True, timeout=timeout).instructions
    return (more - once) // n


def standalone_runner(so_path: str | os.PathLike, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], *,
                      cpu: str | None = None, threads: int = 1):
    """An ``edgetvm.artifact.Runner`` over a standalone ARM library that runs each call under qemu.

    Same checks as a host artifact's runner (names, shapes, dtypes); each call starts qemu once
    (about a second), so it suits tests and the CLI, not benchmarks of speed.
    """
    so_path = Path(so_path)
    declared = [s.shape for s in outputs]

    def invoke(arrays: list[np.ndarray]) -> list[np.ndarray]:
        result = run_standalone_arm(so_path, arrays, threads=threads, cpu=cpu)
        if [s.shape for s in result.output_specs] != declared:
            raise ArtifactError(f"{so_path}: the library's outputs {result.output_specs} do not match its sidecar")
        return result.outputs

    return Runner(list(inputs), list(outputs), invoke, f"{so_path} (qemu-arm)")


# --- issue-cycle estimate (../shared/tools/neon_cycles.c) ----------------------------------------

NEON_CYCLES_SOURCE = Path(os.environ.get("EDGETVM_NEON_CYCLES_SRC",
                                         Path(__file__).resolve().parents[2] / "shared" / "tools" / "neon_cycles.c"))


def neon_cycles_plugin() -> Path:
    """The qemu TCG plugin that counts guest instructions and charges each its Cortex-A9/A7 NEON issue
    cycles (``neon_cycles.c``; its table and limits: ``neon_cycles.md`` beside it)."""
    gcc = require_tool("gcc", "building qemu's issue-cycle plugin")
    return _build_cached(NEON_CYCLES_SOURCE, "neon_cycles.so",
                         lambda out: [gcc, "-shared", "-fPIC", "-O2", "-o", str(out), str(NEON_CYCLES_SOURCE)])


@dataclass
class CycleEstimate:
    """Guest instructions and estimated issue cycles (a9 table, a7 variant) of a run or an inference."""

    instructions: int
    cycles_a9: int
    cycles_a7: int

    def __sub__(self, other: "CycleEstimate") -> "CycleEstimate":
        return CycleEstimate(self.instructions - other.instructions, self.cycles_a9 - other.cycles_a9,
                             self.cycles_a7 - other.cycles_a7)

    def __floordiv__(self, n: int) -> "CycleEstimate":
        return CycleEstimate(self.instructions // n, self.cycles_a9 // n, self.cycles_a7 // n)


def estimate_cycles(argv: Sequence[str], *, cpu: str | None = None, timeout: float = 900,
                    cwd: str | os.PathLike | None = None) -> CycleEstimate:
    """Instructions and estimated issue cycles of one whole run of the ARM program ``argv``.

    An estimate of throughput only (no latencies, dual issue or memory system): compare kernels or
    int8 against fp32 on the same model with it, not times on a board.
    """
    with tempfile.TemporaryDirectory(prefix="edgetvm-cycles-") as tmp:
        out = Path(tmp) / "cycles.txt"
        cmd = qemu_command(argv, cpu=cpu)
        cmd[len(cmd) - len(argv):len(cmd) - len(argv)] = ["-plugin", f"{neon_cycles_plugin()},out={out}"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
        except subprocess.TimeoutExpired:
            raise ArtifactError(f"{argv[0]} did not finish within {timeout:.0f} s under qemu-arm") from None
        if proc.returncode != 0:
            raise ArtifactError(f"{argv[0]} failed under qemu-arm (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}")
        lines = out.read_text().splitlines() if out.exists() else []
        fields = dict(line.split()[:2] for line in lines if len(line.split()) == 2)
    try:
        return CycleEstimate(int(fields["guest_instructions"]), int(fields["estimated_cycles_a9"]),
                             int(fields["estimated_cycles_a7"]))
    except KeyError:
        raise ToolchainError(f"qemu-arm wrote no cycle estimate for {argv[0]}: is the plugin API of this qemu "
                             f"version 1 (Debian qemu-user 7.2)? stderr: {proc.stderr.strip()[-500:]}") from None


def cycles_per_inference(so_path: str | os.PathLike, inputs: Sequence[np.ndarray], *, n: int = 2,
                         cpu: str | None = None, timeout: float = 900) -> CycleEstimate:
    """``instructions_per_inference`` with the issue-cycle estimate beside it (N+1 minus 1, 1 thread)."""
    so_path = Path(so_path).resolve()
    if not so_path.exists():
        raise ArtifactError(f"{so_path}: no such library")
    in_specs, out_specs = standalone_interface(so_path, timeout=timeout)
    if len(in_specs) != len(inputs):
        raise ArtifactError(f"{so_path.name} takes {len(in_specs)} input(s) {[s.name for s in in_specs]}, "
                            f"got {len(inputs)}")
    with tempfile.TemporaryDirectory(prefix="edgetvm-arm-run-") as tmp:
        in_files = [Path(tmp) / f"in{i}.bin" for i in range(len(inputs))]
        for path, arr in zip(in_files, inputs):
            np.ascontiguousarray(arr).tofile(path)
        out_files = [Path(tmp) / f"out{i}.bin" for i in range(len(out_specs))]

        def run(repeat: int) -> CycleEstimate:
            return estimate_cycles([harness_binary(), so_path, repeat, 1, *in_files, *out_files], cpu=cpu,
                                   timeout=timeout)

        once = run(1)
        return (run(1 + n) - once) // n
