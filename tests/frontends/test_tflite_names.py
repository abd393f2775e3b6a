"""A TFLite model's values keep its own tensor names through import (issue 20): the quantization
report and ``--keep-float`` speak of ``conv2d_3``, the name Netron and LiteRT show, not ``lv7``."""

from __future__ import annotations

import numpy as np
import pytest
from tvm import relax

import edgetvm
from edgetvm.frontends import load_model
from edgetvm.frontends.tflite import op_names, parse_tflite, read_tflite
from edgetvm.quantization.annotate import AUTO_NAME
from edgetvm.quantization.quantize import LayoutKeptFloatWarning
from edgetvm.relax_utils import op_name
from edgetvm.zoo import fetch


def conv_bindings(mod) -> list[str]:
    return [str(b.var.name) for block in mod["main"].body.blocks for b in block.bindings
            if op_name(b.value) == "relax.nn.conv2d"]


def test_each_conv_is_bound_under_its_ops_output_tensor_name():
    model = fetch("blazeface")
    tfl = parse_tflite(*read_tflite(model))
    conv_outputs = {name for code, name in op_names(tfl, tfl.Subgraphs(0))
                    if code in ("CONV_2D", "DEPTHWISE_CONV_2D")}
    names = conv_bindings(load_model(model).mod)
    assert len(names) == len(conv_outputs) == 37
    assert set(names) == conv_outputs


def test_int8_on_nhwc_convs_warns_and_reports_tflite_names(rng):
    sample = rng.uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)
    with pytest.warns(LayoutKeptFloatWarning, match="37 conv2d op.s. in layout NHWC/HWIO stay float"):
        compiled = edgetvm.compile("zoo:blazeface", quantize="int8", calibration=[sample])
    details = compiled.report.details["quantize"]
    skipped = [row.split(":")[0] for row in details["skipped"]]
    assert len(skipped) == 37 and not any(AUTO_NAME.fullmatch(name) for name in skipped)
    assert "conv2d" in skipped and "depthwise_conv2d" in skipped
