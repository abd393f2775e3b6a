"""emulate's issue-cycle estimate (the neon_cycles plugin) on a program whose cost is known by hand."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from edgetvm import emulate
from edgetvm.backends.standalone import build_standalone
from edgetvm.errors import ArtifactError
from edgetvm.targets import ARM_CROSS_CC, resolve_target

from .backends.standalone_models import parallel_model

pytestmark = pytest.mark.arm

# Per iteration: 8 vmul.i32 on q registers (4 issue cycles each on both tables, neon_cycles.md) and
# 4 vadd.i32 q (1 on a9, 2 on a7), then subs + bne.
LOOP = r"""
#include <stdlib.h>
int main(int argc, char** argv) {
  long n = atol(argv[1]) * 1000;
  for (long i = 0; i < n; ++i)
    __asm__ volatile(".rept 8\n vmul.i32 q8, q9, q10\n .endr\n .rept 4\n vadd.i32 q11, q12, q13\n .endr"
                     ::: "d16", "d17", "d18", "d19", "d20", "d21", "d22", "d23", "d24", "d25", "d26", "d27");
  return 0;
}
"""


def test_cycle_estimate_of_a_neon_loop(tmp_path):
    source = tmp_path / "loop.c"
    source.write_text(LOOP)
    exe = tmp_path / "loop"
    subprocess.run([ARM_CROSS_CC, "-O1", "-marm", "-mfpu=neon", "-mfloat-abi=hard", "-o", str(exe), str(source)],
                   check=True)
    three, one = (emulate.estimate_cycles([exe, k], cpu="cortex-a7") for k in (3, 1))
    per_iteration = (three - one) // 2000
    # The loop's own instructions (the counter's increment and compare around the asm vary with the
    # compiler, each 1 cycle): the NEON part is exact.
    loop_overhead = per_iteration.instructions - 12
    assert 1 <= loop_overhead <= 4
    assert per_iteration.cycles_a9 == 8 * 4 + 4 * 1 + loop_overhead
    assert per_iteration.cycles_a7 == 8 * 4 + 4 * 2 + loop_overhead
    # The same instructions insn_count counts.
    assert three.instructions == emulate.count_instructions([exe, 3], cpu="cortex-a7")


def test_cycles_per_inference_counts_what_instructions_per_inference_counts(tmp_path, rng):
    target = resolve_target("cortex-a7")
    build = build_standalone(parallel_model().mod, parallel_model(), target, tmp_path, "par")
    x = rng.standard_normal((64, 512)).astype(np.float32)
    estimate = emulate.cycles_per_inference(build.so, [x], n=1, cpu="cortex-a7")
    assert estimate.instructions == emulate.instructions_per_inference(build.so, [x], n=1, cpu="cortex-a7")
    assert estimate.instructions < estimate.cycles_a9 <= estimate.cycles_a7
    with pytest.raises(ArtifactError, match="takes 1 input"):
        emulate.cycles_per_inference(build.so, [x, x], cpu="cortex-a7")

