"""Load a host-built standalone module with ctypes: tests compare it against the TVM VM.

The library describes itself (``edgetvm_model_prefix`` and the ``<prefix>_input_*`` queries), so
loading needs nothing but the file. ctypes releases the GIL during the call, so contexts run in
parallel from Python threads.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import numpy as np

from ...artifact import Runner
from ...errors import ArtifactError, InputError
from ...specs import TensorSpec
from ..content_path import content_path

STATUS = {0: "ok", -1: "bad argument", -2: "buffer too small", -3: "kernel error", -4: "out of memory"}


class StandaloneLibrary:
    """A standalone ``.so`` loaded into this process."""

    def __init__(self, path: str | os.PathLike, *, load_from: str | os.PathLike | None = None):
        """``load_from``: the file dlopen reads, a content-named copy of ``path`` (see content_path.py)."""
        self.path = Path(path)
        try:
            self._lib = ctypes.CDLL(str(Path(load_from or path).resolve()))
            prefix_fn = self._lib.edgetvm_model_prefix
        except (OSError, AttributeError) as exc:
            raise ArtifactError(f"{path}: not a loadable edgetvm standalone library for this machine ({exc})") from None
        prefix_fn.restype = ctypes.c_char_p
        self.prefix = prefix_fn().decode()
        fn = self._fn
        self._create = fn("create_with_threads", ctypes.c_void_p, [ctypes.c_int])
        self._create_error = fn("create_error", ctypes.c_char_p, [])
        self._destroy = fn("destroy", None, [ctypes.c_void_p])
        ptrs = ctypes.POINTER(ctypes.c_void_p)
        sizes = ctypes.POINTER(ctypes.c_size_t)
        self._run = fn("run", ctypes.c_int, [ctypes.c_void_p, ptrs, ptrs])
        self._run_checked = fn("run_checked", ctypes.c_int, [ctypes.c_void_p, ptrs, sizes, ptrs, sizes])
        self._last_error = fn("last_error", ctypes.c_char_p, [ctypes.c_void_p])
        self.num_threads_of = fn("num_threads", ctypes.c_int, [ctypes.c_void_p])
        self.arena_bytes = fn("arena_bytes", ctypes.c_size_t, [])()
        self.inputs = self._specs("input")
        self.outputs = self._specs("output")

    def _fn(self, name: str, restype, argtypes):
        try:
            f = getattr(self._lib, f"{self.prefix}_{name}")
        except AttributeError:
            raise ArtifactError(f"{self.path}: the library lacks {self.prefix}_{name}; re-export it") from None
        f.restype = restype
        f.argtypes = argtypes
        return f

    def _specs(self, kind: str) -> list[TensorSpec]:
        count = self._fn(f"num_{kind}s", ctypes.c_int, [])()
        name = self._fn(f"{kind}_name", ctypes.c_char_p, [ctypes.c_int])
        dtype = self._fn(f"{kind}_dtype", ctypes.c_char_p, [ctypes.c_int])
        ndim = self._fn(f"{kind}_ndim", ctypes.c_int, [ctypes.c_int])
        shape = self._fn(f"{kind}_shape", ctypes.POINTER(ctypes.c_int64), [ctypes.c_int])
        return [TensorSpec(name(i).decode(), tuple(shape(i)[d] for d in range(ndim(i))), dtype(i).decode())
                for i in range(count)]

    def create_context(self, num_threads: int | None = None) -> "StandaloneContext":
        """A context with its own arena and threads (None: the library's default thread count)."""
        handle = self._create(int(num_threads or 0))
        if not handle:  # ctypes runs both calls in this thread: the error is this create's
            raise ArtifactError(f"{self.path}: {self.prefix}_create failed: {self._create_error().decode()}")
        return StandaloneContext(self, handle)


class StandaloneContext:
    """One ``<prefix>_ctx``: run it from one thread at a time; make one per thread."""

    def __init__(self, library: StandaloneLibrary, handle: int):
        self.library = library
        self._handle = handle

    @property
    def num_threads(self) -> int:
        return self.library.num_threads_of(self._handle)

    def last_error(self) -> str:
        return (self.library._last_error(self._handle) or b"").decode()

    def run_raw(self, inputs: list, outputs: list, input_bytes: list[int] | None = None,
                output_bytes: list[int] | None = None, *, checked: bool = True) -> int:
        """Call ``<prefix>_run_checked`` (or ``_run``) with raw pointers (ints or None); returns the status code.

        ``inputs``/``outputs`` may be None to pass a NULL array (the C API must refuse it).
        """
        def array(items, ctype):
            return None if items is None else (ctype * max(len(items), 1))(*items)

        in_ptrs, out_ptrs = array(inputs, ctypes.c_void_p), array(outputs, ctypes.c_void_p)
        if not checked:
            return self.library._run(self._handle, in_ptrs, out_ptrs)
        return self.library._run_checked(self._handle, in_ptrs, array(input_bytes, ctypes.c_size_t), out_ptrs,
                                         array(output_bytes, ctypes.c_size_t))

    def run(self, inputs: list[np.ndarray], outputs: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """One inference on contiguous arrays; outputs are allocated unless given."""
        lib = self.library
        if outputs is None:
            outputs = [np.empty(spec.shape, spec.dtype) for spec in lib.outputs]
        arrays = [*inputs, *outputs]
        for arr in arrays:
            if not arr.flags.c_contiguous:
                raise InputError(f"{lib.path}: buffers must be C-contiguous (np.ascontiguousarray)")
        n = len(inputs)
        addresses = [a.__array_interface__["data"][0] for a in arrays]
        nbytes = [a.nbytes for a in arrays]
        status = lib._run_checked(self._handle, (ctypes.c_void_p * max(n, 1))(*addresses[:n]),
                                  (ctypes.c_size_t * max(n, 1))(*nbytes[:n]),
                                  (ctypes.c_void_p * len(outputs))(*addresses[n:]),
                                  (ctypes.c_size_t * len(outputs))(*nbytes[n:]))
        if status != 0:
            message = f"{lib.path}: {lib.prefix}_run_checked returned {status} ({STATUS.get(status, '?')}): {self.last_error()}"
            raise (InputError if status in (-1, -2) else ArtifactError)(message)
        return outputs

    def close(self) -> None:
        if self._handle:
            self.library._destroy(self._handle)
            self._handle = None

    def __del__(self):
        self.close()


def load_standalone(path: str | os.PathLike, inputs: list[TensorSpec], outputs: list[TensorSpec], *,
                    num_threads: int | None = None, sha256: str | None = None) -> Runner:
    """A :class:`Runner` over a host standalone library: one context per calling thread.

    With ``sha256`` (the sidecar's, already checked), the library is loaded through a copy named by it,
    so that what runs is what is on disk now (content_path.py)."""
    library = StandaloneLibrary(path, load_from=content_path(path, sha256) if sha256 else None)
    if [s.shape for s in library.inputs] != [s.shape for s in inputs] or \
            [s.shape for s in library.outputs] != [s.shape for s in outputs]:
        raise ArtifactError(f"{path}: the library's tensors do not match its sidecar; re-export the artifact")
    local = threading.local()

    def invoke(arrays: list[np.ndarray]) -> list[np.ndarray]:
        ctx = getattr(local, "ctx", None)
        if ctx is None:
            ctx = local.ctx = library.create_context(num_threads)
        return ctx.run(arrays)

    return Runner(inputs, outputs, invoke, str(path))
