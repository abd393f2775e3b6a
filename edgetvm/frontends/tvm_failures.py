"""TVM's converter failures, told in the model's words.

When TVM's ONNX or TFLite converter gives up on a node, its message is written for TVM developers:
``Check failed: (cond) is false:`` prefixes, ``T.int64(64)`` for the number 64, a dump of the whole
``ir.Op(...)`` record, Python errors such as ``'int' object has no attribute 'Type'`` from inside
the converter, and a C++ warning on stderr about the half-built function it leaves behind.
``tvm_reason`` keeps the one sentence that says what is wrong; ``discard_builder`` closes what the
converter left open so that nothing is printed behind the user's back.
"""

from __future__ import annotations

import re

from ..errors import first_line

# Python errors raised by the converter's own code on inputs it did not expect: a corrupt file, not
# a sentence meant for the user.
CONVERTER_CODE_ERRORS = (AttributeError, TypeError, IndexError, KeyError, ZeroDivisionError, UnboundLocalError)

_CHECK_FAILED = re.compile(r"^(?:\w+Error: )?Check failed: (?:\(.*?\) is false: ?|.*?: )?")
_TIR_INT = re.compile(r"\bT\.u?int(?:8|16|32|64)\((-?\d+)\)")
_IR_OP = re.compile(r'(?:In )?ir\.Op\(.*?name="([\w.]+)".*?support_level=\d+\)[,:]?\s*')


def tvm_reason(exc: BaseException) -> str:
    """The first line of a TVM failure with TVM's internal notation removed."""
    line = str(exc).strip().splitlines()
    text = next((ln for ln in (s.strip() for s in line) if ln and not ln.startswith(("Traceback", "File ", "[bt]"))),
                "")
    text = _IR_OP.sub(lambda m: f"{m.group(1).removeprefix('relax.')}: ", text)
    text = _CHECK_FAILED.sub("", text)
    text = _TIR_INT.sub(r"\1", text)
    text = text.strip().rstrip(".")
    if not text:
        return first_line(exc)
    return text[:400]


def discard_builder(builder) -> None:
    """Close the binding block and variable scope a failed conversion leaves open in ``builder``.

    A Relax BlockBuilder destroyed with open blocks prints a C++ warning to stderr. A converter that
    raised inside ``with bb.function(...)`` leaves exactly one binding block and one scope open.
    """
    if builder is None:
        return
    try:
        builder._end_block()
        builder.end_scope()
    except Exception:  # noqa: BLE001 - nothing was open: the failure came before the function began
        pass
