"""The dependency analysis on small graphs: one per dependency kind, and the cases tracing pruners
get wrong. Each pruned model is also checked numerically: it must equal the original with the
removed channels zeroed at the next layer's input (onnxruntime on both)."""

from __future__ import annotations

import numpy as np
import pytest

from edgetvm.pruning.dependencies import analyze_channel_dependencies, reshape_axis_map
from edgetvm.pruning.prune import prune_model

from .nets import Net, import_named, initializer_shapes, masked_reference, run_onnx


def analyze(model):
    func, weights = import_named(model)
    return analyze_channel_dependencies(func, weights)


def group_of(deps, layer: str):
    found = [g for g in deps.groups if layer in {p.layer for p in g.producers}]
    assert len(found) == 1, [g.name for g in deps.groups]
    return found[0]


def check_matches_masked(model, ratio=0.5, rng=None, **kwargs):
    pruned = prune_model(model, ratio, recover=False, **kwargs)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = (rng or np.random.default_rng(0)).normal(size=shape).astype(np.float32)
    want = run_onnx(masked_reference(model, pruned.result), x)
    got = run_onnx(pruned.onnx, x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(w).max())))
    return pruned


def test_single_output_channel_conv_is_not_depthwise():
    # Torch-Pruning ties in/out channels of a conv with one output channel as if it were depthwise.
    net = Net()
    x = net.prelu(net.bn(net.conv("x", 3, 8, name="body"), 8), 8)
    attention = net.op("Sigmoid", [net.conv(x, 8, 1, name="att")])
    y = net.op("Mul", [x, attention])
    out = net.conv(y, 8, 4, name="head")
    model = net.model([out])
    deps = analyze(model)
    body = group_of(deps, "w_body")
    assert body.prunable and len(body.units) == 8
    single = group_of(deps, "w_att")
    assert len(single.units) == 1
    pruned = check_matches_masked(model)
    shapes = initializer_shapes(pruned.onnx)
    assert shapes["w_body"] == (4, 3, 3, 3)
    assert shapes["w_att"] == (1, 4, 3, 3)  # input channels follow body; its one output stays
    assert shapes["w_head"] == (4, 4, 3, 3)


def test_concat_of_a_tensor_with_itself():
    net = Net()
    a = net.op("Relu", [net.conv("x", 3, 8, name="a")])
    cat = net.op("Concat", [a, a], axis=1)
    out = net.conv(cat, 16, 4, name="head")
    model = net.model([out])
    deps = analyze(model)
    group = group_of(deps, "w_a")
    assert len(group.units) == 8
    for c, unit in enumerate(group.units):
        # channel c of `a` is channels c and c + 8 of the concat: removed together
        copies = sorted(i for k, ax, i in unit if ax == 1 and deps.tensors[k].kind == "activation"
                        and deps.tensors[k].shape[1] == 16)
        assert copies == [c, c + 8]
    pruned = check_matches_masked(model)
    assert initializer_shapes(pruned.onnx)["w_head"] == (4, 8, 3, 3)


def test_concat_of_branches_of_different_widths():
    net = Net()
    a = net.prelu(net.bn(net.conv("x", 3, 8, name="a"), 8), 8)
    b = net.op("Relu", [net.conv("x", 3, 16, name="b")])
    cat = net.op("Concat", [a, b], axis=1)
    out = net.conv(cat, 24, 4, k=1, name="head")
    model = net.model([out])
    deps = analyze(model)
    assert len(group_of(deps, "w_a").units) == 8 and len(group_of(deps, "w_b").units) == 16
    pruned = check_matches_masked(model)
    shapes = initializer_shapes(pruned.onnx)
    assert shapes["w_a"][0] == 4 and shapes["w_b"][0] == 8 and shapes["w_head"] == (4, 12, 1, 1)


@pytest.mark.parametrize("flatten", ["Flatten", "Reshape"])
def test_flatten_into_dense_prunes_whole_spatial_blocks(flatten):
    net = Net()
    y = net.op("Relu", [net.bn(net.conv("x", 3, 8, stride=2, name="body"), 8)])  # [1, 8, 4, 4]
    if flatten == "Flatten":
        flat = net.op("Flatten", [y], axis=1)
    else:
        flat = net.op("Reshape", [y, net._init("shape", np.array([1, 128], np.int64))])
    out = net.gemm(flat, 128, 10, name="fc")
    model = net.model([out])
    group = group_of(analyze(model), "w_body")
    assert group.prunable and len(group.units) == 8
    # a channel of the conv is 4*4 features of the dense layer
    assert all(len(unit) > 16 for unit in group.units)
    pruned = check_matches_masked(model)
    assert initializer_shapes(pruned.onnx)["w_fc"] == (10, 64)
    if flatten == "Reshape":
        shape = next(t for t in pruned.onnx.graph.initializer if t.name == "shape")
        assert list(np.frombuffer(shape.raw_data, np.int64)) == [1, 64]


