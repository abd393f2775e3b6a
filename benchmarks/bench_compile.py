"""Compile time per model and phase against issue 21's bar (60 s per model on this 2-core machine).

    .venv/bin/python benchmarks/bench_compile.py [--models sface:int8,retinaface:fp32,...] [--json out.json]

Each model is built as ``bench_arm.py`` builds it (cortex-a7, 1 thread, standalone; int8 calibrated on
the same real faces) and exported; the row gives wall seconds and CPU seconds (this process, all its
threads, and the C compilers it ran) of the whole compile + export and of each phase, and the wall and CPU
totals over the 60 s bar. The machine is shared: the wall seconds include waiting for a core, the CPU
seconds do not, so the CPU column is the one to compare across runs.

Phases (nested ones are inside their parent and not added to the total twice):

    import            frontend: model file -> Relax (report.timings["import"])
    passes            graph passes (fusion rewrites)
    quantize          int8: equalization + calibration + annotate/fold (report.timings["quantize"])
      host_build      the host VMs calibration runs on (legalize, schedule, LLVM, JIT at VM creation)
      calibrate_runs  the float model run on the calibration samples (the ranges observed between
                      runs are in quantize only)
    lower             legalize + fuse + schedule for the target
    export            plan, kernels, C compiler, link
      kernels         TVM's build of the kernels + LLVM code generation (build_kernel_object)
      cc_link         waiting for the C compiler (it runs beside the kernel build) and the link;
                      its CPU seconds are the compilers' and the linker's, counted when they end

The phases are timed by wrapping the functions that do them, in this process only.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_arm  # noqa: E402 - the models and calibration sets of bench_arm, built the same way

BAR_S = 60.0
DEFAULT = ["sface:int8", "sface:fp32", "retinaface:int8", "retinaface:fp32", "mobilenet_v2:fp32"]


def cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its finished children (the C compiler)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class PhaseClock:
    """Wall and CPU seconds spent inside wrapped functions, by phase (re-entrant calls counted once)."""

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._depth: dict[str, int] = {}

    def wrap(self, phase: str, func):
        @functools.wraps(func)
        def timed(*args, **kwargs):
            if self._depth.get(phase):
                return func(*args, **kwargs)
            self._depth[phase] = 1
            wall, cpu = time.perf_counter(), cpu_seconds()
            try:
                return func(*args, **kwargs)
            finally:
                self._depth[phase] = 0
                self.wall[phase] = self.wall.get(phase, 0.0) + time.perf_counter() - wall
                self.cpu[phase] = self.cpu.get(phase, 0.0) + cpu_seconds() - cpu
        return timed

    def wrap_generator(self, phase: str, func):
        """A generator's time is spent while it is iterated, not when it is called."""
        @functools.wraps(func)
        def timed(*args, **kwargs):
            inner = func(*args, **kwargs)
            while True:
                wall, cpu = time.perf_counter(), cpu_seconds()
                try:
                    item = next(inner)
                except StopIteration:
                    return
                finally:
                    self.wall[phase] = self.wall.get(phase, 0.0) + time.perf_counter() - wall
                    self.cpu[phase] = self.cpu.get(phase, 0.0) + cpu_seconds() - cpu
                yield item
        return timed


def instrument(clock: PhaseClock) -> None:
    """Wrap the functions of each phase where their callers look them up (module globals)."""
    from edgetvm import api, host
    from edgetvm.backends.standalone import build

    host.host_vm = clock.wrap("host_build", host.host_vm)
    api.run_on_host = clock.wrap_generator("calibrate_runs", host.run_on_host)
    api.quantize_model = clock.wrap("quantize", api.quantize_model)
    api.export_standalone = clock.wrap("export", api.export_standalone)
    build.build_kernel_object = clock.wrap("kernels", build.build_kernel_object)
    build._finish = clock.wrap("cc_link", build._finish)


def measure(name: str, precision: str, workdir: Path, clock: PhaseClock) -> dict:
    import edgetvm

    quantize = None if precision == "fp32" else precision
    if name in bench_arm.FACE_ONNX_MODELS:
        model, _, shapes, calibration = bench_arm.face_onnx_model(name)
        kwargs = {"input_shapes": shapes, **({"quantize": quantize, "calibration": calibration} if quantize else {})}
    else:
        if quantize:
            raise SystemExit(f"{name}: int8 rows are the face ONNX models ({', '.join(bench_arm.FACE_ONNX_MODELS)})")
        model, _ = bench_arm.load(name)
        kwargs = {}
    clock.wall.clear()
    clock.cpu.clear()
    wall, cpu = time.perf_counter(), cpu_seconds()
    compiled = edgetvm.compile(model, "cortex-a7", num_threads=1, **kwargs)
    compiled.export(workdir / f"{name}_{precision}.so", standalone=True)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    timings = compiled.report.timings
    # run_on_host builds its VM on its first item: keep the build out of the runs.
    clock.wall["calibrate_runs"] = clock.wall.get("calibrate_runs", 0.0) - clock.wall.get("host_build", 0.0)
    clock.cpu["calibrate_runs"] = clock.cpu.get("calibrate_runs", 0.0) - clock.cpu.get("host_build", 0.0)
    phases = {p: {"wall_s": round(timings[p], 2)} for p in ("import", "passes", "lower") if p in timings}
    for phase in ("quantize", "host_build", "calibrate_runs", "export", "kernels", "cc_link"):
        if clock.wall.get(phase):
            phases[phase] = {"wall_s": round(clock.wall[phase], 2), "cpu_s": round(clock.cpu[phase], 2)}
    return {"model": name, "precision": precision, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "wall_over_bar": round(wall / BAR_S, 3), "cpu_over_bar": round(cpu / BAR_S, 3),
            "phases": phases}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT), help="name:precision pairs (fp32 or int8)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    clock = PhaseClock()
    instrument(clock)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetvm-bench-compile-") as tmp:
        for item in args.models.split(","):
            name, _, precision = item.partition(":")
            rows.append(measure(name, precision or "fp32", Path(tmp), clock))
    result = {"target": "cortex-a7", "backend": "standalone", "threads": 1, "bar_s": BAR_S, "rows": rows}
    if args.json:
        from edgetvm.io import atomic_write_json

        atomic_write_json(args.json, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
