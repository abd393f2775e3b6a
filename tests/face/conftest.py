"""Fixtures of the face tests: the real images, pipelines shared across the session (compiling
RetinaFace and SFace once), and the board-side C library built for the host and bound with ctypes."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import edgetvm.face as face_pkg

C_DIR = Path(face_pkg.__file__).parent / "c"


class FaceDet(ctypes.Structure):
    _fields_ = [("box", ctypes.c_float * 4), ("score", ctypes.c_float), ("landmarks", ctypes.c_float * 10)]


class LetterboxInfo(ctypes.Structure):
    _fields_ = [("resized_w", ctypes.c_int), ("resized_h", ctypes.c_int), ("scale_x", ctypes.c_float),
                ("scale_y", ctypes.c_float)]


def _fptr(a: np.ndarray):
    assert a.dtype == np.float32 and a.flags.c_contiguous
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))


def _u8ptr(a: np.ndarray):
    assert a.dtype == np.uint8 and a.flags.c_contiguous
    return a.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))


class FaceCLib:
    """numpy-facing wrappers of face_proc.c."""

    FaceDet = FaceDet

    def __init__(self, path: Path):
        self.lib = ctypes.CDLL(str(path))
        self.lib.face_cosine.restype = ctypes.c_float
        self.lib.face_read_pnm.restype = ctypes.POINTER(ctypes.c_uint8)

    def letterbox(self, rgb, in_w, in_h, mean):
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        out = np.empty((1, 3, in_h, in_w), np.float32)
        info = LetterboxInfo()
        mean = np.asarray(mean, np.float32)
        self.lib.face_letterbox(_u8ptr(rgb), rgb.shape[1], rgb.shape[0], in_w, in_h, _fptr(mean), _fptr(out),
                                ctypes.byref(info))
        return out, info

    def resize(self, img, out_w, out_h):
        img = np.ascontiguousarray(img, dtype=np.uint8)
        c = img.shape[2]
        out = np.empty((out_h, out_w, c), np.float32)
        self.lib.face_resize_bilinear(_u8ptr(img), img.shape[1], img.shape[0], c, _fptr(out), out_w, out_h)
        return out

    def _faces(self, buf, n):
        return [(np.array(buf[i].box[:], np.float32), float(buf[i].score),
                 np.array(buf[i].landmarks[:], np.float32).reshape(5, 2)) for i in range(n)]

    def decode_retinaface(self, outputs, in_w, in_h, threshold):
        loc, conf, landm = (np.ascontiguousarray(o, dtype=np.float32) for o in outputs)
        cap = self.lib.face_retinaface_num_priors(in_w, in_h)
        buf = (FaceDet * cap)()
        n = self.lib.face_decode_retinaface(_fptr(loc), _fptr(conf), _fptr(landm), in_w, in_h,
                                            ctypes.c_float(threshold), buf, cap)
        return buf, n

    def decode_yunet(self, outputs, in_w, in_h, threshold):
        arrays = [np.ascontiguousarray(o, dtype=np.float32) for o in outputs]
        ptrs = (ctypes.POINTER(ctypes.c_float) * 12)(*[_fptr(a) for a in arrays])
        cap = sum(a.shape[1] for a in arrays[:3])
        buf = (FaceDet * cap)()
        n = self.lib.face_decode_yunet(ptrs, in_w, in_h, ctypes.c_float(threshold), buf, cap)
        return buf, n

    def nms(self, buf, n, iou, max_keep):
        return self.lib.face_nms(buf, n, ctypes.c_float(iou), max_keep)

    def to_image(self, buf, n, info, w, h):
        self.lib.face_to_image(buf, n, ctypes.byref(info), w, h)

    def faces(self, buf, n):
        return self._faces(buf, n)

    def alignment_matrix(self, landmarks):
        lm = np.ascontiguousarray(landmarks, dtype=np.float32).reshape(10)
        m = np.empty(6, np.float32)
        rc = self.lib.face_alignment_matrix(_fptr(lm), _fptr(m))
        return rc, m.reshape(2, 3)

    def warp(self, rgb, matrix, out_w, out_h):
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        m = np.ascontiguousarray(matrix, dtype=np.float32).reshape(6)
        out = np.empty((out_h, out_w, 3), np.float32)
        rc = self.lib.face_warp_affine(_u8ptr(rgb), rgb.shape[1], rgb.shape[0], _fptr(m), out_w, out_h, _fptr(out))
        return rc, out

    def recognizer_input(self, crop, normalize):
        crop = np.ascontiguousarray(crop, dtype=np.float32)
        out = np.empty((1, 3, 112, 112), np.float32)
        self.lib.face_recognizer_input(_fptr(crop), int(normalize), _fptr(out))
        return out

    def cosine(self, a, b):
        a = np.ascontiguousarray(a, np.float32)
        b = np.ascontiguousarray(b, np.float32)
        return float(self.lib.face_cosine(_fptr(a), _fptr(b), a.size))

    def read_pnm(self, path):
        w, h = ctypes.c_int(), ctypes.c_int()
        ptr = self.lib.face_read_pnm(str(path).encode(), ctypes.byref(w), ctypes.byref(h))
        if not ptr:
            return None
        arr = np.ctypeslib.as_array(ptr, shape=(h.value, w.value, 3)).copy()
        ctypes.CDLL(None).free(ptr)
        return arr


def build_host_library(tmp_path_factory, name: str, *sources: str) -> Path:
    """The board's C ``sources`` (file names in face/c) built for the host into ``lib{name}.so``,
    with the board's float flags (-ffp-contract=off) and warnings as errors."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no host C compiler")
    out = tmp_path_factory.mktemp(name) / f"lib{name}.so"
    subprocess.run([cc, "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-shared", "-fPIC",
                    "-o", str(out), *(str(C_DIR / source) for source in sources), "-lm"], check=True)
    return out


@pytest.fixture(scope="session")
def face_clib(tmp_path_factory) -> FaceCLib:
    return FaceCLib(build_host_library(tmp_path_factory, "face_proc", "face_proc.c"))


@pytest.fixture(scope="session")
def astronaut():
    from edgetvm.zoo import load_astronaut

    return load_astronaut()


@pytest.fixture(scope="session")
def grace():
    from edgetvm.face.evaluation import grace_hopper

    return grace_hopper()


# CI runs the compiled pipeline with a 160x160 detector input (the ARM bundle test shares the host
# compile); the default 320x320 is covered by the slow tests.
CI_DETECTOR_SIZE = (160, 160)


@pytest.fixture(scope="session")
def ort_pipeline():
    """The reference: the same pre/post-processing with onnxruntime running the networks (320x320)."""
    from edgetvm.face import FacePipeline

    return FacePipeline(engine="onnxruntime", num_threads=1)


@pytest.fixture(scope="session")
def ort_pipeline_ci():
    """The reference at the CI detector size."""
    from edgetvm.face import FacePipeline

    return FacePipeline(engine="onnxruntime", detector_size=CI_DETECTOR_SIZE, num_threads=1)


@pytest.fixture(scope="session")
def tvm_pipeline():
    """RetinaFace + SFace compiled by edgetvm for the host (compiled once per session). One thread:
    TVM's spinning thread pool slows down by orders of magnitude on an oversubscribed machine."""
    from edgetvm.face import FacePipeline

    return FacePipeline(detector_size=CI_DETECTOR_SIZE, num_threads=1)
