"""From a Relax graph to a Relax module whose kernels are scheduled TIR PrimFuncs.

legalize (Relax ops -> TIR) -> fuse ops into kernels -> schedule each kernel. The result is still a
Relax module with ``call_tir`` calls: the backends take it from there (TVM VM or standalone C).
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..targets import ResolvedTarget


def legalize_and_fuse(mod: tvm.IRModule, target: ResolvedTarget) -> tvm.IRModule:
    """Relax ops to TIR, then group elementwise tails with their producer into one kernel each."""
    seq = tvm.transform.Sequential(
        [
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
            relax.transform.DeadCodeElimination(),
        ]
    )
    with target.tvm_target:
        return seq(mod)
