"""benchmarks/bench_frontends.py on its cheapest rows: a builtin-only model compiled for the host and
compared with LiteRT, and a model with an op edgetvm lacks reported as refused with the op's name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from edgetvm.zoo import ASSETS, fetch

from ..frontends.test_errors import blazeface_with_ops_replaced

_SPEC = importlib.util.spec_from_file_location(
    "bench_frontends", Path(__file__).resolve().parents[2] / "benchmarks" / "bench_frontends.py")
bench_frontends = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_frontends)


def test_the_fourteen_mediapipe_files_have_zoo_rows():
    members = {ASSETS[name].member for name in bench_frontends.MEDIAPIPE_MODELS}
    assert len(members) == 14 and all(m.startswith("mediapipe/modules/") and m.endswith(".tflite") for m in members)


def test_builtin_model_row(tmp_path):
    row = bench_frontends.bench_model("hand_recrop", "armv7-neon", arm=False, workdir=tmp_path)
    assert row["status"] == "ok" and list(row["host_max_rel_error"]) == ["output_crop"]
    assert 0 < row["host_max_rel_error"]["output_crop"] <= 1e-4
    assert row["ratio_to_goal"] == round(row["host_max_rel_error"]["output_crop"] / 1e-4, 4)


def test_model_with_an_unsupported_op_is_refused_with_the_op_name(tmp_path, monkeypatch):
    from tflite.BuiltinOperator import BuiltinOperator as Op

    mutant = tmp_path / "blazeface_rnn.tflite"
    mutant.write_bytes(blazeface_with_ops_replaced(fetch("blazeface").read_bytes(), {Op.PAD: Op.RNN}))
    monkeypatch.setattr(bench_frontends, "fetch", lambda name: mutant)
    row = bench_frontends.bench_model("blazeface", "armv7-neon", arm=False, workdir=tmp_path)
    assert row["status"] == "refused" and row["unsupported_ops"] == ["RNN"]
