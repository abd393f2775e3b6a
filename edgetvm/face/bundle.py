"""The board bundle: the face networks as standalone modules plus the C pipeline around them.

``build_bundle(out_dir, target="armv7-neon")`` writes::

    detector.so  detector.h       the detector, compiled by edgetvm (standalone C API, no TVM runtime)
    recognizer.so  recognizer.h   the recognizer, likewise
    facemesh.so  facemesh.h       with ``landmarks``: FaceMesh (468 points), float32
    iris.so  iris.h               with ``landmarks``: Iris (5 iris + 71 eye-contour points per eye), float32
    face_proc.c  face_proc.h      pre/post-processing: letterbox, decode, NMS, alignment, warp
    face_gallery.c  face_gallery.h  identification: the gallery file, int8 search, enroll
    face_quality.c  face_quality.h  face quality (size, sharpness, pose, exposure): the enrolment gate
    face_gallery                  the gallery tool (list, search, enroll, remove), no networks
    face_mesh.c  face_mesh.h      with ``landmarks``: FaceMesh's crop and decoding, head pose, eye/mouth ratios
    face_iris.c  face_iris.h      with ``landmarks``: Iris's eye crops (the left one mirrored) and decoding
    age.so gender.so face_attr.c  with ``attributes`` (implies landmarks): dlib's chips, age and gender
    face_demo.c  face_config.h    the example program and its build settings
    face_demo                     built for the target; runs next to the two .so files
    face_track.c  face_track.h    tracking and counting (face_demo --track), FaceMesh following faces when present
    segmenter.so  face_seg.c/h    with ``spec.segmenter``: the selfie segmenter and its pre/post-processing
                                  (face_demo --segment writes the person mask)
    bundle.json  README.txt       what was built, with which options; how to run it

``run_bundle`` runs ``face_demo`` on an image (under qemu-arm for ARM targets) and parses what it
prints (``run_segmentation`` its ``--segment``, ``run_tracking`` its ``--track``), so tests compare the
board pipeline with the Python one; ``stage_instructions`` counts guest instructions per stage with the
N+1 minus 1 method.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import emulate
from ..backends.standalone.build import c_compiler, target_cflags
from ..errors import ArtifactError, CompileError, InputError
from ..targets import resolve_target
from .calibration import face_calibration
from .detect import Face
from .image import read_image, write_ppm
from .attributes import AGE, AGE_CHIP, GENDER, GENDER_CHIP
from .landmarks import EYE_CORNERS, FACEMESH, IRIS, IRIS_POINTS, IRIS_SIZE, MESH_POINTS, MESH_SIZE
from .networks import RECOGNIZER_SIZE, YUNET_SIZE, compile_network, detector_mean_bgr, network, options_for
from .pipeline import DEFAULT_THRESHOLDS
from .segmentation import background_picture, segmenter
from .tracking import DETECT_EVERY, IOU_THRESHOLD, PRESENCE_THRESHOLD

C_DIR = Path(__file__).resolve().parent / "c"
STAGES = ("detect", "align", "embed", "mesh", "iris", "attributes")
IDENTIFICATION_SOURCES = ("face_gallery.c", "face_quality.c")


@dataclass
class BundleSpec:
    """What a bundle contains; ``bundle.json`` holds it (plus file hashes)."""

    target: str
    detector: str = "retinaface"
    recognizer: str = "sface"
    detector_size: tuple[int, int] = (320, 320)
    score_threshold: float = 0.6
    nms_threshold: float = 0.4
    max_faces: int = 50
    threshold: float | None = None
    compile_options: dict = field(default_factory=dict)
    num_threads: int | None = None
    # FaceMesh and Iris (float32), face_mesh.c and face_iris.c in the bundle: face_demo prints head pose,
    # eyes, mouth and both irises; --mesh and --iris write the points.
    landmarks: bool = False
    # The age and gender networks (float32) and face_attr.c; needs the landmarks (the chips are cut at
    # mesh points): face_demo prints each face's age and gender.
    attributes: bool = False
    # "general" or "landscape" (segmentation.SEGMENTERS) adds the segmentation stage; None leaves it out.
    segmenter: str | None = None

    def to_json(self) -> dict:
        def plain(value):
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)

        options = plain(self.compile_options)
        return {"target": self.target, "detector": self.detector, "recognizer": self.recognizer,
                "detector_size": list(self.detector_size), "score_threshold": self.score_threshold,
                "nms_threshold": self.nms_threshold, "max_faces": self.max_faces, "threshold": self.threshold,
                "compile_options": options, "num_threads": self.num_threads, "landmarks": self.landmarks,
                "attributes": self.attributes, "segmenter": self.segmenter}


def _config_header(spec: BundleSpec, embedding_size: int) -> str:
    mean = detector_mean_bgr(network(spec.detector, "detector"))
    w, h = spec.detector_size
    return f"""/* face_config.h: build settings of this bundle, written by `edgetvm face build`. */
