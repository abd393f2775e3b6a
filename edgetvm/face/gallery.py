"""Identification (1:N): a gallery of enrolled identities searched by cosine similarity.

Every enrolled image is one *sample*: its L2-normalised embedding ``e`` quantized to int8 with its
own scale (float32 arithmetic, round half to even, as C's ``rintf``)::

    s = max_i |e_i| / 127          q_i = rint(e_i / s)

A query ``e'`` is quantized the same way (``q'``, ``s'``) and scores against a sample as

    score = float32(sum_i q'_i q_i) * s' * s          (float32, left to right)

which approximates the cosine ``<e', e>`` (and may exceed 1 by as much): the rounding error of
each code is at most ``s / 2``, so ``|score - <e', e>| <= sqrt(D) * (s + s') / 2`` in the worst
case (about 0.02 for SFace's 128-d embeddings, whose largest component is about 0.25); measured on
real and random embeddings it is at most 3.5e-3 and 1e-3 on average (``tests/face/test_gallery.py``).
The integer dot product is exact in float32 (``|sum| <= 128 * 127^2 < 2^24``), so numpy's float32
matrix-vector product (BLAS, vectorized) and the C library's int32 loop (``face/c/face_gallery.c``)
give bit-identical scores. An identity scores the maximum over its samples; ``search`` returns the
best ``k`` identities (ties: the earlier enrolled first) and ``identify`` accepts the best one when
its score reaches the gallery's threshold (``face.identification.threshold_for_far``).

Two stores with the same content:

* SQLite (``.db``, ``.sqlite``): for the host; tables ``gallery`` (key/value settings),
  ``identity`` and ``sample`` (int8 codes as a BLOB, scale, source image, quality). Every save is
  one transaction.
* The board file (any other suffix, ``.gal`` by convention), read and written by Python and by the
  C library alike, little-endian::

      offset  size         field
      0       8            magic "ETVMGAL\\0"
      8       4  u32       format version (1)
      12      4  u32       header size (64)
      16      4  u32       embedding size D
      20      4  u32       identities N
      24      4  u32       samples R
      28      4  f32       decision threshold (cosine)
      32      4  u32       CRC-32 (zlib's, IEEE 802.3) of every byte from offset 64 to the end
      36      28           recognizer name, UTF-8, NUL padded
      64      N * 64       identities: name (56 bytes UTF-8, NUL padded, at most 55 used),
                           u32 first sample, u32 number of samples (samples are grouped by identity,
                           in enrolment order)
      ...     R * 4  f32   sample scales s
      ...     R * D  i8    sample codes q

  It is written to a temporary file beside it, fsync'ed and renamed over the old one, so a crash at
  any moment leaves the old file or the new one; a file that is neither (copied half-way, damaged)
  fails its size or CRC check with an ArtifactError instead of giving wrong matches.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, InputError
from ..io import atomic_path

MAGIC = b"ETVMGAL\0"
VERSION = 1
HEADER = struct.Struct("<8sIIIIIfI28s")
IDENTITY = np.dtype([("name", "S56"), ("first", "<u4"), ("count", "<u4")])
NAME_BYTES = IDENTITY["name"].itemsize - 1
SQLITE_MAGIC = b"SQLite format 3\0"
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def quantize(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes (n, D) and float32 scales (n,) of float embeddings (n, D): ``q = rint(e / s)``,
    ``s = max|e| / 127`` per row (float32, as the C library computes it)."""
    e = np.asarray(embeddings, dtype=np.float32)
    if e.ndim == 1:
        e = e[None]
    if not np.isfinite(e).all():
        raise InputError("gallery: an embedding holds NaN or infinity; the recognizer's output is broken")
    scales = (np.abs(e).max(axis=1) / np.float32(127)).astype(np.float32)
    if (scales == 0).any():
        raise InputError("gallery: an embedding is all zeros; it cannot be compared by cosine similarity")
    codes = np.rint(e / scales[:, None]).astype(np.int8)
    return codes, scales


