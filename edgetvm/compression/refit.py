"""Least-squares refit of shared centroids on calibration inputs (lossy clustering, its error reduced).

k-means (kmeans.py) places a tensor's centroids to minimise the *weight* error; the network sees the
layer's *output*. With the assignments fixed, a weight ``W(c) = sum_j c_j M_j`` (``M_j`` the 0/1 mask
of the weights that share centroid ``j``) is linear in the centroids ``c``, so the output error on
calibration inputs,

    E(c) = || X W(c)^T - X0 W0^T ||^2,

is a least-squares problem in ``k`` unknowns (``X``: the layer's input in the clustered model, im2col
patches for a conv; ``X0``, ``W0``: the original model's input and weight). With the inputs summed per
centroid, ``Z[n, o, j] = sum_{i: a(o, i) = j} X[n, i]``, the layer's output is
``sum_j Z[n, o, j] c_j`` and the normal equations for the change ``d = c - c_kmeans`` are

    G d = b,   G = sum_{n,o} z_no z_no^T,   b = sum_{n,o} z_no (Y0[n, o] - z_no . c_kmeans)

(``k x k``; a codebook per output channel has one such system per channel). numpy's ``lstsq`` gives
the least-norm ``d``: a centroid the calibration inputs do not excite stays where k-means put it.
``d = 0`` is k-means' own answer, so on the calibration inputs the refit never does worse. A centroid
at exactly zero (the weights magnitude pruning removed, sharing.py) is pinned: its ``d_j = 0``, its
row and column of ``G`` left out, so pruned weights stay exactly zero.

Layers are refit in dataflow order, each on its input in the model whose earlier layers are
clustered and refit already (``X != X0``): the refit also absorbs the error they pass on, as
pruning's recovery does (He et al. 2017). Not refit, and said why: int8 weights (their kernels read
requantized inputs, not ``X``) and weights read by anything but a float conv2d (NCHW/OIHW) or a dense
``x @ W`` (whose codebooks, if per slice, are per output column: sharing.py).

A scaled codebook (sharing.cluster_scaled: ``W[o] = s_o T[a(o, .)]``) is linear in ``T`` too: output
``o``'s sums ``z_no`` are multiplied by ``s_o``, and ``T`` is solved as one shared codebook. With
``T`` fixed each output is linear in its own scale, ``y_no = s_o u_no`` (``u_no = x_n . T[a(o, .)]``),
so the scales are refit first, ``s_o = sum_n u_no Y0_no / sum_n u_no^2`` (rounded to float16, as stored),
then ``T``, twice over: the scale absorbs each channel's gain error, which one shared codebook cannot.

With ``assign="gptq"`` the assignments are not k-means' nearest entries: before the solves each
weight's code is chosen against the layer's output error on ``X`` (assign.py: GPTQ on ``H = X^T X``
from up to ``MAX_ASSIGN_ROWS`` patches, drawn from a stream of their own so that the refit's rows are
the same either way), with k-means' codebook and scales; then the solves run as above.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from ..kernels.im2col import im2col
from ..relax_utils import static_shape
from ..transform.taps import with_taps
from .assign import gptq_assign
from .sensitivity import Evaluate, lift_constants
from .sharing import expand_scaled

# Rows of the least squares (samples x conv output positions) and, for a shared codebook, equations
# (rows x outputs): enough for at most 256 unknowns per system, and a refit of SFace's 1024x1024
# layer in about a second (the cost is rows x weights to sum Z, equations x k^2 for G).
MAX_ROWS = 512
MAX_EQUATIONS = 1 << 16
CHUNK_ELEMENTS = 1 << 22  # entries of the assignment matrices built at once (memory: 8 bytes each)
# GPTQ's assignment (assign.py): its H = X^T X from more rows than the refit's (rows x K^2 to sum it), and
# layers of at most this many inputs per output (H is K x K: SFace's 50176-wide embedding keeps nearest).
MAX_ASSIGN_ROWS = 4096
MAX_ASSIGN_DEPTH = 4608


def solve_centroids(x: np.ndarray, x0: np.ndarray, w0: np.ndarray, clustered: np.ndarray,
                    per_output: bool, max_equations: int = MAX_EQUATIONS,
                    scales: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """The least-squares centroids of the module docstring for one GEMM ``y[n, o] = x[n, g(o)] . w[o]``.

    ``x``, ``x0``: ``[N, groups, K]`` (output ``o`` reads group ``o // (O / groups)``); ``w0``,
    ``clustered``: ``[O, K]``, ``clustered`` holding k-means' values (one codebook, or one per row if
    ``per_output``). A shared codebook's equations come from every ``s``-th output, ``s`` the smallest
    that keeps them at most ``max_equations``. Returns the refit weight and the relative output error
    ``E / ||X0 W0^T||^2`` of k-means' centroids and of the refit ones (on the equations used). With
    ``scales`` (``[O]``), ``clustered`` holds a scaled codebook's normalized values, weight row ``o`` being
    ``scales[o] * clustered[o]``, and the refit normalized values come back."""
    n, groups, depth = x.shape
    outputs = w0.shape[0]
    group_of = np.arange(outputs) // (outputs // groups)
    books = [np.unique(row, return_inverse=True) for row in (clustered if per_output else clustered.reshape(1, -1))]
    k = max(values.size for values, _ in books)
    values = np.zeros((len(books), k))
    for b, (centroids, _) in enumerate(books):
        values[b, :centroids.size] = centroids
    labels = np.stack([index.reshape(-1) for _, index in books]).reshape(outputs, depth)
    gram, rhs = np.zeros((len(books), k, k)), np.zeros((len(books), k))
    reference = before = 0.0
    # Per group, the inputs as [groups, n, K] in float64 (the sums of Z and G in double precision).
    xg = np.ascontiguousarray(x.transpose(1, 0, 2), dtype=np.float64)
    x0g = np.ascontiguousarray(x0.transpose(1, 0, 2), dtype=np.float64)
    step = max(1, CHUNK_ELEMENTS // (depth * k))
    stride = 1 if per_output else -(-n * outputs // max_equations)
    for start in range(0, outputs, step * stride):
        rows = slice(start, min(start + step * stride, outputs), stride)
        count = len(range(outputs)[rows])
        # Z = X M^T as a product with the 0/1 assignment matrices [c, K, k]: BLAS, where summing by
        # index (bincount) is memory-bound and several times slower at these sizes.
        masks = np.zeros((count, depth, k))
        masks[np.arange(count)[:, None], np.arange(depth)[None], labels[rows]] = 1.0
        z = xg[group_of[rows]] @ masks  # [c, n, k]
        if scales is not None:
            z *= scales[rows].astype(np.float64)[:, None, None]
        target = np.einsum("cni,ci->cn", x0g[group_of[rows]], w0[rows].astype(np.float64))
        book = values[rows] if per_output else np.broadcast_to(values[0], (count, k))
        residual = target - (z @ book[:, :, None])[..., 0]
        if per_output:
            gram[rows] += z.transpose(0, 2, 1) @ z
            rhs[rows] += (z.transpose(0, 2, 1) @ residual[:, :, None])[..., 0]
        else:
            flat = z.reshape(-1, k)
            gram[0] += flat.T @ flat
            rhs[0] += flat.T @ residual.reshape(-1)
        reference += float((target ** 2).sum())
        before += float((residual ** 2).sum())
    # A centroid at exactly zero holds the pruned weights (sharing.py): it is an exact code and stays put.
    free = values != 0
    gram *= free[:, :, None] & free[:, None, :]
    rhs *= free
    delta = np.stack([np.linalg.lstsq(g, b, rcond=None)[0] for g, b in zip(gram, rhs)]) * free
    # ||r - Z d||^2 = ||r||^2 - 2 d.b + d.G d: the refit's error without another pass over the inputs.
    after = before - 2 * float((delta * rhs).sum()) + float(np.einsum("bj,bjl,bl->", delta, gram, delta))
    refit = values + delta
    weight = np.take_along_axis(refit, labels, axis=1) if per_output else refit[0][labels]
    reference = reference or 1.0
    return weight.astype(clustered.dtype), before / reference, max(after, 0.0) / reference


SCALE_ROUNDS = 2


def solve_scales(x: np.ndarray, x0: np.ndarray, w0: np.ndarray, codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The least-squares scale of each output row of ``codes`` (``[O, K]``, a scaled codebook's normalized
    values; ``x``, ``x0``, ``w0`` as in :func:`solve_centroids`), float16-rounded; an output whose codes
    give no signal keeps its scale."""
    n, groups, depth = x.shape
    outputs = w0.shape[0]
    per_group = outputs // groups
    fitted = scales.astype(np.float32).copy()
    for g in range(groups):
        rows = slice(g * per_group, (g + 1) * per_group)
        u = x[:, g].astype(np.float64) @ codes[rows].astype(np.float64).T  # [n, per_group]
        target = x0[:, g].astype(np.float64) @ w0[rows].astype(np.float64).T
        power = (u * u).sum(axis=0)
        gain = np.divide((u * target).sum(axis=0), power, out=np.zeros(power.shape), where=power > 0)
        limit = float(np.finfo(np.float16).max)
        fitted[rows] = np.where(power > 0, np.clip(gain, -limit, limit).astype(np.float16), fitted[rows])
    return fitted


