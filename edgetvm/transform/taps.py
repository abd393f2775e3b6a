"""Taps: a module whose ``main`` also returns some of its intermediate tensors, for calibration.

int8 calibration reads the activation ranges from them (quantization/calibrate.py), the centroid
refit of clustering the layers' inputs (compression/refit.py).
"""

from __future__ import annotations

import tvm
from tvm import relax


def with_taps(mod: tvm.IRModule, taps: list[relax.Var]) -> tvm.IRModule:
    """``mod`` whose ``main`` returns ``(original outputs..., *taps)`` as one flat tuple."""
    func = mod["main"]
    body = func.body
    bb = relax.BlockBuilder()
    params = list(func.params)
    attrs = {k: v for k, v in func.attrs.items()} if func.attrs is not None else {}
    with bb.function("main", params, attrs=attrs):
        outputs = []
        with bb.dataflow():
            for block in body.blocks:
                for binding in block.bindings:
                    bb.emit_normalized(binding)
            result = body.body
            if isinstance(result, relax.Tuple):
                results = list(result.fields)
            elif isinstance(result.ty, relax.TupleType):
                # A tuple-valued output var (ONNX models with several outputs): its fields, so that the
                # result really is flat and the taps start at len(ret_ty.fields).
                results = [relax.TupleGetItem(result, i) for i in range(len(result.ty.fields))]
            else:
                results = [result]
            for value in results + list(taps):
                outputs.append(bb.emit_output(value))
        bb.emit_func_output(relax.Tuple(outputs))
    new_mod = bb.get()
    for gvar, other in mod.functions.items():
        if gvar.name_hint != "main":
            new_mod[gvar] = other
    return new_mod
