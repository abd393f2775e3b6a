"""Weight sharing (lossy): each weight tensor's values replaced by k shared centroids.

Deep Compression's second step (Han et al. 2016, section 3): the weights ``W`` of a layer are
clustered by 1-D k-means (kmeans.py) and each weight becomes its centroid,

    W'_i = c_{a(i)},   a(i) = argmin_j |W_i - c_j|,   c_j = mean{W_i : a(i) = j},

either over the whole tensor or per slice of its first axis (a conv's output channel, an int8
weight's per-channel scale axis), so the tensor holds at most ``k`` values (per slice). The
standalone backend stores such a tensor as ``log2 k``-bit indices, Huffman-coded, plus the
centroid tables (backends/standalone/weights.py, ``weights="huffman"``). On the int8 path the pass
runs after quantization and the centroids are rounded to integers, so the int8 kernels read int8
centroids. Unlike the paper there is no retraining; with calibration inputs the float layers'
centroids are refit by least squares to each layer's output instead (refit.py), layer by layer in
dataflow order, and the compile report shows each layer's output error before and after.

Per slice where it pays (sharing.py). The layers that must stay fine (the stem reading the pixels,
the last layer writing the embedding or the boxes) are chosen by measured sensitivity when
calibration inputs are given (sensitivity.py), else left out by name (``keep``): by default the
first and the last weight of the graph.

``scaled=True``: each float weight becomes a scale per output channel times one codebook of the
layer (per-channel non-uniform quantization, sharing.cluster_scaled), refit the same way; the
standalone backend stores the scales and the codebook (``codebooks``) and Huffman codes of indices.

``assign="gptq"`` (with calibration inputs and the refit): each weight's code is chosen against the
layer's output error on them (GPTQ, assign.py) instead of being k-means' nearest entry, before the
refit; rows of the report then say ``"assign": "gptq"`` (a layer too wide for its K x K Hessian keeps
nearest and does not).
"""

from __future__ import annotations

import fnmatch

import numpy as np
import tvm
from tvm import relax

from ..errors import InputError
from ..transform.base import GraphPass, graph_pass
from .assign import ASSIGNMENTS
from .constants import output_axis, replace_constants, weight_constants
from .refit import CentroidRefit
from .sensitivity import allocate_clusters, measure_cluster_sensitivity
from .sharing import (WEIGHTS_PER_CENTROID, cluster_scaled, cluster_tensor, expand_scaled, scaled_weight_bytes,
                      shared_weight_bytes)

MIN_CLUSTERS, MAX_CLUSTERS = 4, 256


def check_sparsity(sparsity: dict[str, float] | float | None) -> dict[str, float]:
    """``sparsity`` as {name pattern: fraction pruned}, a lone fraction meaning every clustered layer."""
    given = {"*": sparsity} if isinstance(sparsity, (int, float)) else dict(sparsity or {})
    for pattern, s in given.items():
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0 <= s < 1:
            raise InputError(f"--cluster-sparsity {pattern}={s!r}: give the fraction of the layer's weights pruned "
                             f"to zero, from 0 up to (not including) 1, e.g. 0.8")
    return {pattern: float(s) for pattern, s in given.items()}


def check_assign(assign: str) -> str:
    if assign not in ASSIGNMENTS:
        raise InputError(f"--cluster-assign {assign!r}: choose {' or '.join(ASSIGNMENTS)} (gptq: each weight's code "
                         f"chosen against the layer's output error on --calib, assign.py; nearest: k-means' own)")
    return assign


def check_clusters(k: int, flag: str = "--cluster") -> int:
    if not isinstance(k, (int, np.integer)) or not MIN_CLUSTERS <= k <= MAX_CLUSTERS:
        raise InputError(f"{flag} {k!r}: give a number of clusters from {MIN_CLUSTERS} to {MAX_CLUSTERS}")
    return int(k)