@dataclass(frozen=True)
class GemmLayer:
    """How a weight parameter is read: ``call`` (conv2d or matmul) with ``data`` as its input, ``positions``
    output positions per sample (a conv's ``Ho*Wo``)."""

    call: relax.Call
    data: relax.Var
    positions: int

    @property
    def is_conv(self) -> bool:
        return self.call.op.name == "relax.nn.conv2d"

    def weight_rows(self, value: np.ndarray) -> np.ndarray:
        """The weight as ``[O, K]`` GEMM rows: OIHW flattened per output, a dense ``[F, O]`` transposed."""
        return value.reshape(value.shape[0], -1) if self.is_conv else value.T

    def weight_of_rows(self, rows: np.ndarray, shape) -> np.ndarray:
        return rows.reshape(shape) if self.is_conv else np.ascontiguousarray(rows.T)

    def patches(self, x: np.ndarray, kernel_shape, positions: np.ndarray | None) -> np.ndarray:
        """The layer's input as ``[rows, groups, K]``: a conv's im2col patches at ``positions`` (per
        sample, indices into its ``Ho*Wo`` outputs), a dense layer's input rows."""
        if not self.is_conv:
            return x.reshape(-1, 1, x.shape[-1])
        a = self.call.attrs
        cols = im2col(x, kernel_shape[2:], [int(s) for s in a.strides], [int(p) for p in a.padding],
                      [int(d) for d in a.dilation])
        cols = cols.reshape(cols.shape[0], -1, cols.shape[-1])
        taken = np.take_along_axis(cols, positions[..., None], axis=1)
        return taken.reshape(-1, int(a.groups), cols.shape[-1] // int(a.groups))


def gemm_layers(func: relax.Function, params: list[relax.Var]) -> tuple[dict[int, GemmLayer], dict[int, str]]:
    """Per weight parameter (by position in ``params``), the one float conv2d / dense call reading it,
    or why it is not refit."""
    index = {p: i for i, p in enumerate(params)}
    uses: dict[int, list] = {i: [] for i in range(len(params))}
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not isinstance(value, relax.Call):
                continue
            for arg in value.args:
                for field in (arg.fields if isinstance(arg, relax.Tuple) else [arg]):
                    if isinstance(field, relax.Var) and field in index:
                        uses[index[field]].append((binding.var, value, arg))
    layers, declined = {}, {}
    for i, param in enumerate(params):
        dtype = str(param.ty.dtype)
        if dtype != "float32":
            declined[i] = f"{dtype} weights: their kernels read requantized inputs (int8 centroids are rounded)"
            continue
        if len(uses[i]) != 1:
            declined[i] = f"read by {len(uses[i])} ops, not one"
            continue
        out, call, arg = uses[i][0]
        name = getattr(call.op, "name", "a function")
        if name == "relax.nn.conv2d" and arg.same_as(call.args[1]):
            a = call.attrs
            if a.data_layout != "NCHW" or a.kernel_layout != "OIHW":
                declined[i] = f"conv2d in {a.data_layout}/{a.kernel_layout}, not NCHW/OIHW"
                continue
        elif not (name == "relax.matmul" and arg.same_as(call.args[1]) and len(param.ty.shape) == 2):
            declined[i] = f"read by {name}, not by a float conv2d or dense layer"
            continue
        if not isinstance(call.args[0], relax.Var):
            declined[i] = "the layer's input is not a tensor of the graph"
            continue
        shape = static_shape(out)
        if shape is None:
            declined[i] = "the layer's output shape is not known at compile time"
            continue
        layers[i] = GemmLayer(call, call.args[0], int(np.prod(shape[2:])) if name == "relax.nn.conv2d" else 1)
    return layers, declined


class CentroidRefit:
    """The refit of the module docstring for the weights ``constants`` of ``func`` on calibration
    ``samples``, run by ``evaluate`` (the original model once, for every layer's ``X0``)."""

    def __init__(self, func: relax.Function, constants: list[relax.Constant], evaluate: Evaluate, samples: list,
                 seed: int = 0, assign: str = "nearest"):
        self.func, self.weights = lift_constants(func, constants)
        self.evaluate, self.samples = evaluate, samples
        num_input = len(self.func.params) - len(constants)
        self.params = list(self.func.params[num_input:])
        self.layers, self.declined = gemm_layers(self.func, self.params)
        self.inputs = {p: [sample[j] for sample in samples] for j, p in enumerate(self.func.params[:num_input])}
        self.positions: dict[int, np.ndarray] = {}
        self.assign_positions: dict[int, np.ndarray] = {}
        self.assign = assign
        self.rng = np.random.default_rng(seed)
        # Its own stream: the refit's rows are the same whichever assignment is asked for.
        self.assign_rng = np.random.default_rng([seed, 1])
        self._original: dict[int, np.ndarray] | None = None

    def original_inputs(self) -> dict[int, np.ndarray]:
        """Each refit layer's input in the original model, stacked over the samples (one run, on first use)."""
        if self._original is None:
            # Layers reading one tensor (RetinaFace's SSH branches) tap it once: the taps are the last
            # outputs, one per distinct tensor.
            taps = list(dict.fromkeys(layer.data for layer in self.layers.values() if layer.data not in self.inputs))
            tapped = with_taps(tvm.IRModule({"main": self.func}), taps)["main"]
            rows = self.evaluate(tapped, self.weights, self.samples) if taps else []
            found = {tap: np.concatenate([row[len(row) - len(taps) + t] for row in rows]) for t, tap in enumerate(taps)}
            self._original = {i: found[layer.data] if layer.data in found else np.concatenate(self.inputs[layer.data])
                              for i, layer in self.layers.items()}
        return self._original

    def refit(self, i: int, clustered: np.ndarray, per_slice: bool, x: np.ndarray | None = None,
              scales: np.ndarray | None = None) -> tuple[np.ndarray, dict | str]:
        """Weight ``i`` (k-means' ``clustered``) refit on its input ``x`` (default ``X0``), and the layer's
        relative output error before and after; or ``clustered`` and why it is not refit. With ``scales``
        (one per output channel) ``clustered`` and the result are a scaled codebook's normalized values,
        and ``scales`` is refit in place (module docstring)."""
        if i in self.declined:
            return clustered, self.declined[i]
        layer = self.layers[i]
        x0 = self.original_inputs()[i]
        x = x0 if x is None else x
        w0 = self.weights[f"w{i}"]
        positions = self.sampled_positions(i, MAX_ROWS, self.positions, self.rng)
        xs, x0s, w0s = layer.patches(x, w0.shape, positions), layer.patches(x0, w0.shape, positions), layer.weight_rows(w0)
        rows = layer.weight_rows(clustered)
        gptq = self.assign == "gptq" and w0s.shape[1] <= MAX_ASSIGN_DEPTH
        if gptq:
            wide = self.sampled_positions(i, MAX_ASSIGN_ROWS, self.assign_positions, self.assign_rng)
            rows = gptq_assign(layer.patches(x, w0.shape, wide), layer.patches(x0, w0.shape, wide), w0s, rows,
                               per_slice and scales is None, scales)
        if scales is None:
            refit_rows, before, after = solve_centroids(xs, x0s, w0s, rows, per_slice)
        else:
            for round_ in range(SCALE_ROUNDS):
                scales[:] = solve_scales(xs, x0s, w0s, rows, scales)
                rows, error, after = solve_centroids(xs, x0s, w0s, rows, False, scales=scales)
                rows = rows.astype(np.float32)
                before = error if round_ == 0 else before
            refit_rows = rows
        how = {"output_error_kmeans": before, "output_error_refit": after}
        if gptq:
            how["assign"] = "gptq"
        return layer.weight_of_rows(refit_rows, w0.shape), how

    def sampled_positions(self, i: int, rows: int, store: dict[int, np.ndarray],
                          rng: np.random.Generator) -> np.ndarray | None:
        """Conv ``i``'s output positions read per sample, drawn once (seeded) so that at most ``rows``
        patches are read over all samples; None for a dense layer (one row per sample)."""
        layer = self.layers[i]
        if not layer.is_conv:
            return None
        if i not in store:
            samples = self.original_inputs()[i].shape[0]
            take = max(1, min(rows // samples, layer.positions))
            store[i] = np.stack([rng.choice(layer.positions, take, replace=False) for _ in range(samples)])
        return store[i]

    def refit_in_order(self, clustered: dict[int, tuple[np.ndarray, bool]],
                       scaled: dict[int, tuple[np.ndarray, int]] | None = None,
                       ) -> dict[int, tuple[np.ndarray, dict | str]]:
        """Every weight of ``clustered`` ({i: (k-means value, per_slice)}) refit in dataflow order, each on
        its input in the model with the weights before it clustered and refit (numpy's step-by-step
        run when the evaluator has one; else on ``X0``). ``scaled`` ({i: (scales, axis)}): those weights
        are scaled codebooks, their values in ``clustered`` and in the result normalized."""
        scaled = scaled or {}

        def weight(i: int, value: np.ndarray) -> np.ndarray:
            return expand_scaled(value, *scaled[i]) if i in scaled else value

        def refit(i: int, value: np.ndarray, per_slice: bool, x: np.ndarray | None = None):
            return self.refit(i, value, per_slice, x, scaled[i][0] if i in scaled else None)

        current = dict(self.weights)
        for i, (value, _) in clustered.items():
            current[f"w{i}"] = weight(i, value)
        stepper = getattr(self.evaluate, "stepper", None)
        make = stepper(self.func) if stepper is not None else None
        results = {}
        if make is None:
            for i, (value, per_slice) in clustered.items():
                results[i] = refit(i, value, per_slice)
            return results
        run = make(self.func, current, self.samples)
        order = sorted(clustered, key=lambda i: run.position.get(self.layers[i].data, -1) if i in self.layers else -1)
        for i in order:
            value, per_slice = clustered[i]
            x = np.concatenate(run.run_until(self.layers[i].data)) if i in self.layers else None
            results[i] = refit(i, value, per_slice, x)
            current[f"w{i}"] = weight(i, results[i][0])  # read by the bindings the run has not reached yet
        return results

