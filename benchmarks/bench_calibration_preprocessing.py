"""int8 RetinaFace calibrated through the CLI: image folder with the zoo's preprocessing, the same
images as correctly preprocessed .npy, and the images fed raw RGB 0..255 (what ``--calib DIR`` did
before edgetvm.data.Preprocess).

    .venv/bin/python benchmarks/bench_calibration_preprocessing.py [--size 160] [--images 6]

Cosine of each int8 output to onnxruntime fp32 on two held-out portraits (astronaut, Grace Hopper),
the worst output per image; compile wall time. Prints one JSON table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

import edgetvm
from edgetvm.face.calibration import calibration_images
from edgetvm.face.evaluation import grace_hopper
from edgetvm.zoo import fetch, load_astronaut

MEAN_BGR = np.array([104, 117, 123], np.float32)


def retinaface_input(picture: np.ndarray, size: int, resample) -> np.ndarray:
    x = np.asarray(Image.fromarray(picture).resize((size, size), resample), dtype=np.float32)
    return (x[..., ::-1] - MEAN_BGR).transpose(2, 0, 1)[None].copy()


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--images", type=int, default=6)
    args = parser.parse_args()
    edgetvm_cli = str(Path(sys.executable).with_name("edgetvm"))
    session = ort.InferenceSession(str(fetch("retinaface")), providers=["CPUExecutionProvider"])
    held_out = [retinaface_input(p, args.size, Image.Resampling.BILINEAR) for p in (load_astronaut(), grace_hopper())]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetvm-bench-calib-") as tmp:
        images, arrays = Path(tmp, "images"), Path(tmp, "npy")
        images.mkdir()
        arrays.mkdir()
        for i, picture in enumerate(calibration_images(args.images)[:args.images]):
            Image.fromarray(picture).save(images / f"face{i}.png")
            # Calibration resizes bicubic (quantization/calibrate.py): the .npy set is the same pixels.
            np.save(arrays / f"face{i}.npy", retinaface_input(picture, args.size, Image.Resampling.BICUBIC))
        for label, calib, flags in [("images, zoo preprocessing", images, []), ("npy, preprocessed by hand", arrays, []),
                                    ("images, raw RGB 0..255 (before)", images, ["--rgb", "--mean", "0"])]:
            out = Path(tmp, f"{len(rows)}.so")
            started = time.perf_counter()
            proc = subprocess.run([edgetvm_cli, "compile", "zoo:retinaface", "--quantize", "int8", "--calib", str(calib),
                                   *flags, "--input-shape", f"input=1,3,{args.size},{args.size}", "-o", str(out)],
                                  capture_output=True, text=True)
            seconds = time.perf_counter() - started
            if proc.returncode != 0:
                rows.append({"calibration": label, "error": proc.stderr.strip()[-500:]})
                continue
            model = edgetvm.load(out)
            worst = []
            for x in held_out:
                got = model(x)
                got = got if isinstance(got, (list, tuple)) else [got]
                worst.append(round(min(cosine(g, e) for g, e in zip(got, session.run(None, {"input": x}))), 4))
            rows.append({"calibration": label, "size": args.size, "images": args.images,
                         "worst_output_cosine_per_image": worst, "compile_seconds": round(seconds, 1)})
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
