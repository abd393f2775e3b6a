"""Channel pruning: what it saves and what it costs, on MobileFaceNet and on the real SFace model.

MobileFaceNet (Chen et al. 2018, random well-scaled weights): parameters, MACs and host latency
before/after pruning 30% of each group's channels, and the embedding cosine to the unpruned model.

SFace (OpenCV zoo, trained, int8 block-quantized weights folded to float32 at import): for pruning
ratios 0.1 .. 0.5, the cosine between the pruned and the unpruned model's 128-d embeddings, with and
without least-squares recovery, and host latency (pruned / unpruned, measured in the same run). The
pruning is ``prune_model``'s with calibration faces and default options: channels chosen by
greedy least-squares reconstruction, the ratio as the fraction of all prunable channels removed (the 14
groups at least two lanes wide: 5984 channels; SFace's input and embedding stay), spread over the
layer groups by their measured sensitivity (``--allocation uniform``: the ratio of every group),
channel counts in multiples of 4 (NEON lanes; ``--round-to``), least-squares recovery on the pruned
model's own inputs with cross-validated ridge. "Without recovery" removes the same channels and refits
nothing. Latency is of the pruned ONNX ``prune_model`` writes, compiled for the host. The host
schedules vectorise a kernel by the widest power of two up to the host's lanes that divides its
channel count (``schedules/cpu.py``: ``vector_lanes``): on an AVX2 host (8 lanes) a count of 4 mod 8
runs at half the vector width, so a 4-lane model can be slower than the unpruned one there. For the
host's own latency, prune with ``--round-to 8`` (what ``compile(prune=...)`` does for the host).

Faces: no labelled face set ships in any package, so the inputs are real face crops, not aligned by
a detector: the astronaut portrait cropped around the face (112x112, roughly the ArcFace template)
with geometric and photometric augmentations, and the LFW subset's 25x25 grey faces upscaled to
112x112 RGB. Calibration: 64 astronaut crops (seed 1) and 128 augmented LFW faces of people 0..49
(192 inputs; ``--calib-faces N``: N crops and 2N LFW faces); evaluation: 12 other astronaut
augmentations (seed 2) and the LFW faces 50..85 as they are, people calibration never saw (the "LS
LFW" column: cosine on those alone). Least-squares recovery is only as good as its calibration set:
SFace at 20%, cosine 0.942 with 48 calibration inputs, 0.947 with 96, 0.9515 with 192.
Latency is host wall time, one thread (a shared machine makes TVM's spinning thread pool erratic),
after one warm-up run per model: only the ratio pruned / unpruned, measured interleaved in the same
run, means anything.

    .venv/bin/python benchmarks/bench_pruning.py [--quick] [--json out.json] [--ratios 0.2] [--round-to 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from PIL import Image

import edgetvm
from edgetvm.frontends import load_model
from edgetvm.api import prune_model
from edgetvm.frontends.inspect import relax_stats
from edgetvm.host import calibration_evaluator
from edgetvm.pruning.rewrite import prune_function
from edgetvm.pruning.weights import lift_weights
from edgetvm.pruning.numpy_eval import NumpyEvaluator
from edgetvm.targets import resolve_target
from edgetvm.zoo import fetch, load_astronaut, load_lfw_subset
from edgetvm.zoo.architectures import mobilefacenet

ASTRONAUT_FACE = (158, 50, 298, 190)  # left, top, right, bottom in the 512x512 portrait


def astronaut_faces(n: int, seed: int) -> list[np.ndarray]:
    """Augmented 112x112 crops of the astronaut's face: shift, scale, rotation, flip, light."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(load_astronaut())
    left, top, right, bottom = ASTRONAUT_FACE
    faces = []
    for _ in range(n):
        size = (right - left) * rng.uniform(0.9, 1.12)
        cx = (left + right) / 2 + rng.uniform(-8, 8)
        cy = (top + bottom) / 2 + rng.uniform(-8, 8)
        crop = image.rotate(rng.uniform(-10, 10), center=(cx, cy), resample=Image.BILINEAR)
        crop = crop.crop((int(cx - size / 2), int(cy - size / 2), int(cx + size / 2), int(cy + size / 2)))
        crop = crop.resize((112, 112), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.asarray(crop, dtype=np.float32) * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20)
        faces.append(np.clip(arr, 0, 255).transpose(2, 0, 1)[None])
    return faces