@dataclass
class Match:
    name: str
    score: float

    def to_json(self) -> dict:
        return {"name": self.name, "score": round(self.score, 5)}


@dataclass
class Identification:
    """The best ``matches`` of one face, best first; ``identity`` is the top one at or above ``threshold``."""

    matches: list[Match]
    threshold: float

    @property
    def identity(self) -> str | None:
        if self.matches and self.matches[0].score >= self.threshold:
            return self.matches[0].name
        return None

    def to_json(self) -> dict:
        return {"identity": self.identity, "threshold": self.threshold,
                "matches": [m.to_json() for m in self.matches]}


@dataclass
class Gallery:
    """Enrolled identities; samples (``codes``, ``scales``) are grouped by identity in ``names`` order.

    ``sources`` and ``qualities`` (one per sample) are kept by the SQLite store only; the board file
    holds what search needs.
    """

    recognizer: str
    dim: int
    threshold: float
    names: list[str] = field(default_factory=list)
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    codes: np.ndarray | None = None
    scales: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    sources: list[str] = field(default_factory=list)
    qualities: list[float | None] = field(default_factory=list)
    _float_codes: np.ndarray | None = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if self.codes is None:
            self.codes = np.zeros((0, self.dim), np.int8)
        self.counts = np.asarray(self.counts, np.int64)
        if len(self.sources) != len(self.scales):
            self.sources = [""] * len(self.scales)
            self.qualities = [None] * len(self.scales)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def firsts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    def identities(self) -> list[tuple[str, int]]:
        """(name, number of samples) of every identity, in enrolment order."""
        return [(n, int(c)) for n, c in zip(self.names, self.counts)]

    def enroll(self, name: str, embeddings: np.ndarray, sources: list[str] | None = None,
               qualities: list[float] | None = None) -> None:
        """Add samples (L2-normalised embeddings, (n, D)) to identity ``name``, creating it if new."""
        encoded = name.encode()
        if not name or len(encoded) > NAME_BYTES or "\0" in name:
            raise InputError(f"gallery: name {name!r}: give 1 to {NAME_BYTES} bytes of UTF-8 without NUL")
        embeddings = np.asarray(embeddings, np.float32)
        embeddings = embeddings[None] if embeddings.ndim == 1 else embeddings
        if embeddings.ndim != 2 or not embeddings.size or embeddings.shape[1] != self.dim:
            raise InputError(f"gallery: enrolling {name!r} needs {self.dim}-d embeddings of the {self.recognizer} "
                             f"recognizer")
        codes, scales = quantize(embeddings)
        n = len(scales)
        sources = list(sources or [""] * n)
        qualities = list(qualities or [None] * n)
        if name in self.names:
            i = self.names.index(name)
            end = int(self.firsts[i] + self.counts[i])
            self.counts[i] += n
        else:
            end = len(self.scales)
            self.names.append(name)
            self.counts = np.append(self.counts, n)
        self.codes = np.concatenate([self.codes[:end], codes, self.codes[end:]])
        self.scales = np.concatenate([self.scales[:end], scales, self.scales[end:]])
        self.sources[end:end] = sources
        self.qualities[end:end] = qualities
        self._float_codes = None

    def remove(self, name: str) -> None:
        if name not in self.names:
            raise InputError(f"gallery has no identity {name!r}; `edgetvm face gallery GALLERY` lists them")
        i = self.names.index(name)
        first, count = int(self.firsts[i]), int(self.counts[i])
        keep = np.r_[0:first, first + count:len(self.scales)]
        self.codes, self.scales = self.codes[keep], self.scales[keep]
        del self.sources[first:first + count], self.qualities[first:first + count]
        del self.names[i]
        self.counts = np.delete(self.counts, i)
        self._float_codes = None

    def scores(self, embedding: np.ndarray) -> np.ndarray:
        """float32 score of every identity: the best of its samples (see the module docstring)."""
        if not self.names:
            return np.zeros(0, np.float32)
        q, qs = quantize(np.asarray(embedding, np.float32).reshape(1, -1))
        if q.shape[1] != self.dim:
            raise InputError(f"gallery: a {q.shape[1]}-d embedding cannot search a gallery of {self.dim}-d "
                             f"{self.recognizer} embeddings")
        # float32 copies of the int8 codes make the product a BLAS sgemv; integer sums stay exact in float32.
        if self._float_codes is None:
            self._float_codes = self.codes.astype(np.float32)
        dots = self._float_codes @ q[0].astype(np.float32)
        sample_scores = dots * qs[0] * self.scales
        return np.maximum.reduceat(sample_scores, self.firsts)

    def search(self, embedding: np.ndarray, k: int = 5) -> list[Match]:
        """The ``k`` best identities for ``embedding``, best first (ties: earlier enrolled first)."""
        scores = self.scores(embedding)
        k = min(int(k), len(scores))
        if k <= 0:
            return []
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        candidates = np.flatnonzero(scores >= kth)
        best = candidates[np.lexsort((candidates, -scores[candidates]))][:k]
        return [Match(self.names[i], float(scores[i])) for i in best]

    def identify(self, embedding: np.ndarray, k: int = 5) -> Identification:
        return Identification(self.search(embedding, k), self.threshold)


