#!/usr/bin/env python
"""The main job, end to end: compile RetinaFace for the host and for an ARMv7 board, load the host
artifact back from disk, run it on a photo and print the faces it finds.

    .venv/bin/python scripts/quickstart.py [--image PATH] [--size 640x480] [--out out/]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import edgetvm
from edgetvm.face.detect import RETINAFACE_MEAN_BGR, decode_retinaface, letterbox, select_faces
from edgetvm.face.image import read_image
from edgetvm.zoo import fetch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", help="photo to search (default: the astronaut portrait of scikit-image)")
    parser.add_argument("--size", default="640x480", help="detector input WxH")
    parser.add_argument("--out", default="out", help="directory for the artifacts")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    out = Path(args.out)
    shapes = {"input": (1, 3, height, width)}

    for target in ("host", "armv7-neon"):
        started = time.perf_counter()
        compiled = edgetvm.compile("zoo:retinaface", target, input_shapes=shapes)
        path = compiled.export(out / f"retinaface_{target}.so")
        kind = subprocess.run(["file", "-b", str(path)], capture_output=True, text=True).stdout.split(",")[:2]
        print(f"compiled RetinaFace for {target:<11} -> {path} ({path.stat().st_size / 1024:.0f} KiB, "
              f"{', '.join(k.strip() for k in kind)}) in {time.perf_counter() - started:.1f} s")

    detector = edgetvm.load(out / "retinaface_host.so")
    image_path = args.image or fetch("astronaut")
    image = read_image(image_path)
    x, box = letterbox(image, width, height, mean_bgr=RETINAFACE_MEAN_BGR)
    outputs = detector.run_dict(x)  # the first call starts the thread pool and touches the weights
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        detector.run_dict(x)
        runs.append(time.perf_counter() - started)
    elapsed = sorted(runs)[len(runs) // 2]
    detections = decode_retinaface([outputs["loc"], outputs["conf"], outputs["landmarks"]], width, height, 0.6)
    faces = select_faces(detections, box, image.shape[1], image.shape[0], nms_threshold=0.4, max_faces=50)
    print(f"\n{Path(image_path).name}: {len(faces)} face(s) found; RetinaFace {width}x{height} takes {elapsed * 1000:.1f} ms "
          f"(median of 5) on this machine")
    for i, face in enumerate(faces):
        x1, y1, x2, y2 = (float(v) for v in face.box)
        marks = " ".join(f"({px:.0f},{py:.0f})" for px, py in face.landmarks)
        print(f"  face {i}: box=({x1:.0f},{y1:.0f},{x2:.0f},{y2:.0f}) score={face.score:.3f} landmarks={marks}")
    return 0 if faces else 1


if __name__ == "__main__":
    sys.exit(main())
