"""What `tune` and `rpc` say before any work: a missing `edgetvm[tune]` extra, a tracker nobody runs,
a tracker with no board yet (issue 20)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgetvm.errors import TuningError
from edgetvm.tuning.requirements import missing_tuning_modules, require_tuning_dependencies
from edgetvm.tuning.rpc import free_port, reach_tracker, start_server, start_tracker
from edgetvm.tuning.tune import wait_for_boards

EDGETVM = str(Path(sys.executable).with_name("edgetvm"))

# A user's interpreter without the extra: the modules are made unimportable before edgetvm runs.
WITHOUT = ("import sys\n"
           "for name in {blocked!r}: sys.modules[name] = None\n"
           "from edgetvm.cli.main import main\n"
           "sys.exit(main(sys.argv[1:]))\n")


def _cli_without(blocked: tuple[str, ...], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT.format(blocked=blocked), *args], capture_output=True,
                          text=True, timeout=timeout)


def test_the_extra_is_installed_here():
    # The test environment installs `.[test,tune]` (scripts/setup.sh); the checks below simulate its absence.
    assert missing_tuning_modules() == []


def test_missing_module_is_named_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "xgboost", None)
    assert missing_tuning_modules() == ["xgboost"]
    with pytest.raises(TuningError, match=r"xgboost .*pip install 'edgetvm\[tune\]'"):
        require_tuning_dependencies("edgetvm tune")


def test_tune_without_the_extra_is_one_line_before_compiling(model_path, tmp_path):
    proc = _cli_without(("xgboost",), "tune", str(model_path), "--tracker", f"127.0.0.1:{free_port()}",
                        "--key", "k", "--db", str(tmp_path / "db"))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "xgboost" in lines[0] and "pip install 'edgetvm[tune]'" in lines[0]
    assert not (tmp_path / "db").exists()


@pytest.mark.parametrize("command", [["rpc", "tracker"], ["rpc", "server", "--tracker", "127.0.0.1:9", "--key", "k"]])
def test_rpc_without_the_extra_is_one_line(command):
    proc = _cli_without(("tornado", "psutil", "cloudpickle"), *command, "--log", "/dev/null")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tornado, psutil, cloudpickle" in lines[0] and "edgetvm[tune]" in lines[0]


def test_unreachable_tracker_is_one_line_without_tvm_retries(model_path, tmp_path):
    # TVM's client alone retries a refused tracker for 60 s, a warning every 5 s.
    proc = subprocess.run([EDGETVM, "tune", str(model_path), "--tracker",
                           f"127.0.0.1:{free_port()}", "--key", "k", "--db", str(tmp_path / "db")],
                          capture_output=True, text=True, timeout=50)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the RPC tracker at 127.0.0.1:" in lines[0], proc.stderr
    assert "retry" not in proc.stderr


def test_unknown_tracker_host_is_one_line():
    with pytest.raises(TuningError, match="cannot reach the RPC tracker at no-such-host.invalid:9190"):
        reach_tracker("no-such-host.invalid", 9190)


def test_tune_waits_for_a_board_that_registers_late(tmp_path):
    said: list[str] = []
    with start_tracker(log_path=tmp_path / "tracker.log") as tracker:
        host, port = tracker.host, tracker.port
        assert wait_for_boards(host, port, "late", 0.5, said.append) == []
        assert said == [f"waiting up to 0.5 s for a board to register with {host}:{port} under key 'late'"]
        # The server registers while the tuner is already waiting (the README starts both together);
        # TVM's import alone keeps it from registering for a few seconds.
        server = start_server(tracker.address, "late", log_path=tmp_path / "server.log", wait_registered=False)
        with server:
            said.clear()
            boards = wait_for_boards(host, port, "late", 90.0, said.append)
        assert said == [f"waiting up to 90 s for a board to register with {host}:{port} under key 'late'"]
        assert [b["key"] for b in boards] == ["late"] and boards[0]["port"] == server.port


def test_tune_cli_without_a_board_says_how_long_it_waited(model_path, tmp_path):
    with start_tracker(log_path=tmp_path / "tracker.log") as tracker:
        proc = subprocess.run([EDGETVM, "tune", str(model_path), "--tracker",
                               tracker.address, "--key", "nobody", "--db", str(tmp_path / "db"), "--wait-boards", "1"],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "lists no board under key 'nobody' after 1 s (--wait-boards)" in proc.stderr.splitlines()[-1]
