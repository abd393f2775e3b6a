"""The tuning database: measured schedules of each kernel, kept in a directory, applied at compile time.

The directory holds meta_schedule's own JSON database, two line-per-entry files:

    database_workload.json        one kernel (a TIR PrimFunc, "workload") per line: [hash, module]
    database_tuning_record.json   one measured candidate per line: [workload line index,
                                  [trace, run seconds, target, argument shapes]]

A *trace* is the list of schedule primitives (split, reorder, vectorize, ...) with the random
decisions taken, so workload + trace identify a candidate exactly; a second tuning run never
measures a candidate the database already holds. Only tuning writes (appending lines, under an
exclusive ``fcntl`` lock on ``.edgetvm-tuning.lock``); compiling reads a validated snapshot.
``default_baselines.json`` holds the time of each kernel's default schedule on the same boards.

``apply_tuning_database`` replaces every kernel the database has a record for (on the same target
CPU) with the fastest recorded schedule, if that beat the default schedule (timed back to back with
it at the end of tuning, when the board is shared and its load varies), and marks it
``tirx.is_scheduled`` so the default schedules leave it alone.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import tvm
import tvm_ffi

from ..errors import TuningError, first_line
from ..io import atomic_write_json, atomic_write_text
from ..targets import ResolvedTarget

WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
LOCK_FILE = ".edgetvm-tuning.lock"
BASELINE_FILE = "default_baselines.json"
TUNED_ATTR = "edgetvm.tuned"


# --------------------------------------------------------------------------------------------------
# Validation: every line parsed before TVM sees the files, so a bad line is named by file and line.


@dataclass
class ScanResult:
    workload_lines: list[str]
    record_lines: list[str]
    # (file, line number, reason) of every line dropped when salvaging
    dropped: list[tuple[str, int, str]] = field(default_factory=list)
    partial_tail: bool = False


def _read_lines(path: Path) -> tuple[list[str], bool]:
    """The file's lines and whether its last one lacks the newline (a write cut short)."""
    if not path.exists():
        return [], False
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        # Locate the bad byte's line for the message.
        data = path.read_bytes()
        line = data[: exc.start].count(b"\n") + 1
        raise TuningError(f"{path}:{line}: not UTF-8 text (byte {exc.start}); the database file is corrupt. "
                          f"Rerun with --salvage to drop the broken records and keep the rest") from None
    lines = text.split("\n")
    unterminated = lines[-1] != ""
    if not unterminated:
        lines.pop()
    return lines, unterminated


def _check_workload(obj) -> str | None:
    if not (isinstance(obj, list) and len(obj) == 2 and all(isinstance(x, str) for x in obj)):
        return "expected [structural hash, base64 module]"
    try:
        base64.b64decode(obj[1], validate=True)
    except ValueError:
        return "the module is not valid base64"
    return None


def _check_record(obj, num_workloads: int) -> str | None:
    if not (isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], int) and isinstance(obj[1], list)):
        return "expected [workload index, [trace, run seconds, target, argument info]]"
    if not 0 <= obj[0] < num_workloads:
        return f"workload index {obj[0]} does not exist (the workload file has {num_workloads} lines)"
    body = obj[1]
    if len(body) != 4:
        return "expected [trace, run seconds, target, argument info]"
    trace, run_secs, target, args_info = body
    if not (isinstance(trace, list) and len(trace) == 2 and isinstance(trace[0], list)):
        return "the trace is not [instructions, decisions]"
    if run_secs is not None and not (isinstance(run_secs, list)
                                     and all(isinstance(s, (int, float)) for s in run_secs)):
        return "run seconds are not a list of numbers"
    if not (isinstance(target, dict) and "kind" in target):
        return "the target is not a TVM target dict"
    if not isinstance(args_info, list):
        return "the argument info is not a list"
    return None


