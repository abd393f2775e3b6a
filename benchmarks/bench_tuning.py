"""Tuned vs default schedules vs onnxruntime, on the host, with the trial budget and tuning wall time.

    .venv/bin/python benchmarks/bench_tuning.py [--models mobilefacenet,retinaface] [--trials 500]
        [--db-root .cache/edgetvm-tuning] [--threads 1] [--servers 1] [--rounds 15] [--json out.json]

For each model: a tracker and ``--servers`` RPC servers start on 127.0.0.1 (this machine stands in
for the boards), ``edgetvm.tune`` measures up to ``--trials`` new candidates into
``<db-root>/<model>`` (a database already there is continued: its earlier records are free, and the
JSON says how many it holds; Ctrl-C ends tuning early and goes on to the comparison), then three things run the same input in interleaved rounds:
edgetvm with the tuning database, edgetvm with the default schedules only, and onnxruntime, all
with ``--threads`` threads. The machine is shared, so only ratios measured in this run mean
anything: ``tuned / onnxruntime`` (the goal for MobileFaceNet: at most 0.6 with at most 500
trials), ``default / onnxruntime`` and ``tuned / default``. Both edgetvm outputs are checked
against onnxruntime (max error relative to the reference's largest magnitude).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from bench_models import load  # benchmarks/ is on sys.path when a script runs

MODELS = ("mobilefacenet", "retinaface")
KEY = "bench-host"


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def relative_error(got, want) -> float:
    return float(np.max(np.abs(np.asarray(got) - want)) / max(1e-12, float(np.max(np.abs(want)))))


def first_output(result):
    return result[0] if isinstance(result, (list, tuple)) else result


def bench_model(name: str, trials: int, db_root: Path, threads: int, servers: int, rounds: int,
                batch_size: int) -> dict:
    import onnxruntime as ort

    import edgetvm
    from edgetvm.tuning.rpc import start_server, start_tracker

    model, reference, shapes, x = load(name)
    db = db_root / name
    tracker = start_tracker()
    boards = []
    try:
        for _ in range(servers):
            boards.append(start_server(tracker.address, KEY, num_threads=threads))
        started = time.perf_counter()
        reports = []
        stopped_early = False
        try:
            reports.append(edgetvm.tune(model, "host", tracker=tracker.address, key=KEY, trials=trials, db=db,
                                        input_shapes=shapes, num_threads=threads,
                                        tune_options={"batch_size": batch_size}, progress=progress))
        except KeyboardInterrupt:
            # Ctrl-C bounds the run: the records so far are in the database; compare with those.
            stopped_early = True
        tune_seconds = time.perf_counter() - started
    finally:
        for process in boards + [tracker]:
            process.stop()

    from edgetvm.tuning.database import scan_database

    records = len(scan_database(db).record_lines)
    tuned = edgetvm.compile(model, "host", input_shapes=shapes, num_threads=threads, tuning_db=db)
    default = edgetvm.compile(model, "host", input_shapes=shapes, num_threads=threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(reference.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    want = session.run(None, feed)[0]
    runs = {"tuned": lambda: tuned(x), "default": lambda: default(x), "onnxruntime": lambda: session.run(None, feed)}
    errors = {k: relative_error(first_output(runs[k]()).reshape(want.shape), want) for k in ("tuned", "default")}
    for run in runs.values():  # warm up
        run()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for k, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t0)
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {
        "model": name,
        "threads": threads,
        "trial_budget": trials,
        "trials_measured": reports[0].trials if reports else None,
        "stopped_early": stopped_early,
        "records_in_database": records,
        "tuning_wall_s": round(tune_seconds, 1),
        "tuned_kernels": len(tuned.report.details["tuning"]["tuned_kernels"]),
        "kernels": sum(1 for name in tuned.report.details["schedules"]["kernels"]),
        "tuned_ms": ms["tuned"],
        "default_ms": ms["default"],
        "onnxruntime_ms": ms["onnxruntime"],
        "tuned_over_onnxruntime": ms["tuned"] / ms["onnxruntime"],
        "default_over_onnxruntime": ms["default"] / ms["onnxruntime"],
        "tuned_over_default": ms["tuned"] / ms["default"],
        "max_rel_error_tuned": errors["tuned"],
        "max_rel_error_default": errors["default"],
        "tuning_estimate_ms": (reports[0].model_seconds * 1e3 if reports and reports[0].model_seconds is not None
                               else None),
    }


def table(rows: list[dict]) -> str:
    lines = [f"{'model':<14} {'records':>7} {'tune s':>7} {'tuned ms':>9} {'default ms':>10} {'ort ms':>8} "
             f"{'tuned/ort':>9} {'default/ort':>11} {'tuned/default':>13} {'err':>8}"]
    for r in rows:
        lines.append(f"{r['model']:<14} {r['records_in_database']:>7} {r['tuning_wall_s']:>7.0f} {r['tuned_ms']:>9.2f} "
                     f"{r['default_ms']:>10.2f} {r['onnxruntime_ms']:>8.2f} {r['tuned_over_onnxruntime']:>9.2f} "
                     f"{r['default_over_onnxruntime']:>11.2f} {r['tuned_over_default']:>13.2f} "
                     f"{max(r['max_rel_error_tuned'], r['max_rel_error_default']):>8.1e}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--trials", type=int, default=500, help="new candidates to measure per model")
    parser.add_argument("--db-root", type=Path, default=Path(".cache/edgetvm-tuning"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--servers", type=int, default=1, help="RPC servers (stand-in boards) on this machine")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    for name in args.models.split(","):
        rows.append(bench_model(name, args.trials, args.db_root, args.threads, args.servers, args.rounds,
                                args.batch_size))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(rows, indent=2))
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
