"""Artifacts on disk: the shared library, its JSON sidecar, and loading them back.

The sidecar (``model.so.json``) records the interface (input and output names, shapes, dtypes), the
target, the passes applied, the edgetvm and TVM versions and the SHA-256 of the library.
``load`` refuses a library that does not match its sidecar or was built for another machine:
loading an artifact runs its code, so only load artifacts you built or trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import numpy as np

from .errors import ArtifactError, InputError
from .specs import TensorSpec

SIDECAR_SUFFIX = ".json"
FORMAT_VERSION = 1
KINDS = ("tvm-vm", "standalone")


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + SIDECAR_SUFFIX)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_sidecar(path: str | os.PathLike) -> dict:
    side = sidecar_path(path)
    if not Path(path).exists():
        raise ArtifactError(f"{path}: no such artifact")
    if not side.exists():
        raise ArtifactError(f"{path}: its sidecar {side.name} is missing; re-export the artifact with edgetvm")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{side}: the sidecar is not valid JSON ({exc}); re-export the artifact") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{side}: the sidecar is not a JSON object; re-export the artifact with edgetvm")
    for key in ("format_version", "sha256", "target", "inputs", "outputs", "kind"):
        if key not in meta:
            raise ArtifactError(f"{side}: the sidecar lacks {key!r}; re-export the artifact with this edgetvm")
    if meta["format_version"] != FORMAT_VERSION:
        raise ArtifactError(f"{side}: sidecar format {meta['format_version']!r}, but this edgetvm reads format "
                            f"{FORMAT_VERSION}; re-export the artifact with this edgetvm")
    if meta["kind"] not in KINDS:
        raise ArtifactError(f"{side}: unknown artifact kind {meta['kind']!r} (expected one of {list(KINDS)})")
    if not isinstance(meta["sha256"], str) or not isinstance(meta["target"], dict):
        raise ArtifactError(f"{side}: the sidecar's sha256 or target entry is malformed; re-export the artifact")
    for key in ("inputs", "outputs"):
        try:
            meta[key] = [TensorSpec.from_json(t).to_json() for t in meta[key]]
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{side}: the sidecar's {key} are malformed (each needs a name, an integer shape "
                                f"and a dtype); re-export the artifact") from None
    return meta


def verify_artifact(path: str | os.PathLike, meta: dict, *, emulate: bool = False) -> None:
    """The library matches its sidecar's SHA-256 and was built for this machine (or, with
    ``emulate``, is a standalone ARM build that qemu can run)."""
    actual = sha256_file(path)
    if actual != meta["sha256"]:
        raise ArtifactError(
            f"{path}: SHA-256 {actual[:16]}... does not match its sidecar ({meta['sha256'][:16]}...): the library "
            f"was modified or replaced after export. Refusing to load it; re-export it."
        )
    arch = meta["target"].get("arch")
    if arch == platform.machine():
        return
    if emulate and arch == "armv7" and meta["kind"] == "standalone":
        return
    if meta["kind"] == "standalone" and arch == "armv7":
        hint = "run it on the board, or here under qemu with edgetvm.load(path, emulate=True) / `edgetvm run --emulate`"
    elif arch == "armv7":
        hint = ("copy it to the board and load it there with TVM's runtime; to run it here under qemu, compile it "
                "with --standalone (export(path, standalone=True)) and run that with `edgetvm run --emulate`")
    else:
        hint = "copy it to the board and load it there with TVM's runtime, or compile for 'host'"
    raise ArtifactError(
        f"{path}: built for target {meta['target'].get('preset')} ({arch}), but this machine is "
        f"{platform.machine()}; {hint}"
    )


class Runner:
    """Name- and shape-checked calls into a compiled model, numpy in and numpy out."""

    def __init__(self, inputs: list[TensorSpec], outputs: list[TensorSpec], invoke, label: str):
        self.inputs = inputs
        self.outputs = outputs
        self._invoke = invoke
        self._label = label

    def bind_inputs(self, args, kwargs) -> list[np.ndarray]:
        names = [t.name for t in self.inputs]
        if args and kwargs:
            raise InputError(f"{self._label}: pass inputs either by position or by name, not both")
        if kwargs:
            unknown = sorted(set(kwargs) - set(names))
            if unknown:
                raise InputError(f"{self._label}: unknown input name(s) {unknown}; the model's inputs are {names}")
            missing = [n for n in names if n not in kwargs]
            if missing:
                raise InputError(f"{self._label}: missing input(s) {missing}; the model's inputs are {names}")
            values = [kwargs[n] for n in names]
        else:
            if len(args) != len(names):
                raise InputError(f"{self._label}: expects {len(names)} input(s) {names}, got {len(args)}")
            values = list(args)
        return [self._check(spec, value) for spec, value in zip(self.inputs, values)]

    def _check(self, spec: TensorSpec, value) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            raise InputError(f"{self._label}: input {spec.name!r} must be a numpy array, got {type(value).__name__}")
        if tuple(value.shape) != spec.shape:
            raise InputError(
                f"{self._label}: input {spec.name!r} has shape {tuple(value.shape)}, expected {spec.shape}"
                + ("; the model takes NCHW, the array looks NHWC (transpose it with x.transpose(0, 3, 1, 2))"
                   if len(spec.shape) == 4 and tuple(value.shape) == (spec.shape[0], spec.shape[2], spec.shape[3], spec.shape[1])
                   else "")
            )
        if str(value.dtype) != spec.dtype:
            raise InputError(
                f"{self._label}: input {spec.name!r} has dtype {value.dtype}, expected {spec.dtype}; "
                f"convert it with x.astype(np.{spec.dtype})"
            )
        # Kernels read dense row-major memory: a strided view would be read wrongly, so copy it.
        return np.ascontiguousarray(value)

    def __call__(self, *args, **kwargs):
        arrays = self.bind_inputs(args, kwargs)
        outs = self._invoke(arrays)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run_dict(self, *args, **kwargs) -> dict[str, np.ndarray]:
        arrays = self.bind_inputs(args, kwargs)
        return {spec.name: out for spec, out in zip(self.outputs, self._invoke(arrays))}