#ifndef FACE_CONFIG_H_
#define FACE_CONFIG_H_
#define FACE_DETECTOR_YUNET {int(spec.detector == "yunet")}
#define FACE_DET_W {w}
#define FACE_DET_H {h}
#define FACE_MEAN_B {mean[0]:.1f}f
#define FACE_MEAN_G {mean[1]:.1f}f
#define FACE_MEAN_R {mean[2]:.1f}f
#define FACE_SCORE_THRESHOLD {float(spec.score_threshold)!r}f
#define FACE_NMS_THRESHOLD {float(spec.nms_threshold)!r}f
#define FACE_MAX_FACES {spec.max_faces}
#define FACE_RECOGNIZER_NORMALIZE {int(spec.recognizer == "mobilefacenet")}
#define FACE_EMBEDDING_SIZE {embedding_size}
#define FACE_MATCH_THRESHOLD {float(spec.threshold)!r}f
#define FACE_RECOGNIZER "{spec.recognizer}"
#define FACE_LANDMARKS {int(spec.landmarks)}
#define FACE_ATTRIBUTES {int(spec.attributes)}
#define FACE_SEGMENTER {int(bool(spec.segmenter))}
#define FACE_TRACK_DETECT_EVERY {DETECT_EVERY}
#define FACE_TRACK_IOU_THRESHOLD {IOU_THRESHOLD!r}f
#define FACE_TRACK_PRESENCE_THRESHOLD {PRESENCE_THRESHOLD!r}f
#endif
"""


README = """face bundle built by edgetvm for {target}

Copy this directory to the board and run, with a binary PPM image (convert one on the host with
`edgetvm face ppm photo.jpg photo.ppm`):

    ./face_demo photo.ppm -o embeddings.bin        # faces (box, score, landmarks) + embeddings
    ./face_demo a.ppm --verify b.ppm               # cosine similarity, same / different
    ./face_demo photo.ppm --gallery people.gal     # who is it: top-5 matches and the decision per face
    ./face_demo photo.ppm --gallery people.gal --enroll NAME    # add the main face (quality-checked)
    ./face_gallery people.gal list                 # the gallery's identities (also search/enroll/remove)

Galleries come from the host (`edgetvm face enroll people.gal NAME photo.jpg...`, or `edgetvm face
gallery people.db --export people.gal`); the format is documented in face_gallery.h.

face_demo finds detector.so and recognizer.so beside itself (rpath $ORIGIN). To rebuild it:

    {cc} -O2 -std=gnu99 -ffp-contract=off {cflags} -o face_demo {sources} \\
        -L. {libraries} -Wl,-rpath,'$ORIGIN' -lm

