"""Run a Relax dataflow function in numpy: the calibration engine of pruning recovery.

Least-squares recovery runs the model on every calibration input once per group of refit layers.
Compiling each variant with TVM on the host costs a minute per model and leaves untuned kernels
slow; numpy's BLAS runs the CNN ops of face models (conv2d as im2col @ W, depthwise as k*k
shifted multiply-adds, BN, PReLU, pooling, dense) in milliseconds, with no compile at all.

:func:`unsupported_ops` says which ops of a function this evaluator cannot run; the caller then
falls back to a compiled evaluator. Results are float32 like the compiled model's, to rounding.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..errors import CompileError

_UNARY = {
    "relax.nn.relu": lambda x, a: np.maximum(x, 0),
    "relax.nn.relu6": lambda x, a: np.clip(x, 0, 6),
    "relax.sigmoid": lambda x, a: 1.0 / (1.0 + np.exp(-x)),
    "relax.tanh": lambda x, a: np.tanh(x),
    "relax.exp": lambda x, a: np.exp(x),
    "relax.sqrt": lambda x, a: np.sqrt(x),
    "relax.rsqrt": lambda x, a: 1.0 / np.sqrt(x),
    "relax.negative": lambda x, a: -x,
    "relax.abs": lambda x, a: np.abs(x),
    "relax.square": lambda x, a: x * x,
    "relax.log": lambda x, a: np.log(x),
    "relax.nn.silu": lambda x, a: x / (1.0 + np.exp(-x)),
    "relax.nn.leakyrelu": lambda x, a: np.where(x > 0, x, x * float(a.alpha)),
    "relax.nn.hardswish": lambda x, a: x * np.clip(x + 3, 0, 6) / 6,
}
_BINARY = {
    "relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply, "relax.divide": np.divide,
    "relax.maximum": np.maximum, "relax.minimum": np.minimum, "relax.power": np.power,
}
_REDUCE = {"relax.mean": np.mean, "relax.sum": np.sum, "relax.max": np.max, "relax.min": np.min}
_OTHER = {
    "relax.nn.conv2d", "relax.nn.batch_norm", "relax.nn.prelu", "relax.reshape", "relax.flatten",
    "relax.permute_dims", "relax.expand_dims", "relax.squeeze", "relax.matmul", "relax.concat", "relax.split",
    "relax.strided_slice", "relax.nn.max_pool2d", "relax.nn.avg_pool2d", "relax.nn.adaptive_avg_pool2d",
    "relax.nn.softmax", "relax.clip", "relax.astype", "relax.image.resize2d",
}
SUPPORTED = set(_UNARY) | set(_BINARY) | set(_REDUCE) | _OTHER


def unsupported_ops(func: relax.Function) -> list[str]:
    found = set()
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not isinstance(binding, relax.VarBinding):
                found.add("match_cast")
            elif isinstance(value, relax.Call):
                if not isinstance(value.op, tvm.ir.Op) or value.op.name not in SUPPORTED:
                    found.add(getattr(value.op, "name", type(value.op).__name__))
                elif value.op.name == "relax.nn.conv2d" and (
                        str(value.attrs.data_layout), str(value.attrs.kernel_layout)) != ("NCHW", "OIHW"):
                    found.add("relax.nn.conv2d (layout)")
                elif value.op.name == "relax.image.resize2d" and not nearest_resize_supported(value.attrs):
                    found.add("relax.image.resize2d (a mode other than NCHW nearest)")
    return sorted(found)


_NEAREST_ROUNDING = {"floor": np.floor, "ceil": np.ceil, "round_prefer_floor": lambda v: np.ceil(v - 0.5),
                     "round_prefer_ceil": lambda v: np.floor(v + 0.5)}
_SOURCE_COORDINATE = {
    "asymmetric": lambda out, size_in, size_out: out * (size_in / size_out),
    "half_pixel": lambda out, size_in, size_out: (out + 0.5) * (size_in / size_out) - 0.5,
}


def nearest_resize_supported(attrs) -> bool:
    """Whether :func:`nearest_resize` computes this ``relax.image.resize2d`` (RetinaFace's FPN upsampling)."""
    return (str(attrs.method) == "nearest_neighbor" and str(attrs.layout) == "NCHW"
            and str(attrs.coordinate_transformation_mode) in _SOURCE_COORDINATE
            and str(attrs.rounding_method) in _NEAREST_ROUNDING)


def nearest_resize(x: np.ndarray, size: list[int], attrs) -> np.ndarray:
    """``out[n, c, y, x] = in[n, c, r(t(y)), r(t(x))]``, ``t`` the source coordinate of the transformation
    mode, ``r`` the rounding, clamped to the image (TVM's topi.image.resize2d, nearest_neighbor)."""
    transform = _SOURCE_COORDINATE[str(attrs.coordinate_transformation_mode)]
    rounding = _NEAREST_ROUNDING[str(attrs.rounding_method)]
    rows, cols = (np.clip(rounding(transform(np.arange(out, dtype=np.float64), size_in, out)), 0, size_in - 1)
                  .astype(np.int64) for out, size_in in zip(size, x.shape[2:]))
    return x[:, :, rows[:, None], cols[None, :]]


def _ints(values) -> list[int]:
    return [int(v) for v in values]


def conv2d(x: np.ndarray, w: np.ndarray, strides, padding, dilation, groups: int) -> np.ndarray:
    n, c_in, _, _ = x.shape
    c_out, c_per, kh, kw = w.shape
    top, left, bottom, right = padding
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    ho = (xp.shape[2] - dilation[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (xp.shape[3] - dilation[1] * (kw - 1) - 1) // strides[1] + 1

    def window(src, i, j):
        r0, c0 = i * dilation[0], j * dilation[1]
        return src[:, :, r0:r0 + strides[0] * (ho - 1) + 1:strides[0], c0:c0 + strides[1] * (wo - 1) + 1:strides[1]]

    if groups > 1 and c_per == 1:
        multiplier = c_out // c_in
        src = np.repeat(xp, multiplier, axis=1) if multiplier > 1 else xp
        out = np.zeros((n, c_out, ho, wo), dtype=np.float32)
        for i in range(kh):
            for j in range(kw):
                out += window(src, i, j) * w[:, 0, i, j][None, :, None, None]
        return out
    outs = []
    g_out = c_out // groups
    for g in range(groups):
        xg = xp[:, g * c_per:(g + 1) * c_per]
        cols = np.empty((n, ho, wo, c_per, kh, kw), dtype=np.float32)
        for i in range(kh):
            for j in range(kw):
                cols[..., i, j] = window(xg, i, j).transpose(0, 2, 3, 1)
        wg = w[g * g_out:(g + 1) * g_out].reshape(g_out, -1)
        outs.append((cols.reshape(n * ho * wo, -1) @ wg.T).reshape(n, ho, wo, g_out).transpose(0, 3, 1, 2))
    return np.ascontiguousarray(np.concatenate(outs, axis=1))


def pool2d(x: np.ndarray, attrs, kind: str) -> np.ndarray:
    kh, kw = _ints(attrs.pool_size)
    strides, dilation = _ints(attrs.strides), _ints(attrs.dilation)
    top, left, bottom, right = _ints(attrs.padding)
    if bool(attrs.ceil_mode):
        raise NotImplementedError("ceil_mode pooling")
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=fill)
    ones = np.pad(np.ones_like(x[:1, :1]), ((0, 0), (0, 0), (top, bottom), (left, right)))
    ho = (xp.shape[2] - dilation[0] * (kh - 1) - 1) // strides[0] + 1
    wo = (xp.shape[3] - dilation[1] * (kw - 1) - 1) // strides[1] + 1
    acc = np.full((x.shape[0], x.shape[1], ho, wo), fill, dtype=np.float32)
    count = np.zeros((1, 1, ho, wo), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dilation[0], j * dilation[1]
            sl = (slice(None), slice(None), slice(r0, r0 + strides[0] * (ho - 1) + 1, strides[0]),
                  slice(c0, c0 + strides[1] * (wo - 1) + 1, strides[1]))
            acc = np.maximum(acc, xp[sl]) if kind == "max" else acc + xp[sl]
            count += ones[sl]
    if kind == "max":
        return acc
    if bool(attrs.count_include_pad):
        return acc / (kh * kw)
    return acc / np.maximum(count, 1)


class _Interpreter:
    def __init__(self, env: dict, weights: dict | None = None):
        self.env = env
        self.weights = weights

    def value(self, expr):
        if isinstance(expr, relax.Var):
            if expr in self.env:
                return self.env[expr]
            return self.weights[str(expr.name)]
        if isinstance(expr, relax.Tuple):
            return tuple(self.value(f) for f in expr.fields)
        if isinstance(expr, tvm.ir.expr.Constant):
            v = expr.value
            return v.numpy() if hasattr(v, "numpy") else np.asarray(v)
        if isinstance(expr, relax.ShapeExpr):
            return tuple(int(v) for v in expr.values)
        if isinstance(expr, relax.PrimValue):
            return float(expr.value.value) if hasattr(expr.value, "value") else float(expr.value)
        raise NotImplementedError(type(expr).__name__)

    def binding(self, value):
        if isinstance(value, relax.Var) or isinstance(value, relax.Tuple) or isinstance(value, tvm.ir.expr.Constant):
            return self.value(value)
        if isinstance(value, relax.TupleGetItem):
            return self.value(value.tuple_value)[value.index]
        if not isinstance(value, relax.Call):
            raise NotImplementedError(type(value).__name__)
        op, a = value.op.name, value.attrs
        args = [self.value(arg) for arg in value.args]
        x = args[0] if args else None
        if op in _UNARY:
            return _UNARY[op](x, a).astype(x.dtype, copy=False)
        if op in _BINARY:
            return _BINARY[op](x, args[1])
        if op in _REDUCE:
            axis = None if a.axis is None else tuple(int(i) for i in a.axis)
            return _REDUCE[op](x, axis=axis, keepdims=bool(a.keepdims))
        if op == "relax.image.resize2d":
            return nearest_resize(x, _ints(args[1]), a)
        if op == "relax.nn.conv2d":
            return conv2d(x, args[1], _ints(a.strides), _ints(a.padding), _ints(a.dilation), int(a.groups))
        if op == "relax.nn.batch_norm":
            gamma, beta, mean, var = args[1:5]
            axis = int(a.axis) % x.ndim
            shape = [1] * x.ndim
            shape[axis] = -1
            scale = (gamma if bool(a.scale) else 1.0) / np.sqrt(var + float(a.epsilon))
            out = (x - mean.reshape(shape)) * np.reshape(scale, shape) + (beta.reshape(shape) if bool(a.center) else 0)
            return (out.astype(x.dtype), mean, var)
        if op == "relax.nn.prelu":
            shape = [1] * x.ndim
            shape[int(a.axis) % x.ndim] = -1
            return np.where(x > 0, x, x * args[1].reshape(shape))
        if op in ("relax.reshape", "relax.flatten"):
            return x.reshape(args[1] if op == "relax.reshape" else (x.shape[0], -1))
        if op == "relax.permute_dims":
            return np.transpose(x, None if a.axes is None else _ints(a.axes))
        if op == "relax.expand_dims":
            return np.expand_dims(x, tuple(_ints(a.axis)))
        if op == "relax.squeeze":
            return np.squeeze(x, axis=None if a.axis is None else tuple(_ints(a.axis)))
        if op == "relax.matmul":
            return np.matmul(x, args[1])
        if op == "relax.concat":
            return np.concatenate(x, axis=int(a.axis))
        if op == "relax.split":
            sections = a.indices_or_sections
            if not hasattr(sections, "__len__"):
                return tuple(np.array_split(x, int(sections), axis=int(a.axis)))
            return tuple(np.split(x, _ints(sections), axis=int(a.axis)))
        if op == "relax.strided_slice":
            axes, begin, end = (list(v) if isinstance(v, tuple) else [v] for v in args[1:4])
            strides = list(args[4]) if len(args) > 4 and isinstance(args[4], tuple) else [1] * len(axes)
            index = [slice(None)] * x.ndim
            for ax, b, e, s in zip(axes, begin, end, strides):
                index[int(ax)] = slice(int(b), int(e), int(s))
            return x[tuple(index)]
        if op == "relax.nn.max_pool2d":
            return pool2d(x, a, "max")
        if op == "relax.nn.avg_pool2d":
            return pool2d(x, a, "avg")
        if op == "relax.nn.adaptive_avg_pool2d":
            size = _ints(a.output_size) if a.output_size is not None else [1, 1]
            if size != [1, 1]:
                raise NotImplementedError("adaptive pooling to more than 1x1")
            return x.mean(axis=(2, 3), keepdims=True)
        if op == "relax.nn.softmax":
            e = np.exp(x - x.max(axis=int(a.axis), keepdims=True))
            return e / e.sum(axis=int(a.axis), keepdims=True)
        if op == "relax.clip":
            return np.clip(x, args[1], args[2])
        if op == "relax.astype":
            return x.astype(str(a.dtype))
        raise NotImplementedError(op)


def run_function(func: relax.Function, arguments: list[np.ndarray]) -> list[np.ndarray]:
    """``func(*arguments)`` in numpy; a tuple result comes back as a flat list of arrays."""
    env = {p: np.asarray(v) for p, v in zip(func.params, arguments)}
    interp = _Interpreter(env)
    for block in func.body.blocks:
        for binding in block.bindings:
            env[binding.var] = interp.binding(binding.value)
    result = interp.value(func.body.body)
    return list(result) if isinstance(result, tuple) else [result]


class NumpyEvaluator:
    """``evaluate(func, weights, inputs)`` for pruning recovery: numpy, no compile."""

    def __call__(self, func: relax.Function, weights: dict, inputs: list) -> list[list[np.ndarray]]:
        num_input = int(func.attrs["num_input"]) if func.attrs is not None and "num_input" in func.attrs \
            else len(func.params)
        weight_args = [weights[str(p.name)] for p in func.params[num_input:]]
        return [run_function(func, list(sample) + weight_args) for sample in inputs]


def _used_vars(expr, out: set) -> set:
    if isinstance(expr, relax.Var):
        out.add(expr)
    elif isinstance(expr, relax.Tuple):
        for f in expr.fields:
            _used_vars(f, out)
    elif isinstance(expr, relax.TupleGetItem):
        _used_vars(expr.tuple_value, out)
    elif isinstance(expr, relax.Call):
        for a in expr.args:
            _used_vars(a, out)
    return out


class FunctionStepper:
    """Runs a function on several inputs binding by binding, pausing where a tensor is needed.

    Weight parameters are read from ``weights`` when a binding uses them, so weights changed between
    two ``run_until`` calls take effect for every binding not computed yet: sequential layer-by-layer
    refitting then costs one forward pass in total. Tensors no later binding reads are dropped.
    """

    def __init__(self, func: relax.Function, weights: dict, inputs: list):
        num_input = int(func.attrs["num_input"]) if func.attrs is not None and "num_input" in func.attrs \
            else len(func.params)
        self.bindings = [b for block in func.body.blocks for b in block.bindings]
        self.position = {b.var: i for i, b in enumerate(self.bindings)}
        self.last_use: dict = {}
        for i, b in enumerate(self.bindings):
            for v in _used_vars(b.value, set()):
                self.last_use[v] = i
        for v in _used_vars(func.body.body, set()):
            self.last_use[v] = len(self.bindings)
        self.weights = weights
        self.envs = [dict(zip(func.params[:num_input], sample)) for sample in inputs]
        self.next = 0

    def run_until(self, var: relax.Var) -> list[np.ndarray]:
        if var not in self.position:
            return [env[var] if var in env else self.weights[str(var.name)] for env in self.envs]
        target = self.position[var]
        if target < self.next and any(var not in env for env in self.envs):
            raise RuntimeError(f"{var.name} was computed and dropped already")
        while self.next <= target:
            binding = self.bindings[self.next]
            for env in self.envs:
                env[binding.var] = _Interpreter(env, self.weights).binding(binding.value)
                for v in _used_vars(binding.value, set()):
                    if self.last_use.get(v, -1) <= self.next and v in env and v is not var:
                        del env[v]
            self.next += 1
        return [env[var] for env in self.envs]


class CalibrationEvaluator:
    """numpy when it can run every op of the function (fast, no compile), else ``fallback``.

    ``fallback`` is an ``evaluate(func, weights, inputs)`` that compiles (``edgetvm.host.HostEvaluator``,
    which ``edgetvm.api`` hands down); without one, a function numpy cannot run is an error.
    """

    def __init__(self, fallback=None, fallback_name: str = "tvm-host"):
        self.numpy = NumpyEvaluator()
        self.fallback = fallback
        self.fallback_name = fallback_name
        self.used: set[str] = set()

    def __call__(self, func: relax.Function, weights: dict, inputs: list) -> list[list[np.ndarray]]:
        missing = unsupported_ops(func)
        if not missing:
            try:
                rows = self.numpy(func, weights, inputs)
                self.used.add("numpy")
                return rows
            except NotImplementedError as exc:
                missing = [str(exc) or "an op variant"]
        if self.fallback is None:
            raise CompileError(f"pruning's calibration runs in numpy, which cannot run {', '.join(sorted(missing))}; "
                               f"use edgetvm.api.prune_model (as `edgetvm prune` and edgetvm.compile do), or pass "
                               f"evaluate=edgetvm.host.calibration_evaluator(), to run it compiled on the host")
        self.used.add(self.fallback_name)
        return self.fallback(func, weights, inputs)

    def stepper(self, func: relax.Function):
        """A step-by-step runner (sequential refit in one forward pass), if numpy can run ``func``."""
        return None if unsupported_ops(func) else FunctionStepper
