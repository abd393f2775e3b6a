"""The ARMv7 int8 depthwise 3x3 microkernel (kernels/neon_q8_dwconv.py): its assembly as documented.
Its numbers against numpy under qemu: test_int8_nhwc_kernels.py (every epilogue spelling, strides 1
and 2, rows with 1 and 2 pixels left after the groups of 3)."""

from __future__ import annotations

import itertools
import re

import pytest

from edgetvm.backends.neon_microkernels import with_microkernels
from edgetvm.kernels.int8_nhwc import DWCONV_GROUP_PIXELS, neon_q8_dwconv_name
from edgetvm.kernels.neon_q8_dwconv import q8_dwconv3x3_asm

WEIGHTS = {f"d{12 + t}" for t in range(9)}


def _registers(line: str) -> list[str]:
    """The d registers an instruction names, q registers as their two d halves."""
    names = []
    for kind, number in re.findall(r"\b([dq])(\d+)\b", line):
        names += [f"d{number}"] if kind == "d" else [f"d{2 * int(number)}", f"d{2 * int(number) + 1}"]
    return names


@pytest.mark.parametrize("reduced", [False, True])
@pytest.mark.parametrize("pixels", [1, DWCONV_GROUP_PIXELS])
@pytest.mark.parametrize("negative,left_shift", [(False, False), (True, True)])
def test_group_is_taps_in_pairs_then_the_requantize_in_registers(pixels, negative, left_shift, reduced):
    lines = q8_dwconv3x3_asm(pixels, negative, left_shift, unsigned=False, reduced=reduced)
    assert lines[0] == "1:" and lines[-2:] == ["subs $4, $4, #1", "bne 1b"]
    first_requantize = next(i for i, line in enumerate(lines) if line.startswith("vld1.32"))
    accumulate = lines[5:first_requantize - (1 if left_shift else 0)]
    # Per pixel: 9 input loads (aligned, stepped by the operands), 5 vmull + 4 vmlal of tap pairs, the
    # first two pairs' products widened and added by vaddl and the other 3 by vaddw: 26 instructions,
    # nothing else. With reduced-range weights taps 0-3, 4-7 and 8: 3 vmull + 6 vmlal, vaddl and vaddw: 22.
    loads = [line for line in accumulate if line.startswith("vld1.8")]
    assert len(loads) == 9 * pixels and all(re.fullmatch(r"vld1\.8 \{d2[4-7]\}, \[\$1 :64\], \$[567]", line)
                                             for line in loads)
    assert [line.rsplit(", ", 1)[1] for line in loads[:9]] == ["$5", "$5", "$6", "$5", "$5", "$6", "$5", "$5", "$7"]
    counts = {op: sum(line.startswith(op) for line in accumulate) for op in ("vmull.s8", "vmlal.s8", "vaddl.s16",
                                                                             "vaddw.s16")}
    products = 3 if reduced else 5
    assert counts == {"vmull.s8": products * pixels, "vmlal.s8": (9 - products) * pixels, "vaddl.s16": 2 * pixels,
                      "vaddw.s16": 2 * (products - 2) * pixels}
    assert len(accumulate) == (22 if reduced else 26) * pixels
    # The weights (d12-d20) are read, never written, while the taps accumulate; the accumulators of
    # pixel p are q(2p), q(2p+1) (d0 up to d11), below every other register the group uses.
    for line in accumulate:
        written = _registers(line.split(",")[0]) if not line.startswith("vld1.8") else _registers(line)[:1]
        assert not WEIGHTS & set(written), line
    acc = {r for line in accumulate if line.startswith(("vaddl", "vaddw")) for r in _registers(line.split(",")[0])}
    assert acc == {f"d{i}" for i in range(4 * pixels)}
    # Each accumulator requantized once (one vqrdmulh), each pixel stored once.
    assert sum(line.startswith("vqrdmulh.s32") for line in lines) == 2 * pixels
    assert [line for line in lines if line.startswith("vst1.8")] == \
        [f"vst1.8 {{d{4 * p}}}, [$0 :64], $5" for p in range(pixels)]
    assert ("vbsl" in " ".join(lines)) == (negative and pixels > 1) and ("vshl.s32" in " ".join(lines)) == left_shift
    # PReLU: the last pixel of each half selects in place (vbit into the negative side's registers).
    assert sum(line.startswith("vbit") for line in lines) == (4 if negative else 0)


def test_every_spelling_has_a_definition():
    for pixels in (1, DWCONV_GROUP_PIXELS):
        for negative in (False, True):
            for left_shift in (False, True):
                for unsigned in (False, True):
                    for reduced, clamped, right_shift in itertools.product((False, True), repeat=3):
                        if left_shift and right_shift:
                            continue
                        name = neon_q8_dwconv_name(pixels, negative, left_shift, unsigned, reduced, clamped,
                                                   right_shift)
                        defined = with_microkernels(
                            f"declare i32 @{name}(ptr, ptr, ptr, ptr, i32, i32, i32, i32, i32)\n")
                        assert f"define internal i32 @{name}(" in defined
                        assert ("vqmovun.s16" in defined) == unsigned
                        assert defined.count("vaddw.s16") == (2 if reduced else 6) * pixels
                        # Only right shifts: the rounding fixup ungated (no vand per int32x4).
                        assert defined.count("vand q15") == (0 if right_shift else 2 * pixels)
                        # A clamp inside the output type's range: vmax + vmin per pixel, else none.
                        kind = "u8" if unsigned else "s8"
                        assert defined.count(f"vmax.{kind}") == defined.count(f"vmin.{kind}") == \
                            (pixels if clamped else 0)
