"""Weight sharing (lossy): each weight tensor's values replaced by k shared centroids.

Deep Compression's second step (Han et al. 2016, section 3): the weights ``W`` of a layer are
clustered by 1-D k-means (kmeans.py) and each weight becomes its centroid,

    W'_i = c_{a(i)},   a(i) = argmin_j |W_i - c_j|,   c_j = mean{W_i : a(i) = j},

either over the whole tensor or per slice of its first axis (a conv's output channel, an int8
weight's per-channel scale axis), so the tensor holds at most ``k`` values (per slice). The
standalone backend stores such a tensor as ``log2 k``-bit indices, Huffman-coded, plus the
centroid tables (backends/standalone/weights.py, ``weights="huffman"``). On the int8 path the pass
runs after quantization and the centroids are rounded to integers, so the int8 kernels read int8
centroids. Unlike the paper there is no retraining: the error is what the compile report shows.

Per slice where it pays: a slice gets its own codebook when it has at least ``16 k`` weights (a
``k``-entry table is then at most 1/16 of the indices it serves), else the tensor shares one.
The layers that must stay fine (the stem reading the pixels, the last layer writing the embedding
or the boxes) are left out by name (``keep``); by default the first and the last weight of the graph.
"""

from __future__ import annotations

import fnmatch

import numpy as np
import tvm
from tvm import relax

from ..errors import InputError
from ..relax_utils import is_tensor_constant
from ..transform.base import GraphPass, graph_pass
from . import huffman
from .kmeans import kmeans_1d

MIN_CLUSTERS, MAX_CLUSTERS = 4, 256
CLUSTERED_DTYPES = ("float32", "int8")
# A slice needs this many weights per centroid for its own codebook to pay (see the module docstring).
WEIGHTS_PER_CENTROID = 16


def check_clusters(k: int, flag: str = "--cluster") -> int:
    if not isinstance(k, (int, np.integer)) or not MIN_CLUSTERS <= k <= MAX_CLUSTERS:
        raise InputError(f"{flag} {k!r}: give a number of clusters from {MIN_CLUSTERS} to {MAX_CLUSTERS}")
    return int(k)


def call_operands(call: relax.Call) -> list[relax.Expr]:
    """The arguments of ``call``, a tuple's fields in place of the tuple (``R.call_tir(kernel, (x, w, ...))``:
    the int8 kernels read their weights so)."""
    operands = []
    for arg in call.args:
        operands.extend(arg.fields if isinstance(arg, relax.Tuple) else [arg])
    return operands


def weight_constants(func: relax.Function) -> list[tuple[str, relax.Constant]]:
    """The weights of ``func`` in graph order, named by the value that reads them: tensor constants of a
    clustered dtype with at least two axes longer than 1 (conv and dense weights, not vectors)."""
    found: dict[int, tuple[str, relax.Constant]] = {}  # by object address: a constant read twice is one weight
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not isinstance(value, relax.Call):
                continue
            for arg in call_operands(value):
                if (is_tensor_constant(arg) and arg.__chandle__() not in found
                        and str(arg.value.dtype) in CLUSTERED_DTYPES and sum(d > 1 for d in arg.value.shape) >= 2):
                    found[arg.__chandle__()] = (str(binding.var.name), arg)
    return list(found.values())


def cluster_tensor(weight: np.ndarray, k: int, *, seed: int = 0) -> tuple[np.ndarray, bool]:
    """``weight`` with each value replaced by its centroid (integers rounded for an integer dtype), and
    whether the first-axis slices got codebooks of their own."""
    per_slice = weight.ndim >= 2 and weight[0].size >= WEIGHTS_PER_CENTROID * k
    rows = weight.reshape(weight.shape[0], -1) if per_slice else weight.reshape(1, -1)
    out = np.empty(rows.shape, dtype=weight.dtype)
    integer = np.issubdtype(weight.dtype, np.integer)
    for i, row in enumerate(rows):
        centroids, labels = kmeans_1d(row, k, seed=seed)
        if integer:
            info = np.iinfo(weight.dtype)
            centroids = np.clip(np.round(centroids), info.min, info.max)
        out[i] = centroids[labels].astype(weight.dtype)
    return out.reshape(weight.shape), per_slice