def test_depthwise_between_two_pointwise_convs():
    net = Net()
    e = net.prelu(net.bn(net.conv("x", 3, 16, k=1, name="expand"), 16), 16)
    d = net.prelu(net.bn(net.conv(e, 16, 16, groups=16, name="dw", bias=False), 16), 16)
    out = net.conv(d, 16, 8, k=1, name="project")
    model = net.model([out])
    group = group_of(analyze(model), "w_expand")
    assert group.prunable and len(group.units) == 16
    pruned = check_matches_masked(model)
    shapes = initializer_shapes(pruned.onnx)
    assert shapes["w_dw"] == (8, 1, 3, 3) and shapes["w_project"] == (8, 8, 1, 1)
    dw = next(n for n in pruned.onnx.graph.node if n.name == "dw")
    assert next(a.i for a in dw.attribute if a.name == "group") == 8


def test_residual_chain_is_one_group():
    net = Net()
    a = net.op("Relu", [net.conv("x", 3, 8, name="c0")])
    b = net.op("Add", [net.bn(net.conv(a, 8, 8, name="c1"), 8), a])
    c = net.op("Add", [net.scale(net.conv(b, 8, 8, name="c2"), 8), b])
    out = net.conv(c, 8, 4, name="head")
    model = net.model([out])
    group = group_of(analyze(model), "w_c0")
    assert {p.layer for p in group.producers} == {"w_c0", "w_c1", "w_c2"}
    pruned = check_matches_masked(model)
    shapes = initializer_shapes(pruned.onnx)
    assert shapes["w_c0"][0] == shapes["w_c1"][0] == shapes["w_c2"][0] == 4
    assert shapes["w_c1"][1] == shapes["w_c2"][1] == 4


def test_split_on_channels():
    net = Net()
    y = net.op("Relu", [net.conv("x", 3, 16, name="body")])
    sizes = net._init("sizes", np.array([8, 8], np.int64))
    net.nodes.append(__import__("onnx").helper.make_node("Split", [y, sizes], ["s0", "s1"], name="split", axis=1))
    out = net.op("Add", [net.conv("s0", 8, 4, name="left"), net.conv("s1", 8, 4, name="right")])
    model = net.model([out])
    # channels 0..7 only reach `left`, 8..15 only `right`: two groups of one layer
    groups = [g for g in analyze(model).groups if "w_body" in {p.layer for p in g.producers}]
    assert len(groups) == 2 and all(g.prunable and len(g.units) == 8 for g in groups)
    pruned = check_matches_masked(model)
    split = next(t for t in pruned.onnx.graph.initializer if t.name.endswith("pruned_split"))
    assert sum(np.frombuffer(split.raw_data, np.int64)) == 8


def test_unknown_and_grouped_ops_are_reported_not_guessed():
    net = Net()
    a = net.conv("x", 3, 8, name="soft")
    s = net.op("Softmax", [a], axis=1)  # mixes channels
    g = net.conv("x", 3, 8, name="pre_grouped")
    grouped = net.conv(g, 8, 8, groups=2, name="grouped")
    out = net.op("Add", [net.conv(s, 8, 4, name="h1"), net.conv(grouped, 8, 4, name="h2")])
    model = net.model([out])
    deps = analyze(model)
    soft = group_of(deps, "w_soft")
    assert not soft.prunable and any("softmax" in why for why in soft.blocked)
    pre = group_of(deps, "w_pre_grouped")
    assert not pre.prunable and any("groups=2" in why for why in pre.blocked)
    pruned = prune_model(model, 0.5, recover=False)
    assert initializer_shapes(pruned.onnx) == initializer_shapes(model)
    blocked = {layer for b in pruned.report["blocked"] for layer in b["layers"]}
    assert {"w_soft", "w_pre_grouped"} <= blocked


def test_reshape_axis_map():
    assert reshape_axis_map((1, 16, 8, 8), (1, 1024), 1) == (1, 64)  # flatten
    assert reshape_axis_map((1, 8, 1, 1), (1, 8), 1) == (1, 1)
    assert reshape_axis_map((8,), (1, 8, 1, 1), 1) == (0, 1)
    assert reshape_axis_map((1, 64), (1, 4, 4, 4), 1) == (1, -16)  # unflatten
    assert reshape_axis_map((1, 8, 4, 4), (8, 16), 1) is None or reshape_axis_map((1, 8, 4, 4), (8, 16), 1)[0] != 1


def test_slice_of_channels():
    net = Net()
    y = net.op("Relu", [net.conv("x", 3, 16, name="body")])
    starts, ends, axes = (net._init(n, np.array([v], np.int64)) for n, v in (("st", 4), ("en", 12), ("ax", 1)))
    middle = net.op("Slice", [y, starts, ends, axes])
    out = net.op("Add", [net.conv(middle, 8, 4, name="mid"), net.conv(y, 16, 4, name="all")])
    model = net.model([out])
    # channels 4..11 also reach `mid`: a group of their own
    groups = [g for g in analyze(model).groups if "w_body" in {p.layer for p in g.producers}]
    assert sorted(len(g.units) for g in groups) == [8, 8] and all(g.prunable for g in groups)
    pruned = check_matches_masked(model)
    kept = pruned.result.plan.kept("w_body", 0)
    assert initializer_shapes(pruned.onnx)["w_mid"][1] == int(np.sum((kept >= 4) & (kept < 12)))