# ---- the board file ---------------------------------------------------------------------------

def gallery_bytes(gallery: Gallery) -> bytes:
    """The board file's bytes (layout in the module docstring)."""
    records = np.zeros(len(gallery.names), IDENTITY)
    records["name"] = [n.encode() for n in gallery.names]
    records["first"] = gallery.firsts
    records["count"] = gallery.counts
    body = (records.tobytes() + gallery.scales.astype("<f4").tobytes()
            + np.ascontiguousarray(gallery.codes, np.int8).tobytes())
    header = HEADER.pack(MAGIC, VERSION, HEADER.size, gallery.dim, len(gallery.names), len(gallery.scales),
                         gallery.threshold, zlib.crc32(body), gallery.recognizer.encode()[:28])
    return header + body


def parse_gallery(data: bytes, name: str = "gallery") -> Gallery:
    """A Gallery from the board file's bytes; ArtifactError naming ``name`` when they are not one."""
    if len(data) < HEADER.size or data[:8] != MAGIC:
        raise ArtifactError(f"{name}: not an edgetvm gallery file (no ETVMGAL header); create one with "
                            f"`edgetvm face enroll {name} NAME IMAGE...`")
    magic, version, header_size, dim, n_ids, n_rows, threshold, crc, recognizer = HEADER.unpack_from(data)
    if version != VERSION or header_size != HEADER.size:
        raise ArtifactError(f"{name}: gallery format version {version} (header {header_size} bytes); this edgetvm "
                            f"reads version {VERSION}: enroll the identities again")
    expected = HEADER.size + n_ids * IDENTITY.itemsize + n_rows * 4 + n_rows * dim
    if len(data) != expected or dim == 0:
        raise ArtifactError(f"{name}: {len(data)} bytes where the header promises {expected}: the file is truncated "
                            f"or damaged; restore it from the SQLite gallery or enroll again")
    body = memoryview(data)[HEADER.size:]
    if zlib.crc32(body) != crc:
        raise ArtifactError(f"{name}: CRC-32 mismatch: the file is damaged; restore it from the SQLite gallery or "
                            f"enroll again")
    records = np.frombuffer(body, IDENTITY, n_ids)
    offset = n_ids * IDENTITY.itemsize
    scales = np.frombuffer(body, "<f4", n_rows, offset).astype(np.float32)
    codes = np.frombuffer(body, np.int8, n_rows * dim, offset + 4 * n_rows).reshape(n_rows, dim).copy()
    counts = records["count"].astype(np.int64)
    if (counts == 0).any() or counts.sum() != n_rows or (records["first"] != np.cumsum(counts) - counts).any():
        raise ArtifactError(f"{name}: identity records do not tile the samples; the file is damaged")
    return Gallery(recognizer.rstrip(b"\0").decode(), int(dim), float(threshold),
                   [n.decode() for n in records["name"]], counts, codes, scales)