def shared_weight_bytes(clustered: np.ndarray, per_slice: bool) -> tuple[int, int]:
    """Bytes of a clustered tensor as fixed-width indices (``ceil(log2 k)`` bits each) and as Huffman
    codes of them, both with the centroid tables: the "clustered" and "coded" stages of the report."""
    rows = clustered.reshape(clustered.shape[0], -1) if per_slice else clustered.reshape(1, -1)
    tables, symbols = 0, []
    for row in rows:
        values, index = np.unique(row, return_inverse=True)
        tables += values.size * clustered.itemsize
        symbols.append(index.reshape(-1))
    symbols = np.concatenate(symbols)
    counts = np.bincount(symbols)
    width = max(int(np.ceil(np.log2(max(counts.size, 2)))), 1)
    coded_bits = int((huffman.code_lengths(counts) * counts).sum())
    return tables + (symbols.size * width + 7) // 8, tables + (coded_bits + 7) // 8


@graph_pass("ClusterWeights")
class ClusterWeights(GraphPass):
    """Lossy: every weight tensor (but ``keep``) becomes ``clusters`` shared values (per tensor or per
    output channel). ``layers`` ({name pattern: k}) clusters only the matching layers, each with its
    own k; ``keep`` (name patterns) leaves layers as they are, default the first and last weight.

    ``findings``: ``{"clustered", "kept", "layers": [{"layer", "shape", "k", "per_channel",
    "relative_error", "bytes", "clustered_bytes", "coded_bytes"}]}``: per clustered layer the error
    ``||W' - W|| / ||W||`` and its size before, as fixed-width indices and Huffman-coded."""

    def __init__(self, clusters: int = 16, *, layers: dict[str, int] | None = None, keep: list[str] | None = None,
                 seed: int = 0):
        super().__init__()
        self.clusters = check_clusters(clusters)
        self.layers = {pattern: check_clusters(k, "--cluster-layers") for pattern, k in (layers or {}).items()}
        self.keep = keep
        self.seed = seed

    def new_findings(self) -> dict:
        return {"clustered": 0, "kept": [], "layers": []}

    def clusters_for(self, name: str, index: int, count: int) -> int | None:
        """k for the weight ``name`` (the ``index``-th of ``count``), None to leave it as it is."""
        keep = self.keep if self.keep is not None else ([] if self.layers else None)
        if keep is None and index in (0, count - 1):
            return None
        if keep and any(fnmatch.fnmatchcase(name, p) for p in keep):
            return None
        if self.layers:
            return next((k for p, k in self.layers.items() if fnmatch.fnmatchcase(name, p)), None)
        return self.clusters

    def rewrite_function(self, gvar, func: relax.Function, mod: tvm.IRModule) -> relax.Function | None:
        weights = weight_constants(func)
        replaced = {}
        for index, (name, const) in enumerate(weights):
            k = self.clusters_for(name, index, len(weights))
            if k is None:
                self.findings["kept"].append(name)
                continue
            value = const.value.numpy()
            clustered, per_slice = cluster_tensor(value, k, seed=self.seed)
            reference = np.linalg.norm(value.astype(np.float64)) or 1.0
            clustered_bytes, coded_bytes = shared_weight_bytes(clustered, per_slice)
            self.findings["layers"].append({
                "layer": name, "shape": list(value.shape), "k": k, "per_channel": per_slice,
                "relative_error": float(np.linalg.norm(clustered.astype(np.float64) - value) / reference),
                "bytes": int(value.nbytes), "clustered_bytes": clustered_bytes, "coded_bytes": coded_bytes})
            replaced[const.__chandle__()] = relax.const(clustered, str(value.dtype))
            self.findings["clustered"] += 1
        if not replaced:
            return None
        return _ConstantReplacer(replaced, mod).visit_expr(func)


@relax.expr_functor.mutator
class _ConstantReplacer(relax.PyExprMutator):
    def __init__(self, replaced: dict, mod: tvm.IRModule):
        super().__init__(mod)
        self.replaced = replaced

    # Calls, not constants: the visitor does not dispatch on TVM 0.27's ir.Constant leaves.
    def visit_call_(self, op: relax.Call) -> relax.Expr:
        call = super().visit_call_(op)
        args = [self.swap_fields(a) if isinstance(a, relax.Tuple) else self.swap(a) for a in call.args]
        if all(new.same_as(old) for new, old in zip(args, call.args)):
            return call
        return relax.Call(call.op, args, call.attrs, call.ty_args, call.span)

    def swap_fields(self, tup: relax.Tuple) -> relax.Tuple:
        fields = [self.swap(f) for f in tup.fields]
        return tup if all(new.same_as(old) for new, old in zip(fields, tup.fields)) else relax.Tuple(fields)

    def swap(self, expr: relax.Expr) -> relax.Expr:
        return self.replaced.get(expr.__chandle__(), expr) if is_tensor_constant(expr) else expr
