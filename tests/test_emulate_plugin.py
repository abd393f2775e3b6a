"""The guest-instruction counter shipped in the package (backends/standalone/qemu_insn_count.c):
built on first use, and exact on a loop whose instructions are known."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import edgetvm
from edgetvm import emulate
from edgetvm.targets import ARM_CROSS_CC

# Two instructions per iteration (subs, bne), whatever the compiler does around them.
COUNTED_LOOP = r"""
#include <stdlib.h>
int main(int argc, char **argv) {
    unsigned n = argc > 1 ? (unsigned)strtoul(argv[1], 0, 10) : 1;
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
    return 0;
}
"""


def test_plugin_source_is_package_data():
    package = Path(edgetvm.__file__).resolve().parent
    assert emulate.INSN_COUNT_SOURCE.is_relative_to(package) and emulate.INSN_COUNT_SOURCE.exists()


@pytest.fixture
def loop_program(tmp_path) -> Path:
    source = tmp_path / "loop.c"
    source.write_text(COUNTED_LOOP)
    subprocess.run([ARM_CROSS_CC, "-O2", "-o", str(tmp_path / "loop"), str(source)], check=True)
    return tmp_path / "loop"


@pytest.mark.arm
def test_counts_exactly_two_instructions_per_iteration(tmp_path, monkeypatch, loop_program):
    monkeypatch.setenv("EDGETVM_CACHE", str(tmp_path / "cache"))  # built here, from the package's source
    program = loop_program
    counts = {n: emulate.count_instructions([program, n]) for n in (1000, 3000, 5000)}
    assert emulate.insn_count_plugin().parent == tmp_path / "cache" / "tools"
    assert counts[3000] - counts[1000] == 2 * 2000
    assert counts[5000] - counts[3000] == 2 * 2000


@pytest.mark.arm
def test_unknown_plugin_argument_is_refused(tmp_path, loop_program):
    cmd = emulate.qemu_command([loop_program, 10], plugin_out=tmp_path / "count.txt")
    cmd[cmd.index("-plugin") + 1] += ",verbose=1"
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "qemu_plugin_install returned error" in proc.stderr
