"""The imported function's results as TensorSpecs named after the model's own outputs."""

from __future__ import annotations

from tvm import relax

from ..errors import UnsupportedModelError
from ..specs import TensorSpec


def output_specs(func: relax.Function, names: list[str], source: str) -> list[TensorSpec]:
    """One TensorSpec per result of ``func`` (a tensor or a tuple of tensors); all shapes static."""
    ret = func.ret_ty
    fields = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    if len(fields) != len(names):
        names = names + [f"output_{i}" for i in range(len(names), len(fields))]
    specs = []
    for name, field in zip(names, fields):
        shape = getattr(field, "shape", None)
        try:
            dims = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise UnsupportedModelError(
                f"{source}: output {name!r} has a data-dependent shape ({shape}); edgetvm compiles "
                f"static-shape models only"
            ) from None
        specs.append(TensorSpec(name, dims, str(field.dtype)))
    return specs