def lfw_faces(indices, seed: int | None = None) -> list[np.ndarray]:
    """LFW subset faces (first 100 of the set are faces), grey 25x25 upscaled to 112x112 RGB 0..255.

    With ``seed``, each face is augmented (shift, scale, small rotation, flip, light), so a face may be
    listed several times for calibration and still give different inputs.
    """
    lfw = load_lfw_subset()
    rng = np.random.default_rng(seed) if seed is not None else None
    faces = []
    for i in indices:
        grey = Image.fromarray((lfw[i] * 255).astype(np.uint8)).resize((112, 112), Image.BICUBIC)
        if rng is not None:
            size = 112 * rng.uniform(0.9, 1.0)
            cx, cy = 56 + rng.uniform(-5, 5), 56 + rng.uniform(-5, 5)
            grey = grey.rotate(rng.uniform(-8, 8), center=(cx, cy), resample=Image.BILINEAR)
            grey = grey.crop((int(cx - size / 2), int(cy - size / 2), int(cx + size / 2), int(cy + size / 2)))
            grey = grey.resize((112, 112), Image.BILINEAR)
            if rng.random() < 0.5:
                grey = grey.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.asarray(grey, dtype=np.float32)
        if rng is not None:
            arr = np.clip(arr * rng.uniform(0.8, 1.2) + rng.uniform(-15, 15), 0, 255)
        faces.append(np.repeat(arr[None, None], 3, axis=1))
    return faces


LFW_CALIBRATION = range(0, 50)  # people whose faces may calibrate
LFW_EVALUATION = range(50, 100)  # held out: other faces, never seen by the calibration


def face_sets(n_calib: int, n_eval: int) -> tuple[list, list]:
    """Calibration: augmented astronaut crops (seed 1) and LFW faces 0..49 (augmented, cycled);
    evaluation: other astronaut augmentations (seed 2) and the held-out LFW faces 50..99 as they are."""
    calib = astronaut_faces(n_calib, seed=1) + lfw_faces(
        [LFW_CALIBRATION[i % len(LFW_CALIBRATION)] for i in range(2 * n_calib)], seed=3)
    n_lfw = min(3 * n_eval, len(LFW_EVALUATION))
    evaluation = astronaut_faces(n_eval, seed=2) + lfw_faces(LFW_EVALUATION[:n_lfw])
    return calib, evaluation


