"""Small models for the standalone backend tests: a conv net (ONNX) and a TIR module with parallel loops."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from edgetvm.specs import ImportedModel, TensorSpec


def small_convnet(seed: int = 0, hw: int = 16) -> onnx.ModelProto:
    """conv3x3/2 + ReLU -> depthwise 3x3 + ReLU -> pointwise -> add -> global pool -> FC, two outputs.

    The second output is an intermediate the next layer also reads (a tensor that is both output
    and kernel input), so the planner's output handling is exercised.
    """
    rng = np.random.default_rng(seed)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    inits = [weight("w1", 8, 3, 3, 3), weight("b1", 8), weight("w2", 8, 1, 3, 3), weight("b2", 8),
             weight("w3", 16, 8, 1, 1), weight("b3", 16), weight("fc", 16, 10)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"]),
        helper.make_node("Add", ["c3", "c3"], ["a3"]),
        helper.make_node("GlobalAveragePool", ["a3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "small_convnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10]),
         helper.make_tensor_value_info("r1", TensorProto.FLOAT, [1, 8, hw // 2, hw // 2])],
        initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@I.ir_module
class ParallelModule:
    """Two kernels with parallel loops; the first allocates a per-row workspace inside its parallel body."""

    @T.prim_func(private=True, s_tir=True)
    def reverse_scale_rows(x: T.Buffer((64, 512), "float32"), y: T.Buffer((64, 512), "float32")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            for i in T.parallel(64):
                with T.sblock("row"):
                    vi = T.axis.spatial(64, i)
                    row = T.sblock_alloc_buffer((512,), "float32")
                    for j in range(512):
                        with T.sblock("scale"):
                            vj = T.axis.spatial(512, j)
                            row[vj] = x[vi, vj] * T.float32(2)
                    for j in range(512):
                        with T.sblock("reverse"):
                            vj = T.axis.spatial(512, j)
                            y[vi, vj] = row[511 - vj] + T.Cast("float32", vi)

    @T.prim_func(private=True, s_tir=True)
    def add_one(x: T.Buffer((64, 512), "float32"), y: T.Buffer((64, 512), "float32")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            for i in T.parallel(64):
                for j in range(512):
                    with T.sblock("add"):
                        vi, vj = T.axis.remap("SS", [i, j])
                        y[vi, vj] = x[vi, vj] + T.float32(1)

    @R.function
    def main(x: R.Tensor((64, 512), "float32")):
        cls = ParallelModule
        with R.dataflow():
            a = R.call_tir(cls.reverse_scale_rows, (x,), out_ty=R.Tensor((64, 512), "float32"))
            b = R.call_tir(cls.add_one, (a,), out_ty=R.Tensor((64, 512), "float32"))
            R.output(b)
        return b


def parallel_model() -> ImportedModel:
    return ImportedModel(ParallelModule, [TensorSpec("x", (64, 512), "float32")],
                         [TensorSpec("y", (64, 512), "float32")], "<parallel>", "tvmscript")


def parallel_reference(x: np.ndarray) -> np.ndarray:
    return (x * 2)[:, ::-1] + np.arange(64, dtype=np.float32)[:, None] + 1


@I.ir_module
class PackedCallModule:
    """A kernel that calls a packed function through TVM's runtime (a vendor library, a sort)."""

    @T.prim_func(private=True, s_tir=True)
    def vendor(x: T.Buffer((4,), "float32"), y: T.Buffer((4,), "float32")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            T.reads(x[0:4])
            T.writes(y[0:4])
            T.evaluate(T.call_packed("my_vendor_op", x.data, y.data))

    @R.function
    def main(x: R.Tensor((4,), "float32")):
        cls = PackedCallModule
        with R.dataflow():
            y = R.call_tir(cls.vendor, (x,), out_ty=R.Tensor((4,), "float32"))
            R.output(y)
        return y


def packed_call_model() -> ImportedModel:
    return ImportedModel(PackedCallModule, [TensorSpec("x", (4,), "float32")], [TensorSpec("y", (4,), "float32")],
                         "<packed-call>", "tvmscript")


@I.ir_module
class BarrierModule:
    """A parallel loop with a barrier when its tasks finish (TVMBackendParallelBarrier)."""

    @T.prim_func(private=True, s_tir=True)
    def twice(x: T.Buffer((64,), "float32"), y: T.Buffer((64,), "float32")):
        T.func_attr({"tirx.noalias": True})
        with T.sblock("root"):
            T.reads(x[0:64])
            T.writes(y[0:64])
            with T.attr(0, "pragma_parallel_launch_point", 1):
                with T.attr(0, "pragma_parallel_barrier_when_finish", 1):
                    for i in T.parallel(64):
                        y[i] = x[i] * T.float32(2)

    @R.function
    def main(x: R.Tensor((64,), "float32")):
        cls = BarrierModule
        with R.dataflow():
            y = R.call_tir(cls.twice, (x,), out_ty=R.Tensor((64,), "float32"))
            R.output(y)
        return y


def barrier_model() -> ImportedModel:
    return ImportedModel(BarrierModule, [TensorSpec("x", (64,), "float32")], [TensorSpec("y", (64,), "float32")],
                         "<barrier>", "tvmscript")


@I.ir_module
class PassThroughModule:
    """Outputs that no kernel writes: the input itself and a reshaped view of a kernel's result."""

    @T.prim_func(private=True, s_tir=True)
    def add_one(x: T.Buffer((4, 8), "float32"), y: T.Buffer((4, 8), "float32")):
        T.func_attr({"tirx.noalias": True})
        for i, j in T.grid(4, 8):
            with T.sblock("add"):
                vi, vj = T.axis.remap("SS", [i, j])
                y[vi, vj] = x[vi, vj] + T.float32(1)

    @R.function
    def main(x: R.Tensor((4, 8), "float32")):
        cls = PassThroughModule
        with R.dataflow():
            y = R.call_tir(cls.add_one, (x,), out_ty=R.Tensor((4, 8), "float32"))
            z = R.reshape(y, R.shape([32]))
            out = (x, z, y)
            R.output(out)
        return out


def pass_through_model() -> ImportedModel:
    return ImportedModel(PassThroughModule, [TensorSpec("x", (4, 8), "float32")],
                         [TensorSpec("x_copy", (4, 8), "float32"), TensorSpec("flat", (32,), "float32"),
                          TensorSpec("y", (4, 8), "float32")], "<pass-through>", "tvmscript")
