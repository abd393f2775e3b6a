"""The face networks' persistent compile cache: a host library compiled once is loaded by every later
process (each ``edgetvm face`` command is one), instead of compiled again for 7-15 s.

An entry is the exported host artifact (``model.so`` and its sidecar; ``edgetvm.load`` checks the
library's SHA-256 against the sidecar) in a directory named by a digest of everything the library
depends on: the model file's bytes, the input shape, target, compile options and thread count, the
edgetvm and TVM versions, and a digest of edgetvm's own source files (a development checkout keeps
version 0.1.0 while its code changes). An entry is written in a temporary directory and renamed
into place, so a reader never sees half of one and two writers of the same entry do not collide.
Each use touches the entry; past ``max_bytes`` the least recently used entries are removed.

Where: ``$EDGETVM_CACHE/compiled`` (``edgetvm.zoo.fetch.cache_dir``); ``EDGETVM_COMPILE_CACHE=0``
or ``edgetvm face ... --no-cache`` turn it off; ``EDGETVM_COMPILE_CACHE_MB`` bounds its size.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import tvm

from .. import __version__
from ..api import load
from ..errors import ArtifactError
from ..zoo.fetch import cache_dir

DEFAULT_MAX_BYTES = 2 << 30
STALE_STAGING_SECONDS = 6 * 3600
ARTIFACT = "model.so"
_enabled = True


def set_enabled(enabled: bool) -> None:
    """Turn the persistent cache on or off for this process (``--no-cache``); EDGETVM_COMPILE_CACHE=0
    keeps it off either way."""
    global _enabled
    _enabled = bool(enabled)


def enabled() -> bool:
    return _enabled and os.environ.get("EDGETVM_COMPILE_CACHE", "1").strip().lower() not in ("0", "no", "off", "false")


def cache_root() -> Path:
    return cache_dir() / "compiled"


def max_bytes() -> int:
    text = os.environ.get("EDGETVM_COMPILE_CACHE_MB")
    if not text:
        return DEFAULT_MAX_BYTES
    try:
        return max(int(float(text) * (1 << 20)), 0)
    except ValueError:
        return DEFAULT_MAX_BYTES


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """A digest of edgetvm's Python and C sources: a code change is a new compiler."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.suffix in (".py", ".c", ".h") and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def model_digest(source) -> str:
    """SHA-256 of a model given as a path, bytes or an ONNX ModelProto."""
    if isinstance(source, (str, os.PathLike)):
        data = Path(source).read_bytes()
    elif isinstance(source, bytes):
        data = source
    else:
        data = source.SerializeToString(deterministic=True)
    return hashlib.sha256(data).hexdigest()


def entry_key(model_sha256: str, description: dict) -> str | None:
    """The entry name for a model and what it is compiled with; None when ``description`` holds values
    that have no stable text form (arrays, callables: calibration data given by the caller)."""
    try:
        text = json.dumps({"model": model_sha256, **description, "edgetvm": __version__, "tvm": tvm.__version__,
                           "source": source_digest()}, sort_keys=True)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def _entry_bytes(entry: Path) -> int:
    return sum(f.stat().st_size for f in entry.iterdir() if f.is_file())


def evict(root: Path, limit: int, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used entries until the cache holds at most ``limit`` bytes."""
    entries = []
    for entry in root.iterdir():
        if entry.name.startswith("."):
            # A staging directory: in use for minutes at most, unless its writer died.
            try:
                if time.time() - entry.stat().st_mtime > STALE_STAGING_SECONDS:
                    shutil.rmtree(entry, ignore_errors=True)
            except OSError:
                pass
            continue
        if entry.is_dir():
            try:
                entries.append((entry.stat().st_mtime, _entry_bytes(entry), entry))
            except OSError:  # removed by another process meanwhile
                continue
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, entry in sorted(entries):
        if total <= limit:
            break
        if entry == keep:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        total -= size
        removed.append(entry)
    return removed


def cached_runner(key: str, compile_fn: Callable[[], object], *, num_threads: int | None = None,
                  say: Callable[[str], None] = lambda line: None):
    """The host runner of entry ``key``: loaded from the cache, or compiled by ``compile_fn()`` (an
    ``edgetvm.CompiledModel`` for the host), exported into the cache, and loaded from there."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    entry = root / key
    if (entry / ARTIFACT).exists():
        try:
            runner = load(entry / ARTIFACT, num_threads=num_threads)
            os.utime(entry)
            say(f"loaded from the compile cache {entry}")
            return runner
        except ArtifactError as exc:
            # A damaged entry (disk full, edited by hand): compiled again below.
            say(f"compile cache entry {entry} unusable ({exc}); compiling again")
            shutil.rmtree(entry, ignore_errors=True)
    say("compiling (not in the compile cache yet)")
    compiled = compile_fn()
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        compiled.export(staging / ARTIFACT)
        try:
            os.rename(staging, entry)
        except OSError:
            # Another process wrote the same entry meanwhile: theirs is as good as ours.
            if not (entry / ARTIFACT).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    os.utime(entry)
    evict(root, max_bytes(), keep=entry)
    say(f"saved to the compile cache {entry}")
    return load(entry / ARTIFACT, num_threads=num_threads)

