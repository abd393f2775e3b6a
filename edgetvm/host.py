"""Running Relax on this machine: lower for the host, build the TVM VM, run samples.

The one place that does it. ``api.py`` hands these down as ``evaluate`` callables to the features
that need to run a model while compiling it (they sit below ``schedules`` and ``backends`` and
never build a VM themselves), and uses :func:`vm_runner` for compiled models and loaded artifacts:

* :class:`HostEvaluator` (and :func:`calibration_evaluator`, numpy first): pruning's recovery,
  ``evaluate(func, weights, inputs) -> [[outputs] per sample]``;
* :func:`run_on_host`: int8 calibration, ``evaluate(mod, samples) -> [outputs] per sample``, lazily.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import tvm
from tvm import relax

from .artifact import Runner
from .backends.vm import WEIGHTS_FUNCTION, build_vm
from .pruning.numpy_eval import CalibrationEvaluator
from .pruning.weights import split_params
from .schedules.lower import legalize_and_fuse, schedule_kernels
from .specs import TensorSpec
from .targets import resolve_target


def host_vm(mod: tvm.IRModule, *, schedule: bool = False) -> relax.VirtualMachine:
    """``mod`` lowered for the host (with edgetvm's default kernel schedules if ``schedule``) on the VM."""
    target = resolve_target("host")
    lowered = legalize_and_fuse(mod, target)
    if schedule:
        lowered = schedule_kernels(lowered, target)
    return relax.VirtualMachine(build_vm(lowered, target), tvm.cpu())


def call_main(vm: relax.VirtualMachine, args: list) -> list[np.ndarray]:
    """``main`` on TVM tensors; its outputs as numpy arrays (a single output as a one-item list)."""
    result = vm["main"](*args)
    items = list(result) if isinstance(result, (tvm.ir.Array, list, tuple)) else [result]
    return [item.numpy() for item in items]


def run_on_host(mod: tvm.IRModule, samples: list[list[np.ndarray]]) -> Iterator[list[np.ndarray]]:
    """Every output of ``mod`` per sample, one sample at a time (built, scheduled, on first use)."""
    vm = host_vm(mod, schedule=True)
    for arrays in samples:
        yield call_main(vm, [tvm.runtime.tensor(a) for a in arrays])


class HostEvaluator:
    """``evaluate(func, weights, inputs)``: compiles ``func`` for the host once, runs every input.

    ``func`` takes its weights as parameters after the inputs (``num_input``), ``weights`` maps
    their names to arrays.
    """

    def __init__(self):
        self._cache: dict[int, tuple] = {}

    def __call__(self, func: relax.Function, weights: dict, inputs: list) -> list[list[np.ndarray]]:
        entry = self._cache.get(id(func))
        if entry is None or entry[0] is not func:
            mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
            entry = (func, host_vm(mod))
            self._cache = {id(func): entry}
        vm = entry[1]
        device = tvm.cpu()
        _, weight_params = split_params(func)
        weight_args = [tvm.runtime.tensor(np.ascontiguousarray(weights[str(p.name)]), device) for p in weight_params]
        return [call_main(vm, [tvm.runtime.tensor(np.ascontiguousarray(a), device) for a in sample] + weight_args)
                for sample in inputs]


def calibration_evaluator() -> CalibrationEvaluator:
    """Pruning's evaluator: numpy when it runs every op of the function, else compiled on the host."""
    return CalibrationEvaluator(fallback=HostEvaluator())


def vm_runner(executable, inputs: list[TensorSpec], outputs: list[TensorSpec], num_threads: int | None,
              label: str, *, float16_weights: bool = False) -> Runner:
    """A :class:`Runner` of a host VM executable (a compiled model, or a loaded ``.so``).

    ``float16_weights``: the library stores its weights as float16 (``--weights fp16``); they are
    widened once, here, and passed to every call (``backends.vm.store_weights_as_float16``)."""
    if num_threads:
        tvm.runtime.num_threads = num_threads  # read by the thread pool when it first starts
        os.environ.setdefault("TVM_NUM_THREADS", str(num_threads))
    device = tvm.cpu()
    vm = relax.VirtualMachine(executable, device)
    weights = list(vm[WEIGHTS_FUNCTION]()) if float16_weights else []

    def invoke(arrays: list[np.ndarray]) -> list[np.ndarray]:
        return call_main(vm, [tvm.runtime.tensor(a, device) for a in arrays] + weights)

    return Runner(inputs, outputs, invoke, label)
