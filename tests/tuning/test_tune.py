"""Tuning over TVM RPC end to end: records, rerun dedupe, database applied, numerics, a board dying."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import tvm_ffi

import edgetvm
from edgetvm.tuning.rpc import list_boards, start_server
from edgetvm.tuning.database import BASELINE_FILE, RECORD_FILE, TUNED_ATTR, WORKLOAD_FILE, scan_database

from .conftest import KEY, TUNE_OPTIONS


def _record_keys(db) -> list[tuple[int, str]]:
    """(workload index, trace JSON) of every record line: the identity of a measured candidate."""
    keys = []
    for line in (db / RECORD_FILE).read_text().splitlines():
        index, body = json.loads(line)
        keys.append((index, json.dumps(body[0])))
    return keys


def test_first_run_records_every_measured_candidate(first_run, boards):
    db, report, lines = first_run
    scan = scan_database(db)  # strict: raises on any bad line
    assert report.trials == 4
    assert len(scan.record_lines) == report.records_added >= report.trials
    assert len(scan.workload_lines) == len(report.tasks)
    # Both boards of the key took part and progress lines were printed along the way.
    assert len(report.boards) == 2
    assert any("trials" in line and "left" in line for line in lines)
    assert "candidates measured" in lines[-1]
    measured = [t for t in report.tasks if t.best_seconds is not None]
    assert measured and all(t.best_seconds > 0 for t in measured)
    # Each kernel's default schedule was timed on the boards as well, and kept beside the records.
    assert all(t.default_seconds and t.default_seconds > 0 for t in report.tasks)
    baselines = json.loads((db / BASELINE_FILE).read_text())
    assert sorted(b["kernel"] for b in baselines.values()) == sorted(t.name for t in report.tasks)
    # At the end, each kernel's best record was timed against its default back to back.
    paired = {b["kernel"]: b["paired"] for b in baselines.values() if "paired" in b}
    assert set(paired) == {t.name for t in report.tasks if t.best_seconds is not None}
    assert all(p["default"] > 0 and p["tuned"] > 0 for p in paired.values())
    # The model estimate takes each kernel's faster schedule, by the back-to-back pair where there is one.
    assert report.model_seconds == pytest.approx(sum(
        t.weight * (min(t.paired) if t.paired else min(x for x in (t.best_seconds, t.default_seconds) if x is not None))
        for t in report.tasks))


def test_rerun_measures_no_candidate_twice(first_run, boards, model_path, tmp_path):
    db, first, _ = first_run
    tracker, _ = boards
    # A copy, so the other tests keep the first run's database.
    rerun_db = tmp_path / "db"
    rerun_db.mkdir()
    for name in (WORKLOAD_FILE, RECORD_FILE, BASELINE_FILE):
        (rerun_db / name).write_bytes((db / name).read_bytes())
    before = _record_keys(rerun_db)
    report = edgetvm.tune(model_path, "host", tracker=tracker.address, key=KEY, trials=2, db=rerun_db,
                          progress=None, tune_options=TUNE_OPTIONS)
    after = _record_keys(rerun_db)
    assert after[: len(before)] == before  # nothing rewritten
    assert len(after) == len(before) + report.records_added
    assert len(set(after)) == len(after), "a candidate was measured twice"
    # The same seed proposes the first run's candidates again: they come from the database.
    assert report.reused > 0
    assert report.records_at_start == len(before)


def test_tuned_compile_applies_database_and_matches_onnxruntime(first_run, model_path, tmp_path):
    import onnxruntime as ort

    first_db, report, _ = first_run
    # Without the default-schedule timings every measured kernel is replaced: the strongest check
    # that records replay into a correct model (with them, a few trials rarely beat the default).
    db = tmp_path / "db"
    db.mkdir()
    for name in (WORKLOAD_FILE, RECORD_FILE):
        (db / name).write_bytes((first_db / name).read_bytes())
    tuned = edgetvm.compile(model_path, "host", tuning_db=db)
    default = edgetvm.compile(model_path, "host")
    applied = tuned.report.details["tuning"]["tuned_kernels"]
    measured = {t.name for t in report.tasks if t.best_seconds is not None}
    assert applied and set(applied) <= measured
    for name in applied:
        func = tuned.scheduled[name]
        assert TUNED_ATTR in func.attrs and bool(func.attrs["tirx.is_scheduled"])
        # The tuned kernel is not the default schedule's kernel.
        assert not tvm_ffi.structural_equal(func, default.scheduled[name])
        assert tuned.report.details["schedules"]["kernels"][name] == "pre-scheduled"

    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    want = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = tuned(x)[0] if isinstance(tuned(x), list) else tuned(x)
    np.testing.assert_allclose(np.asarray(got).reshape(want.shape), want, rtol=1e-4, atol=1e-4)


def test_board_killed_mid_run_costs_only_its_candidates(boards, model_path, tmp_path):
    tracker, _ = boards
    key = "x86-doomed"
    servers = [start_server(tracker.address, key, num_threads=1, log_path=tmp_path / f"s{i}.log") for i in range(2)]
    doomed, survivor = servers
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        # Kill one board as soon as the first batch is in: the rest of the run has one board.
        if doomed.alive() and "trials" in line and "left" in line:
            os.killpg(doomed.pid, signal.SIGKILL)
            doomed.proc.wait()

    try:
        report = edgetvm.tune(model_path, "host", tracker=tracker.address, key=key, trials=4, db=tmp_path / "db",
                              progress=progress, tune_options={**TUNE_OPTIONS, "defaults": None})
        alive = [f"{b['host']}:{b['port']}" for b in list_boards("127.0.0.1", tracker.port, key)]
    finally:
        for s in servers:
            s.stop()
    assert not doomed.alive()
    assert alive == [survivor.address]
    # The run finished its budget on the surviving board, and every measured candidate is recorded.
    assert report.trials == 4
    assert not report.interrupted and not report.stop_reason
    scan = scan_database(tmp_path / "db")
    assert len(scan.record_lines) == report.records_added
    valid = [json.loads(line) for line in scan.record_lines]
    assert sum(1 for _, body in valid if body[1] is not None) == report.trials
    measured_after_kill = [line for line in lines[lines.index(next(l for l in lines if "left" in l)) + 1:]
                           if "left" in line]
    assert measured_after_kill, "the run did not go on after the board died"


def test_ctrl_c_stops_cleanly_with_database_intact(boards, model_path, tmp_path):
    """Also: a seed schedule (the hook for default-schedule traces) is measured in the first batch."""
    from edgetvm.tuning.database import database_lock

    tracker, _ = boards
    lines: list[str] = []

    def seed(sch) -> None:
        sch.annotate(sch.get_sblock("root"), "edgetvm.seed", 1)

    def progress(line: str) -> None:
        lines.append(line)
        if "left" in line and not any(line.startswith("Ctrl-C") for line in lines):
            os.kill(os.getpid(), signal.SIGINT)  # what a terminal's Ctrl-C sends

    handler = signal.getsignal(signal.SIGINT)  # Python's default, or ignored when pytest runs in a script's background
    with pytest.raises(KeyboardInterrupt):
        edgetvm.tune(model_path, "host", tracker=tracker.address, key=KEY, trials=50, db=tmp_path / "db",
                     progress=progress, tune_options={**TUNE_OPTIONS, "seed_schedule": seed, "defaults": None})
    assert any(line.startswith("Ctrl-C: stopping after the batch") for line in lines)
    assert "interrupted" in lines[-1]
    assert signal.getsignal(signal.SIGINT) is handler  # the handler is restored
    scan = scan_database(tmp_path / "db")  # strict
    assert scan.record_lines
    assert any('"edgetvm.seed"' in line for line in scan.record_lines)
    with database_lock(tmp_path / "db"):  # released: a new run can start
        pass


@pytest.mark.slow
def test_hung_board_costs_only_its_in_flight_candidates(boards, model_path, tmp_path):
    tracker, _ = boards
    key = "x86-hung"
    servers = [start_server(tracker.address, key, num_threads=1, log_path=tmp_path / f"s{i}.log") for i in range(2)]
    hung = servers[0]
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        if len(lines) == 2:
            os.killpg(hung.pid, signal.SIGSTOP)  # alive to the tracker, answers nothing

    try:
        report = edgetvm.tune(model_path, "host", tracker=tracker.address, key=key, trials=6, db=tmp_path / "db",
                              candidate_timeout=10, progress=progress,
                              tune_options={**TUNE_OPTIONS, "defaults": None})
    finally:
        os.killpg(hung.pid, signal.SIGCONT)
        for s in servers:
            s.stop()
    assert report.trials == 6 and not report.stop_reason
    assert sum(t.run_errors for t in report.tasks) <= 2  # at most the candidates in flight on the hung board
    assert len(scan_database(tmp_path / "db").record_lines) == report.records_added
