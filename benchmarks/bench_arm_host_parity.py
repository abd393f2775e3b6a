"""How far the ARM build (standalone, under qemu) is from the host build, kernel by kernel.

    .venv/bin/python benchmarks/bench_arm_host_parity.py [--models selfie_segmentation,...] [--json out.json]

Both builds get every kernel's result as an extra output (each ``call_tir`` of ``main``, after
fusion and scheduling, so the kernels are the ones the real builds run), on the test input of
``tests/frontends/conftest.py``. Per model: the relative error max|arm - host| / max|host| of each
output, the first kernel whose result differs and the largest per-kernel error, against the
issue's goal of 1e-5 per output. With every product rounded before it is added on both targets
(``backends/neon_mla.py``, ``backends/unfused_products.py``) every kernel agrees bit for bit;
a kernel that does not is where the two builds' arithmetic diverges (another summation order, a
fused multiply-add, a flushed denormal).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from tvm import relax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edgetvm  # noqa: E402
from edgetvm import emulate  # noqa: E402
from edgetvm.specs import TensorSpec  # noqa: E402
from edgetvm.zoo import fetch  # noqa: E402
from tests.frontends.checks import relative_error  # noqa: E402
from tests.frontends.conftest import resized  # noqa: E402

GOAL = 1e-5
FACE = (slice(30, 254), slice(130, 354))
INPUTS = {"selfie_segmentation": lambda: resized((256, 256)),
          "selfie_segmentation_landscape": lambda: resized((256, 144)),
          "facemesh_attention": lambda: resized((192, 192), FACE)}


def with_kernel_outputs(compiled: edgetvm.CompiledModel) -> list[str]:
    """Make every kernel result of ``compiled``'s main an output after the model's own; their names."""
    mod = relax.transform.ToNonDataflow()(compiled.scheduled)
    main = mod["main"]
    taps, specs = [], []
    for block in main.body.blocks:
        for binding in block.bindings:
            value = binding.value
            is_kernel = isinstance(value, relax.Call) and value.op.name == "relax.call_tir"
            if is_kernel and isinstance(binding.var.ty, relax.TensorType):
                taps.append(binding.var)
                ty = binding.var.ty
                specs.append(TensorSpec(f"{len(taps):03d}_{value.args[0].name_hint}", tuple(int(d) for d in ty.shape),
                                        str(ty.dtype)))
    result = main.body.body
    if isinstance(result.ty, relax.TupleType):
        outputs = [relax.TupleGetItem(result, i) for i in range(len(result.ty.fields))]
        types = list(result.ty.fields)
    else:
        outputs, types = [result], [result.ty]
    body = relax.SeqExpr(main.body.blocks, relax.Tuple([*outputs, *taps]))
    ret = relax.TupleType([*types, *(t.ty for t in taps)])
    mod["main"] = relax.Function(main.params, body, ret, main.is_pure, main.attrs)
    compiled.scheduled = relax.transform.Normalize()(mod)
    compiled.imported.outputs = [*compiled.imported.outputs, *specs]
    return [spec.name for spec in specs]


def kernel_name(tap: str) -> str:
    return tap.split("_", 1)[1]


def parity(name: str, target: str) -> dict:
    x = np.ascontiguousarray((INPUTS[name]() / 255.0)[None].astype(np.float32))
    host = edgetvm.compile(fetch(name), "host")
    model_outputs = [spec.name for spec in host.outputs]
    host_taps = with_kernel_outputs(host)
    expected = host.run_dict(x)
    arm = edgetvm.compile(fetch(name), target)
    arm_taps = with_kernel_outputs(arm)
    with tempfile.TemporaryDirectory() as tmp:
        arm.export(Path(tmp) / "model.so", standalone=True)
        result = emulate.run_standalone_arm(Path(tmp) / "model.so", [x], cpu=arm.target.qemu_cpu)
    got = {spec.name: out for spec, out in zip(result.output_specs, result.outputs)}
    # The ARM build has kernels of its own (the stem's channel padding): kernels pair up by name, in order.
    arm_by_kernel: dict[str, list[str]] = {}
    for tap in arm_taps:
        arm_by_kernel.setdefault(kernel_name(tap), []).append(tap)
    kernels = []
    for tap in host_taps:
        twins = arm_by_kernel.get(kernel_name(tap))
        if twins:
            kernels.append((tap, relative_error(got[twins.pop(0)], expected[tap])))
    first = next(((tap, err) for tap, err in kernels if err > 0), None)
    worst = max(kernels, key=lambda item: item[1], default=None)
    errors = {output: relative_error(got[output], expected[output]) for output in model_outputs}
    return {"model": name, "target": target, "outputs": errors, "max_error": max(errors.values()), "goal": GOAL,
            "ratio_to_goal": max(errors.values()) / GOAL, "kernels_compared": len(kernels),
            "kernels_identical": sum(err == 0 for _, err in kernels),
            "first_differing_kernel": first and {"kernel": first[0], "error": first[1]},
            "worst_kernel": worst and {"kernel": worst[0], "error": worst[1]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(INPUTS))
    parser.add_argument("--target", default="armv7-neon")
    parser.add_argument("--json", help="also write the JSON table here")
    args = parser.parse_args(argv)
    rows = [parity(name, args.target) for name in args.models.split(",")]
    print(json.dumps(rows, indent=2))
    print(f"\n{'model':<32}{'max error':>11}{'/ goal':>8}{'identical kernels':>19}  first differing kernel")
    for row in rows:
        first = row["first_differing_kernel"]
        print(f"{row['model']:<32}{row['max_error']:>11.3g}{row['ratio_to_goal']:>8.2f}"
              f"{row['kernels_identical']:>12} of {row['kernels_compared']:<4}  {first['kernel'] if first else '-'}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