With FaceMesh in the bundle (`edgetvm face build --landmarks`), `./face_demo photo.ppm --mesh
points.bin --iris irises.bin` also prints each face's head pose, eye and mouth ratios and writes its
468 (x, y, z) points (faces x 468 x 3 float32; C API: face_mesh.h); Iris runs on both eyes of every
mesh (the person's left eye mirrored, as MediaPipe does) and face_demo prints each iris's centre and
radius ("iris I right X Y R left X Y R") and writes each eye's 5 iris points (centre first) then 71
eye-contour points (faces x 2 (right, left) x 76 x 3 float32; C API: face_iris.h). With `--attributes`
it also prints each face's age and gender (C API: face_attr.h).

Tracking and counting over frames (C API: face_track.h; no embedding runs):

    ./face_demo --track f000.ppm f001.ppm f002.ppm ... [--detect-every N]

prints each frame's tracks (id, box) and at the end the entries, exits and faces in view. With
FaceMesh in the bundle the detector runs every N frames (default {detect_every}) and FaceMesh follows
each face in between, as `edgetvm face track` does; without it the detector runs on every frame and
tracks continue by IoU alone.

Settings (detector {detector} at {w}x{h}, score > {score}, NMS IoU {nms}, match threshold {threshold})
are in face_config.h and bundle.json.
"""


def build_gallery_tool(target: str, out_dir: str | os.PathLike) -> Path:
    """Build ``face_gallery`` (the gallery tool, no networks) for ``target`` into ``out_dir``."""
    resolved = resolve_target(target)
    out_dir = Path(out_dir)
    sources = [str(C_DIR / "face_gallery_tool.c"), str(C_DIR / "face_gallery.c")]
    cmd = [c_compiler(resolved), "-O2", "-std=gnu99", "-ffp-contract=off", "-Wall", *target_cflags(resolved), "-o",
           str(out_dir / "face_gallery"), *sources, "-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError(f"building face_gallery for {resolved.preset} failed: {proc.stderr.strip()[-1500:]}")
    return out_dir / "face_gallery"


def build_bundle(out_dir: str | os.PathLike, spec: BundleSpec) -> Path:
    """Compile the networks standalone for ``spec.target`` and build face_demo into ``out_dir``.

    The directory is assembled beside ``out_dir`` and renamed into place at the end, so a failed
    build never leaves a half-written bundle.
    """
    target = resolve_target(spec.target)
    det_net, rec_net = network(spec.detector, "detector"), network(spec.recognizer, "recognizer")
    # An unknown segmenter model fails before anything compiles.
    seg_net = segmenter(spec.segmenter) if spec.segmenter else None
    if spec.detector == "yunet":
        spec.detector_size = YUNET_SIZE
    w, h = spec.detector_size
    if w % 32 or h % 32 or w <= 0 or h <= 0:
        raise InputError(f"detector size {w}x{h}: width and height must be positive multiples of 32")
    if spec.threshold is None:
        spec.threshold = DEFAULT_THRESHOLDS[spec.recognizer]
    spec.landmarks = spec.landmarks or spec.attributes
    cc = c_compiler(target)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        detector = compile_network(det_net, spec.detector_size, spec.target,
                                   options_for(spec.compile_options, "detector"), spec.num_threads,
                                   calibrate=face_calibration)
        detector.export(tmp / "detector.so", standalone=True)
        recognizer = compile_network(rec_net, RECOGNIZER_SIZE, spec.target,
                                     options_for(spec.compile_options, "recognizer"), spec.num_threads,
                                     calibrate=face_calibration)
        recognizer.export(tmp / "recognizer.so", standalone=True)
        embedding_size = int(np.prod(recognizer.outputs[0].shape))
        sources = ["face_demo.c", "face_proc.c", *IDENTIFICATION_SOURCES, "face_track.c"]
        libraries = ["-l:detector.so", "-l:recognizer.so"]
        # FaceMesh, age, gender and the segmenter stay float32 whatever --quantize/--prune say: their
        # contract is their reference runtime's outputs (the segmenter's mask IoU >= 0.99), and they have
        # no calibration images of their own here.
        extra = [(FACEMESH, (MESH_SIZE, MESH_SIZE), "facemesh", "face_mesh"),
                 (IRIS, (IRIS_SIZE, IRIS_SIZE), "iris", "face_iris")] if spec.landmarks else []
        if spec.attributes:
            extra += [(AGE, (AGE_CHIP, AGE_CHIP), "age", "face_attr"),
                      (GENDER, (GENDER_CHIP, GENDER_CHIP), "gender", None)]
        extra += [(seg_net, seg_net.size, "segmenter", "face_seg")] if seg_net else []
        for net, size, library, source in extra:
            options = {k: v for k, v in options_for(spec.compile_options, net.role).items()
                       if k not in ("quantize", "prune")}
            compile_network(net, size, spec.target, options, spec.num_threads).export(
                tmp / f"{library}.so", standalone=True)
            libraries.append(f"-l:{library}.so")
            if source:
                sources.append(f"{source}.c")
        headers = [name.replace(".c", ".h") for name in sources if name != "face_demo.c"]
        # face_track.h holds each track's FaceMesh crop (face_roi), with or without FaceMesh.
        headers += [] if "face_mesh.c" in sources else ["face_mesh.h"]
        # face_gallery_tool.c: the source of the gallery tool built beside face_demo (build_gallery_tool).
        for name in (*sources, *headers, "face_gallery_tool.c"):
            shutil.copyfile(C_DIR / name, tmp / name)
        (tmp / "face_config.h").write_text(_config_header(spec, embedding_size))
        cflags = target_cflags(target)
        cmd = [cc, "-O2", "-std=gnu99", "-ffp-contract=off", "-Wall", *cflags, "-o", "face_demo", *sources, "-L.",
               *libraries, "-Wl,-rpath,$ORIGIN", "-lm"]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CompileError(f"building face_demo for {target.preset} failed: {proc.stderr.strip()[-1500:]}")
        build_gallery_tool(spec.target, tmp)
        (tmp / "README.txt").write_text(README.format(
            target=target.preset, cc=Path(cc).name, cflags=" ".join(cflags), detector=spec.detector, w=w, h=h,
            score=spec.score_threshold, nms=spec.nms_threshold, threshold=spec.threshold, detect_every=DETECT_EVERY,
            sources=" ".join(sources), libraries=" ".join(libraries)))
        if seg_net:
            with open(tmp / "README.txt", "a") as fh:
                fh.write(SEGMENT_README.format(model=spec.segmenter, w=seg_net.size[0], h=seg_net.size[1]))
        manifest = {"format": "edgetvm-face-bundle/1", **spec.to_json(), "arch": target.target_dict.get("mtriple", ""),
                    "is_arm": target.is_arm, "qemu_cpu": target.qemu_cpu, "embedding_size": embedding_size,
                    "files": sorted(p.name for p in tmp.iterdir())}
        (tmp / "bundle.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for path in tmp.iterdir():
            path.chmod(0o755 if path.name in ("face_demo", "face_gallery") or path.suffix == ".so"
                       else 0o644)
        tmp.chmod(0o755)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            os.replace(out_dir, old / "bundle")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def read_manifest(bundle_dir: str | os.PathLike) -> dict:
    path = Path(bundle_dir) / "bundle.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{bundle_dir}: not a face bundle (no bundle.json); build one with "
                            f"`edgetvm face build -o {bundle_dir}`") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc}); rebuild the bundle") from None


@dataclass
class BundleRun:
    faces: list[Face]
    embeddings: np.ndarray  # (faces, embedding_size)
    stdout: str
    instructions: int | None = None
    # With ``other``: the faces of the second image and face_demo's cosine similarity of the two
    # most confident faces.
    other_faces: list[Face] = field(default_factory=list)
    similarity: float | None = None
    # With ``gallery``: per face, face_demo's (name, score) matches, best first, and its decision (None: unknown).
    matches: list[list[tuple[str, float]]] = field(default_factory=list)
    identities: list[str | None] = field(default_factory=list)
    # A bundle with landmarks: the points (faces, 468, 3) of ``image`` and what face_demo printed per
    # face (presence, yaw, pitch, roll, eyes (right, left), mouth).
    mesh_points: np.ndarray | None = None
    meshes: list[dict] = field(default_factory=list)
    # A bundle with landmarks: the Iris points (faces, 2 (right, left), 76, 3) of ``image`` (5 iris points,
    # centre first, then 71 contour points) and what face_demo printed per face:
    # {"right": (x, y, radius), "left": ...}.
    iris_points: np.ndarray | None = None
    irises: list[dict] = field(default_factory=list)
    # A bundle with attributes: face_demo's age and gender per face of ``image``.
    attributes: list[dict] = field(default_factory=list)


def parse_faces(stdout: str) -> list[list[Face]]:
    """The faces face_demo printed, one list per image it analysed."""
    images: list[list[Face]] = []
    for line in stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["image"]:
            images.append([])
        elif parts[:1] == ["face"] and images:
            faces = images[-1]
            score = float(parts[parts.index("score") + 1])
            b = parts.index("box")
            box = np.array([float(v) for v in parts[b + 1:b + 5]], np.float32)
            k = parts.index("landmarks")
            lms = np.array([float(v) for v in parts[k + 1:k + 11]], np.float32).reshape(5, 2)
            faces.append(Face(box, score, lms))
    return images


def _run_demo(bundle_dir: Path, manifest: dict, args: list[str], count: bool, timeout: float,
              program: str = "face_demo"):
    exe = (bundle_dir / program).resolve()
    if manifest["is_arm"]:
        run = emulate.run_arm([exe, *args], cpu=manifest.get("qemu_cpu") or None, count=count, timeout=timeout,
                              cwd=bundle_dir)
        return run.stdout, run.instructions
    if count:
        raise InputError("instruction counts need an ARM bundle (they come from qemu-arm)")
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout, cwd=bundle_dir)
    if proc.returncode != 0:
        raise ArtifactError(f"{exe} failed (exit {proc.returncode}): {proc.stderr.strip()[-1500:]}")
    return proc.stdout, None


def parse_identification(stdout: str) -> tuple[list[list[tuple[str, float]]], list[str | None]]:
    """face_demo --gallery's ``match I RANK NAME SCORE`` and ``identity I NAME`` lines, per face."""
    matches: dict[int, list[tuple[str, float]]] = {}
    identities: dict[int, str | None] = {}
    for line in stdout.splitlines():
        # Names may hold spaces: split off the fixed fields only.
        if line.startswith("match "):
            _, face, _rank, rest = line.split(" ", 3)
            name, score = rest.rsplit(" ", 1)
            matches.setdefault(int(face), []).append((name, float(score)))
        elif line.startswith("identity "):
            _, face, name = line.split(" ", 2)
            identities[int(face)] = None if name == "unknown" else name
    faces = sorted(identities)
    return [matches.get(i, []) for i in faces], [identities[i] for i in faces]


def run_bundle(bundle_dir: str | os.PathLike, image: np.ndarray, *, other: np.ndarray | None = None,
               threads: int = 1, count: bool = False, repeat: tuple[str, int] | None = None,
               gallery: str | os.PathLike | None = None, top: int = 5, enroll: str | None = None,
               timeout: float = 900) -> BundleRun:
    """Run the bundle's face_demo on ``image`` (RGB array), and ``--verify`` against ``other``;
    with ``gallery``, identify every face in it (or ``enroll`` the main face under that name);
    under qemu-arm for ARM bundles."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    with tempfile.TemporaryDirectory(prefix="edgetvm-face-run-") as tmp:
        ppm = write_ppm(Path(tmp) / "image.ppm", image)
        emb_path = Path(tmp) / "embeddings.bin"
        args = [str(ppm), "-o", str(emb_path), "--threads", str(threads)]
        if other is not None:
            args += ["--verify", str(write_ppm(Path(tmp) / "other.ppm", other))]
        if repeat is not None:
            if repeat[0] not in STAGES:
                raise InputError(f"repeat stage {repeat[0]!r}: choose one of {STAGES}")
            args += ["--repeat", repeat[0], str(int(repeat[1]))]
        if gallery is not None:
            args += ["--gallery", str(Path(gallery).resolve()), "--top", str(int(top))]
            args += ["--enroll", enroll] if enroll else []
        mesh_path, iris_path = Path(tmp) / "points.bin", Path(tmp) / "irises.bin"
        if manifest.get("landmarks"):
            args += ["--mesh", str(mesh_path), "--iris", str(iris_path)]
        stdout, instructions = _run_demo(bundle_dir, manifest, args, count, timeout)
        embeddings = np.fromfile(emb_path, dtype=np.float32).reshape(-1, manifest["embedding_size"])
        mesh_points = iris_points = None
        if manifest.get("landmarks"):
            mesh_points = np.fromfile(mesh_path, dtype=np.float32).reshape(-1, MESH_POINTS, 3)
            iris_points = np.fromfile(iris_path, dtype=np.float32).reshape(-1, len(EYE_CORNERS), IRIS_POINTS, 3)
    images = parse_faces(stdout)
    similarity = None
    for line in stdout.splitlines():
        if line.startswith("similarity "):
            similarity = float(line.split()[1])
    matches, identities = parse_identification(stdout)
    return BundleRun(images[0] if images else [], embeddings, stdout, instructions,
                     images[1] if len(images) > 1 else [], similarity, matches, identities, mesh_points,
                     parse_meshes(stdout), iris_points, parse_irises(stdout), parse_attributes(stdout))


def _first_image_lines(stdout: str, kind: str) -> list[list[str]]:
    """The words of the lines starting with ``kind`` that face_demo printed for its first image."""
    lines, images = [], 0
    for line in stdout.splitlines():
        parts = line.split()
        images += parts[:1] == ["image"]
        if images <= 1 and parts[:1] == [kind]:
            lines.append(parts)
    return lines


def parse_meshes(stdout: str) -> list[dict]:
    """The ``mesh`` lines of the first image, one dict per face."""
    meshes = []
    for parts in _first_image_lines(stdout, "mesh"):
        value = {k: float(parts[parts.index(k) + 1]) for k in ("presence", "yaw", "pitch", "roll", "mouth")}
        e = parts.index("eyes")
        meshes.append({**value, "eyes": (float(parts[e + 1]), float(parts[e + 2]))})
    return meshes


def parse_irises(stdout: str) -> list[dict]:
    """The ``iris`` lines of the first image, one dict per face: {"right": (x, y, radius), "left": ...}."""
    return [{eye: tuple(float(v) for v in parts[parts.index(eye) + 1:parts.index(eye) + 4]) for eye in EYE_CORNERS}
            for parts in _first_image_lines(stdout, "iris")]


def parse_attributes(stdout: str) -> list[dict]:
    """The ``attributes`` lines of the first image, one dict per face."""
    return [{"age": int(parts[parts.index("age") + 1]),
             "age_expectation": float(parts[parts.index("expectation") + 1]),
             "gender": parts[parts.index("gender") + 1],
             "gender_probability": float(parts[parts.index("probability") + 1])}
            for parts in _first_image_lines(stdout, "attributes")]


def stage_instructions(bundle_dir: str | os.PathLike, image: np.ndarray, n: int = 2,
                       timeout: float = 1800) -> dict[str, int]:
    """Guest instructions of each stage on ``image`` (all faces), single-threaded.

    N+1 minus 1 per stage: a run with every stage once, and one run per stage repeating that stage
    1 + n times; the difference over n is one execution of the stage, start-up left out.
    """
    base = run_bundle(bundle_dir, image, count=True, timeout=timeout)
    counts = {"total_run": base.instructions, "faces": len(base.faces)}
    manifest = read_manifest(bundle_dir)
    skip = {"mesh", "iris"} if not manifest.get("landmarks") else set()
    skip |= {"attributes"} if not manifest.get("attributes") else set()
    for stage in (s for s in STAGES if s not in skip):
        more = run_bundle(bundle_dir, image, count=True, repeat=(stage, 1 + n), timeout=timeout)
        counts[stage] = (more.instructions - base.instructions) // n
    return counts


SEGMENT_README = """
Person segmentation ({model} selfie segmenter, {w}x{h} input; C API in face_seg.h):

    ./face_demo photo.ppm --segment mask.pgm                        # 255 where the person is
    ./face_demo photo.ppm --segment mask.pgm --background '#00b140' --composite out.ppm
    ./face_demo photo.ppm --segment mask.pgm --background beach.ppm --composite out.ppm  # same size
"""


@dataclass
class SegmentationRun:
    mask: np.ndarray  # (H, W) float32, P(person)
    grey: np.ndarray  # (H, W) uint8, the PGM face_demo --segment wrote
    composite: np.ndarray | None
    stdout: str


def run_segmentation(bundle_dir: str | os.PathLike, image: np.ndarray, *, background=None, threads: int = 1,
                     timeout: float = 900) -> SegmentationRun:
    """Run the bundle's face_demo --segment on ``image`` (RGB array), replacing the background by
    ``background`` (a colour or an image, as ``segmentation.background_picture`` takes) when given;
    under qemu-arm for ARM bundles."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    if not manifest.get("segmenter"):
        raise InputError(f"{bundle_dir}: built without the segmentation stage; rebuild it with "
                         f"`edgetvm face build --segmenter general`")
    h, w = image.shape[:2]
    with tempfile.TemporaryDirectory(prefix="edgetvm-segment-run-") as tmp:
        tmp = Path(tmp)
        args = [str(write_ppm(tmp / "image.ppm", image)), "--segment", str(tmp / "mask.pgm"),
                "--raw", str(tmp / "mask.f32"), "--threads", str(threads)]
        if background is not None:
            picture = np.ascontiguousarray(background_picture(background, w, h))
            args += ["--background", str(write_ppm(tmp / "background.ppm", picture)),
                     "--composite", str(tmp / "composite.ppm")]
        stdout, _ = _run_demo(bundle_dir, manifest, args, False, timeout)
        mask = np.fromfile(tmp / "mask.f32", dtype=np.float32).reshape(h, w)
        grey = read_image(tmp / "mask.pgm")[:, :, 0]
        composite = read_image(tmp / "composite.ppm") if background is not None else None
    return SegmentationRun(mask, grey, composite, stdout)


@dataclass
class TrackingRun:
    # Per frame: whether the detector ran, and the live tracks as (id, box (x1, y1, x2, y2)), by id.
    detected: list[bool]
    tracks: list[list[tuple[int, np.ndarray]]]
    counts: dict  # entries, exits, in_view
    stdout: str


def parse_tracking(stdout: str) -> TrackingRun:
    """face_demo --track's ``frame``, ``track`` and ``counts`` lines."""
    detected, tracks, counts = [], [], {}
    for line in stdout.splitlines():
        parts = line.split()
        if parts[:1] == ["frame"]:
            detected.append(parts[parts.index("detected") + 1] == "1")
            tracks.append([])
        elif parts[:1] == ["track"] and tracks:
            b = parts.index("box")
            tracks[-1].append((int(parts[parts.index("id") + 1]),
                               np.array([float(v) for v in parts[b + 1:b + 5]], np.float32)))
        elif parts[:1] == ["counts"]:
            counts = {parts[k]: int(parts[k + 1]) for k in range(1, len(parts) - 1, 2)}
    return TrackingRun(detected, tracks, counts, stdout)


def run_tracking(bundle_dir: str | os.PathLike, frames: list[np.ndarray], *, detect_every: int | None = None,
                 threads: int = 1, timeout: float = 900) -> TrackingRun:
    """Run the bundle's face_demo --track over ``frames`` (RGB arrays, in order), the detector every
    ``detect_every`` frames (face_demo's default when None); under qemu-arm for ARM bundles."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    if not frames:
        raise InputError("no frames to track; give one or more")
    with tempfile.TemporaryDirectory(prefix="edgetvm-track-run-") as tmp:
        paths = [str(write_ppm(Path(tmp) / f"frame{t:05d}.ppm", frame)) for t, frame in enumerate(frames)]
        args = ["--track", *paths, "--threads", str(threads)]
        args += ["--detect-every", str(int(detect_every))] if detect_every is not None else []
        stdout, _ = _run_demo(bundle_dir, manifest, args, False, timeout)
    return parse_tracking(stdout)
