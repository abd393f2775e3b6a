"""Where TVM's LLVM IR adds a float product: the one reading of it that both builds' rounding rests on.

TVM writes ``a * b + c`` as a call of ``llvm.fmuladd``; a product kept in a variable is an ``fmul``
whose result an ``fadd`` or ``fsub`` may take, which LLVM contracts too. The host rewrite
(``unfused_products``) splits and fences exactly these, the ARM rewrite (``neon_mla``) compiles the
kernels that hold them to ``vmla.f32``: if the two read the IR differently, a kernel would be fused
in one build and not in the other, and the builds would no longer agree bit for bit.
"""

from __future__ import annotations

import re

FLOAT = r"(?:<\d+ x float>|float)"
# An operand: a value, a splat or vector constant, or a scalar literal.
_OPERAND = r"(%[\w.]+|splat \([^)]*\)|<[^>]*>|[\w.+-]+)"
# groups: indent, result, type, a, b, c, the rest of the line (metadata)
FMULADD = re.compile(rf"^(\s*)(%[\w.]+) = (?:tail )?call (?:[a-z]+ )*({FLOAT}) @llvm\.fmuladd\.\w+\("
                     rf"{FLOAT} {_OPERAND}, {FLOAT} {_OPERAND}, {FLOAT} {_OPERAND}\)(.*)$", re.M)
# groups: indent, result, fast-math flags, type, operands
FMUL = re.compile(rf"^(\s*)(%[\w.]+) = fmul ((?:[a-z]+ )*)({FLOAT}) (.*)$", re.M)
_FADD_OPERANDS = re.compile(r"^\s*%[\w.]+ = f(?:add|sub) ([^!\n]*)", re.M)
_VALUE = re.compile(r"%[\w.]+")


def adds_a_product(body: str) -> bool:
    """Whether the LLVM IR function body ``body`` adds a float product: what LLVM may fuse."""
    if FMULADD.search(body):
        return True
    products = {match.group(2) for match in FMUL.finditer(body)}
    return any(value in products for operands in _FADD_OPERANDS.findall(body) for value in _VALUE.findall(operands))
