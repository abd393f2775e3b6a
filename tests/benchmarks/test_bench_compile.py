"""benchmarks/bench_compile.py: the phase clock counts a phase once however its functions nest, and a
generator's phase while it is iterated."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(_BENCHMARKS))  # bench_compile imports bench_arm beside it
_SPEC = importlib.util.spec_from_file_location("bench_compile", _BENCHMARKS / "bench_compile.py")
bench_compile = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_compile)


def _spin(seconds: float) -> None:
    """Busy for ``seconds`` of CPU time (a sleep would take wall time only)."""
    import time

    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_nested_calls_of_a_phase_count_once():
    clock = bench_compile.PhaseClock()
    outer = clock.wrap("build", lambda: [inner() for _ in range(2)])
    inner = clock.wrap("build", lambda: _spin(0.05))
    outer()
    # Two 0.05 s spins inside one outer call: 0.1 s, not the 0.2 s a per-call sum would give.
    assert 0.1 <= clock.cpu["build"] < 0.19
    assert clock.wall["build"] >= clock.cpu["build"] - 0.01


def test_generator_phase_is_timed_while_iterated():
    clock = bench_compile.PhaseClock()

    def samples():
        for _ in range(3):
            _spin(0.03)
            yield 1

    timed = clock.wrap_generator("runs", samples)
    items = timed()
    assert "runs" not in clock.cpu  # created, not run yet
    count = 0
    for item in items:
        count += item
        _spin(0.05)  # the consumer's own work between items is not the generator's
    assert count == 3
    assert 0.09 <= clock.cpu["runs"] < 0.18
