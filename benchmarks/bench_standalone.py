"""Standalone backend: artifact size (kernels / runtime / weights), guest instructions under qemu,
and host speed against the TVM VM running the same kernels, measured in the same run.

    .venv/bin/python benchmarks/bench_standalone.py [--models mobilefacenet,retinaface,sface]
        [--target cortex-a7] [--threads 1] [--rounds 20] [--no-qemu] [--json out.json]

Sizes are of the ARM build: ``kernels`` is the code and data of TVM's kernel object, ``weights``
the constants blob, ``runtime`` everything else in the .so file (the runtime hooks, the call
table, the C API, ELF headers and dynamic symbol tables). Instructions are per inference,
single-threaded, by the N+1 minus 1 method (edgetvm.emulate.instructions_per_inference).
The host ratio is standalone time / VM time, medians of interleaved rounds (below 1: faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _object_bytes(path: Path, size_tool: str) -> int:
    """text + data of an object file (what it adds to a loaded library), from binutils ``size``."""
    out = subprocess.run([size_tool, str(path)], capture_output=True, text=True, check=True).stdout
    text, data = out.splitlines()[1].split()[:2]
    return int(text) + int(data)


def _load(name: str):
    """(model, input_shapes, input array) of a benchmark model."""
    rng = np.random.default_rng(0)
    if name == "mobilefacenet":
        from edgetvm.zoo.architectures import mobilefacenet

        return mobilefacenet(), None, rng.standard_normal((1, 3, 112, 112)).astype(np.float32)
    import onnx

    from edgetvm.zoo import fetch

    path = fetch(name)
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    data = next(i.name for i in graph.input if i.name not in weights)
    shape = (1, 3, 320, 320) if name == "retinaface" else (1, 3, 112, 112)
    return path, {data: shape}, (rng.random(shape) * 255).astype(np.float32)


def _host_ratio(compiled, workdir: Path, x: np.ndarray, threads: int, rounds: int) -> dict:
    from edgetvm.backends.standalone import StandaloneLibrary, build_standalone

    build = build_standalone(compiled.scheduled, compiled.imported, compiled.target, workdir / "host", "bench",
                             num_threads=threads)
    ctx = StandaloneLibrary(build.so).create_context(threads)
    vm = compiled._host_runner()
    outputs = ctx.run([x])
    expected = vm(x)
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    error = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)) for a, b in zip(outputs, expected))
    for _ in range(3):
        ctx.run([x], outputs)
        vm(x)
    standalone_times, vm_times = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        ctx.run([x], outputs)
        standalone_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        vm(x)
        vm_times.append(time.perf_counter() - started)
    standalone_ms = statistics.median(standalone_times) * 1e3
    vm_ms = statistics.median(vm_times) * 1e3
    return {"standalone_ms": round(standalone_ms, 3), "vm_ms": round(vm_ms, 3),
            "ratio_standalone_over_vm": round(standalone_ms / vm_ms, 3), "max_rel_error_vs_vm": error}


def bench_model(name: str, target: str, threads: int, rounds: int, qemu: bool) -> dict:
    import edgetvm
    from edgetvm import emulate
    from edgetvm.backends.standalone import build_standalone
    from edgetvm.targets import resolve_target

    model, input_shapes, x = _load(name)
    row: dict = {"model": name, "target": target, "threads": threads}
    with tempfile.TemporaryDirectory(prefix="bench-standalone-") as tmp:
        tmp = Path(tmp)
        arm = edgetvm.compile(model, target, input_shapes=input_shapes)
        started = time.perf_counter()
        build = build_standalone(arm.scheduled, arm.imported, arm.target, tmp / "arm", "bench", num_threads=threads)
        row["export_s"] = round(time.perf_counter() - started, 2)
        size_tool = "arm-linux-gnueabihf-size" if resolve_target(target).is_arm else "size"
        file_bytes = build.so.stat().st_size
        kernels = _object_bytes(build.objects.kernels, size_tool)
        weights = len(build.plan.weights)
        row.update({
            "so_bytes": file_bytes, "kernels_bytes": kernels, "weights_bytes": weights,
            "runtime_bytes": file_bytes - kernels - weights,
            "runtime_objects_bytes": _object_bytes(build.objects.runtime, size_tool)
            + _object_bytes(build.objects.model, size_tool),
            "arena_bytes": build.plan.arena_bytes, "tvm_storage_bytes": build.plan.unpacked_bytes,
            "kernel_calls": len(build.plan.calls),
        })
        if qemu and arm.target.is_arm:
            result = emulate.run_standalone_arm(build.so, [x], cpu=arm.target.qemu_cpu)
            host_vm = edgetvm.compile(model, "host", input_shapes=input_shapes)
            expected = host_vm(x)
            expected = list(expected) if isinstance(expected, tuple) else [expected]
            row["arm_max_rel_error_vs_host_vm"] = max(
                float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)) for a, b in zip(result.outputs, expected))
            row["guest_instructions_per_inference"] = emulate.instructions_per_inference(
                build.so, [x], n=1, cpu=arm.target.qemu_cpu)
            host = host_vm
        else:
            host = edgetvm.compile(model, "host", input_shapes=input_shapes)
        row.update(_host_ratio(host, tmp, x, threads, rounds))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilefacenet,retinaface,sface")
    parser.add_argument("--target", default="cortex-a7")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--no-qemu", action="store_true", help="skip the instruction counts under qemu")
    parser.add_argument("--json", help="also write the JSON table here")
    args = parser.parse_args(argv)
    # Both sides run with the same thread count; TVM's pool reads it when it first starts.
    os.environ["TVM_NUM_THREADS"] = str(args.threads)

    rows = []
    for name in args.models.split(","):
        try:
            rows.append(bench_model(name, args.target, args.threads, args.rounds, not args.no_qemu))
        except Exception as exc:  # noqa: BLE001 - one failing model must not hide the others' numbers
            rows.append({"model": name, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"})
    print(json.dumps(rows, indent=2))
    print()
    header = f"{'model':<14}{'so KB':>9}{'kernels KB':>12}{'runtime KB':>12}{'weights KB':>12}" \
             f"{'Minsn/inf':>11}{'host ms':>9}{'VM ms':>8}{'ratio':>7}"
    print(header)
    for row in rows:
        if "error" in row:
            print(f"{row['model']:<14}error: {row['error']}")
            continue
        insn = row.get("guest_instructions_per_inference")
        print(f"{row['model']:<14}{row['so_bytes'] / 1024:>9.1f}{row['kernels_bytes'] / 1024:>12.1f}"
              f"{row['runtime_bytes'] / 1024:>12.1f}{row['weights_bytes'] / 1024:>12.1f}"
              f"{(insn / 1e6 if insn else float('nan')):>11.1f}{row['standalone_ms']:>9.2f}{row['vm_ms']:>8.2f}"
              f"{row['ratio_standalone_over_vm']:>7.2f}")
    if args.json:
        from edgetvm.io import atomic_write_json

        atomic_write_json(args.json, rows)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
