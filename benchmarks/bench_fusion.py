"""Fusion passes: kernels launched and host latency with and without them, against onnxruntime.

    .venv/bin/python benchmarks/bench_fusion.py [--models mobilefacenet,retinaface,sface]
        [--threads 1] [--rounds 15] [--json out.json]

For each model, ``edgetvm.compile(fuse=False)`` and ``edgetvm.compile(fuse=True)`` are built for the
host, and onnxruntime runs the same model (SFace: the frontend's float rewrite of it, since
onnxruntime rejects its blocked DequantizeLinear) on the same input with the same thread count.
Reported per variant: ``kernels`` (call_tir launches in ``main``), ``primfuncs`` (distinct TIR
kernels), ``loop_nests`` (TIR blocks run per inference: before scheduling inlines them, each one is
a pass over its buffer, so a batch norm left for run time costs four), the compile time, and the
median latency of interleaved rounds. The machine is shared,
so only the ratios measured in this run mean anything: ``fused / unfused`` and ``tvm / onnxruntime``
(below 1: edgetvm is faster). Outputs are checked against onnxruntime (max error relative to the
reference's largest magnitude) so a fast wrong result cannot pass unnoticed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
from bench_models import load  # benchmarks/ is on sys.path when a script runs

MODELS = ("mobilefacenet", "retinaface", "sface")


def kernel_launches(mod) -> int:
    import tvm
    from tvm import relax

    count = 0
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == "relax.call_tir":
                count += 1
    return count


def loop_nests(mod) -> int:
    """TIR blocks executed per inference: every unscheduled block is a loop nest over its buffer."""
    import tvm
    from tvm import relax

    per_kernel = {}
    for gv, f in mod.functions.items():
        if isinstance(f, tvm.tirx.PrimFunc):
            text = f.script()
            per_kernel[gv] = text.count('T.sblock("') - text.count('T.sblock("root")')
    total = 0
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == "relax.call_tir":
                total += per_kernel.get(value.args[0], 0)
    return total


def primfuncs(mod) -> int:
    import tvm

    return sum(1 for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc))


def relative_error(got, want) -> float:
    return max(float(np.abs(g - w).max() / max(np.abs(w).max(), 1e-12)) for g, w in zip(got, want))


def bench_model(name: str, threads: int, rounds: int) -> dict:
    import onnxruntime as ort

    import edgetvm

    model, reference, shapes, x = load(name)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(reference.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    want = session.run(None, {input_name: x})

    runners, row = {}, {"model": name, "input": list(x.shape), "threads": threads}
    for variant, fuse in (("unfused", False), ("fused", True)):
        started = time.perf_counter()
        compiled = edgetvm.compile(model, "host", input_shapes=shapes, num_threads=threads, fuse=fuse)
        got = compiled(x)  # builds the VM library too
        compile_s = time.perf_counter() - started
        got = got if isinstance(got, (list, tuple)) else [got]
        bn = compiled.report.details.get("FoldBatchNorm", {})
        row[variant] = {
            "kernels": kernel_launches(compiled.scheduled),
            "primfuncs": primfuncs(compiled.scheduled),
            "loop_nests": loop_nests(compiled.scheduled),
            "compile_s": round(compile_s, 2),
            "max_rel_error_vs_onnxruntime": relative_error(got, want),
            "batch_norms_folded": bn.get("folded", 0),
            "batch_norms_as_scale_shift": bn.get("scale_shift", 0),
        }
        runners[variant] = lambda c=compiled: c(x)
    runners["onnxruntime"] = lambda: session.run(None, {input_name: x})

    for run in runners.values():  # warm-up: thread pools, page faults, caches
        run()
    times = {k: [] for k in runners}
    for _ in range(rounds):  # interleaved, so a noisy neighbour hits every variant alike
        for key, run in runners.items():
            started = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - started)
    medians = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    for key in ("unfused", "fused"):
        row[key]["latency_ms"] = round(medians[key], 3)
        row[key]["vs_onnxruntime"] = round(medians[key] / medians["onnxruntime"], 3)
    row["onnxruntime_ms"] = round(medians["onnxruntime"], 3)
    row["fused_over_unfused_latency"] = round(medians["fused"] / medians["unfused"], 3)
    row["fused_over_unfused_kernels"] = round(row["fused"]["kernels"] / row["unfused"]["kernels"], 3)
    row["fused_over_unfused_loop_nests"] = round(row["fused"]["loop_nests"] / row["unfused"]["loop_nests"], 3)
    return row


def table(rows: list[dict]) -> str:
    head = (f"{'model':<14}{'variant':<9}{'kernels':>8}{'primfuncs':>10}{'nests':>7}{'BN folded':>10}"
            f"{'compile s':>10}{'ms':>10}{'vs ORT':>8}{'rel err':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        for variant in ("unfused", "fused"):
            v = r[variant]
            lines.append(f"{r['model']:<14}{variant:<9}{v['kernels']:>8}{v['primfuncs']:>10}{v['loop_nests']:>7}"
                         f"{v['batch_norms_folded']:>10}{v['compile_s']:>10.1f}{v['latency_ms']:>10.2f}"
                         f"{v['vs_onnxruntime']:>8.2f}{v['max_rel_error_vs_onnxruntime']:>10.1e}")
        lines.append(f"{r['model']:<14}{'ORT':<9}{'':>8}{'':>10}{'':>7}{'':>10}{'':>10}{r['onnxruntime_ms']:>10.2f}"
                     f"{1.0:>8.2f}   fused/unfused latency {r['fused_over_unfused_latency']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        print(f"... {name}", file=sys.stderr, flush=True)
        rows.append(bench_model(name.strip(), args.threads, args.rounds))
    result = {"benchmark": "fusion", "rows": rows}
    print(json.dumps(result, indent=2))
    print(table(rows))
    if args.json:
        from edgetvm.io import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
