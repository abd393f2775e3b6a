"""pose_landmark_full's segmentation output: why edgetvm cannot match LiteRT within 1e-4 there.

``Identity_2`` (256x256 segmentation logits, up to |1.7e3|) comes out of a decoder whose weights
amplify float32 rounding. Measured by making intermediate tensors the model's outputs and running
edgetvm, LiteRT with XNNPACK and LiteRT's builtin kernels on the astronaut / Grace Hopper: all three
agree within 3.4e-5 up to ``add_23`` (op 198, 128x128x8); the next op, a 3x3 depthwise convolution +
ReLU6 (op 201, weights up to |79| on inputs up to 12, outputs clipped to 6), leaves them 6.7e-5 /
3.8e-4 apart (LiteRT against itself) and 9.2e-5 / 2.6e-4 (edgetvm against either); the 256x256
blocks after it and the final 3x3 convolution (weights up to |85|) keep that level: on Identity_2
LiteRT's two paths differ by 4.7e-4 / 2.4e-3, edgetvm is 5.5e-4 / 7.7e-4 from XNNPACK and 9.1e-5 /
1.6e-3 from the builtin kernels. LiteRT's own output moves by 1.5e-4 when its input moves by 1e-7
relative (about one float32 ulp). No float32 evaluation in another summation order can hold 1e-4
on that output; the other four outputs hold it (<= 4e-5).
"""

from __future__ import annotations

import numpy as np
import pytest
import tflite

import edgetvm
from edgetvm.data import Preprocess, image_to_input, read_image
from edgetvm.zoo import PREPROCESSING, fetch, load_astronaut

from .checks import litert_outputs, relative_error

SEGMENTATION = "Identity_2"


@pytest.fixture(scope="module")
def pose_landmark():
    path = fetch("pose_landmark_full")
    compiled = edgetvm.compile(path, "host")
    preprocess = Preprocess.coerce(PREPROCESSING["pose_landmark_full"])
    images = [load_astronaut(), read_image(fetch("grace_hopper"))]
    return path, compiled, [image_to_input(image, compiled.inputs[0], preprocess=preprocess) for image in images]


def test_segmentation_output_amplifies_one_ulp_of_input_noise(pose_landmark):
    path, _, (x, _) = pose_landmark
    noisy = (x * (1 + 1e-7 * np.random.default_rng(0).standard_normal(x.shape))).astype(np.float32)
    clean, moved = litert_outputs(path, x, xnnpack=False), litert_outputs(path, noisy, xnnpack=False)
    change = {name: relative_error(moved[name], clean[name]) for name in clean}
    assert change[SEGMENTATION] > 1e-4
    assert max(v for name, v in change.items() if name != SEGMENTATION) < 2e-5


def test_edgetvm_within_goal_or_litert_own_spread(pose_landmark):
    """Worst over the two images: every other output within 1e-4 of LiteRT (XNNPACK, its default);
    on the segmentation, edgetvm is no farther from either LiteRT path than they are from each other."""
    path, compiled, xs = pose_landmark
    runs = [(compiled.run_dict(x), litert_outputs(path, x), litert_outputs(path, x, xnnpack=False)) for x in xs]
    for name in runs[0][1]:
        ours_xnnpack = max(relative_error(ours[name], xnnpack[name]) for ours, xnnpack, _ in runs)
        if name != SEGMENTATION:
            assert ours_xnnpack <= 1e-4, name
            continue
        spread = max(relative_error(builtin[name], xnnpack[name]) for _, xnnpack, builtin in runs)
        ours_builtin = max(relative_error(ours[name], builtin[name]) for ours, _, builtin in runs)
        assert ours_xnnpack > 1e-4  # what issue 17 reported: the goal does not hold here
        assert max(ours_xnnpack, ours_builtin) <= spread


def with_output_of_op(data: bytes, op_index: int, output_position: int = 2) -> tuple[bytes, str]:
    """The model with its ``output_position``-th output replaced, in place, by op ``op_index``'s first
    output (an int32 of SubGraph.outputs): (new file, that tensor's name)."""
    model = tflite.Model.GetRootAsModel(data, 0)
    subgraph = model.Subgraphs(0)
    tensor = int(subgraph.Operators(op_index).Outputs(0))
    table = subgraph._tab
    start = table.Vector(table.Offset(8))  # SubGraph field 2: outputs
    buf = bytearray(data)
    buf[start + 4 * output_position:start + 4 * output_position + 4] = np.int32(tensor).tobytes()
    return bytes(buf), subgraph.Tensors(tensor).Name().decode()


@pytest.mark.parametrize("op_index, spread_over_1e4", [(198, False), (201, True)])
def test_spread_is_born_at_the_128x128_depthwise(pose_landmark, tmp_path, op_index, spread_over_1e4):
    """Up to add_23 (op 198) edgetvm and both LiteRT paths agree within 1e-4; after the depthwise
    convolution that reads it (op 201) LiteRT's two paths alone are over 1e-4 apart."""
    path, _, xs = pose_landmark
    data, name = with_output_of_op(path.read_bytes(), op_index)
    probe = tmp_path / f"pose_landmark_op{op_index}.tflite"
    probe.write_bytes(data)
    compiled = edgetvm.compile(probe, "host")
    runs = [(compiled.run_dict(x), litert_outputs(probe, x), litert_outputs(probe, x, xnnpack=False)) for x in xs]
    spread = max(relative_error(builtin[name], xnnpack[name]) for _, xnnpack, builtin in runs)
    ours = max(relative_error(o[name], ref[name]) for o, xnnpack, builtin in runs for ref in (xnnpack, builtin))
    assert (spread > 1e-4) == spread_over_1e4
    assert ours <= max(spread, 1e-4)
