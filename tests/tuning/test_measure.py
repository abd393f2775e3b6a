"""Candidate builds for the boards, and the RPC processes' bind policy."""

from __future__ import annotations

import os
import shutil
import struct

import pytest
import tvm

from edgetvm.errors import TuningError
from edgetvm.tuning.rpc import check_bind_host, start_server, start_tracker
from edgetvm.tuning.tune import tuning_target
from edgetvm.tuning.measure import build_candidate, shared_library_exporter
from edgetvm.targets import resolve_target

from .test_database import _workload

EM_ARM = 40
EM_X86_64 = 62


def _elf_class_and_machine(path: str) -> tuple[int, int]:
    with open(path, "rb") as fh:
        header = fh.read(20)
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return header[4], struct.unpack("<H", header[18:20])[0]


def _scheduled_candidate() -> tvm.IRModule:
    sch = tvm.s_tir.Schedule(_workload())
    loop = sch.get_loops(sch.get_sblock("b"))[1]
    tile = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=4, decision=[16, 4])
    sch.vectorize(sch.split(loop, tile)[1])
    return sch.mod


@pytest.mark.arm
def test_arm_candidates_are_32bit_arm_shared_libraries():
    target = resolve_target("armv7-neon")
    path = build_candidate(_scheduled_candidate(), tuning_target(target, 1), shared_library_exporter(target))
    try:
        assert path.endswith(".so")
        assert _elf_class_and_machine(path) == (1, EM_ARM)  # ELFCLASS32, ARM
    finally:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def test_host_candidates_are_host_shared_libraries():
    target = resolve_target("host")
    path = build_candidate(_scheduled_candidate(), tuning_target(target, 1), shared_library_exporter(target))
    try:
        assert _elf_class_and_machine(path) == (2, EM_X86_64)
    finally:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def test_remote_bind_needs_an_explicit_flag():
    assert check_bind_host("127.0.0.1", False, "the RPC server") is None
    with pytest.raises(TuningError, match="refusing to bind 0.0.0.0 without --allow-remote"):
        check_bind_host("0.0.0.0", False, "the RPC server")
    with pytest.raises(TuningError, match="--allow-remote"):
        start_tracker("10.0.0.7")
    with pytest.raises(TuningError, match="--allow-remote"):
        start_server("127.0.0.1:9190", "rk3288", host="192.168.1.20")
    warning = check_bind_host("0.0.0.0", True, "the RPC server")
    assert "runs any shared library a client uploads" in warning and "private network" in warning


def test_tuning_without_boards_says_how_to_start_one(tmp_path):
    import edgetvm

    from .conftest import two_conv_model

    tracker = start_tracker(log_path=tmp_path / "tracker.log")
    try:
        with pytest.raises(TuningError, match=r"lists no board under key 'nobody'.*edgetvm rpc server"):
            edgetvm.tune(two_conv_model(), "host", tracker=tracker.address, key="nobody", trials=4,
                         db=tmp_path / "db", progress=None)
    finally:
        tracker.stop()
    assert not tracker.alive()


def test_next_batch_goes_where_the_model_spends_time_unless_that_search_stalled():
    from types import SimpleNamespace

    from edgetvm.tuning.tune import TaskProgress, _next_task

    def task(name, weight, best, default=None, stale=0):
        return SimpleNamespace(progress=TaskProgress(name, weight, trials=8, best_seconds=best,
                                                     default_seconds=default, stale_batches=stale))

    big, small, new = task("big", 1, 4e-3), task("small", 2, 1e-3), task("new", 1, None)
    tasks = [big, small, new]
    assert _next_task([], tasks, per_task=100) is new  # never measured: first
    new.progress.best_seconds = 1e-4
    assert _next_task([], tasks, per_task=100) is big  # 4 ms of the model vs 2 ms
    big.progress.stale_batches = 3  # 4 ms / 4 < 2 ms: the stalled search yields
    assert _next_task([], tasks, per_task=100) is small
    small.progress.default_seconds = 1e-4  # the default is already fast: its 0.2 ms weighs little
    assert _next_task([], tasks, per_task=100) is big
    big.progress.trials = 100  # per-kernel budget reached
    assert _next_task([], tasks, per_task=100) is small  # 0.2 ms vs 0.1 ms