# ---- SQLite -----------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS gallery (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identity (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS sample (
    id INTEGER PRIMARY KEY,
    identity INTEGER NOT NULL REFERENCES identity(id) ON DELETE CASCADE,
    scale REAL NOT NULL,
    code BLOB NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    quality REAL
);
"""


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    return db


def _read_sqlite(path: Path) -> Gallery:
    try:
        db = _connect(path)
        try:
            settings = dict(db.execute("SELECT key, value FROM gallery"))
            rows = db.execute("SELECT i.name, s.scale, s.code, s.source, s.quality FROM sample s "
                              "JOIN identity i ON i.id = s.identity ORDER BY i.id, s.id").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise ArtifactError(f"{path}: not a readable gallery database ({exc}); give the file `edgetvm face enroll` "
                            f"wrote") from None
    if "dim" not in settings:
        raise ArtifactError(f"{path}: an SQLite file without a gallery table; give the file `edgetvm face enroll` "
                            f"wrote")
    dim = int(settings["dim"])
    per_name: dict[str, int] = {}
    for r in rows:
        per_name[r[0]] = per_name.get(r[0], 0) + 1
    names = list(per_name)
    counts = np.array(list(per_name.values()), np.int64)
    codes = np.frombuffer(b"".join(r[2] for r in rows), np.int8).reshape(len(rows), dim).copy()
    return Gallery(settings["recognizer"], dim, float(settings["threshold"]), names, counts, codes,
                   np.array([r[1] for r in rows], np.float32), [r[3] for r in rows], [r[4] for r in rows])


def _write_sqlite(gallery: Gallery, path: Path) -> None:
    db = _connect(path)
    try:
        db.executescript(SCHEMA)
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM sample")
        db.execute("DELETE FROM identity")
        db.execute("DELETE FROM gallery")
        db.executemany("INSERT INTO gallery VALUES (?, ?)", [
            ("format", "edgetvm-face-gallery/1"), ("recognizer", gallery.recognizer), ("dim", str(gallery.dim)),
            ("threshold", repr(float(gallery.threshold)))])
        db.executemany("INSERT INTO identity (id, name) VALUES (?, ?)", enumerate(gallery.names))
        owner = np.repeat(np.arange(len(gallery.names)), gallery.counts)
        db.executemany("INSERT INTO sample (identity, scale, code, source, quality) VALUES (?, ?, ?, ?, ?)",
                       ((int(o), float(s), c.tobytes(), src, q) for o, s, c, src, q in
                        zip(owner, gallery.scales, gallery.codes, gallery.sources, gallery.qualities)))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()


# ---- either store ----------------------------------------------------------------------------

def is_sqlite(path: str | os.PathLike) -> bool:
    """Existing files are told apart by their first bytes, new ones by suffix (.db/.sqlite: SQLite)."""
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as fh:
            return fh.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    return path.suffix.lower() in SQLITE_SUFFIXES


def load_gallery(path: str | os.PathLike) -> Gallery:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such gallery; create it with `edgetvm face enroll {path} NAME IMAGE...`")
    if is_sqlite(path):
        return _read_sqlite(path)
    return parse_gallery(path.read_bytes(), str(path))


def save_gallery(gallery: Gallery, path: str | os.PathLike) -> Path:
    """Write ``gallery`` to ``path`` in the store its name or content selects, atomically and durably."""
    path = Path(path)
    if is_sqlite(path):
        _write_sqlite(gallery, path)
    else:
        with atomic_path(path, durable=True) as tmp:
            tmp.write_bytes(gallery_bytes(gallery))
    return path


__all__ = ["Gallery", "Identification", "Match", "gallery_bytes", "load_gallery", "parse_gallery", "quantize",
           "save_gallery"]
