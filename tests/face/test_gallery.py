"""The gallery (face/gallery.py) and its C twin (face/c/face_gallery.c, built for the host and bound
with ctypes): int8 scores against float64 cosines, both stores, the file format shared by Python
and C, damaged files, and a gallery file killed in the middle of an enroll."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import multiprocessing
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from edgetvm.errors import ArtifactError, InputError
import edgetvm.face as face_pkg
from edgetvm.face.gallery import (Gallery, gallery_bytes, load_gallery, parse_gallery, quantize,
                                  save_gallery)

C_DIR = Path(face_pkg.__file__).parent / "c"


def unit_vectors(rng, n, dim=128):
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def reference_scores(gallery: Gallery, query: np.ndarray) -> np.ndarray:
    """Identity scores in float64 from the stored codes (independent of the float32 BLAS path)."""
    q, qs = quantize(query)
    sample = (gallery.codes.astype(np.int64) @ q[0].astype(np.int64)) * float(qs[0]) * gallery.scales.astype(np.float64)
    owner = np.repeat(np.arange(len(gallery)), gallery.counts)
    return np.array([sample[owner == i].max() for i in range(len(gallery))])


def make_gallery(rng, identities=30, dim=128) -> tuple[Gallery, dict[str, np.ndarray]]:
    g = Gallery("sface", dim, 0.5)
    enrolled = {}
    for i in range(identities):
        e = unit_vectors(rng, 1 + i % 3, dim)
        g.enroll(f"person {i:03d}", e, [f"img{i}_{j}.jpg" for j in range(len(e))], [0.9] * len(e))
        enrolled[f"person {i:03d}"] = e
    return g, enrolled


def test_int8_scores_approximate_cosine(rng, ort_pipeline, astronaut, grace):
    from edgetvm.face.evaluation import lfw_face

    real = np.stack([ort_pipeline.embed(im) for im in (astronaut, grace, *(lfw_face(i) for i in range(6)))])
    for embeddings in (real, unit_vectors(rng, 50)):
        g = Gallery("sface", 128, 0.5)
        for i, e in enumerate(embeddings):
            g.enroll(f"p{i}", e)
        cosine = embeddings.astype(np.float64) @ embeddings.astype(np.float64).T
        ours = np.stack([g.scores(e) for e in embeddings])
        assert np.abs(ours - cosine).max() < 5e-3 and np.abs(ours - cosine).mean() < 1e-3
        np.testing.assert_allclose(ours, np.stack([reference_scores(g, e) for e in embeddings]), rtol=1e-6, atol=1e-6)


def test_enroll_remove_search(rng):
    g, enrolled = make_gallery(rng)
    g.enroll("person 004", unit_vectors(rng, 2))  # more samples of an existing identity stay grouped with it
    assert dict(g.identities())["person 004"] == 4 and len(g.scales) == g.counts.sum() == len(g.sources)
    query = enrolled["person 007"][0] + 0.02 * unit_vectors(rng, 1)[0]
    matches = g.search(query, k=4)
    assert matches[0].name == "person 007" and matches[0].score > 0.95
    ref = reference_scores(g, query)
    expected = sorted(range(len(g)), key=lambda i: (-ref[i], i))[:4]
    assert [m.name for m in matches] == [g.names[i] for i in expected]
    assert g.identify(query).identity == "person 007"
    assert g.identify(unit_vectors(rng, 1)[0]).identity is None
    g.remove("person 007")
    assert "person 007" not in g.names and g.search(query, 1)[0].name != "person 007"
    assert len(g.search(query, 1000)) == len(g) == 29
    with pytest.raises(InputError, match="no identity"):
        g.remove("nobody")
    with pytest.raises(InputError, match="bytes of UTF-8"):
        g.enroll("x" * 56, unit_vectors(rng, 1))
    with pytest.raises(InputError, match="128-d"):
        g.enroll("short", np.ones(64, np.float32))
    # Ties go to the earlier enrolled identity.
    tied = Gallery("sface", 128, 0.5)
    for name in ("b", "a", "c"):
        tied.enroll(name, np.ones(128, np.float32) / np.sqrt(128))
    assert [m.name for m in tied.search(np.ones(128), 2)] == ["b", "a"]


@pytest.mark.parametrize("suffix", [".gal", ".db"])
def test_stores_round_trip(tmp_path, rng, suffix):
    g, _ = make_gallery(rng)
    path = save_gallery(g, tmp_path / f"people{suffix}")
    back = load_gallery(path)
    assert back.names == g.names and back.recognizer == "sface" and back.threshold == np.float32(0.5)
    np.testing.assert_array_equal(back.codes, g.codes)
    np.testing.assert_array_equal(back.scales, g.scales)
    np.testing.assert_array_equal(back.counts, g.counts)
    if suffix == ".db":
        assert back.sources == g.sources and back.qualities == g.qualities
    back.remove(g.names[0])
    save_gallery(back, path)
    assert load_gallery(path).names == g.names[1:]


def test_damaged_files_are_refused(tmp_path, rng):
    g, _ = make_gallery(rng, 5)
    data = gallery_bytes(g)
    with pytest.raises(ArtifactError, match="truncated"):
        parse_gallery(data[:-1], "g.gal")
    flipped = bytearray(data)
    flipped[200] ^= 1
    with pytest.raises(ArtifactError, match="CRC-32"):
        parse_gallery(bytes(flipped), "g.gal")
    with pytest.raises(ArtifactError, match="not an edgetvm gallery"):
        parse_gallery(b"hello", "g.gal")
    (tmp_path / "x.db").write_bytes(b"SQLite format 3\0" + bytes(100))
    with pytest.raises(ArtifactError, match="not a readable gallery"):
        load_gallery(tmp_path / "x.db")
    with pytest.raises(InputError, match="no such gallery"):
        load_gallery(tmp_path / "missing.gal")


class GalleryCLib:
    """ctypes view of face_gallery.c (the struct layout of face_gallery.h)."""

    class Identity(ctypes.Structure):
        _fields_ = [("name", ctypes.c_char * 56), ("first", ctypes.c_uint32), ("count", ctypes.c_uint32)]

    class Struct(ctypes.Structure):
        pass

    class Match(ctypes.Structure):
        _fields_ = [("identity", ctypes.c_int), ("score", ctypes.c_float)]

    Struct._fields_ = [("dim", ctypes.c_uint32), ("n_identities", ctypes.c_uint32), ("n_samples", ctypes.c_uint32),
                       ("threshold", ctypes.c_float), ("recognizer", ctypes.c_char * 29),
                       ("identities", ctypes.POINTER(Identity)), ("scales", ctypes.POINTER(ctypes.c_float)),
                       ("codes", ctypes.POINTER(ctypes.c_int8)), ("identity_capacity", ctypes.c_uint32),
                       ("sample_capacity", ctypes.c_uint32)]

    def __init__(self, path):
        self.lib = ctypes.CDLL(str(path))

    def load(self, path):
        g = self.Struct()
        return self.lib.face_gallery_load(ctypes.byref(g), str(path).encode()), g

    def search(self, g, query, k):
        out = (self.Match * k)()
        q = np.ascontiguousarray(query, np.float32)
        n = self.lib.face_gallery_search(ctypes.byref(g), q.ctypes.data_as(ctypes.c_void_p), out, k)
        return [(g.identities[m.identity].name.decode(), np.float32(m.score)) for m in out[:n]]

    def enroll(self, g, name, e):
        e = np.ascontiguousarray(e, np.float32)
        return self.lib.face_gallery_enroll(ctypes.byref(g), name.encode(), e.ctypes.data_as(ctypes.c_void_p))


@pytest.fixture(scope="module")
def gallery_clib(tmp_path_factory):
    out = tmp_path_factory.mktemp("gallery_clib") / "libface_gallery.so"
    subprocess.run([shutil.which("gcc") or "cc", "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off",
                    "-shared", "-fPIC", "-o", str(out), str(C_DIR / "face_gallery.c"), "-lm"], check=True)
    return GalleryCLib(out)


def test_c_and_python_share_the_file_and_agree(tmp_path, rng, gallery_clib):
    g, enrolled = make_gallery(rng)
    path = save_gallery(g, tmp_path / "people.gal")
    rc, cg = gallery_clib.load(path)
    assert rc == 0 and (cg.n_identities, cg.n_samples, cg.dim) == (30, len(g.scales), 128)
    for query in [*unit_vectors(rng, 5), enrolled["person 011"][1]]:
        ours = gallery_clib.search(cg, query, 7)
        scores = g.scores(query)
        # Bit-identical scores and the same order (ties included).
        assert [(m.name, np.float32(m.score)) for m in g.search(query, 7)] == ours
        assert all(scores[g.names.index(n)] == s for n, s in ours)
    # Enrolled in C and saved by C: the very bytes Python writes for the same enrolment.
    extra = unit_vectors(rng, 3)
    for name, e in (("new one", extra[0]), ("person 002", extra[1]), ("new one", extra[2])):
        assert gallery_clib.enroll(cg, name, e) == 0
        g.enroll(name, e)
    assert gallery_clib.lib.face_gallery_remove(ctypes.byref(cg), b"person 005") == 0
    g.remove("person 005")
    assert gallery_clib.lib.face_gallery_save(ctypes.byref(cg), str(tmp_path / "c.gal").encode()) == 0
    assert (tmp_path / "c.gal").read_bytes() == gallery_bytes(g)
    gallery_clib.lib.face_gallery_free(ctypes.byref(cg))
    # Damage is caught in C too: -2 format/size, -3 CRC.
    data = bytearray(gallery_bytes(g))
    (tmp_path / "short.gal").write_bytes(bytes(data[:-3]))
    assert gallery_clib.load(tmp_path / "short.gal")[0] == -2
    data[100] ^= 4
    (tmp_path / "bad.gal").write_bytes(bytes(data))
    assert gallery_clib.load(tmp_path / "bad.gal")[0] == -3


def enroll_forever(path, saves) -> None:
    """The child: enroll one identity after another into ``path``, saving after each; report each save."""
    rng = np.random.default_rng(0)
    g = load_gallery(path)
    while True:
        g.enroll(f"id{len(g)}", rng.normal(size=(1, 128)).astype(np.float32))
        save_gallery(g, path)
        saves.send(len(g))


@pytest.mark.parametrize("suffix", [".gal", ".db"])
def test_kill_during_enroll_leaves_old_or_new(tmp_path, rng, suffix):
    path = tmp_path / f"people{suffix}"
    base = Gallery("sface", 128, 0.5)
    # Large enough (5 MB, or 4000 SQLite rows) that a save takes a good part of the loop.
    base.enroll("bulk", unit_vectors(rng, 40000 if suffix == ".gal" else 4000))
    save_gallery(base, path)
    # A forked child (no interpreter start-up), killed with SIGKILL at a varying point of its loop.
    fork = multiprocessing.get_context("fork")
    kills, mid_write = 0, 0
    for delay in np.linspace(0.0, 0.1, 6):
        before = len(load_gallery(path))
        receive, send = fork.Pipe(duplex=False)
        child = fork.Process(target=enroll_forever, args=(path, send), daemon=True)
        child.start()
        send.close()
        saved = [receive.recv()]
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        while receive.poll():
            try:
                saved.append(receive.recv())
            except EOFError:
                break
        kills += 1
        leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(f".{path.name}.")]
        journal = tmp_path / f"{path.name}-journal"
        mid_write += bool(leftovers) or (journal.exists() and journal.stat().st_size > 0)
        for p in leftovers:
            p.unlink()
        after = load_gallery(path)  # raises on a torn or damaged file
        assert after.names[0] == "bulk" and after.names[1:] == [f"id{i}" for i in range(1, len(after))]
        # Old or new: every save the child reported is there, and at most the one in flight besides.
        assert before + len(saved) <= len(after) <= before + len(saved) + 1
    assert kills == 6 and mid_write >= 1, "no kill landed during a write: the test proved nothing"


@pytest.mark.arm
def test_board_gallery_tool_under_qemu(tmp_path, rng):
    """The bundle's face_gallery built for armv7-neon (the NEON dot product) under qemu: the same
    matches and printed scores as Python, and a gallery it enrolls into is the file Python writes."""
    from edgetvm import emulate
    from edgetvm.face.bundle import build_gallery_tool

    tool = build_gallery_tool("armv7-neon", tmp_path)
    g, enrolled = make_gallery(rng, 300)
    path = save_gallery(g, tmp_path / "people.gal")
    queries = [enrolled["person 123"][0] + 0.03 * unit_vectors(rng, 1)[0], *unit_vectors(rng, 2)]
    for i, q in enumerate(queries):
        q.astype(np.float32).tofile(tmp_path / f"q{i}.bin")
        out = emulate.run_arm([tool, path, "search", tmp_path / f"q{i}.bin", "4"], cpu="cortex-a7").stdout
        expected = [f"match {r} {m.name} {m.score:.6f}" for r, m in enumerate(g.search(q, 4))]
        assert out.splitlines()[:4] == expected
        assert out.splitlines()[4] == f"identity {g.identify(q).identity or 'unknown'}"
    assert out.splitlines()[4] == "identity unknown"
    emulate.run_arm([tool, path, "enroll", "new one", tmp_path / "q1.bin"], cpu="cortex-a7")
    emulate.run_arm([tool, path, "remove", "person 000"], cpu="cortex-a7")
    g.enroll("new one", queries[1])
    g.remove("person 000")
    assert path.read_bytes() == gallery_bytes(g)
    damaged = tmp_path / "damaged.gal"
    damaged.write_bytes(path.read_bytes()[:-1])
    run = emulate.run_arm([tool, damaged, "list"], cpu="cortex-a7", check=False)
    assert run.returncode == 1 and "not an edgetvm gallery file" in run.stderr
