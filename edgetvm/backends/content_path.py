"""Load a library through a path named by its content, so that a re-exported artifact is loaded anew.

``dlopen`` (and so ``tvm.runtime.load_module`` and ``ctypes.CDLL``) hands back the handle it already has
when a path, or the inode behind it, is loaded already: a library exported over an earlier one at the
same path, in the same process, would run the earlier code while its sidecar describes the new model.
Each library is loaded instead from a copy named by its SHA-256 in a private cache directory: new
content is a new name, the same content reuses the handle already loaded, which is the same code.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..artifact import sha256_file
from ..errors import ArtifactError
from ..io import atomic_path
from ..zoo import cache_dir

# Copies kept, most recently loaded first: enough for the models of one application, bounded so that
# a long session re-exporting the same path does not fill the disk.
KEEP_COPIES = 16


def content_path(path: str | os.PathLike, sha256: str) -> Path:
    """A copy of ``path`` (whose content has hash ``sha256``) at a path that names that content."""
    path = Path(path)
    folder = cache_dir() / "loaded"
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / f"{sha256}{path.suffix}"
    if copy.exists() and sha256_file(copy) == sha256:
        os.utime(copy)
        return copy
    with atomic_path(copy, mode=0o755) as tmp:
        shutil.copyfile(path, tmp)
        # Hashed after the copy, so that the file loaded is the file checked, even if ``path`` changes now.
        if sha256_file(tmp) != sha256:
            raise ArtifactError(f"{path}: the library changed while it was being loaded; load it again")
    _evict(folder, keep=copy)
    return copy


def _evict(folder: Path, keep: Path) -> None:
    copies = sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in copies[KEEP_COPIES:]:
        if old != keep:
            # A process that has the library loaded keeps its mapping; the name only goes.
            old.unlink(missing_ok=True)
