"""ARMv7 cost of one dense 3x3 stride-1 conv (+ bias + LeakyReLU 0.1, as RetinaFace's), direct against
Winograd F(m,3) (``transform.WinogradConv``): the measurements behind ``winograd_conv.pays_on_arm``.

    EDGETVM_NEON_CYCLES_SRC=/work/shared/tools/neon_cycles.c .venv/bin/python benchmarks/bench_winograd.py \\
        [--shapes 64x32x40,16x16x10,...] [--target cortex-a7] [--json out.json]

Each shape ``CINxCOUTxHW`` is compiled twice for the standalone backend (1 thread), once with the
Winograd rewrite forced (the ARM cost rule bypassed) and once without, and counted under qemu
(guest instructions and the a7 issue-cycle estimate, N+1 minus 1). The default shapes are
RetinaFace 320's dense 3x3 convs and smaller probes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

DEFAULT_SHAPES = ("64x64x40,64x32x40,64x16x40,16x16x40,64x32x20,64x16x20,16x16x20,64x32x10,64x16x10,16x16x10,"
                  "64x64x5,16x16x5,8x8x40,8x16x20,128x128x10,32x32x8,32x32x6")


def conv_net(cin: int, cout: int, hw: int):
    from schedules.nets import NetBuilder

    b = NetBuilder((1, cin, hw, hw))
    y = b.node("LeakyRelu", [b.conv("input", cin, cout, 3)], alpha=0.1)
    return b.build(y, (1, cout, hw, hw))


def measure(cin: int, cout: int, hw: int, target: str, workdir: Path) -> dict:
    import edgetvm
    from edgetvm import emulate
    from edgetvm.transform import winograd_conv

    model = conv_net(cin, cout, hw)
    x = np.random.default_rng(0).uniform(-1, 1, (1, cin, hw, hw)).astype(np.float32)
    row = {"shape": f"{cin}x{cout}x{hw}", "mmac": round(hw * hw * 9 * cin * cout / 1e6, 3)}
    rule = winograd_conv.pays_on_arm
    try:
        winograd_conv.pays_on_arm = lambda *args: None  # forced: the rule is what this measures
        for label, winograd in (("direct", False), ("winograd", True)):
            compiled = edgetvm.compile(model, target, num_threads=1, winograd=winograd)
            found = compiled.report.details.get("WinogradConv", {})
            if winograd and not found.get("rewritten"):
                row["winograd"] = f"declined: {found.get('declined')}"
                continue
            so = compiled.export(workdir / f"{label}_{cin}_{cout}_{hw}.so", standalone=True)
            cost = emulate.cycles_per_inference(so, [x], cpu=compiled.target.qemu_cpu)
            row[label] = {"minsn": round(cost.instructions / 1e6, 3), "mcycles_a7": round(cost.cycles_a7 / 1e6, 3),
                          "insn_per_mac": round(cost.instructions / (row["mmac"] * 1e6), 3)}
            if winograd:
                row["m"] = 6 if found.get("f6") else 4
    finally:
        winograd_conv.pays_on_arm = rule
    if isinstance(row.get("winograd"), dict):
        row["insn_ratio"] = round(row["winograd"]["minsn"] / row["direct"]["minsn"], 3)
        row["a7_ratio"] = round(row["winograd"]["mcycles_a7"] / row["direct"]["mcycles_a7"], 3)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=DEFAULT_SHAPES)
    parser.add_argument("--target", default="cortex-a7")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetvm-bench-winograd-") as tmp:
        for shape in args.shapes.split(","):
            cin, cout, hw = (int(v) for v in shape.split("x"))
            rows.append(measure(cin, cout, hw, args.target, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    result = {"target": args.target, "threads": 1, "backend": "standalone", "rows": rows}
    print(json.dumps(result, indent=2))
    if args.json:
        from edgetvm.io import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
