"""Checks shared by the frontend tests: relative error, LiteRT's outputs, ELF header, NEON disassembly, TFLite
weight bytes."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np

from edgetvm.frontends.tflite import parse_tflite, read_tflite

# RetinaFace runs at 480x640 (H x W): the astronaut resized, as a camera frame would be.
RETINAFACE_SHAPE = (1, 3, 480, 640)


def relative_error(actual: np.ndarray, reference: np.ndarray) -> float:
    """max|actual - reference| / max|reference|: the error relative to the output's scale."""
    return float(np.abs(actual.astype(np.float64) - reference).max() / np.abs(reference).max())


def litert_outputs(path, x: np.ndarray, xnnpack: bool = True) -> dict[str, np.ndarray]:
    """LiteRT's outputs for the one input ``x``, single-threaded: with XNNPACK (its default) or with
    its builtin kernels (a second float32 summation order, to measure how far two correct runtimes
    fall apart)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = {} if xnnpack else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    interpreter = Interpreter(model_path=str(path), num_threads=1, **resolver)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return {d["name"]: interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()}


def assert_outputs_match(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], rtol: float = 1e-4):
    assert list(outputs) == list(reference), "output names differ from the reference model's"
    for name, ref in reference.items():
        assert outputs[name].shape == ref.shape, name
        err = relative_error(outputs[name], ref)
        assert err <= rtol, f"output {name}: max|a-b|/max|ref| = {err:.3g} > {rtol}"


def elf_header(path: Path) -> dict:
    """ELF identification fields of a shared library: class, machine, flags."""
    head = Path(path).read_bytes()[:52]
    assert head[:4] == b"\x7fELF", f"{path} is not an ELF file"
    ei_class, ei_data = head[4], head[5]
    endian = "<" if ei_data == 1 else ">"
    (e_machine,) = struct.unpack_from(endian + "H", head, 18)
    (e_flags,) = struct.unpack_from(endian + "I", head, 36)
    return {"class": ei_class, "little_endian": ei_data == 1, "machine": e_machine, "flags": e_flags}


EM_ARM = 40
EF_ARM_ABI_FLOAT_HARD = 0x400
NEON_FLOAT_Q = re.compile(r"\bv(?:mul|add|sub|mla|mls|fma|fms)\.f32\s+q\d+")


def assert_arm_hard_float_library(path: Path) -> None:
    header = elf_header(path)
    assert header["class"] == 1, "not a 32-bit ELF (EI_CLASS != ELFCLASS32)"
    assert header["machine"] == EM_ARM, f"e_machine {header['machine']} is not ARM (40)"
    assert header["flags"] & EF_ARM_ABI_FLOAT_HARD, f"e_flags {header['flags']:#x} lacks EF_ARM_ABI_FLOAT_HARD"


def neon_q_float_ops(path: Path) -> list[str]:
    """The quad-register float arithmetic instructions in the library's disassembly."""
    objdump = shutil.which("arm-linux-gnueabihf-objdump")
    assert objdump, "arm-linux-gnueabihf-objdump is missing (binutils-arm-linux-gnueabihf)"
    text = subprocess.run([objdump, "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return NEON_FLOAT_Q.findall(text)


# FLOAT32 and FLOAT16 buffers become float32 constants; integer ones keep their size.
_FLOAT_TYPES = (0, 1)


def fp32_weight_bytes(path) -> int:
    """What the flatbuffer's constant tensors take as float32 (integers as stored), read with the
    tflite package, independently of the frontend."""
    data, source = read_tflite(path)
    model = parse_tflite(data, source)
    subgraph = model.Subgraphs(0)
    total = 0
    for t in range(subgraph.TensorsLength()):
        tensor = subgraph.Tensors(t)
        buffer = model.Buffers(tensor.Buffer())
        if buffer is None or buffer.DataLength() == 0:
            continue
        elements = int(np.prod(tensor.ShapeAsNumpy(), dtype=np.int64))
        total += elements * 4 if tensor.Type() in _FLOAT_TYPES else buffer.DataLength()
    return total
