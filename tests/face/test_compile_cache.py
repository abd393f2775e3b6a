"""The face networks' persistent compile cache (face/compile_cache.py) and the face commands' input
checks: what a second `edgetvm face ...` process finds, and what fails before anything compiles."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgetvm
from edgetvm.face import compile_cache
from edgetvm.zoo import fetch

# The cache key holds a digest of edgetvm's sources, and other work may edit them between the two
# processes of a test: the processes pin it, so that what is tested is the cache, not the tree's stillness.
PINNED_CLI = ("import sys\n"
              "from edgetvm.face import compile_cache\n"
              "compile_cache.source_digest = lambda: 'pinned'\n"
              "{patch}"
              "from edgetvm.cli.main import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
SMALL = ["--detector-size", "160x160", "--recognizer", "mobilefacenet", "--threads", "1"]


def _cache_env(tmp_path: Path) -> dict:
    """EDGETVM_CACHE in ``tmp_path`` holding the real models and images (linked, not fetched again)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("retinaface", "astronaut", "grace_hopper"):
        path = fetch(name)
        (cache / path.name).symlink_to(path)
    env = dict(os.environ, EDGETVM_CACHE=str(cache))
    env.pop("EDGETVM_COMPILE_CACHE", None)
    return env


def _face(env: dict, *args: str, patch: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PINNED_CLI.format(patch=patch), "face", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def _entries(env: dict) -> dict[str, float]:
    root = Path(env["EDGETVM_CACHE"]) / "compiled"
    return {p.name: p.stat().st_mtime for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} \
        if root.exists() else {}


def test_second_face_command_loads_the_networks_from_the_cache(tmp_path):
    env = _cache_env(tmp_path)
    a, b = str(fetch("astronaut")), str(fetch("grace_hopper"))
    first = _face(env, "verify", a, b, *SMALL)
    assert first.returncode == 0, first.stderr
    entries = _entries(env)
    assert len(entries) == 2  # the detector and the recognizer, each a model.so with its sidecar
    for name in entries:
        files = sorted(p.name for p in (Path(env["EDGETVM_CACHE"]) / "compiled" / name).iterdir())
        assert files == ["model.so", "model.so.json"]
    time.sleep(0.05)
    # A new process, other images: nothing compiled (compile() fails if called), both entries used.
    second = _face(env, "verify", b, a, *SMALL,
                   patch="import edgetvm.api\n"
                         "def refuse(*a, **k): raise SystemExit('compiled although cached')\n"
                         "edgetvm.api.compile = refuse\n")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    after = _entries(env)
    assert after.keys() == entries.keys() and all(after[k] > entries[k] for k in entries)  # touched: LRU order
    # --no-cache compiles again and leaves the cache alone.
    third = _face(env, "detect", a, "--detector-size", "160x160", "--threads", "1", "--no-cache")
    assert third.returncode == 0, third.stderr
    assert _entries(env) == after


def _tiny_model(seed: int) -> onnx.ModelProto:
    w = np.random.default_rng(seed).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                              initializer=[numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_entry_is_compiled_once_checked_and_replaced_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGETVM_CACHE", str(tmp_path))
    model = _tiny_model(0)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    compiles = []

    def compile_fn():
        compiles.append(1)
        return edgetvm.compile(model)

    key = compile_cache.entry_key(compile_cache.model_digest(model), {"what": "tiny"})
    expected = edgetvm.compile(model)(x)
    np.testing.assert_array_equal(compile_cache.cached_runner(key, compile_fn)(x), expected)
    np.testing.assert_array_equal(compile_cache.cached_runner(key, compile_fn)(x), expected)
    assert len(compiles) == 1
    # A damaged library fails edgetvm.load's SHA-256 check: the entry is compiled again, not run.
    library = tmp_path / "compiled" / key / "model.so"
    data = library.read_bytes()
    library.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    said = []
    np.testing.assert_array_equal(compile_cache.cached_runner(key, compile_fn, say=said.append)(x), expected)
    assert len(compiles) == 2 and any("unusable" in line for line in said)


def test_key_covers_model_options_and_versions(monkeypatch):
    a, b = (compile_cache.model_digest(_tiny_model(seed)) for seed in (0, 1))
    assert a != b
    base = compile_cache.entry_key(a, {"options": {"quantize": "int8"}, "num_threads": 1})
    assert base == compile_cache.entry_key(a, {"num_threads": 1, "options": {"quantize": "int8"}})
    assert base != compile_cache.entry_key(b, {"options": {"quantize": "int8"}, "num_threads": 1})
    assert base != compile_cache.entry_key(a, {"options": {}, "num_threads": 1})
    monkeypatch.setattr(compile_cache, "__version__", "9.9.9")
    assert base != compile_cache.entry_key(a, {"options": {"quantize": "int8"}, "num_threads": 1})
    # Calibration arrays given by the caller have no stable text: no entry, compiled as before.
    assert compile_cache.entry_key(a, {"options": {"calibration": [np.zeros(3)]}}) is None


def test_least_recently_used_entries_go_first(tmp_path):
    for i, name in enumerate(["old", "mid", "new"]):
        entry = tmp_path / name
        entry.mkdir()
        (entry / "model.so").write_bytes(b"x" * 1000)
        os.utime(entry, (1000 + i, 1000 + i))
    abandoned, writing = tmp_path / ".abandoned.x", tmp_path / ".writing.y"  # staging dirs of dead / live writers
    for staging, age in ((abandoned, 7 * 3600), (writing, 5)):
        staging.mkdir()
        (staging / "model.so").write_bytes(b"x" * 5000)
        os.utime(staging, (time.time() - age, time.time() - age))
    removed = compile_cache.evict(tmp_path, 2000, keep=tmp_path / "old")
    assert [p.name for p in removed] == ["mid"]  # "old" was just written (kept), "mid" is the oldest other
    assert sorted(p.name for p in tmp_path.iterdir()) == [".writing.y", "new", "old"]


@pytest.mark.parametrize("command", [["verify", "GOOD", "BAD"], ["verify", "BAD", "GOOD"], ["detect", "BAD"],
                                     ["embed", "BAD"]])
def test_bad_image_fails_before_any_network_compiles(tmp_path, command):
    bad = tmp_path / "notanimage.jpg"
    bad.write_text("not an image")
    args = [str(bad) if a == "BAD" else str(fetch("astronaut")) if a == "GOOD" else a for a in command]
    proc = _face(dict(os.environ), *args, "--no-cache",
                 patch="import edgetvm.api\n"
                       "def refuse(*a, **k): raise SystemExit('compiled before checking the images')\n"
                       "edgetvm.api.compile = refuse\n")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"edgetvm: error: {bad}: not an image Pillow can read (cannot identify image file '{bad}'); give a JPEG, "
        f"PNG, BMP or PPM file"]


def test_missing_image_fails_before_any_network_compiles(tmp_path):
    proc = _face(dict(os.environ), "verify", str(fetch("astronaut")), str(tmp_path / "nope.png"),
                 patch="import edgetvm.api\n"
                       "def refuse(*a, **k): raise SystemExit('compiled before checking the images')\n"
                       "edgetvm.api.compile = refuse\n")
    assert proc.returncode == 2 and f"{tmp_path / 'nope.png'}: no such image file" in proc.stderr
