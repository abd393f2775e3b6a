"""The standalone backend on the host: numerics against the TVM VM and onnxruntime, the C API's
contract (concurrent contexts, null and short buffers), the example program, and clear errors."""

from __future__ import annotations

import json
import subprocess
import threading

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from tvm.script import relax as R

import edgetvm
from edgetvm.backends.standalone import StandaloneLibrary, build_standalone, plan_static
from edgetvm.cli.main import main as cli_main
from edgetvm.errors import CompileError, InputError
from edgetvm.specs import ImportedModel, TensorSpec
from edgetvm.targets import resolve_target

from .standalone_models import (barrier_model, packed_call_model, parallel_model, parallel_reference,
                                pass_through_model, small_convnet)


def rel_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |a - e| / max |e|: the error relative to the tensor's scale."""
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-30))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small conv net compiled for the host and exported standalone (plus its VM as reference)."""
    model = small_convnet()
    compiled = edgetvm.compile(model, "host")
    out = tmp_path_factory.mktemp("small") / "small.so"
    compiled.export(out, standalone=True)
    return model, compiled, out


def test_export_writes_library_header_example_and_sidecar(small):
    _, _, so = small
    assert so.exists() and so.with_name("small.h").exists() and so.with_name("small_main.c").exists()
    meta = json.loads(so.with_name("small.so.json").read_text())
    assert meta["kind"] == "standalone"
    assert set(meta["files"]) == {"small.so", "small.h", "small_main.c"}
    # Only the model's API leaves the library: kernels and runtime hooks stay local.
    dynsym = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True, text=True, check=True).stdout
    exported = {line.split()[-1] for line in dynsym.splitlines() if line.split()[1] in "TDR"}
    assert "small_run_checked" in exported and "edgetvm_model_prefix" in exported
    assert not [s for s in exported if not (s.startswith("small_") or s == "edgetvm_model_prefix")]


def test_host_standalone_matches_vm_and_onnxruntime(small, rng):
    model, compiled, so = small
    runner = edgetvm.load(so)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for _ in range(3):
        x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
        got = runner.run_dict(x)
        vm = compiled.run_dict(x)
        ref = dict(zip(["y", "r1"], sess.run(None, {"x": x})))
        for name in ("y", "r1"):
            assert got[name].shape == ref[name].shape
            assert rel_error(got[name], vm[name]) <= 1e-5, name
            assert rel_error(got[name], ref[name]) <= 1e-4, name


def test_misaligned_input_is_staged(small, rng):
    _, compiled, so = small
    ctx = StandaloneLibrary(so).create_context(1)
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    raw = np.empty(x.size + 1, np.float32)
    shifted = raw[1:].reshape(x.shape)  # 4 bytes past a 64-byte boundary at best
    shifted[...] = x
    assert shifted.ctypes.data % 64 != 0
    (y, r1) = ctx.run([shifted])
    assert rel_error(y, compiled.run_dict(x)["y"]) <= 1e-5


def test_two_contexts_run_concurrently(small, rng):
    _, compiled, so = small
    library = StandaloneLibrary(so)
    inputs = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(2)]
    expected = [compiled.run_dict(x)["y"] for x in inputs]
    barrier = threading.Barrier(2)
    errors: list[str] = []

    def worker(k: int) -> None:
        ctx = library.create_context(2)
        barrier.wait()
        for _ in range(200):
            y, _ = ctx.run([inputs[k]])
            if rel_error(y, expected[k]) > 1e-5:
                errors.append(f"context {k}: wrong result")
                return
        ctx.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert not np.allclose(expected[0], expected[1])  # the two threads really computed different things


def test_null_and_short_buffers_are_refused(small, rng):
    _, _, so = small
    library = StandaloneLibrary(so)
    ctx = library.create_context(1)
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    y, r1 = np.empty((1, 10), np.float32), np.empty((1, 8, 8, 8), np.float32)
    sizes_in, sizes_out = [x.nbytes], [y.nbytes, r1.nbytes]
    ptr = lambda a: a.ctypes.data  # noqa: E731

    assert ctx.run_raw(None, [ptr(y), ptr(r1)], sizes_in, sizes_out) == -1
    assert "input array is NULL" in ctx.last_error()
    assert ctx.run_raw([ptr(x)], [ptr(y), None], sizes_in, sizes_out) == -1
    assert "output 1 (r1) is NULL" in ctx.last_error()
    assert ctx.run_raw([ptr(x)], None, sizes_in, sizes_out, checked=False) == -1
    assert ctx.run_raw([ptr(x)], [ptr(y), ptr(r1)], None, sizes_out) == -1
    assert "input_bytes" in ctx.last_error()

    # A short output buffer: an error, and not one byte written past (or into) it.
    guard = np.full(64, 7.0, np.float32)
    assert ctx.run_raw([ptr(x)], [ptr(guard), ptr(r1)], sizes_in, [4 * 9, r1.nbytes]) == -2
    assert "output 0 (y) has a buffer of 36 bytes, but the tensor needs 40 bytes" in ctx.last_error()
    assert np.all(guard == 7.0)
    assert ctx.run_raw([ptr(x)], [ptr(y), ptr(r1)], [x.nbytes - 1], sizes_out) == -2
    assert "input 0 (x)" in ctx.last_error()

    # The context still works after refusing, and clears the message.
    assert ctx.run_raw([ptr(x)], [ptr(y), ptr(r1)], sizes_in, sizes_out) == 0
    assert ctx.last_error() == ""

    # A NULL context: an error code, and last_error(NULL) still says why.
    run = library._run_checked
    assert run(None, None, None, None, None) == -1
    assert b"NULL" in library._last_error(None)

    # The Python runner turns the codes into edgetvm errors.
    with pytest.raises(InputError, match="buffer of"):
        ctx.run([x], [np.empty((1, 9), np.float32), r1])


def test_example_main_builds_and_runs(small, tmp_path, rng):
    _, compiled, so = small
    exe = tmp_path / "small_main"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(so.with_name("small_main.c")), f"-I{so.parent}",
                    str(so), f"-Wl,-rpath,{so.parent}"], check=True, capture_output=True)
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    x.tofile(tmp_path / "x.bin")
    proc = subprocess.run([str(exe), str(tmp_path / "x.bin"), str(tmp_path / "y.out"), str(tmp_path / "r1.out")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    y = np.fromfile(tmp_path / "y.out", np.float32).reshape(1, 10)
    assert rel_error(y, compiled.run_dict(x)["y"]) <= 1e-5
    # A truncated input file is refused with a message.
    (tmp_path / "short.bin").write_bytes(x.tobytes()[:-4])
    proc = subprocess.run([str(exe), str(tmp_path / "short.bin"), str(tmp_path / "y.out"), str(tmp_path / "r1.out")],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "expected exactly 3072 bytes" in proc.stderr


def test_parallel_kernels_with_workspace(tmp_path, rng):
    """Parallel loops go through TVMBackendParallelLaunch, the per-row buffer through the workspace hooks."""
    build = build_standalone(parallel_model().mod, parallel_model(), resolve_target("host"), tmp_path, "par")
    symbols = subprocess.run(["nm", str(build.objects.kernels)], capture_output=True, text=True).stdout
    assert "__TVMBackendParallelLaunch" in symbols and "__TVMBackendAllocWorkspace" in symbols
    library = StandaloneLibrary(build.so)
    x = rng.standard_normal((64, 512)).astype(np.float32)
    for threads in (1, 2, 3):
        ctx = library.create_context(threads)
        assert ctx.num_threads == threads
        for _ in range(5):
            (y,) = ctx.run([x])
            np.testing.assert_array_equal(y, parallel_reference(x))


def test_parallel_barrier_with_more_threads_than_cores(tmp_path):
    """Tasks are claimed, not assigned: a barrier completes even when some workers never get a core."""
    build = build_standalone(barrier_model().mod, barrier_model(), resolve_target("host"), tmp_path, "bar")
    assert "__TVMBackendParallelBarrier" in subprocess.run(["nm", str(build.objects.kernels)], capture_output=True,
                                                           text=True).stdout
    library = StandaloneLibrary(build.so)
    x = np.arange(64, dtype=np.float32)
    for threads in (2, 8):
        ctx = library.create_context(threads)
        for _ in range(300):
            (y,) = ctx.run([x])
            np.testing.assert_array_equal(y, 2 * x)


def test_two_multithreaded_contexts_of_parallel_kernels(tmp_path, rng):
    build = build_standalone(parallel_model().mod, parallel_model(), resolve_target("host"), tmp_path, "par")
    library = StandaloneLibrary(build.so)
    inputs = [rng.standard_normal((64, 512)).astype(np.float32) for _ in range(2)]
    errors: list[str] = []

    def worker(k: int) -> None:
        ctx = library.create_context(3)
        for _ in range(150):
            (y,) = ctx.run([inputs[k]])
            if not np.array_equal(y, parallel_reference(inputs[k])):
                errors.append(f"context {k}: wrong result")
                return

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_outputs_that_alias_inputs_and_views(tmp_path, rng):
    model = pass_through_model()
    build = build_standalone(model.mod, model, resolve_target("host"), tmp_path, "pt")
    ctx = StandaloneLibrary(build.so).create_context(1)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    x_copy, flat, y = ctx.run([x])
    np.testing.assert_array_equal(x_copy, x)
    np.testing.assert_array_equal(y, x + 1)
    np.testing.assert_array_equal(flat, (x + 1).reshape(32))


def test_arena_packing_shares_memory_only_between_disjoint_lifetimes():
    from edgetvm.backends.standalone.plan import _Region, pack_regions

    # a: calls 0-1, b: calls 1-2 (meets a at call 1), c: calls 2-3 (disjoint from a), d: 3-3.
    a, b, c, d = (_Region(0, 1024, 0, 1), _Region(1024, 512, 1, 2), _Region(1536, 1024, 2, 3),
                  _Region(2560, 64, 3, 3))
    size = pack_regions([a, b, c, d])
    for x, y in [(a, b), (b, c), (c, d)]:
        assert x.offset + x.nbytes <= y.offset or y.offset + y.nbytes <= x.offset, "live at once, yet overlapping"
    assert a.offset == c.offset == 0  # disjoint lifetimes reuse the same bytes
    assert d.offset == b.offset == 1024  # b and d never live at once either
    assert size == 1536  # instead of 2624 for separate storages
    assert all(r.offset % 64 == 0 for r in (a, b, c, d))


def test_cli_compile_standalone(tmp_path):
    model_path = tmp_path / "net.onnx"
    model_path.write_bytes(small_convnet(hw=8).SerializeToString())
    out = tmp_path / "out" / "net.so"
    assert cli_main(["compile", str(model_path), "-o", str(out), "--standalone"]) == 0
    assert out.exists() and out.with_name("net.h").exists() and out.with_name("net_main.c").exists()
    assert "int net_run_checked(net_ctx* ctx" in out.with_name("net.h").read_text()


def test_dynamic_shape_is_a_compile_error():
    @R.function
    def main(x: R.Tensor(("n", 4), "float32")):
        with R.dataflow():
            y = R.add(x, x)
            R.output(y)
        return y

    mod = tvm.IRModule({"main": main})
    imported = ImportedModel(mod, [TensorSpec("x", (1, 4), "float32")], [TensorSpec("y", (1, 4), "float32")],
                             "<dyn>", "tvmscript")
    target = resolve_target("host")
    from edgetvm.schedules.lower import legalize_and_fuse

    with pytest.raises(CompileError, match="input x has the dynamic shape"):
        plan_static(legalize_and_fuse(imported.mod, target), target)


def test_packed_call_is_a_compile_error():
    @R.function
    def main(x: R.Tensor((2, 4), "float32")):
        y = R.call_dps_packed("my_vendor_kernel", (x,), out_ty=R.Tensor((2, 4), "float32"))
        return y

    with pytest.raises(CompileError, match="'my_vendor_kernel'"):
        plan_static(tvm.IRModule({"main": main}), resolve_target("host"))


def test_kernel_calling_tvm_runtime_is_a_compile_error(tmp_path):
    """Such a kernel would link (TVM's hooks are weak pointers) and crash at run time: refuse it."""
    model = packed_call_model()
    with pytest.raises(CompileError, match="packed function.*my_vendor_op.*__TVMFFIFunctionCall"):
        build_standalone(model.mod, model, resolve_target("host"), tmp_path, "vendor")


class _RecordedPopen(subprocess.Popen):
    """subprocess.Popen that notes each command in ``events`` (build.py's compilers and nm)."""

    events: list = []
    started: list = []

    def __init__(self, args, *rest, **kwargs):
        super().__init__(args, *rest, **kwargs)
        _RecordedPopen.events.append(" ".join(map(str, args)))
        _RecordedPopen.started.append(self)


def _record_build(monkeypatch, kernel_build):
    from edgetvm.backends.standalone import build

    _RecordedPopen.events, _RecordedPopen.started = [], []
    monkeypatch.setattr(build.subprocess, "Popen", _RecordedPopen)

    def kernels(*args, **kwargs):
        _RecordedPopen.events.append("kernels")
        return kernel_build(*args, **kwargs)

    monkeypatch.setattr(build, "build_kernel_object", kernels)


def test_c_compiler_runs_while_the_kernels_build(tmp_path, rng, monkeypatch):
    """The runtime, decoder, model table and weights compile in other processes while TVM builds the
    kernels in this one (the second core of a 2-core machine), and the library is the one built
    step by step: the same outputs."""
    from edgetvm.backends.standalone import build

    _record_build(monkeypatch, build.build_kernel_object)
    model = parallel_model()
    built = build_standalone(model.mod, model, resolve_target("host"), tmp_path, "par")
    kernels = _RecordedPopen.events.index("kernels")
    for source in ("edgetvm_runtime.c", "edgetvm_huffman.c", "model.c", "weights.S"):
        assert any(source in event for event in _RecordedPopen.events[:kernels]), (source, _RecordedPopen.events)
    x = rng.standard_normal((64, 512)).astype(np.float32)
    (y,) = StandaloneLibrary(built.so).create_context(1).run([x])
    np.testing.assert_array_equal(y, parallel_reference(x))


def test_kernel_build_error_waits_for_the_c_compiler(tmp_path, monkeypatch):
    """A kernel build that fails leaves no compiler running behind the error it raises."""
    def failing(*args, **kwargs):
        raise CompileError("TVM failed to compile the kernels for host: test")

    _record_build(monkeypatch, failing)
    model = parallel_model()
    with pytest.raises(CompileError, match="test"):
        build_standalone(model.mod, model, resolve_target("host"), tmp_path, "par")
    assert len(_RecordedPopen.started) == 4
    assert all(proc.returncode is not None for proc in _RecordedPopen.started)
