"""`edgetvm tune`, `edgetvm compile --tuning-db`, `edgetvm rpc tracker|server` from the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from edgetvm.artifact import sidecar_path
from edgetvm.cli import main
from edgetvm.tuning.rpc import free_port, list_boards

from .conftest import KEY


def test_tune_and_compile_commands(first_run, boards, model_path, tmp_path, capsys):
    db, _, _ = first_run
    tracker, _ = boards
    rerun_db = tmp_path / "db"
    rerun_db.mkdir()
    for f in db.iterdir():
        if f.is_file():
            (rerun_db / f.name).write_bytes(f.read_bytes())
    code = main(["tune", str(model_path), "--tracker", tracker.address, "--key", KEY, "--trials", "1",
                 "--batch-size", "2", "--population", "16", "--db", str(rerun_db), "--report", str(tmp_path / "report.json")])
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["trials"] == 1 and report["records_at_start"] > 0
    assert "compile with: edgetvm compile" in capsys.readouterr().out
    out = tmp_path / "tuned.so"
    assert main(["compile", str(model_path), "--tuning-db", str(rerun_db), "-o", str(out)]) == 0
    sidecar = json.loads(sidecar_path(out).read_text())
    tuning = sidecar["report"]["details"]["tuning"]
    kernels = sidecar["report"]["details"]["schedules"]["kernels"]
    # Which kernels take a tuned schedule is the database's call (tuned vs default, timed back to
    # back); the artifact records it, and those kernels skipped the default schedules.
    assert tuning["db"] == str(rerun_db)
    assert all(kernels[name] == "pre-scheduled" for name in tuning["tuned_kernels"])


def test_compile_with_a_missing_database_is_one_clear_line(model_path, tmp_path, capsys):
    code = main(["compile", str(model_path), "--tuning-db", str(tmp_path / "nothing"), "-o", str(tmp_path / "m.so")])
    err = capsys.readouterr().err
    assert code == 2 and "no tuning database here" in err and "Traceback" not in err


def test_rpc_commands_run_until_ctrl_c(tmp_path):
    port = free_port()
    edgetvm = [sys.executable, "-m", "edgetvm.cli.main"]
    tracker = subprocess.Popen(edgetvm + ["rpc", "tracker", "--port", str(port)], stdout=subprocess.PIPE, text=True,
                               start_new_session=True)
    server = None
    try:
        assert "RPC tracker listening on 127.0.0.1" in tracker.stdout.readline()
        server = subprocess.Popen(edgetvm + ["rpc", "server", "--tracker", f"127.0.0.1:{port}", "--key", "cli-board"],
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert "registered with" in server.stdout.readline()
        assert len(list_boards("127.0.0.1", port, "cli-board")) == 1
        server.send_signal(signal.SIGINT)
        assert server.wait(30) == 0
        deadline = time.monotonic() + 15
        while list_boards("127.0.0.1", port, "cli-board") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list_boards("127.0.0.1", port, "cli-board") == []  # its process group is gone
    finally:
        for p in (server, tracker):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
    assert tracker.returncode == 0
