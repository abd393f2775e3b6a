"""Tuning: search schedules for each kernel of a model, measuring candidates on the boards themselves.

One *task* per distinct kernel (fused TIR PrimFunc) of the model as edgetvm compiles it; its weight
is how many times the model calls it. meta_schedule's evolutionary search proposes candidates
(schedules sampled from the design space, mutated, ranked by an XGBoost cost model trained on the
measurements so far); this module drives the loop itself instead of meta_schedule's task scheduler so
that it can

- skip candidates the database already holds (workload + trace), feeding their stored times back to
  the search and the cost model instead of measuring them again;
- build on the host with the target's cross compiler (``.so``), and time on every board of the key
  in parallel, each measurement with a deadline, so a dead or hung board costs its in-flight
  candidates only;
- print progress a person can follow, and stop cleanly on Ctrl-C with every record kept.

Task choice: every task gets one batch first; after that the next batch goes to the task with the
largest ``w_i * t_i / (1 + s_i)``: weighted latency (where the model spends its time) discounted by
``s_i``, the batches in a row that found nothing faster (so a kernel whose search has stalled yields
to the others), a greedy form of meta_schedule's gradient task scheduler.

    model latency estimate  T = sum_i w_i * min_j t_ij   (i: kernel, j: measured candidates)
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import tvm
import tvm_ffi

from ..errors import TuningError, first_line
from .requirements import require_tuning_dependencies
from .rpc import list_boards, parse_address
from ..targets import ResolvedTarget
from .database import TuningDatabase, candidate_key
from .measure import MeasureConfig, build_candidate, measure_on_board, shared_library_exporter

ProgressFn = Callable[[str], None]


def print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class TaskProgress:
    name: str
    weight: int
    trials: int = 0          # candidates measured in this run
    reused: int = 0          # candidates the database already had
    build_errors: int = 0
    run_errors: int = 0
    best_seconds: float | None = None
    default_seconds: float | None = None  # the default schedule, timed on the same boards
    exhausted: bool = False
    last_error: str = ""
    stale_batches: int = 0   # batches in a row that did not improve best_seconds
    paired: tuple[float, float] | None = None  # (default, best tuned) timed back to back at the end

    @property
    def uses_tuned(self) -> bool:
        """Whether compiling with the database takes the tuned schedule (see database.tuned_beats_default)."""
        if self.paired is not None:
            return self.paired[1] < self.paired[0]
        return self.best_seconds is not None and (self.default_seconds is None or self.best_seconds < self.default_seconds)

    @property
    def effective_seconds(self) -> float | None:
        """What compiling with the database gives this kernel: the faster of tuned and default."""
        if self.paired is not None:
            return min(self.paired)
        times = [t for t in (self.best_seconds, self.default_seconds) if t is not None]
        return min(times) if times else None

    @property
    def weighted_seconds(self) -> float | None:
        return None if self.effective_seconds is None else self.weight * self.effective_seconds

    def to_json(self) -> dict:
        return {"name": self.name, "weight": self.weight, "trials": self.trials, "reused": self.reused,
                "build_errors": self.build_errors, "run_errors": self.run_errors,
                "best_ms": None if self.best_seconds is None else self.best_seconds * 1e3,
                "default_ms": None if self.default_seconds is None else self.default_seconds * 1e3,
                "paired_ms": None if self.paired is None else [p * 1e3 for p in self.paired]}


@dataclass
class TuningReport:
    """What a tuning run did; ``summary()`` is the table printed at the end."""

    db_dir: str
    target: str
    key: str
    trial_budget: int
    tasks: list[TaskProgress] = field(default_factory=list)
    boards: list[str] = field(default_factory=list)
    lost_boards: list[str] = field(default_factory=list)
    records_at_start: int = 0
    records_added: int = 0
    salvaged: list[tuple[str, int, str]] = field(default_factory=list)
    wall_seconds: float = 0.0
    interrupted: bool = False
    stop_reason: str = ""

    @property
    def trials(self) -> int:
        return sum(t.trials for t in self.tasks)

    @property
    def reused(self) -> int:
        return sum(t.reused for t in self.tasks)

    @property
    def model_seconds(self) -> float | None:
        """Weighted sum of each kernel's time (tuned or default, the faster), None while one is unknown."""
        parts = [t.weighted_seconds for t in self.tasks]
        return None if not parts or any(p is None for p in parts) else sum(parts)

    def to_json(self) -> dict:
        return {"db_dir": self.db_dir, "target": self.target, "key": self.key, "trial_budget": self.trial_budget,
                "trials": self.trials, "reused": self.reused, "records_at_start": self.records_at_start,
                "records_added": self.records_added, "boards": self.boards, "lost_boards": self.lost_boards,
                "wall_seconds": self.wall_seconds, "interrupted": self.interrupted, "stop_reason": self.stop_reason,
                "model_ms": None if self.model_seconds is None else self.model_seconds * 1e3,
                "salvaged_lines": len(self.salvaged), "tasks": [t.to_json() for t in self.tasks]}

    def summary(self) -> str:
        width = max([len(t.name) for t in self.tasks] + [6])
        lines = [f"{'kernel':<{width}}  calls  trials  reused  errors  tuned ms  default ms  weighted ms  used"]
        for t in sorted(self.tasks, key=lambda t: -(t.weighted_seconds or 0.0)):
            best = f"{t.best_seconds * 1e3:8.3f}" if t.best_seconds is not None else "       -"
            default = f"{t.default_seconds * 1e3:10.3f}" if t.default_seconds is not None else "         -"
            weighted = f"{t.weighted_seconds * 1e3:11.3f}" if t.weighted_seconds is not None else "          -"
            used = "-" if t.effective_seconds is None else ("tuned" if t.uses_tuned else "default")
            lines.append(f"{t.name:<{width}}  {t.weight:5d}  {t.trials:6d}  {t.reused:6d}  "
                         f"{t.build_errors + t.run_errors:6d}  {best}  {default}  {weighted}  {used}")
        model = self.model_seconds
        lines.append(f"model (sum of calls x kernel time, tuned or default): "
                     f"{model * 1e3:.3f} ms" if model is not None else "model: some kernels have no measurement yet")
        lines.append(f"{self.trials} candidates measured (budget {self.trial_budget}), {self.reused} already in the "
                     f"database, {self.records_added} records added to {self.db_dir} "
                     f"({self.records_at_start} before); {len(self.boards)} board(s) under key {self.key!r}"
                     + (f", lost: {', '.join(self.lost_boards)}" if self.lost_boards else "")
                     + f"; {_duration(self.wall_seconds)}")
        if self.salvaged:
            lines.append(f"salvaged the database: dropped {len(self.salvaged)} bad line(s) "
                         f"(first: {self.salvaged[0][0]}:{self.salvaged[0][1]}: {self.salvaged[0][2]})")
        if self.interrupted:
            lines.append("interrupted: every record measured so far is in the database; rerun to continue")
        elif self.stop_reason:
            lines.append(f"stopped: {self.stop_reason}")
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def tuning_target(target: ResolvedTarget, num_threads: int) -> tvm.target.Target:
    """The target with the core count meta_schedule's parallelization rules require."""
    return tvm.target.Target({**target.target_dict, "num-cores": max(1, num_threads)})


