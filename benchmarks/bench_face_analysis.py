"""The face analysis networks on the host: edgetvm against their reference runtimes, on real crops.

    .venv/bin/python benchmarks/bench_face_analysis.py [--rounds 20] [--threads 1] [--json out.json]

Networks, each fed the crop the SDK cuts from the astronaut's face (edgetvm/face/landmarks.py,
attributes.py):
  facemesh  MediaPipe FaceMesh, 192x192 (reference: LiteRT)
  iris      MediaPipe Iris, 64x64, the person's right eye (reference: LiteRT)
  age       dlib-models age predictor, 64x64 chip (reference: onnxruntime)
  gender    dlib-models gender classifier, 32x32 chip (reference: onnxruntime)

Both engines run interleaved round by round on the same input with the same thread count; the table
gives median milliseconds, the ratio edgetvm / reference (below 1: edgetvm is faster) and the largest
output difference relative to the reference's largest magnitude. The machine is shared: only the
ratios measured within one run mean anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from edgetvm.face import FacePipeline
from edgetvm.face.attributes import AGE, AGE_CHIP, GENDER, GENDER_CHIP, AttributeEstimator, chip_input, dlib_chip
from edgetvm.face.landmarks import EYE_CORNERS, FaceLandmarker, iris_input, mesh_input, roi_from_eye, roi_from_face
from edgetvm.zoo import load_astronaut


def inputs(threads: int) -> dict[str, np.ndarray]:
    image = load_astronaut()
    face = FacePipeline(engine="onnxruntime", num_threads=threads).detect(image)[0]
    mesh = FaceLandmarker("litert", num_threads=threads).from_face(image, face)
    corners, mirrored = EYE_CORNERS["right"]
    return {"facemesh": mesh_input(image, roi_from_face(face)),
            "iris": iris_input(image, roi_from_eye(mesh.points, corners), mirrored),
            "age": chip_input(AGE, dlib_chip(image, mesh, AGE_CHIP)),
            "gender": chip_input(GENDER, dlib_chip(image, mesh, GENDER_CHIP))}


def engines(threads: int) -> dict[str, tuple]:
    """network -> (edgetvm runner, reference runner, reference name)."""
    ours_mesh, ref_mesh = FaceLandmarker(num_threads=threads), FaceLandmarker("litert", num_threads=threads)
    ours_attr, ref_attr = (AttributeEstimator(engine, num_threads=threads) for engine in ("edgetvm", "onnxruntime"))

    def attribute_runner(estimator, net, size):
        chip = np.zeros((size, size, 3), np.uint8)
        estimator.probabilities(net, chip)  # builds the engine
        return lambda x: estimator._engines[net.name](x)

    return {"facemesh": (ours_mesh.run_input, ref_mesh.run_input, "litert"),
            "iris": (ours_mesh.run_iris, ref_mesh.run_iris, "litert"),
            "age": (ours_attr.runner(AGE, AGE_CHIP), ref_attr.runner(AGE, AGE_CHIP), "onnxruntime"),
            "gender": (ours_attr.runner(GENDER, GENDER_CHIP), ref_attr.runner(GENDER, GENDER_CHIP), "onnxruntime")}


def measure(rounds: int, threads: int) -> list[dict]:
    xs, runners = inputs(threads), engines(threads)
    rows = []
    for name, (ours, reference, ref_name) in runners.items():
        x = xs[name]
        got, expected = ours(x), reference(x)  # warm-up, and the outputs compared
        error = max(float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30)) for a, b in zip(got, expected))
        times = {"edgetvm": [], ref_name: []}
        for _ in range(rounds):
            for engine, run in (("edgetvm", ours), (ref_name, reference)):
                started = time.perf_counter()
                run(x)
                times[engine].append(time.perf_counter() - started)
        ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        rows.append({"network": name, "input": list(x.shape), "edgetvm_ms": round(ms["edgetvm"], 3),
                     "reference": ref_name, "reference_ms": round(ms[ref_name], 3),
                     "ratio": round(ms["edgetvm"] / ms[ref_name], 3), "max_relative_difference": error})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the table here")
    args = parser.parse_args()
    rows = measure(args.rounds, args.threads)
    text = json.dumps({"threads": args.threads, "rounds": args.rounds, "networks": rows}, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
