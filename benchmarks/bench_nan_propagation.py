"""ARM instructions per inference with and without the NaN-keeping legalizations of relu and clip.

    .venv/bin/python benchmarks/bench_nan_propagation.py [--models mobilenet_v2_96,small_convnet]

schedules/nan_propagation.py writes relu/clip as ``max(c, x)`` instead of TOPI's ``max(x, c)`` so that
a NaN input comes out NaN (issue 20). This builds each model standalone for cortex-a7 both ways and
counts guest instructions per inference under qemu-arm (``edgetvm.emulate.instructions_per_inference``),
and whether an all-NaN input gives all-NaN outputs. Prints one JSON table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import edgetvm
from edgetvm import emulate
from edgetvm.schedules import lower
from edgetvm.zoo.architectures import mobilenet_v2


def relu_convnet(hw: int = 56) -> onnx.ModelProto:
    """conv3x3 + Relu -> depthwise 3x3 + Clip(0, 6) -> 1x1 conv + Relu: relu and ReLU6 epilogues."""
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    inits = [weight("w1", 16, 3, 3, 3), weight("w2", 16, 1, 3, 3), weight("w3", 32, 16, 1, 1),
             numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=16),
             helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["c3"]),
             helper.make_node("Relu", ["c3"], ["y"])]
    graph = helper.make_graph(nodes, "relu_convnet",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, hw, hw])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


MODELS = {
    "relu_convnet_56": (relu_convnet, None),
    "mobilenet_v2_96": (mobilenet_v2, {"input": (1, 3, 96, 96)}),
}


def measure(name: str, workdir: Path, nan_keeping: bool) -> dict:
    build, shapes = MODELS[name]
    saved = lower.NAN_PROPAGATING_LEGALIZATIONS
    if not nan_keeping:
        lower.NAN_PROPAGATING_LEGALIZATIONS = {}
    try:
        compiled = edgetvm.compile(build(), "cortex-a7", input_shapes=shapes)
    finally:
        lower.NAN_PROPAGATING_LEGALIZATIONS = saved
    so = workdir / f"{name}_{'nan' if nan_keeping else 'topi'}.so"
    compiled.export(so, standalone=True)
    spec = compiled.inputs[0]
    x = np.random.default_rng(0).standard_normal(spec.shape).astype(np.float32)
    count = emulate.instructions_per_inference(so, [x], cpu=compiled.target.qemu_cpu)
    nan_out = emulate.run_standalone_arm(so, [np.full_like(x, np.nan)], cpu=compiled.target.qemu_cpu).outputs
    return {"instructions": count, "all_nan_in_all_nan_out": bool(all(np.isnan(o).all() for o in nan_out))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetvm-bench-nan-") as tmp:
        for name in args.models.split(","):
            before = measure(name, Path(tmp), nan_keeping=False)
            after = measure(name, Path(tmp), nan_keeping=True)
            rows.append({"model": name, "target": "cortex-a7", "topi_max_x_c": before, "nan_keeping_max_c_x": after,
                         "instruction_ratio": round(after["instructions"] / before["instructions"], 4)})
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
