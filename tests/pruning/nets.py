"""Small ONNX graphs for the pruning tests: each one a dependency kind, or a known failure case of
PyTorch-tracing pruners (Torch-Pruning, NNI), plus the helpers that check a pruned model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgetvm.frontends.onnx import import_onnx_with_weights


def import_named(model) -> tuple:
    """``main`` taking the weights as parameters named as the ONNX initializers, and their values."""
    imported, weights, _ = import_onnx_with_weights(model)
    return imported.mod["main"], weights


class Net:
    """Appends NCHW nodes with seeded weights; every weight is named ``w_<layer>``/``b_<layer>``."""

    def __init__(self, shape=(1, 3, 8, 8), seed: int = 0, opset: int = 13):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.shape = shape
        self.opset = opset
        self.count = 0

    def _init(self, name: str, array) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def _out(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def conv(self, x: str, cin: int, cout: int, k: int = 3, groups: int = 1, stride: int = 1, bias: bool = True,
             name: str | None = None) -> str:
        name = name or self._out("conv")
        w = self.rng.normal(0, np.sqrt(2.0 / (cin // groups * k * k)), (cout, cin // groups, k, k)).astype(np.float32)
        inputs = [x, self._init(f"w_{name}", w)]
        if bias:
            inputs.append(self._init(f"b_{name}", self.rng.normal(0, 0.1, cout).astype(np.float32)))
        self.nodes.append(helper.make_node("Conv", inputs, [name], name=name, pads=[k // 2] * 4, group=groups,
                                           strides=[stride, stride]))
        return name

    def bn(self, x: str, c: int, gamma=None) -> str:
        name = self._out("bn")
        g = self.rng.uniform(0.5, 1.5, c).astype(np.float32) if gamma is None else np.asarray(gamma, np.float32)
        params = [self._init(f"{p}_{name}", v) for p, v in (
            ("gamma", g), ("beta", self.rng.normal(0, 0.2, c).astype(np.float32)),
            ("mean", self.rng.normal(0, 0.2, c).astype(np.float32)),
            ("var", self.rng.uniform(0.5, 1.5, c).astype(np.float32)))]
        self.nodes.append(helper.make_node("BatchNormalization", [x, *params], [name], name=name))
        return name

    def prelu(self, x: str, c: int) -> str:
        name = self._out("prelu")
        slope = self._init(f"slope_{name}", self.rng.uniform(0.05, 0.3, (c, 1, 1)).astype(np.float32))
        self.nodes.append(helper.make_node("PRelu", [x, slope], [name], name=name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        name = self._out(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def scale(self, x: str, c: int) -> str:
        s = self._init(f"scale_{self.count}", self.rng.uniform(0.5, 2, (1, c, 1, 1)).astype(np.float32))
        return self.op("Mul", [x, s])

    def gemm(self, x: str, fin: int, fout: int, name: str | None = None) -> str:
        name = name or self._out("fc")
        w = self._init(f"w_{name}", self.rng.normal(0, np.sqrt(1.0 / fin), (fout, fin)).astype(np.float32))
        b = self._init(f"b_{name}", self.rng.normal(0, 0.1, fout).astype(np.float32))
        self.nodes.append(helper.make_node("Gemm", [x, w, b], [name], name=name, transB=1))
        return name

    def model(self, outputs: list[str]) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(self.shape))],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 8
        inferred = onnx.shape_inference.infer_shapes(model)
        known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
        for out in model.graph.output:
            if out.name in known and known[out.name].type.tensor_type.HasField("shape"):
                out.type.CopyFrom(known[out.name].type)
        onnx.checker.check_model(model)
        return model


def run_onnx(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def masked_reference(model: onnx.ModelProto, result) -> onnx.ModelProto:
    """The original model with the removed channels zeroed where the next layer sums over them.

    This is what pruning must compute (without recovery): zeroing the producer's filter instead
    would be wrong, since a BN's beta would still feed the next layer.
    """
    ref = onnx.ModelProto()
    ref.CopyFrom(model)
    inits = {t.name: t for t in ref.graph.initializer}
    plan = result.plan
    for c in plan.consumers_changed():
        removed = np.setdiff1d(np.arange(plan.deps.tensors[c.data].shape[1]), plan.kept(c.data, 1))
        node = next(n for n in ref.graph.node if len(n.input) > 1 and n.input[1] == c.leaf)
        w = numpy_helper.to_array(inits[c.leaf]).copy()
        if node.op_type == "Conv":
            w[:, removed] = 0
        elif node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
            w[:, removed] = 0
        else:
            w[removed] = 0
        inits[c.leaf].CopyFrom(numpy_helper.from_array(w, c.leaf))
    return ref


def initializer_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    return {t.name: tuple(t.dims) for t in model.graph.initializer}
