"""Calibration: run the float model on sample inputs and pick each activation's quantization range.

The float Relax module is rewritten to also return the tensors to calibrate ("taps") and run on the
calibration samples by the ``evaluate`` the caller passes (``edgetvm.host.run_on_host``: edgetvm's
own lowering for the host, on the TVM VM). Three range estimators:

* ``minmax``: ``[min x, max x]`` over all samples (no clipping, largest rounding step).
* ``percentile``: the 0.01 % / 99.99 % percentiles (``percentile=99.99``): clips rare outliers.
* ``entropy``: TensorRT's KL-divergence calibration (Migacz, "8-bit Inference with TensorRT",
  GTC 2017): a 2048-bin histogram of ``|x|``; for each candidate threshold ``t`` the clipped
  distribution ``P`` is compared with its re-quantized version ``Q`` (128 levels for signed
  tensors, 256 for non-negative ones) and the ``t`` with the smallest ``KL(P || Q)`` wins;
  the range is ``[max(min x, -t), min(max x, t)]``.

Percentile and entropy work on a uniform random subsample of each tensor (at most
``SAMPLES_PER_TENSOR`` values per input), which keeps memory flat for large feature maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..data import read_samples
from ..errors import InputError
from ..progress import bar
from ..transform.taps import with_taps

MODES = ("minmax", "percentile", "entropy")
SAMPLES_PER_TENSOR = 1 << 16
HISTOGRAM_BINS = 2048


@dataclass
class RangeObserver:
    """Running statistics of one tensor over the calibration inputs."""

    lo: float = np.inf
    hi: float = -np.inf
    samples: list[np.ndarray] = field(default_factory=list)
    channel_sum: np.ndarray | None = None
    channel_count: int = 0
    channel_lo: np.ndarray | None = None
    channel_hi: np.ndarray | None = None
    # Which per-channel statistics to keep: each pass of quantize.py reads one of them, and on SFace
    # int8 (92 samples, two passes) computing both for every tap cost 2.2 of the 28 s compile.
    sums: bool = True
    extremes: bool = True

    def update(self, value: np.ndarray, rng: np.random.Generator, keep_samples: bool) -> None:
        value = np.asarray(value, dtype=np.float32)
        flat = value.ravel()
        if flat.size == 0:
            return
        lo = hi = None
        if value.ndim >= 2 and (self.sums or self.extremes):
            moved = np.moveaxis(value, 1, 0).reshape(value.shape[1], -1)
            if self.sums:
                # Per-channel (axis 1) sums: the means feed the bias correction of annotate.py.
                self.channel_sum = (moved.sum(axis=1, dtype=np.float64)
                                    + (0 if self.channel_sum is None else self.channel_sum))
                self.channel_count += moved.shape[1]
            if self.extremes:
                # Per-channel extremes: the scales of cross-layer equalization.
                lo, hi = moved.min(axis=1), moved.max(axis=1)
                self.channel_lo = lo if self.channel_lo is None else np.minimum(self.channel_lo, lo)
                self.channel_hi = hi if self.channel_hi is None else np.maximum(self.channel_hi, hi)
        # The tensor's extremes are its channels' (min and max are exact, and both carry a NaN).
        self.lo = min(self.lo, float(flat.min() if lo is None else lo.min()))
        self.hi = max(self.hi, float(flat.max() if hi is None else hi.max()))
        if keep_samples:
            if flat.size > SAMPLES_PER_TENSOR:
                flat = flat[rng.integers(0, flat.size, SAMPLES_PER_TENSOR)]
            self.samples.append(flat.copy())

    def range(self, mode: str, percentile: float = 99.99) -> tuple[float, float]:
        if not np.isfinite(self.lo):
            return 0.0, 0.0
        if mode == "minmax":
            return self.lo, self.hi
        values = np.concatenate(self.samples)
        if mode == "percentile":
            lo = float(np.percentile(values, 100.0 - percentile))
            hi = float(np.percentile(values, percentile))
            return min(lo, 0.0), max(hi, 0.0)
        threshold = entropy_threshold(values, num_levels=256 if self.lo >= 0 else 128)
        return max(self.lo, -threshold), min(self.hi, threshold)


def _kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    mask = p > 0
    q = np.where(q > 0, q, 1e-12)
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def entropy_threshold(values: np.ndarray, num_levels: int = 128, bins: int = HISTOGRAM_BINS) -> float:
    """The clipping threshold ``t`` of ``|values|`` minimising ``KL(P_t || Q_t)`` (TensorRT)."""
    magnitudes = np.abs(values)
    top = float(magnitudes.max())
    if top == 0.0:
        return 0.0
    hist, edges = np.histogram(magnitudes, bins=bins, range=(0.0, top))
    hist = hist.astype(np.float64)
    best_kl, best_i = np.inf, bins
    for i in range(num_levels, bins + 1, 8):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        # Q: the first i bins merged into num_levels levels, each level spread evenly over the
        # bins of P that were non-empty.
        q = np.zeros(i)
        chunks = np.array_split(np.arange(i), num_levels)
        for chunk in chunks:
            nonzero = hist[chunk] > 0
            count = nonzero.sum()
            if count:
                q[chunk[nonzero]] = hist[chunk].sum() / count
        p_sum, q_sum = p.sum(), q.sum()
        if p_sum == 0 or q_sum == 0:
            continue
        kl = _kl_divergence(p / p_sum, q / q_sum)
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(edges[best_i]) if best_i < len(edges) else top


def calibration_arrays(calibration, inputs) -> list[list[np.ndarray]]:
    """Calibration inputs as one list of input arrays per sample (``edgetvm.data.read_samples``).

    Arrays shaped like the model's (single) input or a batch of them stacked on a new leading
    axis, dicts name -> array, ``.npy`` paths, a directory of them, and images (paths or HxWx3
    uint8 arrays), resized (bicubic) to the input's spatial size as RGB 0..255 float32. No cap:
    the observers keep at most ``SAMPLES_PER_TENSOR`` values per tensor and sample.
    """
    if calibration is None:
        raise InputError("--quantize int8 on a float model needs calibration inputs: give --calib DIR of .npy files "
                         "or images (in Python: calibration=[arrays or image paths])")
    return read_samples(calibration, inputs, resample="bicubic")


def collect_ranges(mod: tvm.IRModule, taps: list[relax.Var], samples: list[list[np.ndarray]],
                   mode: str = "minmax", percentile: float = 99.99, seed: int = 0,
                   channel_means: dict | None = None,
                   channel_ranges: dict | None = None, *, evaluate) -> dict[relax.Var, tuple[float, float]]:
    """Run the float ``mod`` on every sample and return ``tap -> (lo, hi)``;
    ``channel_means`` (optional) receives ``tap -> mean over everything but axis 1``,
    ``channel_ranges`` (optional) ``tap -> (lo[C], hi[C])`` per channel (axis 1).

    ``evaluate(mod, samples)`` yields every output of ``mod`` per sample (``edgetvm.host.run_on_host``,
    which ``edgetvm.api`` hands down: built for the host and run on the TVM VM).
    """
    if mode not in MODES:
        raise InputError(f"calibration_mode {mode!r}: choose one of {', '.join(MODES)}")
    observers = [RangeObserver(sums=channel_means is not None, extremes=channel_ranges is not None) for _ in taps]
    rng = np.random.default_rng(seed)
    for values in bar(evaluate(with_taps(mod, taps), samples), total=len(samples), desc="calibrating",
                      unit="sample"):
        # The taps are the last ``len(taps)`` fields, whatever the model's own outputs look like.
        values = values[len(values) - len(taps):]
        for observer, value in zip(observers, values):
            observer.update(value, rng, keep_samples=mode != "minmax")
    if channel_means is not None:
        for tap, observer in zip(taps, observers):
            if observer.channel_sum is not None:
                channel_means[tap] = observer.channel_sum / max(observer.channel_count, 1)
    if channel_ranges is not None:
        for tap, observer in zip(taps, observers):
            if observer.channel_lo is not None:
                channel_ranges[tap] = (observer.channel_lo.astype(np.float64), observer.channel_hi.astype(np.float64))
    return {tap: observer.range(mode, percentile) for tap, observer in zip(taps, observers)}