def cosines(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    a = np.concatenate([x.reshape(1, -1) for x in a])
    b = np.concatenate([x.reshape(1, -1) for x in b])
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def latency(models: dict, x: np.ndarray, repeats: int) -> dict[str, float]:
    """Median seconds per run, runs interleaved across models so load changes hit all alike."""
    times = {name: [] for name in models}
    for model in models.values():
        model(x)  # warm up
    for _ in range(repeats):
        for name, model in models.items():
            started = time.perf_counter()
            model(x)
            times[name].append(time.perf_counter() - started)
    return {name: float(np.median(t)) for name, t in times.items()}


def bench_mobilefacenet(calib: list, evaluation: list, ratio: float, repeats: int) -> dict:
    model = mobilefacenet()
    norm = [[(x - 127.5) / 128.0] for x in calib]
    eval_norm = [(x - 127.5) / 128.0 for x in evaluation]
    started = time.perf_counter()
    lanes = resolve_target("host").vector_lanes  # as compile(prune=...) does for the host
    recovered = prune_model(model, ratio, criterion="bn_gamma", calibration=norm, round_to=lanes, allocation="uniform")
    prune_seconds = time.perf_counter() - started
    plain = prune_model(model, ratio, criterion="bn_gamma", recover=False, round_to=lanes, allocation="uniform")
    before = relax_stats(load_model(model).mod["main"])
    after = relax_stats(load_model(recovered.onnx).mod["main"])
    base = edgetvm.compile(model, num_threads=1)
    pruned = edgetvm.compile(recovered.onnx, num_threads=1)
    run = NumpyEvaluator()
    f0, w0 = lift_weights(load_model(model).mod["main"])
    ref = [row[0] for row in run(f0, w0, [[x] for x in eval_norm])]
    cos = {}
    for name, result in (("plain", plain), ("recovered", recovered)):
        out = [row[0] for row in run(result.result.func, result.result.weights, [[x] for x in eval_norm])]
        cos[name] = cosines(out, ref)
    tvm_out = pruned(eval_norm[0])
    tvm_out = tvm_out[0] if isinstance(tvm_out, (list, tuple)) else tvm_out
    numpy_out = run(recovered.result.func, recovered.result.weights, [[eval_norm[0]]])[0][0]
    lat = latency({"unpruned": base, "pruned": pruned}, eval_norm[0], repeats)
    return {
        "ratio": ratio, "criterion": "bn_gamma",
        "params_before": before["params"], "params_after": after["params"],
        "macs_before": int(sum(before["macs_by_op"].values())), "macs_after": int(sum(after["macs_by_op"].values())),
        "latency_unpruned_s": lat["unpruned"], "latency_pruned_s": lat["pruned"],
        "latency_ratio": lat["pruned"] / lat["unpruned"],
        "cosine_plain_mean": float(cos["plain"].mean()), "cosine_recovered_mean": float(cos["recovered"].mean()),
        "cosine_recovered_min": float(cos["recovered"].min()),
        "prune_seconds": prune_seconds,
        "compiled_vs_numpy_max_abs": float(np.abs(tvm_out - numpy_out).max()),
    }


def bench_sface(calib: list, evaluation: list, ratios: list[float], repeats: int, criterion: str, allocation: str,
                n_astronaut: int, cosine: bool = True, round_to: int = 4) -> dict:
    """Per ratio: the pruned SFace (``prune_model``'s path: criterion and allocation resolved as the API
    does), its embedding cosine to the unpruned model with least-squares recovery and without (the
    same channels, recovery skipped), and host latency of the pruned ONNX compiled (4-channel lanes)."""
    from edgetvm.frontends.onnx import import_onnx_with_weights
    from edgetvm.pruning.onnx_export import write_pruned_onnx
    from edgetvm.pruning.prune import pruning_config
    from edgetvm.pruning.recovery import prune_and_recover

    path = fetch("sface")
    imported, weights, proto = import_onnx_with_weights(path)
    func, source = imported.mod["main"], imported.source
    base_stats = relax_stats(load_model(path).mod["main"])
    run = NumpyEvaluator()
    ref = [row[0] for row in run(func, weights, [[x] for x in evaluation])]
    samples = [[x] for x in calib]
    rows, pruned_models = [], {}
    costs = None  # the per-group costs "sensitivity" allocation measures once (same probe for every ratio)
    for ratio in ratios:
        row = {"ratio": ratio}
        config = pruning_config(ratio, criterion, round_to=round_to, allocation=allocation, calibrated=True)
        config.sensitivity = costs
        row["criterion"], row["allocation"] = config.criterion, config.allocation
        started = time.perf_counter()
        evaluate = calibration_evaluator()
        result = prune_function(func, config, weights=weights, evaluate=evaluate, calibration=samples)
        row["prune_seconds"] = time.perf_counter() - started
        costs = {g["group"]: g.get("sensitivity_curve", g["sensitivity"]) for g in result.plan.report
                 if "sensitivity" in g} or None
        plain_func, plain_weights, _ = prune_and_recover(func, weights, result.plan, evaluate, samples, recover=False)
        if cosine:
            for tag, (f, w) in (("plain", (plain_func, plain_weights)), ("recovered", (result.func, result.weights))):
                cos = cosines([r[0] for r in run(f, w, [[x] for x in evaluation])], ref)
                row[f"cosine_{tag}_mean"] = float(cos.mean())
                row[f"cosine_{tag}_min"] = float(cos.min())
                row[f"cosine_{tag}_lfw_mean"] = float(cos[n_astronaut:].mean())  # held-out people only
        stats = relax_stats(result.bound())
        row["params"] = stats["params"]
        row["macs"] = int(sum(stats["macs_by_op"].values()))
        report = [g for g in result.plan.report if "blocked" not in g]
        row["channels_kept"] = sum(g["kept"] for g in report)
        row["channels"] = sum(g["channels"] for g in report)
        row["kept_per_group"] = {g["group"]: [g["kept"], g["channels"]] for g in report}
        pruned_models[ratio] = (write_pruned_onnx(proto, result, source), result)
        rows.append(row)
        print(f"  sface ratio {ratio}: cosine plain {row.get('cosine_plain_mean', float('nan')):.4f}, "
              f"recovered {row.get('cosine_recovered_mean', float('nan')):.4f} "
              f"(held-out LFW people {row.get('cosine_recovered_lfw_mean', float('nan')):.4f}), "
              f"{row['prune_seconds']:.0f} s", file=sys.stderr, flush=True)
    # Host latency of exactly the models above (their pruned ONNX compiled), against the unpruned
    # model, interleaved.
    models = {"unpruned": edgetvm.compile(path, num_threads=1)}
    for ratio, (onnx_model, _) in pruned_models.items():
        models[f"pruned_{ratio}"] = edgetvm.compile(onnx_model, num_threads=1)
    x = evaluation[0]

    def first(out):
        return out[0] if isinstance(out, (list, tuple)) else out

    check = first(models["unpruned"](x))
    worst = 0.0
    for ratio, (_, result) in pruned_models.items():
        want = run(result.func, result.weights, [[x]])[0][0]
        worst = max(worst, float(np.abs(first(models[f"pruned_{ratio}"](x)) - want).max()))
    lat = latency(models, x, repeats)
    for row in rows:
        row["latency_s"] = lat[f"pruned_{row['ratio']}"]
        row["latency_ratio"] = lat[f"pruned_{row['ratio']}"] / lat["unpruned"]
    return {
        "criterion": criterion, "allocation": allocation, "round_to": round_to,
        "host_vector_lanes": resolve_target("host").vector_lanes,
        "params_unpruned": base_stats["params"], "macs_unpruned": int(sum(base_stats["macs_by_op"].values())),
        "latency_unpruned_s": lat["unpruned"],
        "compiled_vs_numpy_max_abs": float(np.abs(check - ref[0]).max()),
        "pruned_compiled_vs_numpy_max_abs": worst,
        "rows": rows,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ratios 0.2 and 0.4 only, fewer faces and repeats")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--criterion", default="auto", choices=["auto", "l1", "bn_gamma", "activation", "reconstruction"],
                        help="SFace channel ranking (auto: as prune_model with calibration, reconstruction)")
    parser.add_argument("--allocation", default="auto", choices=["auto", "uniform", "global", "sensitivity"],
                        help="SFace: how the ratio is spread over layer groups (auto: as prune_model, sensitivity)")
    parser.add_argument("--calib-faces", type=int, default=None, help="astronaut crops for calibration (and twice "
                        "as many LFW faces); default 64, 8 with --quick")
    parser.add_argument("--ratios", default=None, help="comma-separated SFace ratios (default 0.1,...,0.5)")
    parser.add_argument("--skip-mobilefacenet", action="store_true")
    parser.add_argument("--skip-sface", action="store_true")
    parser.add_argument("--skip-cosine", action="store_true", help="SFace: latency, params and MACs only")
    parser.add_argument("--round-to", type=int, default=4,
                        help="SFace: kept channel counts in multiples of this (default 4: NEON lanes, what "
                             "compile(prune=...) does for ARM; give the host's lanes, 8 with AVX2, for an "
                             "honest host latency column)")
    args = parser.parse_args(argv)
    n_calib, n_eval, repeats = (8, 8, 5) if args.quick else (64, 12, 15)
    n_calib = args.calib_faces or n_calib
    ratios = [0.2, 0.4] if args.quick else [0.1, 0.2, 0.3, 0.4, 0.5]
    if args.ratios:
        ratios = [float(r) for r in args.ratios.split(",")]
    calib, evaluation = face_sets(n_calib, n_eval)
    results = {"faces": {"calibration": len(calib), "evaluation": len(evaluation),
                         "source": "astronaut face crops + augmentations, LFW subset upscaled"}}
    if not args.skip_mobilefacenet:
        results["mobilefacenet"] = bench_mobilefacenet(calib, evaluation, 0.3, repeats)
    if not args.skip_sface:
        results["sface"] = bench_sface(calib, evaluation, ratios, repeats, args.criterion, args.allocation, n_eval,
                                       not args.skip_cosine, args.round_to)
    print(json.dumps(results, indent=2))
    if "mobilefacenet" in results:
        m = results["mobilefacenet"]
        print(f"\nMobileFaceNet, {m['ratio']:.0%} of channels pruned ({m['criterion']}):")
        print(f"  params {m['params_before']:,} -> {m['params_after']:,} "
              f"({m['params_after'] / m['params_before']:.2f}x)")
        print(f"  MACs   {m['macs_before']:,} -> {m['macs_after']:,} ({m['macs_after'] / m['macs_before']:.2f}x)")
        print(f"  host latency pruned/unpruned {m['latency_ratio']:.2f}x; embedding cosine to unpruned: "
              f"{m['cosine_plain_mean']:.4f} plain, {m['cosine_recovered_mean']:.4f} recovered (random weights)")
    if "sface" in results:
        s = results["sface"]
        r0 = s["rows"][0]
        print(f"\nSFace ({r0['criterion']}, {r0['allocation']} allocation; ratio = fraction of prunable channels "
              f"removed), unpruned {s['params_unpruned']:,} params, {s['macs_unpruned']:,} MACs:")
        print(f"  {'ratio':>5}  {'cos plain':>9}  {'cos LS':>7}  {'min LS':>7}  {'LS LFW':>7}  {'MACs':>7}  "
              f"{'params':>7}  {'latency':>7}")
        for r in s["rows"]:
            cos = [r.get(k, float("nan")) for k in ("cosine_plain_mean", "cosine_recovered_mean", "cosine_recovered_min",
                                                     "cosine_recovered_lfw_mean")]
            print(f"  {r['ratio']:>5.1f}  {cos[0]:>9.4f}  {cos[1]:>7.4f}  {cos[2]:>7.4f}  {cos[3]:>7.4f}  "
                  f"{r['macs'] / s['macs_unpruned']:>6.2f}x  {r['params'] / s['params_unpruned']:>6.2f}x  "
                  f"{r['latency_ratio']:>6.2f}x  (kept {r['channels_kept']}/{r['channels']} prunable channels)")
        if s["round_to"] % s["host_vector_lanes"]:
            # The host schedules vectorise channels by the host's lanes; counts that are not a multiple fall
            # back to slower code, so this column is not what compile(prune=...) gives on this host.
            print(f"  latency: channels kept in multiples of {s['round_to']} (NEON), the host vectorises by "
                  f"{s['host_vector_lanes']}: the host latency is pessimistic; --round-to "
                  f"{s['host_vector_lanes']} for what compile(prune=...) builds here")
    if args.json:
        from edgetvm.io import atomic_write_json

        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