def scan_database(db_dir: str | os.PathLike, *, salvage: bool = False, drop_partial_tail: bool = False) -> ScanResult:
    """Parse both files line by line.

    Strict (default): the first bad line raises TuningError naming file and line. ``salvage``: bad
    lines (and records of dropped workloads) are dropped and listed in ``dropped``.
    ``drop_partial_tail``: an unterminated last line is dropped quietly (another process is
    appending it right now).
    """
    db_dir = Path(db_dir)
    result = ScanResult([], [])
    hint = "Rerun with --salvage to drop the broken records and keep the rest"

    def bad(path: Path, line_no: int, reason: str, unterminated_tail: bool) -> None:
        if unterminated_tail:
            reason = f"truncated record (the file ends mid-line: a run was killed while writing?); {reason}"
        if not salvage:
            raise TuningError(f"{path}:{line_no}: {reason}. {hint}")
        result.dropped.append((str(path), line_no, reason))

    def parsed(path: Path, lines: list[str], unterminated: bool):
        """(line number, line, decoded JSON, is the unterminated tail) for each line that is JSON."""
        for i, line in enumerate(lines):
            tail = unterminated and i == len(lines) - 1
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                if tail and drop_partial_tail:
                    result.partial_tail = True
                    continue
                bad(path, i + 1, f"not JSON ({exc.msg} at column {exc.colno})", tail)
                continue
            yield i, line, obj, tail

    wl_path = db_dir / WORKLOAD_FILE
    lines, unterminated = _read_lines(wl_path)
    num_workloads = len(lines)
    index_map: dict[int, int] = {}  # old workload index -> index after salvage
    for i, line, obj, tail in parsed(wl_path, lines, unterminated):
        reason = _check_workload(obj)
        if reason:
            bad(wl_path, i + 1, reason, tail)
            continue
        index_map[i] = len(result.workload_lines)
        result.workload_lines.append(line)

    rec_path = db_dir / RECORD_FILE
    for i, line, obj, tail in parsed(rec_path, *_read_lines(rec_path)):
        reason = _check_record(obj, num_workloads)
        if reason is None and obj[0] not in index_map:
            reason = f"its workload (line {obj[0] + 1} of {WORKLOAD_FILE}) was dropped"
        if reason:
            bad(rec_path, i + 1, reason, tail)
            continue
        if index_map[obj[0]] != obj[0]:
            obj[0] = index_map[obj[0]]
            line = json.dumps(obj, separators=(",", ":"))
        result.record_lines.append(line)
    return result


def _write_snapshot(scan: ScanResult, directory: Path) -> None:
    (directory / WORKLOAD_FILE).write_text("".join(line + "\n" for line in scan.workload_lines))
    (directory / RECORD_FILE).write_text("".join(line + "\n" for line in scan.record_lines))


def _load_json_database(directory: Path, what: Path):
    from tvm.s_tir import meta_schedule as ms

    try:
        return ms.database.JSONDatabase(
            path_workload=str(directory / WORKLOAD_FILE),
            path_tuning_record=str(directory / RECORD_FILE),
            allow_missing=True,
            module_equality="structural",
        )
    except Exception as exc:  # noqa: BLE001 - TVM raises ValueError/RuntimeError through tvm_ffi
        raise TuningError(f"{what}: TVM cannot read the tuning database: {first_line(exc)}. "
                          f"Rerun tuning with --salvage to drop the broken records") from None


# --------------------------------------------------------------------------------------------------
# The lock: one writer per directory.