@graph_pass("ClusterWeights")
class ClusterWeights(GraphPass):
    """Lossy: every weight tensor (but ``keep``) becomes ``clusters`` shared values (per tensor or per
    output channel). ``layers`` ({name pattern: k}) clusters only the matching layers, each with its
    own k; ``keep`` (name patterns) leaves layers as they are, default the first and last weight.
    ``sparsity`` ({name pattern: fraction}, or one fraction for all): those layers are magnitude-pruned
    first, the fraction of smallest ``|w|`` set to exactly zero, zero being one of the ``k`` codes
    (sharing.py), and stay zero through the refit.

    With ``max_error``, ``evaluate`` and calibration ``samples``, each layer's k is chosen by measured
    sensitivity instead (sensitivity.py): from ``clusters`` up to 256, or left as it is, for the
    fewest bytes at a summed relative output error of at most ``max_error``; with ``scaled`` too, each
    candidate measured as a scaled codebook with its scales and codebook refit.

    ``findings``: ``{"clustered", "kept", "layers": [{"layer", "shape", "k", "per_channel",
    "relative_error", "sparsity", "bytes", "clustered_bytes", "coded_bytes"}]}``: per clustered layer the error
    ``||W' - W|| / ||W||`` and its size before, as fixed-width indices and Huffman-coded; with
    ``max_error`` also each layer's measured ``output_error`` and their sum ``output_error``; refit (with
    ``evaluate`` and ``samples``, unless ``refit=False``): the layer's relative output error on the
    calibration inputs with k-means' centroids and refit ones, ``output_error_kmeans`` and
    ``output_error_refit``, or ``refit_declined``: why not. With ``max_error`` the sensitivity is then
    measured with refit centroids.

    ``scaled``: float32 weights as a scale per output channel times a codebook of the layer (module
    docstring); the rows then say ``scaled`` and give the ``codebook``, and ``codebooks`` holds each
    layer's (codebook, scales) as float32 arrays for the standalone coder (weights.py); their
    ``output_error_kmeans`` is k-means' codebook with the refit scales (refit.py).

    ``assign``: ``"nearest"`` (k-means' assignment) or ``"gptq"`` (module docstring; needs ``evaluate``,
    ``samples`` and the refit), the ``output_error_kmeans`` of a GPTQ layer being its GPTQ codes on
    k-means' codebook."""

    def __init__(self, clusters: int = 16, *, layers: dict[str, int] | None = None, keep: list[str] | None = None,
                 seed: int = 0, max_error: float | None = None, evaluate=None, samples: list | None = None,
                 refit: bool = True, sparsity: dict[str, float] | float | None = None, scaled: bool = False,
                 assign: str = "nearest"):
        super().__init__()
        self.assign = check_assign(assign)
        self.scaled = scaled
        self.codebooks: list[tuple[np.ndarray, np.ndarray]] = []
        self.sparsity = check_sparsity(sparsity)
        self.clusters = check_clusters(clusters)
        self.layers = {pattern: check_clusters(k, "--cluster-layers") for pattern, k in (layers or {}).items()}
        self.keep = keep
        self.seed = seed
        if max_error is not None and (evaluate is None or not samples):
            raise InputError("clustering by measured sensitivity (max_error) needs calibration inputs: give "
                             "calibration=... (--calib DIR)")
        self.max_error, self.evaluate, self.samples = max_error, evaluate, samples
        self.refit = refit and evaluate is not None and bool(samples)
        if self.assign == "gptq" and not self.refit:
            raise InputError("--cluster-assign gptq chooses the codes against each layer's output on calibration "
                             "inputs, then refits them: give calibration=... (--calib DIR) and keep the refit "
                             "(drop --no-cluster-refit), or --cluster-assign nearest")

    def new_findings(self) -> dict:
        return {"clustered": 0, "kept": [], "layers": []}

    def clusters_for(self, name: str, index: int, count: int) -> int | None:
        """k for the weight ``name`` (the ``index``-th of ``count``), None to leave it as it is."""
        keep = self.keep if self.keep is not None else ([] if self.layers or self.max_error is not None else None)
        if keep is None and index in (0, count - 1):
            return None
        if keep and any(fnmatch.fnmatchcase(name, p) for p in keep):
            return None
        if self.layers:
            return next((k for p, k in self.layers.items() if fnmatch.fnmatchcase(name, p)), None)
        return self.clusters

    def codebook_axis(self, func: relax.Function, const: relax.Constant, k: int | None) -> int | None:
        """The axis of ``const``'s codebooks per slice (sharing.py), None for one codebook: a dense layer's
        codebook per output column gets one refit equation per calibration sample, so with fewer than
        ``16 k`` samples the refit would follow them (SFace's embedding on 10 faces, held-out min cosine:
        k=16 80% pruned 0.79 per column against 0.97 shared; k=4 0.966 against 0.983) and the layer
        shares one codebook, refit on samples x outputs equations."""
        axis = output_axis(func, const)
        if axis == -1 and self.refit and k is not None and len(self.samples) < WEIGHTS_PER_CENTROID * k:
            return None
        return axis

    def sparsity_for(self, name: str) -> float:
        """The fraction of weight ``name`` pruned before clustering (the first matching pattern's)."""
        return next((s for p, s in self.sparsity.items() if fnmatch.fnmatchcase(name, p)), 0.0)

    def rewrite_function(self, gvar, func: relax.Function, mod: tvm.IRModule) -> relax.Function | None:
        weights = weight_constants(func)
        chosen = [(name, const, self.clusters_for(name, i, len(weights))) for i, (name, const) in enumerate(weights)]
        fitting = [(name, const) for name, const, k in chosen if k is not None]
        axes = {name: self.codebook_axis(func, const, k) for name, const, k in chosen}
        position = {name: i for i, (name, _) in enumerate(fitting)}
        refit = CentroidRefit(func, [c for _, c in fitting], self.evaluate, self.samples, self.seed,
                              self.assign) \
            if self.refit and fitting else None
        measured = {}
        is_scaled = {name: self.scaled and str(const.value.dtype) == "float32" for name, const in fitting}
        if self.max_error is not None:
            candidates = [k for k in (4, 8, 16, 32, 64, 128, 256) if k >= self.clusters]
            table = measure_cluster_sensitivity(func, [c for _, c in fitting], candidates, self.evaluate, self.samples,
                                                self.seed, refit.refit if refit is not None else None,
                                                [self.sparsity_for(name) for name, _ in fitting],
                                                [output_axis(func, c) if is_scaled[name] else axes[name]
                                                 for name, c in fitting],
                                                [is_scaled[name] for name, _ in fitting])
            picks = allocate_clusters(table, self.max_error)
            measured = {name: (k, options[k]) for (name, _), k, options in zip(fitting, picks, table)}
            chosen = [(name, const, measured[name][0] or None if name in measured else None)
                      for name, const, _ in chosen]
            self.findings["max_error"] = self.max_error
            self.findings["output_error"] = float(sum(m[1][0] for m in measured.values()))
        clustered, scaled = {}, {}
        for name, const, k in chosen:
            if k is None:
                self.findings["kept"].append(name)
            elif name in measured:
                clustered[name] = measured[name][1][2:4]
                if is_scaled[name]:
                    scaled[name] = (measured[name][1][4], output_axis(func, const))
            elif is_scaled.get(name):
                axis = output_axis(func, const)
                codes, scales = cluster_scaled(const.value.numpy(), k, seed=self.seed,
                                               sparsity=self.sparsity_for(name), axis=axis)
                clustered[name], scaled[name] = (codes, False), (scales, axis)
            else:
                clustered[name] = cluster_tensor(const.value.numpy(), k, seed=self.seed,
                                                 sparsity=self.sparsity_for(name), axis=axes[name])
        refits = refit.refit_in_order({position[name]: c for name, c in clustered.items()},
                                      {position[name]: s for name, s in scaled.items()}) if refit else {}
        replaced = {}
        for name, const, k in chosen:
            if k is None:
                continue
            value = const.value.numpy()
            shared, per_slice = clustered[name]
            shared, how = refits.get(position[name], (shared, None))
            if name in scaled:
                scales, axis = scaled[name]
                codebook = np.unique(shared.astype(np.float32))
                self.codebooks.append((codebook, scales))
                clustered_bytes, coded_bytes = scaled_weight_bytes(shared, scales)
                shared = expand_scaled(shared, scales, axis)
            else:
                clustered_bytes, coded_bytes = shared_weight_bytes(shared, per_slice, axes[name])
            reference = np.linalg.norm(value.astype(np.float64)) or 1.0
            row = {"layer": name, "shape": list(value.shape), "k": k, "per_channel": per_slice,
                   "relative_error": float(np.linalg.norm(shared.astype(np.float64) - value) / reference),
                   "sparsity": float(np.mean(shared == 0)),
                   "bytes": int(value.nbytes), "clustered_bytes": clustered_bytes, "coded_bytes": coded_bytes}
            if name in scaled:
                row.update(scaled=True, codebook=[float(c) for c in self.codebooks[-1][0]])
            if name in measured:
                row["output_error"] = measured[name][1][0]
            if isinstance(how, dict):
                row.update(how)
            elif how is not None:
                row["refit_declined"] = how
            self.findings["layers"].append(row)
            replaced[const.__chandle__()] = relax.const(shared, str(value.dtype))
            self.findings["clustered"] += 1
        if not replaced:
            return None
        return replace_constants(func, replaced, mod)