def extract_tuning_tasks(mod: tvm.IRModule, target: tvm.target.Target) -> list:
    """One meta_schedule task per distinct unscheduled kernel of ``mod`` (weight = number of calls)."""
    from tvm.s_tir import meta_schedule as ms

    try:
        tasks = ms.relax_integration.extract_tasks(mod, target)
    except Exception as exc:  # noqa: BLE001 - TVM raises plain errors through tvm_ffi
        raise TuningError(f"cannot extract tuning tasks from the model: {first_line(exc)}") from exc
    def scheduled(task) -> bool:
        func = task.dispatched[0]["main"]
        return func.attrs is not None and bool(func.attrs.get("tirx.is_scheduled", False))

    return [t for t in tasks if not scheduled(t)]


def _register_cpu_tensor_intrinsics() -> None:
    """Register the x86 and ARM tensor intrinsics the CPU schedule rules look up, and no others.

    ``TuneContext`` imports the package ``tvm.s_tir.tensor_intrin``, whose ``__init__`` also parses
    every CUDA, ROCm and Hexagon intrinsic from TVMScript: 88 s measured on this 2-core host under
    load, for intrinsics a CPU target never uses. The package is entered into ``sys.modules`` without
    running that ``__init__`` (its submodules stay importable on demand), then the CPU ones are loaded.
    """
    name = "tvm.s_tir.tensor_intrin"
    if name not in sys.modules:
        spec = importlib.util.find_spec(name)
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        import tvm.s_tir

        tvm.s_tir.tensor_intrin = package
    for cpu in ("x86", "arm_cpu"):
        importlib.import_module(f"{name}.{cpu}")


