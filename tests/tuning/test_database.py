"""The tuning database: corrupt and truncated files, salvage, the one-writer lock, the applied records."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tvm
from tvm.script import tirx as T

from edgetvm.errors import TuningError
from edgetvm.tuning.database import (
    RECORD_FILE,
    WORKLOAD_FILE,
    TuningDatabase,
    apply_tuning_database,
    database_lock,
    scan_database,
)
from edgetvm.targets import resolve_target


@T.prim_func(private=True, s_tir=True)
def add_one(a: T.Buffer((64, 64), "float32"), b: T.Buffer((64, 64), "float32")):
    for i, j in T.grid(64, 64):
        with T.sblock("b"):
            vi, vj = T.axis.remap("SS", [i, j])
            b[vi, vj] = a[vi, vj] + T.float32(1)


def _workload() -> tvm.IRModule:
    """A private copy of ``add_one`` as a tuning workload (schedules may rewrite IR in place)."""
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    return _normalize_mod(tvm.ir.load_json(tvm.ir.save_json(add_one)))


def _write_database(db_dir, splits=(4, 8, 16)) -> None:
    """Three records of ``add_one`` (split j by each factor, then vectorize), faster for larger factors."""
    from tvm.s_tir import meta_schedule as ms

    target = resolve_target("host").tvm_target
    with TuningDatabase(db_dir) as db:
        workload = db.commit_workload(_workload())
        for n, factor in enumerate(splits):
            sch = tvm.s_tir.Schedule(_workload())
            j = sch.get_loops(sch.get_sblock("b"))[1]
            tile = sch.sample_perfect_tile(j, n=2, max_innermost_factor=16, decision=[64 // factor, factor])
            sch.vectorize(sch.split(j, tile)[1])
            args = ms.arg_info.ArgInfo.from_prim_func(_workload()["main"])
            db.commit((0, str(n)), workload, sch.trace, [1e-3 / (n + 1)], target, args)


def test_apply_picks_the_fastest_record_and_marks_it(tmp_path):
    _write_database(tmp_path)
    mod = tvm.IRModule({"add_one": add_one})
    tuned, applied = apply_tuning_database(mod, resolve_target("host"), tmp_path)
    assert applied == ["add_one"]
    func = tuned["add_one"]
    assert bool(func.attrs["tirx.is_scheduled"]) and "global_symbol" not in func.attrs
    assert abs(float(func.attrs["edgetvm.tuned"]) - 1e-3 / 3) < 1e-9
    text = func.script()
    assert "T.vectorized(16)" in text  # the split by 16 was the fastest record
    assert "is_scheduled" not in str(mod["add_one"].attrs)  # the input module is left alone
    # Numerics of the replayed schedule.
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="llvm")
    a = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    b = tvm.runtime.tensor(np.zeros_like(a))
    lib["main"](tvm.runtime.tensor(a), b)
    np.testing.assert_allclose(b.numpy(), a + 1, rtol=1e-6)


def test_default_schedule_that_was_faster_is_kept(tmp_path):
    _write_database(tmp_path)
    target = resolve_target("host")
    with TuningDatabase(tmp_path) as db:
        # The default schedule ran in 0.2 ms; the best record took 0.33 ms: compiling keeps the default.
        db.commit_baseline(_workload(), target.tvm_target, "default-schedule-hash", 2e-4, "add_one")
    mod = tvm.IRModule({"add_one": add_one})
    _, applied = apply_tuning_database(mod, target, tmp_path)
    assert applied == []
    with TuningDatabase(tmp_path) as db:
        db.commit_baseline(_workload(), target.tvm_target, "default-schedule-hash", 5e-4, "add_one")
        assert db.baseline(_workload(), target.tvm_target, "default-schedule-hash") == 5e-4
        assert db.baseline(_workload(), target.tvm_target, "another-default") is None
    _, applied = apply_tuning_database(mod, target, tmp_path)
    assert applied == ["add_one"]


def test_records_of_another_cpu_are_not_applied(tmp_path):
    _write_database(tmp_path)
    other = resolve_target({"kind": "llvm", "mcpu": "skylake"})
    _, applied = apply_tuning_database(tvm.IRModule({"add_one": add_one}), other, tmp_path)
    assert applied == [] or resolve_target("host").target_dict.get("mcpu") == "skylake"


def test_truncated_record_is_named_by_file_and_line(tmp_path):
    _write_database(tmp_path)
    path = tmp_path / RECORD_FILE
    text = path.read_text()
    path.write_text(text[: len(text) - 40])  # a run killed mid-append
    with pytest.raises(TuningError, match=rf"{RECORD_FILE}:3: truncated record.*--salvage"):
        scan_database(tmp_path)
    # Compiling with the database says the same, not a TVM trace.
    with pytest.raises(TuningError, match=rf"{RECORD_FILE}:3"):
        apply_tuning_database(tvm.IRModule({"add_one": add_one}), resolve_target("host"), tmp_path)


def test_corrupt_lines_fail_clearly_and_salvage_keeps_the_rest(tmp_path):
    _write_database(tmp_path)
    path = tmp_path / RECORD_FILE
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace("[", "{", 1)  # not JSON any more
    lines.insert(2, json.dumps([7, json.loads(lines[1])[1]]))  # a record of a workload that does not exist
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TuningError, match=rf"{RECORD_FILE}:1: not JSON"):
        with TuningDatabase(tmp_path):
            pass
    with TuningDatabase(tmp_path, salvage=True) as db:
        assert [(line, reason.split(" ")[0]) for _, line, reason in db.dropped] == [(1, "not"), (3, "workload")]
        assert db.records_at_open == 2
    # The salvaged files are clean, and the originals were kept beside them.
    assert len(scan_database(tmp_path).record_lines) == 2
    backups = list(tmp_path.glob("salvaged-*/" + RECORD_FILE))
    assert len(backups) == 1 and len(backups[0].read_text().splitlines()) == 4


def test_corrupt_workload_line(tmp_path):
    _write_database(tmp_path)
    (tmp_path / WORKLOAD_FILE).write_text('["123", "not base64!!"]\n')
    with pytest.raises(TuningError, match=rf"{WORKLOAD_FILE}:1: the module is not valid base64"):
        scan_database(tmp_path)
    with TuningDatabase(tmp_path, salvage=True) as db:
        # Dropping the workload drops its records too.
        assert db.records_at_open == 0 and len(db.dropped) == 4


def test_second_writer_fails_clearly(tmp_path):
    with database_lock(tmp_path):
        with pytest.raises(TuningError, match=r"another tuning run \(pid \d+\) is writing this database"):
            with TuningDatabase(tmp_path):
                pass


def test_lock_held_by_another_process(tmp_path):
    _write_database(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom edgetvm.tuning.database import database_lock\n"
         f"with database_lock({str(tmp_path)!r}):\n    print('locked', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TuningError, match=rf"pid {holder.pid}"):
            with TuningDatabase(tmp_path, wait_lock=0.5):
                pass
        # Readers are not blocked by a writer: compile still applies what is there.
        _, applied = apply_tuning_database(tvm.IRModule({"add_one": add_one}), resolve_target("host"), tmp_path)
        assert applied == ["add_one"]
    finally:
        holder.kill()
        holder.wait()
    with TuningDatabase(tmp_path) as db:  # the lock died with its holder
        assert db.records_at_open == 3


def test_reader_skips_the_line_a_writer_is_appending(tmp_path):
    _write_database(tmp_path)
    path = tmp_path / RECORD_FILE
    complete = path.read_text()
    with database_lock(tmp_path):
        path.write_text(complete + complete.splitlines()[0][:50])  # half a line, mid-write
        _, applied = apply_tuning_database(tvm.IRModule({"add_one": add_one}), resolve_target("host"), tmp_path)
    assert applied == ["add_one"]
