"""Plain descriptions of a model's interface, shared by the frontends, backends and artifacts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import tvm


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, obj: dict) -> "TensorSpec":
        return cls(obj["name"], tuple(int(d) for d in obj["shape"]), obj["dtype"])


@dataclass
class ImportedModel:
    """A model in Relax: ``mod["main"]`` takes the inputs in order, weights are bound constants."""

    mod: tvm.IRModule
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    source: str  # file name or "<bytes>"
    format: str  # "onnx" or "tflite"
    notes: list[str] = field(default_factory=list)  # what the frontend fixed up on the way in

    def describe(self) -> dict:
        return {"inputs": [asdict(t) for t in self.inputs], "outputs": [asdict(t) for t in self.outputs],
                "source": self.source, "format": self.format, "notes": list(self.notes)}
