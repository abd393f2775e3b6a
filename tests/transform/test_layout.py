"""Channels-last layout and the numpy constant folder: rewrites checked as IR and numerically."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from edgetvm.frontends import load_model
from edgetvm.transform.const_fold import FoldConstantsWithNumpy
from edgetvm.transform.layout import LayoutFriendlyActivations, channels_last

from tests.schedules import nets


def _module(build) -> tvm.IRModule:
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 4, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(build(bb, x))
        bb.emit_func_output(out)
    return bb.get()


def test_clip_and_leakyrelu_become_max_min_multiply():
    before = _module(lambda bb, x: bb.emit(relax.op.nn.leakyrelu(bb.emit(relax.op.clip(x, 0.0, 6.0)), 0.1)))

    def expected_body(bb, x):
        clipped = bb.emit(relax.op.minimum(bb.emit(relax.op.maximum(x, relax.const(0.0, "float32"))),
                                           relax.const(6.0, "float32")))
        scaled = bb.emit(relax.op.multiply(clipped, relax.const(0.1, "float32")))
        return bb.emit(relax.op.maximum(clipped, scaled))

    tvm.ir.assert_structural_equal(LayoutFriendlyActivations()(before), _module(expected_body))


def test_leakyrelu_with_slope_above_one_is_left_alone():
    before = _module(lambda bb, x: bb.emit(relax.op.nn.leakyrelu(x, 1.5)))
    tvm.ir.assert_structural_equal(LayoutFriendlyActivations()(before), before)


def test_constant_layout_ops_fold_with_numpy():
    w = np.arange(2 * 8 * 3 * 3, dtype=np.float32).reshape(2, 8, 3, 3)
    b = np.arange(8, dtype=np.float32)

    def body(bb, x):
        wt = bb.emit(relax.op.permute_dims(relax.const(w), [2, 3, 1, 0]))
        scale = bb.emit(relax.op.sqrt(bb.emit(relax.op.add(relax.const(b), relax.const(1.0, "float32")))))
        shift = bb.emit(relax.op.reshape(scale, (1, 8, 1, 1)))
        y = bb.emit(relax.op.add(x, shift))  # not constant: stays
        return bb.emit(relax.op.nn.conv2d(y, relax.op.permute_dims(wt, [3, 2, 0, 1]), padding=1))

    folded = FoldConstantsWithNumpy()(_module(body))
    text = folded["main"].script(show_meta=False)
    assert "permute_dims" not in text and "sqrt" not in text and "reshape" not in text
    assert "R.add(x" in text
    consts = [c.value.numpy() for c in _constants(folded["main"])]
    assert any(c.shape == (1, 8, 1, 1) and np.allclose(c.ravel(), np.sqrt(b + 1)) for c in consts)
    assert any(c.shape == w.shape and np.array_equal(c, w) for c in consts)  # permuted there and back


def _constants(func) -> list:
    found = []
    relax.analysis.post_order_visit(func, lambda e: found.append(e) if isinstance(e, tvm.ir.expr.GenericConst) else None)
    return found


def test_conv_net_runs_channels_last_with_transposes_only_at_the_edges():
    mod = FoldConstantsWithNumpy()(channels_last()(load_model(nets.mini_mobilefacenet()).mod))
    text = mod["main"].script(show_meta=False)
    assert text.count('data_layout="NHWC"') == 5 and 'data_layout="NCHW"' not in text
    # The input to NHWC and the output back; weight and bias layout changes were folded.
    transposes_of_activations = [line for line in text.splitlines()
                                 if "permute_dims" in line and "metadata" not in line]
    assert len(transposes_of_activations) <= 2, transposes_of_activations