def _quiet_logger() -> logging.Logger:
    logger = logging.getLogger("edgetvm.tuning.meta_schedule")
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logger


class _Task:
    """A task's search state: its TuneContext plus what the progress shows."""

    def __init__(self, extracted, target, population_size: int, seed: int | None, index: int):
        from tvm.s_tir import meta_schedule as ms

        self.workload_mod = extracted.dispatched[0]
        self.progress = TaskProgress(extracted.task_name, int(extracted.weight))
        strategy = ms.search_strategy.EvolutionarySearch(
            population_size=population_size, init_min_unmeasured=max(2, min(50, population_size // 4)))
        self.ctx = ms.TuneContext(
            self.workload_mod, target=target, space_generator="post-order-apply", search_strategy=strategy,
            task_name=extracted.task_name, rand_state=(seed + index) if seed is not None else -1,
            num_threads=1, logger=_quiet_logger()).clone()
        self.workload = None


def tune_module(
    mod: tvm.IRModule,
    target: ResolvedTarget,
    *,
    tracker: str,
    key: str,
    trials: int,
    db_dir: str | os.PathLike,
    trials_per_task: int | None = None,
    batch_size: int = 16,
    population_size: int = 256,
    candidate_timeout: float = 60.0,
    build_timeout: float = 120.0,
    build_workers: int | None = None,
    num_threads: int = 1,
    salvage: bool = False,
    wait_lock: float = 0.0,
    seed: int | None = None,
    seed_schedule: Callable[[tvm.s_tir.Schedule], None] | None = None,
    defaults: dict[str, tvm.tirx.PrimFunc] | None = None,
    progress: ProgressFn | None = print_progress,
    wait_boards: float = 60.0,
) -> TuningReport:
    """Tune the kernels of ``mod`` (a Relax module whose kernels are unscheduled TIR) on the boards.

    ``trials`` caps the candidates *measured* in this run (ones already in ``db_dir`` are free; 0
    searches nothing and only times the best records against the default schedules);
    ``seed_schedule`` applies edgetvm's default schedule to a traced ``tvm.s_tir.Schedule`` of one
    kernel, and is measured first so the search starts from (and never ends below) the default.
    ``defaults`` maps kernel names to their default-scheduled PrimFuncs: each is timed once on the
    boards (kept in the database directory), so compiling uses a tuned schedule only where it won.
    ``wait_boards``: seconds to wait for a first board to register under ``key`` (a server started
    with the tuner takes a few), after a tracker that does not answer has already failed in seconds.
    """
    require_tuning_dependencies("tuning")
    from tvm.s_tir import meta_schedule as ms
    from tvm.support.popen_pool import PopenPoolExecutor

    say = progress or (lambda line: None)
    started = time.monotonic()
    tracker_host, tracker_port = parse_address(tracker)
    boards = wait_for_boards(tracker_host, tracker_port, key, wait_boards, say)
    if not boards:
        raise TuningError(
            f"the tracker {tracker} lists no board under key {key!r} after {wait_boards:g} s "
            f"(--wait-boards); start one on each board with "
            f"`edgetvm rpc server --tracker {tracker} --key {key}` (see `python -m tvm.exec.query_rpc_tracker "
            f"--host {tracker_host} --port {tracker_port}`)"
        )
    if trials < 0:
        raise TuningError(f"--trials must be 0 (only time the best records against the defaults) or more, "
                          f"not {trials}")
    tvm_target = tuning_target(target, num_threads)
    extracted = extract_tuning_tasks(mod, tvm_target)
    if not extracted:
        raise TuningError("the model has no kernel left to tune (all are already scheduled)")
    per_task = trials_per_task or trials

    report = TuningReport(str(db_dir), target.preset, key, trials,
                          boards=[f"{b['host']}:{b['port']}" for b in boards])
    config = MeasureConfig(tracker_host, tracker_port, key, session_timeout=candidate_timeout)
    device_type = "cpu"
    _register_cpu_tensor_intrinsics()
    export = shared_library_exporter(target)
    # Both pools keep their worker processes for the whole run: a fresh worker pays TVM's import.
    builder = PopenPoolExecutor(max_workers=build_workers or min(2, os.cpu_count() or 1), timeout=build_timeout)
    pool = PopenPoolExecutor(max_workers=len(boards), timeout=candidate_timeout)
    cost_model = ms.cost_model.CostModel.create("xgb", num_tuning_cores=1)
    lost: set[str] = set()
    measured_seconds: list[float] = []  # wall time per measured candidate, for the time-left estimate

    with TuningDatabase(db_dir, salvage=salvage, wait_lock=wait_lock) as db:
        report.records_at_start = db.records_at_open
        report.salvaged = db.dropped
        if db.dropped:
            for path, line, reason in db.dropped:
                say(f"salvage: dropped {path}:{line}: {reason}")
        tasks = [_Task(t, tvm_target, population_size, seed, i) for i, t in enumerate(extracted)]
        report.tasks = [t.progress for t in tasks]
        say(f"tuning {len(tasks)} kernels of the model for {target.preset} on {len(boards)} board(s) under key "
            f"{key!r}; budget {trials} candidates; database {db_dir} ({db.records_at_open} records)")
        stop = _StopRequest(say)
        try:
            stop.__enter__()
            for task in tasks:
                if stop.requested:
                    raise KeyboardInterrupt
                task.workload = db.commit_workload(task.workload_mod)
                known = len(db.database.get_top_k(task.workload, 1 << 20))
                task.progress.best_seconds = db.best_seconds(task.workload_mod, tvm_target)
                task.ctx.pre_tuning(per_task + known, batch_size, task.ctx.generate_design_space(),
                                    db.database, cost_model)
            if defaults:
                _time_defaults(tasks, defaults, db, builder, export, pool, config, device_type, tvm_target)
                timed = sum(1 for t in tasks if t.progress.default_seconds is not None)
                say(f"default schedules timed for {timed}/{len(tasks)} kernels"
                    + (f"; model with default schedules {report.model_seconds * 1e3:.3f} ms"
                       if report.model_seconds is not None else ""))
            first_round = list(tasks)
            while report.trials < trials:
                if stop.requested:
                    raise KeyboardInterrupt
                task = _next_task(first_round, tasks, per_task)
                if task is None:
                    report.stop_reason = "every kernel's search space is exhausted or at its per-kernel budget"
                    break
                batch_started = time.monotonic()
                errors_before = task.progress.run_errors
                fresh = _run_batch(task, db, builder, export, pool, cost_model, config, device_type, tvm_target,
                                   trials - report.trials, seed_schedule, stop)
                if fresh:
                    measured_seconds.append((time.monotonic() - batch_started) / fresh)
                if task.progress.run_errors > errors_before:
                    listed = {f"{b['host']}:{b['port']}" for b in list_boards(tracker_host, tracker_port, key)}
                    lost.update(b for b in report.boards if b not in listed)
                    report.lost_boards = sorted(lost)
                    if not listed:
                        report.stop_reason = f"no board left under key {key!r}"
                        say(_progress_line(report, task, measured_seconds, started))
                        break
                say(_progress_line(report, task, measured_seconds, started))
            if defaults and not stop.requested:
                say("timing each kernel's best schedule against its default, back to back")
                _pair_with_defaults(tasks, defaults, db, builder, export, pool, config, device_type, tvm_target,
                                    stop)
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            stop.__exit__()
            pool.shutdown(wait=False)
            builder.shutdown(wait=False)
            for task in tasks:
                try:
                    task.ctx.post_tuning()
                except Exception:  # noqa: BLE001 - the search state is discarded anyway
                    pass
            report.records_added = db.records_added
            report.wall_seconds = time.monotonic() - started
    say(report.summary())
    if report.interrupted:
        raise KeyboardInterrupt
    return report


def wait_for_boards(tracker_host: str, tracker_port: int, key: str, wait: float, say: ProgressFn) -> list[dict]:
    """The boards under ``key``, polled for up to ``wait`` seconds until there is one; [] after that."""
    deadline = time.monotonic() + max(wait, 0.0)
    boards = list_boards(tracker_host, tracker_port, key)
    if not boards and wait > 0:
        say(f"waiting up to {wait:g} s for a board to register with {tracker_host}:{tracker_port} under key {key!r}")
    while not boards and time.monotonic() < deadline:
        time.sleep(min(0.5, max(deadline - time.monotonic(), 0.0)))
        boards = list_boards(tracker_host, tracker_port, key)
    return boards


def _time_defaults(tasks: list[_Task], defaults: dict, db: TuningDatabase, builder, export, pool,
                   config: MeasureConfig, device_type: str, target: tvm.target.Target) -> None:
    """Time each kernel's default schedule on the boards (once per schedule: kept in the database dir)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    builds = {}
    for task in tasks:
        func = defaults.get(task.progress.name)
        if func is None:
            continue
        mod = _normalize_mod(func)
        schedule_hash = str(int(tvm_ffi.structural_hash(mod)))
        known = db.baseline(task.workload_mod, target, schedule_hash)
        if known is not None:
            task.progress.default_seconds = known
            continue
        builds[task] = (builder.submit(build_candidate, mod, target, export), mod, schedule_hash)
    runs = {}
    for task, (build, mod, schedule_hash) in builds.items():
        try:
            artifact = build.result()
        except Exception:  # noqa: BLE001 - a default that does not build alone has no baseline
            continue
        args_info = tuple(a.as_json() for a in ms.arg_info.ArgInfo.from_prim_func(mod["main"]))
        runs[task] = (pool.submit(measure_on_board, config, artifact, device_type, args_info), artifact, schedule_hash)
    for task, (run, artifact, schedule_hash) in runs.items():
        try:
            _, run_secs = run.result()
        except Exception:  # noqa: BLE001 - a board failure: the next run times it again
            continue
        finally:
            shutil.rmtree(os.path.dirname(artifact), ignore_errors=True)
        seconds = sum(run_secs) / len(run_secs)
        db.commit_baseline(task.workload_mod, target, schedule_hash, seconds, task.progress.name)
        task.progress.default_seconds = seconds


def _pair_with_defaults(tasks: list[_Task], defaults: dict, db: TuningDatabase, builder, export, pool,
                        config: MeasureConfig, device_type: str, target: tvm.target.Target, stop,
                        rounds: int = 2) -> None:
    """Time each kernel's best record and its default schedule alternately on one board.

    Records measured minutes apart on a shared or throttling board are not comparable with a
    default timed at the start; this pair is (``database.tuned_beats_default`` uses it).
    """
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    for task in tasks:
        func = defaults.get(task.progress.name)
        record = db.best_record(task.workload_mod, target)
        if func is None or record is None or task.progress.default_seconds is None or stop.requested:
            continue
        sch = tvm.s_tir.Schedule(tvm.ir.load_json(tvm.ir.save_json(task.workload_mod)), debug_mask=0)
        try:
            record.trace.apply_to_schedule(sch, remove_postproc=False)
            default_mod = _normalize_mod(func)
            artifacts = [builder.submit(build_candidate, m, target, export).result() for m in (default_mod, sch.mod)]
        except Exception:  # noqa: BLE001 - no pair: the start-of-run default time decides
            continue
        args_info = tuple(a.as_json() for a in ms.arg_info.ArgInfo.from_prim_func(default_mod["main"]))
        times: list[list[float]] = [[], []]
        try:
            for _ in range(rounds):
                for which, artifact in enumerate(artifacts):
                    _, run_secs = pool.submit(measure_on_board, config, artifact, device_type, args_info).result()
                    times[which].append(sum(run_secs) / len(run_secs))
        except Exception:  # noqa: BLE001 - a board failure: keep the start-of-run comparison
            continue
        finally:
            for artifact in artifacts:
                shutil.rmtree(os.path.dirname(artifact), ignore_errors=True)
        default_seconds, tuned_seconds = min(times[0]), min(times[1])
        db.commit_paired(task.workload_mod, target, record.trace, default_seconds, tuned_seconds)
        task.progress.paired = (default_seconds, tuned_seconds)


class _StopRequest:
    """Ctrl-C during tuning: finish the step under way, then stop with every record kept.

    KeyboardInterrupt raised inside meta_schedule's C++ search (it polls for signals) terminates
    the process, so the first SIGINT only sets a flag the loop checks between steps; a second one
    interrupts at once. Installed only in the main thread (where Python delivers signals).
    """

    def __init__(self, say: ProgressFn):
        self.requested = False
        self._say = say
        self._previous = None

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            raise KeyboardInterrupt
        self.requested = True
        self._say("Ctrl-C: stopping after the batch under way (Ctrl-C again to stop at once)")

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _next_task(first_round: list[_Task], tasks: list[_Task], per_task: int) -> _Task | None:
    while first_round:
        task = first_round.pop(0)
        if not task.progress.exhausted:
            return task
    live = [t for t in tasks if not t.progress.exhausted and t.progress.trials < per_task]
    if not live:
        return None
    # Kernels never measured successfully first, then the largest share of the model's latency,
    # discounted by how long the kernel's search has gone without improving.
    return max(live, key=lambda t: (t.progress.best_seconds is None,
                                    (t.progress.weighted_seconds or 0.0) / (1 + t.progress.stale_batches)))


def _run_batch(task: _Task, db: TuningDatabase, builder, export, pool, cost_model, config: MeasureConfig,
               device_type: str, target: tvm.target.Target, budget_left: int, seed_schedule,
               stop: _StopRequest) -> int:
    """Generate, deduplicate, build, measure and record one batch of ``task``; returns how many were measured."""
    from tvm.s_tir import meta_schedule as ms

    progress = task.progress
    best_before = progress.best_seconds
    candidates = list(task.ctx.generate_measure_candidates() or [])
    if not candidates:
        progress.exhausted = True
        return 0
    if seed_schedule is not None and progress.trials == 0 and progress.reused == 0:
        seeded = _seed_candidate(task, seed_schedule)
        if seeded is not None:
            candidates.insert(0, seeded)

    results: list = [None] * len(candidates)
    keys = [candidate_key(task.workload_mod, c.sch.trace) for c in candidates]
    fresh: list[int] = []
    for i, key in enumerate(keys):
        known, run_secs = db.measured(key)
        if known:
            progress.reused += 1
            results[i] = ms.runner.RunnerResult(run_secs, None if run_secs else "failed when first measured")
        elif key in keys[:i]:
            results[i] = ms.runner.RunnerResult(None, "duplicate of another candidate in this batch")
        elif len(fresh) < budget_left:
            fresh.append(i)
        else:
            results[i] = ms.runner.RunnerResult(None, "not measured: the trial budget is spent")

    if fresh:
        builds = {i: builder.submit(build_candidate, candidates[i].sch.mod, target, export) for i in fresh}
        futures = {}
        for i, build in builds.items():
            try:
                artifact = build.result()
            except Exception as exc:  # noqa: BLE001 - TimeoutError or the compiler's error: this candidate only
                error = (f"timed out after {builder._timeout:.0f} s" if isinstance(exc, TimeoutError)  # noqa: SLF001
                         else first_line(exc))
                progress.build_errors += 1
                progress.last_error = "build: " + error
                results[i] = ms.runner.RunnerResult(None, "build: " + error)
                # A terminal's Ctrl-C also reaches the worker processes: not the candidate's fault.
                if not isinstance(exc, TimeoutError) and not stop.requested:
                    # A compiler error is a property of the candidate: recorded, so never retried.
                    db.commit(keys[i], task.workload, candidates[i].sch.trace, None, target, candidates[i].args_info)
                continue
            args_info = tuple(a.as_json() for a in candidates[i].args_info)
            futures[i] = (pool.submit(measure_on_board, config, artifact, device_type, args_info), artifact)
        for i, (future, artifact) in futures.items():
            try:
                board, run_secs = future.result()
            except TimeoutError:
                run_secs, error = None, f"timed out after {config.session_timeout:.0f} s (board hung or too slow)"
            except Exception as exc:  # noqa: BLE001 - a dead board, a crashing kernel: only this candidate fails
                run_secs, error = None, first_line(exc)
            finally:
                shutil.rmtree(os.path.dirname(artifact), ignore_errors=True)
            if run_secs is None:
                progress.run_errors += 1
                progress.last_error = "run: " + error
                results[i] = ms.runner.RunnerResult(None, error)
                # Not recorded: a board failure says nothing about the candidate; a later run retries it.
                continue
            progress.trials += 1
            results[i] = ms.runner.RunnerResult(run_secs, None)
            db.commit(keys[i], task.workload, candidates[i].sch.trace, run_secs, target, candidates[i].args_info)
            mean = sum(run_secs) / len(run_secs)
            if progress.best_seconds is None or mean < progress.best_seconds:
                progress.best_seconds = mean
    task.ctx.notify_runner_results(candidates, results)
    # Every result, measured now or taken from the database, trains the cost model (what the stock
    # UpdateCostModel callback does); failed candidates carry no time and are skipped by it.
    cost_model.update(task.ctx, candidates, results)
    improved = progress.best_seconds is not None and (best_before is None or progress.best_seconds < best_before)
    progress.stale_batches = 0 if improved else progress.stale_batches + 1
    return len([i for i in fresh if results[i].run_secs is not None])


def _seed_candidate(task: _Task, seed_schedule):
    """The default schedule of this kernel as a measure candidate, or None when it cannot be traced."""
    from tvm.s_tir import meta_schedule as ms

    try:
        sch = tvm.s_tir.Schedule(tvm.ir.load_json(tvm.ir.save_json(task.workload_mod)), debug_mask=0)
        seed_schedule(sch)
        return ms.MeasureCandidate(sch, ms.arg_info.ArgInfo.from_prim_func(task.workload_mod["main"]))
    except Exception:  # noqa: BLE001 - a kernel the default schedules do not cover is searched from scratch
        return None


def _progress_line(report: TuningReport, task: _Task, measured_seconds: list[float], started: float) -> str:
    done = sum(1 for t in report.tasks if t.exhausted or t.trials > 0 or t.reused > 0)
    p = task.progress
    best = f"{p.best_seconds * 1e3:.4f} ms" if p.best_seconds is not None else "no valid candidate yet"
    if p.default_seconds is not None:
        best += f" (default {p.default_seconds * 1e3:.4f} ms)"
    model = report.model_seconds
    measured_kernels = sum(1 for t in report.tasks if t.effective_seconds is not None)
    model_text = (f"model {model * 1e3:.3f} ms" if model is not None
                  else f"model: {measured_kernels}/{len(report.tasks)} kernels measured")
    left = report.trial_budget - report.trials
    if measured_seconds:
        recent = measured_seconds[-8:]
        eta = _duration(left * sum(recent) / len(recent))
    else:
        eta = "?"
    line = (f"[{_duration(time.monotonic() - started)}] tasks {done}/{len(report.tasks)} | trials "
            f"{report.trials}/{report.trial_budget} (+{report.reused} from db) | {p.name}: best {best} after "
            f"{p.trials + p.reused} | {model_text} | ~{eta} left")
    if p.last_error:
        line += f"\n    {p.build_errors + p.run_errors} failed candidate(s) of {p.name}, last: {p.last_error[:300]}"
        p.last_error = ""
    return line