@contextmanager
def database_lock(db_dir: str | os.PathLike, *, wait: float = 0.0) -> Iterator[Path]:
    """Hold the exclusive tuning lock of ``db_dir`` (waiting up to ``wait`` seconds for it)."""
    db_dir = Path(db_dir)
    db_dir.mkdir(parents=True, exist_ok=True)
    path = db_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    raise TuningError(
                        f"{db_dir}: another tuning run (pid {holder}) is writing this database; wait for it to "
                        f"finish (or pass --wait-lock SECONDS), or tune into another --db directory"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing drops the flock


def _locked_by_writer(db_dir: Path) -> bool:
    path = db_dir / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# Reading: a validated snapshot, never the live files.


def candidate_key(workload_mod: tvm.IRModule, trace) -> tuple[int, str]:
    """Identity of a measured candidate: the kernel (structural hash) and the full trace with decisions."""
    return int(tvm_ffi.structural_hash(workload_mod)), str(trace)


def target_identity(target: tvm.target.Target) -> tuple[str, str, str]:
    """What must match for a record to be valid on a target: kind, triple, CPU (not the core count)."""
    attrs = target.attrs
    return (target.kind.name, str(attrs.get("mtriple", "")), str(attrs.get("mcpu", "")))


def open_snapshot(db_dir: str | os.PathLike):
    """The database in ``db_dir`` as an in-memory meta_schedule Database (read-only use)."""
    db_dir = Path(db_dir)
    if not (db_dir / WORKLOAD_FILE).exists():
        raise TuningError(f"{db_dir}: no tuning database here (no {WORKLOAD_FILE}); run `edgetvm tune ... --db {db_dir}` first")
    scan = scan_database(db_dir, drop_partial_tail=_locked_by_writer(db_dir))
    with tempfile.TemporaryDirectory(prefix="edgetvm-db-") as tmp:
        _write_snapshot(scan, Path(tmp))
        return _load_json_database(Path(tmp), db_dir)


def _normalize(func: tvm.tirx.PrimFunc) -> tvm.IRModule:
    from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

    return _normalize_mod(func)


def best_records(database, workload_mod: tvm.IRModule, target: tvm.target.Target, k: int = 1) -> list:
    """The ``k`` fastest valid records of ``workload_mod`` measured on ``target``'s CPU."""
    if not database.has_workload(workload_mod):
        return []
    workload = database.commit_workload(workload_mod)
    want = target_identity(target)
    return [r for r in database.get_top_k(workload, 1 << 20) if target_identity(r.target) == want][:k]


# --------------------------------------------------------------------------------------------------
# Default-schedule baselines: the default schedule of each kernel, timed on the same boards.


def _baseline_key(workload_mod: tvm.IRModule, target: tvm.target.Target) -> str:
    return f"{int(tvm_ffi.structural_hash(workload_mod))}|{'|'.join(target_identity(target))}"


def read_baselines(db_dir: str | os.PathLike) -> dict[str, dict]:
    """``{kernel key: {"seconds", "schedule", "kernel"}}`` from ``BASELINE_FILE`` (empty if absent)."""
    path = Path(db_dir) / BASELINE_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TuningError(f"{path}: not valid JSON ({exc}); delete it, the next tuning run measures the defaults "
                          f"again") from None
    return data if isinstance(data, dict) else {}


def tuned_beats_default(baselines: dict, workload_mod: tvm.IRModule, target: tvm.target.Target, record) -> bool:
    """Whether ``record`` (the fastest record of the kernel) should replace the default schedule.

    Best evidence first: the pair timed back to back at the end of tuning (``paired``: default and
    this very record, alternating on one board, so load on a shared board cancels out); else the
    record's time against the default's time from the start of tuning; with no default timed, yes.
    """
    entry = baselines.get(_baseline_key(workload_mod, target))
    if not entry:
        return True
    paired = entry.get("paired")
    if paired and paired.get("trace") == trace_digest(record.trace):
        return float(paired["tuned"]) < float(paired["default"])
    mean = sum(float(s) for s in record.run_secs) / len(record.run_secs)
    return mean < float(entry["seconds"])


def trace_digest(trace) -> str:
    import hashlib

    return hashlib.sha256(str(trace).encode()).hexdigest()[:16]


def apply_tuning_database(mod: tvm.IRModule, target: ResolvedTarget, db_dir: str | os.PathLike
                          ) -> tuple[tvm.IRModule, list[str]]:
    """Replace each kernel of ``mod`` that ``db_dir`` has records for with its fastest recorded schedule.

    A record replaces a kernel only if it beat the kernel's default schedule timed on the same
    boards (``default_baselines.json``, written by tuning); otherwise the default schedule stays.
    Returns the new module and the names of the kernels replaced. A replaced PrimFunc keeps its
    attributes and gains ``tirx.is_scheduled`` (the default schedules skip it) and ``edgetvm.tuned``
    (the measured seconds of the record used).
    """
    database = open_snapshot(db_dir)
    baselines = read_baselines(db_dir)
    tvm_target = target.tvm_target
    applied: list[str] = []
    updates = {}
    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        if func.attrs is not None and bool(func.attrs.get("tirx.is_scheduled", False)):
            continue
        workload_mod = _normalize(func)
        records = best_records(database, workload_mod, tvm_target)
        if not records:
            continue
        record = records[0]
        mean = sum(float(s) for s in record.run_secs) / len(record.run_secs)
        if not tuned_beats_default(baselines, workload_mod, tvm_target, record):
            continue
        try:
            # A private copy: schedule primitives may rewrite an IR node in place when they hold the
            # only reference, and the next kernel with the same workload must replay on the original.
            sch = tvm.s_tir.Schedule(tvm.ir.load_json(tvm.ir.save_json(record.workload.mod)), debug_mask=0)
            record.trace.apply_to_schedule(sch, remove_postproc=False)
        except Exception as exc:  # noqa: BLE001 - a record from another TVM version may not replay
            raise TuningError(f"{db_dir}: the record for kernel {gv.name_hint} does not replay on this TVM "
                              f"({first_line(exc)}); delete the directory and tune again") from None
        tuned = sch.mod["main"]
        new_func = tuned.without_attr("global_symbol") if tuned.attrs and "global_symbol" in tuned.attrs else tuned
        for key, value in (func.attrs or {}).items():
            new_func = new_func.with_attr(key, value)
        new_func = new_func.with_attr("tirx.is_scheduled", True).with_attr(TUNED_ATTR, f"{mean:.9f}")
        updates[gv] = new_func
        applied.append(gv.name_hint)
    if updates:
        mod = mod.clone()
        for gv, func in updates.items():
            mod[gv] = func
    return mod, sorted(applied)


# --------------------------------------------------------------------------------------------------
# Writing: the tuner's handle on the live files.


class TuningDatabase:
    """The live database of one tuning run: validated, locked, deduplicating.

    Use as a context manager. ``salvage`` rewrites the files without their bad lines first.
    """

    def __init__(self, db_dir: str | os.PathLike, *, salvage: bool = False, wait_lock: float = 0.0):
        self.db_dir = Path(db_dir)
        self.salvage = salvage
        self.wait_lock = wait_lock
        self.dropped: list[tuple[str, int, str]] = []
        self._lock_cm = None
        self.database = None
        self._measured: dict[tuple[int, str], tuple[float, ...] | None] = {}
        self.records_at_open = 0
        self.records_added = 0

    def __enter__(self) -> "TuningDatabase":
        self._lock_cm = database_lock(self.db_dir, wait=self.wait_lock)
        self._lock_cm.__enter__()
        try:
            self._open()
        except BaseException:
            self._lock_cm.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.database = None
        if self._lock_cm is not None:
            self._lock_cm.__exit__(*exc)
            self._lock_cm = None

    def _open(self) -> None:
        scan = scan_database(self.db_dir, salvage=self.salvage)
        self.dropped = scan.dropped
        if scan.dropped:
            backup = self.db_dir / f"salvaged-{time.strftime('%Y%m%d-%H%M%S')}"
            backup.mkdir(exist_ok=True)
            for name in (WORKLOAD_FILE, RECORD_FILE):
                if (self.db_dir / name).exists():
                    shutil.copy2(self.db_dir / name, backup / name)
            atomic_write_text(self.db_dir / WORKLOAD_FILE, "".join(line + "\n" for line in scan.workload_lines))
            atomic_write_text(self.db_dir / RECORD_FILE, "".join(line + "\n" for line in scan.record_lines))
        self.database = _load_json_database(self.db_dir, self.db_dir)
        for record in self.database.get_all_tuning_records():
            run_secs = tuple(float(s) for s in record.run_secs) if record.run_secs is not None else None
            self._measured[candidate_key(record.workload.mod, record.trace)] = run_secs
        self.records_at_open = len(self._measured)

    def measured(self, key: tuple[int, str]) -> tuple[bool, tuple[float, ...] | None]:
        """(already in the database?, its run seconds or None if it failed)."""
        if key in self._measured:
            return True, self._measured[key]
        return False, None

    def commit_workload(self, workload_mod: tvm.IRModule):
        return self.database.commit_workload(workload_mod)

    def commit(self, key: tuple[int, str], workload, trace, run_secs: list[float] | None,
               target: tvm.target.Target, args_info) -> None:
        """Append one measured candidate (``run_secs`` None: it failed to build)."""
        from tvm.s_tir import meta_schedule as ms

        record = ms.database.TuningRecord(trace, workload, run_secs, target, args_info)
        self.database.commit_tuning_record(record)
        self._measured[key] = tuple(run_secs) if run_secs is not None else None
        self.records_added += 1

    def baseline(self, workload_mod: tvm.IRModule, target: tvm.target.Target, schedule_hash: str) -> float | None:
        """Seconds of the default schedule ``schedule_hash`` of this kernel, if timed before."""
        entry = read_baselines(self.db_dir).get(_baseline_key(workload_mod, target))
        return float(entry["seconds"]) if entry and entry.get("schedule") == schedule_hash else None

    def commit_baseline(self, workload_mod: tvm.IRModule, target: tvm.target.Target, schedule_hash: str,
                        seconds: float, kernel: str) -> None:
        baselines = read_baselines(self.db_dir)
        baselines[_baseline_key(workload_mod, target)] = {"seconds": seconds, "schedule": schedule_hash,
                                                          "kernel": kernel}
        atomic_write_json(self.db_dir / BASELINE_FILE, baselines)

    def commit_paired(self, workload_mod: tvm.IRModule, target: tvm.target.Target, trace,
                      default_seconds: float, tuned_seconds: float) -> None:
        """The default schedule and the best record, timed back to back (see ``tuned_beats_default``)."""
        baselines = read_baselines(self.db_dir)
        entry = baselines.get(_baseline_key(workload_mod, target))
        if entry is None:
            return
        entry["paired"] = {"trace": trace_digest(trace), "default": default_seconds, "tuned": tuned_seconds}
        atomic_write_json(self.db_dir / BASELINE_FILE, baselines)

    def best_record(self, workload_mod: tvm.IRModule, target: tvm.target.Target):
        records = best_records(self.database, workload_mod, target)
        return records[0] if records else None

    def best_seconds(self, workload_mod: tvm.IRModule, target: tvm.target.Target) -> float | None:
        records = best_records(self.database, workload_mod, target)
        if not records:
            return None
        return sum(float(s) for s in records[0].run_secs) / len(records[0].run_secs)
