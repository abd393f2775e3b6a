"""The standalone backend: a static-shape model as one self-contained C library, no TVM runtime.

For a static-shape CNN everything a runtime does can be decided at compile time: the order of the
kernels, where each tensor lives (TVM's static memory planner packs them into one arena) and the
weights (constant data in the library). What is left at run time is a loop over a table of kernel
calls plus the few hooks TVM's kernels import (see edgetvm_runtime.c). The export writes

    face.so       kernels + runtime + call table + weights; exports only face_* (and
                  edgetvm_model_prefix)
    face.h        the C API (face_create / face_run_checked / face_last_error / shape queries)
    face_main.c   an example program: raw input files in, raw output files out

cross-compiled with arm-linux-gnueabihf-gcc for ARM targets, natively for the host.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tvm

from ...errors import CompileError
from ...io import atomic_path, atomic_write_text
from ...specs import ImportedModel, TensorSpec
from ...targets import ResolvedTarget
from .build import OPTIMIZE_GOALS, StandaloneObjects, c_compiler, check_optimize, compile_and_link, target_cflags
from .codegen import c_prefix, example_main_source, header_source, model_source, weights_assembly
from .loader import StandaloneContext, StandaloneLibrary, load_standalone
from .plan import StaticPlan, plan_static
from .weights import (SEGMENT_COPY, SEGMENT_F16, SEGMENT_HUFFMAN, WEIGHT_STORAGE, StoredWeights, check_weight_storage,
                      coded_record, decode_record, stored_weights)

__all__ = ["OPTIMIZE_GOALS", "check_optimize", "export_standalone", "load_standalone", "build_standalone", "StandaloneBuild", "StandaloneLibrary",
           "StandaloneContext", "plan_static", "StaticPlan", "c_prefix", "WEIGHT_STORAGE", "SEGMENT_COPY",
           "SEGMENT_F16", "SEGMENT_HUFFMAN", "StoredWeights", "check_weight_storage", "coded_record", "decode_record",
           "stored_weights"]


@dataclass
class StandaloneBuild:
    """What :func:`build_standalone` produced (objects stay in ``workdir`` for size accounting)."""

    so: Path
    prefix: str
    plan: StaticPlan
    objects: StandaloneObjects
    header: str
    example_main: str
    weights: StoredWeights | None = None


def _checked_specs(plan: StaticPlan, imported: ImportedModel) -> tuple[list[TensorSpec], list[TensorSpec]]:
    pairs = (("input", plan.inputs, imported.inputs), ("output", plan.outputs, imported.outputs))
    for kind, refs, specs in pairs:
        if len(refs) != len(specs):
            raise CompileError(f"main has {len(refs)} {kind}(s) but the model declares {len(specs)} "
                               f"({[s.name for s in specs]})")
        for ref, spec in zip(refs, specs):
            if tuple(ref.shape) != tuple(spec.shape):
                raise CompileError(f"{kind} {spec.name}: main has shape {ref.shape}, the model declares {spec.shape}")
    return list(imported.inputs), list(imported.outputs)


def build_standalone(scheduled: tvm.IRModule, imported: ImportedModel, target: ResolvedTarget, workdir: Path,
                     prefix: str, *, num_threads: int | None = None, soname: str | None = None,
                     weights: str = "fp32", optimize: str = "speed",
                     codebooks: list | None = None) -> StandaloneBuild:
    """Plan, generate and build ``workdir/<prefix>.so``; the sources and objects stay in ``workdir``.

    ``weights="fp16"`` stores the conv and dense weights as float16, widened at create; ``"huffman"``
    entropy-codes the tensors with few distinct values, decoded at create (weights.py), and those
    ``codebooks`` (ClusterWeights(scaled=True)'s) reproduce as a scale per channel times a codebook.
    ``optimize="size"`` builds the kernels and runtime for the fewest bytes, same results (build.py)."""
    check_optimize(optimize)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    plan = plan_static(scheduled, target)
    inputs, outputs = _checked_specs(plan, imported)
    stored = stored_weights(plan, weights, codebooks)
    blob = workdir / "weights.bin"
    blob.write_bytes(stored.blob)
    weights_s = workdir / "weights.S"
    weights_s.write_text(weights_assembly(str(blob.resolve())))
    model_c = workdir / "model.c"
    model_c.write_text(model_source(plan, prefix, inputs, outputs, num_threads, stored))
    so = workdir / f"{prefix}.so"
    objects = compile_and_link(plan, target, workdir, model_c, weights_s, prefix, so, soname or so.name, optimize)
    header = header_source(prefix, inputs, outputs, plan, target.preset, stored)
    example = example_main_source(prefix, " ".join([Path(c_compiler(target)).name, "-O2", *target_cflags(target)]))
    return StandaloneBuild(so, prefix, plan, objects, header, example, stored)


def export_standalone(scheduled: tvm.IRModule, imported: ImportedModel, target: ResolvedTarget,
                      path: str | os.PathLike, *, num_threads: int | None = None, weights: str = "fp32",
                      optimize: str = "speed", codebooks: list | None = None) -> list[Path]:
    """Write ``path`` (the .so), ``<stem>.h`` and ``<stem>_main.c`` beside it, each atomically."""
    path = Path(path)
    prefix = c_prefix(path.stem)
    header_path = path.with_name(f"{path.stem}.h")
    main_path = path.with_name(f"{path.stem}_main.c")
    with tempfile.TemporaryDirectory(prefix="edgetvm-standalone-") as tmp:
        build = build_standalone(scheduled, imported, target, Path(tmp), prefix, num_threads=num_threads,
                                 soname=path.name, weights=weights, optimize=optimize, codebooks=codebooks)
        with atomic_path(path) as out:
            shutil.copyfile(build.so, out)  # the temporary directory may be on another file system
            os.chmod(out, 0o644)  # mkstemp's 0600 would keep the library from other users on the board
    atomic_write_text(header_path, build.header)
    atomic_write_text(main_path, build.example_main)
    return [path, header_path, main_path]
