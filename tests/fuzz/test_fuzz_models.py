"""Hostile model files: 200 mutated real models, every outcome success or a clean edgetvm error."""

import json
import os

import pytest

from .harness import run_cases, summarize

CI_CASES = int(os.environ.get("EDGETVM_FUZZ_CASES", "200"))


def test_mutated_models_never_crash_hang_or_trace(tmp_path):
    # Weighted to the small models so that 200 cases fit CI's time budget; scripts/fuzz_models.py
    # runs thousands over all four, with a full build of the survivors.
    bases = ["yunet", "retinaface", "blazeface", "yunet", "retinaface", "blazeface", "sface"]
    outcomes = run_cases(list(range(CI_CASES)), bases, timeout=90.0, jobs=2, workdir=str(tmp_path))
    summary = summarize(outcomes)
    shown = ("cases", "by_status", "errors", "mean_seconds_by_base")
    print(json.dumps({key: summary[key] for key in shown}))  # with pytest -s or -rP
    assert summary["cases"] == CI_CASES
    assert not summary["failures"], summary
    # The fuzzer must actually reach the error paths and the success path, or it tests nothing.
    assert summary["by_status"].get("edgetvm-error", 0) > CI_CASES // 4
    assert summary["by_status"].get("ok", 0) > 0


def test_harness_detects_a_crash(tmp_path, monkeypatch):
    """The harness itself: a child that dies of a signal is reported as a crash, not passed."""
    import signal

    from edgetvm import cli

    monkeypatch.setattr(cli, "main", lambda argv: os.kill(os.getpid(), signal.SIGSEGV))
    outcomes = run_cases([0], ["yunet"], timeout=30.0, jobs=1, workdir=str(tmp_path))
    assert outcomes[0].status == "crash", outcomes


def test_harness_detects_a_hang(tmp_path, monkeypatch):
    import time

    from edgetvm import cli

    monkeypatch.setattr(cli, "main", lambda argv: time.sleep(60))
    outcomes = run_cases([0], ["yunet"], timeout=2.0, jobs=1, workdir=str(tmp_path))
    assert outcomes[0].status == "hang", outcomes


def test_harness_detects_a_raw_trace(tmp_path, monkeypatch):
    from edgetvm import cli

    def leaky_main(argv):
        print("Traceback (most recent call last):\n  File x, line 1")
        return 2

    monkeypatch.setattr(cli, "main", leaky_main)
    outcomes = run_cases([0], ["yunet"], timeout=30.0, jobs=1, workdir=str(tmp_path))
    assert outcomes[0].status == "trace", outcomes


def test_harness_detects_an_internal_error(tmp_path, monkeypatch):
    """A non-edgetvm exception out of compile is a bug of ours, however the CLI words it."""
    from edgetvm import api, cli

    monkeypatch.setattr(cli, "main", lambda argv: 0)

    def buggy_compile(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(api, "compile", buggy_compile)
    outcomes = run_cases([0], ["yunet"], timeout=30.0, jobs=1, workdir=str(tmp_path))
    assert outcomes[0].status == "internal-error", outcomes


@pytest.mark.parametrize("leak", ["Check failed: (pb->value != 0) is false: Divide by zero",
                                  "[12:00:00] /project/src/relax/ir/block_builder.cc:67: Warning: ...",
                                  "the data channel size is T.int64(3)"])
def test_harness_detects_tvm_internals_in_an_edgetvm_error(tmp_path, monkeypatch, leak):
    from edgetvm import api, cli
    from edgetvm.errors import CompileError

    monkeypatch.setattr(cli, "main", lambda argv: 0)

    def leaky_compile(*args, **kwargs):
        raise CompileError(f"lowering failed: {leak}")

    monkeypatch.setattr(api, "compile", leaky_compile)
    outcomes = run_cases([0], ["yunet"], timeout=30.0, jobs=1, workdir=str(tmp_path))
    assert outcomes[0].status == "trace", outcomes
