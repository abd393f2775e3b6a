"""The compile API: the whole journey of a model, from file to artifact, on one screen.

    frontend (file -> Relax) -> passes (fuse, prune, quantize, cluster) -> schedules (lower + schedule kernels)
    -> backend (TVM VM library, or standalone C module) -> artifact + JSON sidecar
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from . import __version__
from .artifact import FORMAT_VERSION, Runner, read_sidecar, sha256_file, sidecar_path, verify_artifact
from .backends.standalone import check_optimize, check_weight_storage, export_standalone, load_standalone
from .backends.vm import build_vm, export_vm_library, load_vm_library, store_weights_as_float16
from .compression import CompressOptions, stage_sizes
from .data import Preprocess, Preprocessed, read_samples
from .emulate import standalone_runner
from .errors import ArtifactError, InputError
from .frontends import load_model, resolve_zoo
from .frontends.onnx_qdq import load_model_for_quantization
from .host import calibration_evaluator, run_on_host, vm_runner
from .io import atomic_path, atomic_write_json
from .progress import say as show_stage, with_progress
from .pruning import prune as pruning
from .quantization.quantize import constant_bytes, quantize_model
from .schedules.int8 import schedule_int8_kernels
from .schedules.lower import codegen_target, legalize_and_fuse, schedule_kernels
from .specs import ImportedModel, TensorSpec
from .targets import ResolvedTarget, resolve_target
from .transform.base import collect_findings
from .transform.winograd_conv import WINOGRAD_PASS
from .transform.pipeline import fusion_passes, run_passes
from .tuning.database import apply_tuning_database
from .tuning.requirements import require_tuning_dependencies
from .tuning.rpc import parse_address, reach_tracker
from .tuning.tune import TuningReport, print_progress, tune_module
from .zoo import zoo_preprocessing


@dataclass
class CompileReport:
    """What the compiler did: passes run, their findings, kernel counts, timings."""

    passes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"passes": self.passes, "details": self.details, "timings": self.timings}


class CompiledModel:
    """A compiled model: ``export`` it, or (for host targets) call it directly."""

    def __init__(self, imported: ImportedModel, scheduled: tvm.IRModule, target: ResolvedTarget,
                 report: CompileReport, num_threads: int | None, weights: str = "fp32", optimize: str = "speed"):
        self.imported = imported
        self.scheduled = scheduled
        self.target = target
        self.report = report
        self.num_threads = num_threads
        self.weights = weights
        self.optimize = optimize
        self._executable = None
        self._runner = None
        self.codebooks: list = []  # ClusterWeights(scaled=True)'s (codebook, scales) per layer
        self.preprocess: Preprocess | None = None  # how images become its input, when known

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.imported.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.imported.outputs

    @property
    def executable(self) -> relax.VMExecutable:
        if self._executable is None:
            started = time.perf_counter()
            show_stage(f"building the {self.target.preset} library")
            module = self.scheduled
            if self.weights == "fp16":
                module, self.report.details["float16_weights"] = store_weights_as_float16(module)
            self._executable = build_vm(module, self.target)
            self.report.timings["build"] = time.perf_counter() - started
        return self._executable

    def export(self, path: str | os.PathLike, *, standalone: bool = False) -> Path:
        """Write the ``.so`` (and, standalone, its ``.h`` and example ``main.c``) plus the JSON sidecar."""
        path = Path(path)
        show_stage(f"exporting {path}")
        if not standalone and self.weights == "huffman":
            raise ArtifactError(f"{path}: Huffman-coded weights (--entropy huffman) are decoded by the standalone C "
                                f"runtime only; export with --standalone (standalone=True)")
        if not standalone and self.optimize != "speed":
            raise ArtifactError(f"{path}: --optimize {self.optimize} builds the standalone C module only; export "
                                f"with --standalone (standalone=True), or drop --optimize for the TVM-runtime .so")
        if standalone:
            files = export_standalone(self.scheduled, self.imported, self.target, path,
                                      num_threads=self.num_threads, weights=self.weights, optimize=self.optimize,
                                      codebooks=self.codebooks)
        else:
            with atomic_path(path, mode=0o755) as tmp:
                # TVM's exporter picks the linker by suffix, so the temporary name keeps ``.so``.
                tmp_so = tmp.with_suffix(".so")
                # TVM 0.27's VM, when created, adds an empty memory scope to its executable for every
                # constant (vm.cc, Init), and loading a library saved after that logs a warning per
                # entry: the float16 weights are constants, so a library already run here is rebuilt.
                executable = self.executable
                if self.weights == "fp16" and self._runner is not None:
                    self._executable = self._runner = None
                    executable = self.executable
                try:
                    export_vm_library(executable, tmp_so, self.target)
                    os.replace(tmp_so, tmp)
                finally:
                    tmp_so.unlink(missing_ok=True)
            files = [path]
        atomic_write_json(sidecar_path(path), self._sidecar(path, standalone, files))
        return path

    def _sidecar(self, path: Path, standalone: bool, files: list[Path]) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "kind": "standalone" if standalone else "tvm-vm",
            "sha256": sha256_file(path),
            "files": [Path(f).name for f in files],
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "target": self.target.to_json(),
            "num_threads": self.num_threads,
            "weights": self.weights,
            "optimize": self.optimize,
            "source": self.imported.source,
            "passes": self.report.passes,
            "report": self.report.to_json(),
            "edgetvm_version": __version__,
            "tvm_version": tvm.__version__,
            "preprocess": self.preprocess.to_json() if self.preprocess else None,
        }

    def _host_runner(self) -> Runner:
        if self.target.is_arm:
            raise ArtifactError(
                f"this model was compiled for {self.target.preset} (ARM); export it and run it on the board, "
                f"or under qemu through the standalone backend"
            )
        if self._runner is None:
            self._runner = vm_runner(self.executable, self.inputs, self.outputs, self.num_threads, "<compiled model>",
                                     float16_weights=self.weights == "fp16")
        return self._runner

    def __call__(self, *args, **kwargs):
        return self._host_runner()(*args, **kwargs)

    def run_dict(self, *args, **kwargs) -> dict[str, np.ndarray]:
        return self._host_runner().run_dict(*args, **kwargs)


@with_progress
def compile(  # noqa: A001 - the public name users expect: edgetvm.compile
    model,
    target: "str | dict | tvm.target.Target" = "host",
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    num_threads: int | None = None,
    fuse: bool = True,
    passes: list | None = None,
    quantize: str | None = None,
    calibration=None,
    calibration_mode: str = "minmax",
    quantize_options: dict | None = None,
    prune: float | dict | None = None,
    prune_criterion: str | dict = "auto",
    prune_allocation: str = "auto",
    tuning_db: str | os.PathLike | None = None,
    weights: str = "fp32",
    preprocess: "Preprocess | dict | None" = None,
    compress: dict | None = None,
    optimize: str = "speed",
    winograd: bool = True,
) -> CompiledModel:
    """Compile ``model`` (ONNX path, bytes or ModelProto; TFLite path) for ``target``.

    ``weights="fp16"`` stores the conv and dense weights as float16 (half the artifact; lossy, each
    weight within 2^-11 relative), widened to float32 once: when a standalone context is created
    (backends/standalone/weights.py), or when the TVM-runtime library is loaded (backends/vm.py).

    ``tuning_db`` (a directory written by :func:`tune`) supplies measured schedules for the
    kernels it has records of; the default schedules take the rest (``report.details["tuning"]``).

    ``fuse`` runs the exact graph rewrites of ``transform.pipeline.fusion_passes`` (common
    subexpressions computed once, batch norm and scale/shift folding, activation canonicalisation); ``passes`` are further ``tvm.transform.Pass``
    instances run after them. ``report.passes`` names what ran, ``report.details[name]`` says what
    each pass found (e.g. which batch norms were folded and why others were not).

    ``prune`` removes that fraction of channels first (:func:`edgetvm.pruning.prune.prune_model`; with
    ``calibration``: reconstruction ranking, sensitivity allocation, least-squares recovery;
    ``prune_allocation`` uniform/global/sensitivity overrides how the ratio spreads over layers).

    ``quantize="int8"`` calibrates a float model on ``calibration`` (arrays, image/.npy paths or a
    directory) with ``calibration_mode`` minmax/percentile/entropy, after cross-layer equalization
    (exact; SFace embeddings keep cosine >= 0.99 to fp32 with the defaults). ``quantize_options``:
    ``{"equalize": False}`` skips the equalization, ``{"keep_float": [chain names]}`` leaves those
    chains float (``report.details["quantize"]`` lists the chains and what stayed float and why).

    ``compress`` (Deep Compression, lossy): ``{"clusters": k}`` shares k values per weight tensor or
    output channel (k-means, after pruning and int8: int8 centroids there; ``"layers": {pattern: k}``
    clusters only those, ``"keep": [patterns]`` leaves layers fine, default the first and last;
    ``"max_error": e`` with ``calibration`` picks each layer's k, or none, by measured sensitivity
    for the fewest bytes at a summed relative output error <= e; ``"scaled": True`` a float16 scale
    per output channel times one codebook per layer, both refit on ``calibration``; with ``calibration``
    each weight's code is chosen by GPTQ against its layer's output error, ``"assign": "nearest"``
    keeps k-means' nearest entry: compression/assign.py),
    ``{"entropy": "huffman"}`` stores the standalone artifact's weights Huffman-coded, decoded once
    when a context is created. ``report.details["compression"]`` gives the weight bytes per stage,
    ``report.details["ClusterWeights"]`` per layer with each layer's error.

    ``optimize="size"`` builds the standalone artifact for the fewest bytes with the same results
    (kernels without TVM's argument checks, LLVM O2, NEON tiles called instead of inlined, C runtime
    at -Os: backends/standalone/build.py): RetinaFace 320 on cortex-a7 has 538 KB of code by
    default and 58 KB so. ``compress`` does not imply it: clustering trades accuracy for weight
    bytes, this trades kernel speed for code bytes, and a model that must fit flash may still need
    every cycle.

    ``winograd`` runs dense 3x3 stride-1 float32 convs as Winograd F(4,3)/F(6,3)
    (``transform.WinogradConv``, within float rounding) where its cost rule, measured on ARMv7 under
    qemu, says it pays. The rule holds on every target, so that the host build stays the ARM build's
    bit-exact reference (on x86 RetinaFace 320 runs in 5.0 against 6.0 ms with it, 1 thread);
    ``False`` keeps every conv direct. ``report.details["WinogradConv"]`` lists what it
    rewrote and why it declined the other 3x3 convs (``report.passes`` names it when it rewrote one).
    Its transformed weights are stored: (m+2)^2 / 9 times the conv's weights (RetinaFace: see
    transform/winograd_conv.py), so ``compress``, int8 and ``optimize="size"`` keep the convs direct.

    ``preprocess`` (an :class:`edgetvm.data.Preprocess` or a dict: mean, scale or std, channel_order
    "rgb"/"bgr", layout "nchw"/"nhwc") says how calibration images become inputs; a zoo model
    carries its own (zoo/preprocessing.py). Arrays are fed as given.

    ``progress=True`` prints each step and bars for the long loops on stderr (edgetvm/progress.py);
    the API is quiet by default.
    """
    check_weight_storage(weights)
    check_optimize(optimize)
    compress = CompressOptions.coerce(compress)
    if compress.entropy is not None:
        if weights != "fp32":
            raise InputError(f"--entropy {compress.entropy} stores the weights coded: drop --weights {weights}")
        weights = compress.entropy
    resolved = codegen_target(resolve_target(target))
    # Images among the calibration inputs are preprocessed as the model wants (data.py).
    preprocess = Preprocess.coerce(preprocess if preprocess is not None else zoo_preprocessing(model))
    if calibration is not None and preprocess is not None:
        calibration = Preprocessed(calibration, preprocess)
    # Resolved once here: pruning and int8 import read the file again by path.
    model = resolve_zoo(model)
    report = CompileReport()
    started = time.perf_counter()
    show_stage(f"importing {Path(model).name if isinstance(model, (str, os.PathLike)) else 'the model'}")
    # int8 keeps an already-quantized ONNX model's integer weights (frontends/onnx_qdq.py).
    imported = load_model(model, input_shapes) if quantize is None else load_model_for_quantization(model, input_shapes)
    report.timings["import"] = time.perf_counter() - started
    if imported.notes:
        # What the frontend changed on the way in (float16 folding, densified sparse weights, ...).
        report.details["import"] = {"notes": list(imported.notes)}
    # The size report's stages (compression/options.py), only when compression is asked for.
    fp32_bytes = sum(constant_bytes(imported.mod).values()) if compress.requested else 0

    if prune is not None:
        # Before BN folding: the bn_gamma criterion reads the BNs. ``prune`` is a fraction of each
        # group's channels or {layer pattern: fraction}; ``calibration`` feeds least-squares recovery.
        started = time.perf_counter()
        show_stage("pruning channels")
        imported, report.details["prune"] = pruning.prune_for_compile(
            model, imported, prune, prune_criterion, calibration, input_shapes, round_to=resolved.vector_lanes,
            allocation=prune_allocation, evaluate=calibration_evaluator())
        report.passes.append("PruneChannels")
        report.timings["prune"] = time.perf_counter() - started

    mod = imported.mod
    pruned_bytes = sum(constant_bytes(mod).values()) if compress.requested else 0

    started = time.perf_counter()
    show_stage("graph passes")
    mod, ran = run_passes(mod, (fusion_passes() if fuse else []) + list(passes or []))
    for name, findings in ran:
        report.passes.append(name)
        if findings is not None:
            report.details[name] = findings
    report.timings["passes"] = time.perf_counter() - started

    # Calibration serves the clustering's sensitivity measurement and its centroid refit; read only
    # when clustering is asked for (each read of an image folder decodes every image and warns about
    # its preprocessing). With int8 too, both take one read, resampled as the int8 calibration reads.
    measuring = calibration is not None and compress.clustering and (compress.max_error is not None or compress.refit)
    if measuring and quantize is not None:
        calibration = read_samples(calibration, imported.inputs, resample="bicubic")

    if quantize is not None:
        # int8: calibrate on ``calibration`` (arrays, .npy/images or a directory of them) unless
        # the model is QDQ already; see quantization/quantize.py.
        started = time.perf_counter()
        show_stage(f"quantizing to {quantize}")
        # quantize_options: equalize (cross-layer equalization, default on), keep_float (chain names).
        mod, report.details["quantize"] = quantize_model(mod, imported.inputs, quantize, calibration,
                                                         calibration_mode, evaluate=run_on_host,
                                                         **(quantize_options or {}))
        report.passes.append(f"Quantize({quantize})")
        report.timings["quantize"] = time.perf_counter() - started

    cluster = compress.cluster_pass(calibration_evaluator() if measuring else None,
                                    read_samples(calibration, imported.inputs) if measuring else None)
    if compress.requested:
        # Last among the graph passes: folding or equalizing after it would rescale the shared values.
        quantized_bytes = sum(constant_bytes(mod).values())
        found = None
        if cluster is not None:
            started = time.perf_counter()
            show_stage("clustering the weights")
            mod, ran = run_passes(mod, [cluster])
            (name, found), = ran
            report.passes.append(name)
            report.details[name] = found
            report.timings["cluster"] = time.perf_counter() - started
        report.details["compression"] = stage_sizes(fp32_bytes, pruned_bytes, quantized_bytes, found)

    started = time.perf_counter()
    show_stage(f"lowering and scheduling the kernels for {resolved.preset}")
    with collect_findings() as lowering:
        # Winograd's U holds (m+2)^2 / 9 times a conv's weights (7.1x for F(6,3)) and undoes the
        # clustering's shared values: a compile asked to compress keeps its 3x3 convs direct.
        scheduled = legalize_and_fuse(mod, resolved, winograd=(winograd and quantize is None and not compress.requested
                                                               and optimize != "size"))
    for name, found in lowering:
        if name == WINOGRAD_PASS and (found["rewritten"] or found["declined"]):  # it met a 3x3 conv
            report.details[name] = found
            if found["rewritten"]:
                report.passes.append(name)
    scheduled = schedule_int8_kernels(scheduled, resolved, num_threads)
    unscheduled = scheduled.clone()  # schedule_kernels updates its module in place
    if tuning_db is not None:
        # Tuned kernels first (marked tirx.is_scheduled, so the default schedules skip them).
        scheduled, tuned = apply_tuning_database(scheduled, resolved, tuning_db)
        report.details["tuning"] = {"db": str(tuning_db), "tuned_kernels": tuned}
    # Default schedules for every kernel not scheduled yet (schedules/cpu.py).
    scheduled = schedule_kernels(scheduled, resolved, num_threads, report.details.setdefault("schedules", {}))
    report.timings["lower"] = time.perf_counter() - started
    compiled = CompiledModel(imported, scheduled, resolved, report, num_threads, weights, optimize)
    compiled.unscheduled = unscheduled  # the kernels before any schedule: what ``tune`` searches
    compiled.preprocess = preprocess  # the sidecar keeps it: `edgetvm run` on images feeds them alike
    # Scaled codebooks (compress={"scaled": True}): the standalone coder stores their scales and tables.
    compiled.codebooks = cluster.codebooks if cluster is not None else []
    return compiled


def prune_model(model, ratio=0.3, *, preprocess: "Preprocess | dict | None" = None, **options) -> pruning.PrunedModel:
    """:func:`edgetvm.pruning.prune.prune_model` (``edgetvm prune``), its calibration run in numpy where
    numpy runs every op of the graph and compiled for this machine where it does not. ``preprocess``:
    as for :func:`compile`."""
    preprocess = Preprocess.coerce(preprocess if preprocess is not None else zoo_preprocessing(model))
    if options.get("calibration") is not None and preprocess is not None:
        options["calibration"] = Preprocessed(options["calibration"], preprocess)
    return pruning.prune_model(resolve_zoo(model), ratio, evaluate=calibration_evaluator(), **options)


def tune(model, target: str | dict = "host", *, tracker: str, key: str, trials: int, db: str | os.PathLike,
         salvage: bool = False, wait_lock: float = 0.0, candidate_timeout: float = 60.0,
         progress=print_progress, tune_options: dict | None = None, **compile_options) -> TuningReport:
    """Search schedules for ``model``'s kernels on the boards the tracker lists under ``key``.

    The kernels are those ``compile(model, target, **compile_options)`` produces (after fusion,
    pruning, quantization), so ``compile(..., tuning_db=db)`` with the same options finds them.
    Records go to the meta_schedule JSON database in ``db``; a rerun continues it. ``tune_options``
    go to :func:`edgetvm.tuning.tune.tune_module` (batch_size, population_size, wait_boards, ...).
    """
    # Before the compile (a minute for some models): a missing extra or tracker fails in seconds.
    require_tuning_dependencies("edgetvm tune")
    reach_tracker(*parse_address(tracker))
    compiled = compile(model, target, **compile_options)
    num_threads = compile_options.get("num_threads") or 1
    # The default schedules are timed too: compiling with ``db`` keeps them where they win.
    defaults = {gv.name_hint: f for gv, f in compiled.scheduled.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    options = {"defaults": defaults, **(tune_options or {})}
    return tune_module(compiled.unscheduled, compiled.target, tracker=tracker, key=key, trials=trials, db_dir=db,
                       salvage=salvage, wait_lock=wait_lock, candidate_timeout=candidate_timeout,
                       num_threads=num_threads, progress=progress, **options)


def load(path: str | os.PathLike, *, num_threads: int | None = None, emulate: bool = False) -> Runner:
    """Load an artifact written by ``CompiledModel.export``: checked against its sidecar first.

    Host artifacts run in this process. With ``emulate``, a standalone ARM artifact runs under
    qemu-arm instead (each call is one qemu run: for checking numerics, not for timing).
    """
    meta = read_sidecar(path)
    verify_artifact(path, meta, emulate=emulate)
    inputs = [TensorSpec.from_json(t) for t in meta["inputs"]]
    outputs = [TensorSpec.from_json(t) for t in meta["outputs"]]
    if meta["kind"] == "standalone" and meta["target"].get("arch") == "armv7" and platform.machine() != "armv7l":
        return standalone_runner(path, inputs, outputs, cpu=meta["target"].get("qemu_cpu") or None,
                                 threads=num_threads or 1)
    # Both load through a copy named by the checked SHA-256: dlopen would hand back a library loaded
    # earlier from this path, the old model's code under the new sidecar (backends/content_path.py).
    if meta["kind"] == "standalone":
        return load_standalone(path, inputs, outputs, num_threads=num_threads, sha256=meta["sha256"])
    return vm_runner(load_vm_library(path, meta["sha256"]), inputs, outputs, num_threads, str(path),
                     float16_weights=meta.get("weights") == "fp16")
