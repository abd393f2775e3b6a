"""Target presets: the host and 32-bit ARMv7 boards with NEON, hard-float.

A preset is a TVM target dict plus what edgetvm needs around it: the cross compiler, the vector
width of the float unit (for the default schedules), and the qemu CPU name for emulation.
``resolve_target`` takes a preset name, a raw TVM target dict, a TVM target string as TVM users
write it (``"llvm -mtriple=armv7l-linux-gnueabihf -mcpu=cortex-a7 -mattr=+neon"``, which TVM 0.27
itself no longer parses) or a ``tvm.target.Target``.

A custom target is checked against LLVM's own tables (``tvm.target.codegen.llvm_get_targets``,
``llvm_get_cpu_archlist``) before LLVM compiles anything: an unknown triple crashes LLVM (SIGSEGV in
the target lookup) and an unknown CPU makes it print hundreds of warnings and fall back to a generic
CPU, so both are refused here in one line that names the field and the choices.
"""

from __future__ import annotations

import difflib
import platform
import re
import shlex
import shutil
from dataclasses import dataclass, field

import tvm

from .errors import TargetError, ToolchainError

ARM_TRIPLE = "armv7l-unknown-linux-gnueabihf"
ARM_CROSS_CXX = "arm-linux-gnueabihf-g++"
ARM_CROSS_CC = "arm-linux-gnueabihf-gcc"
ARM_SYSROOT = "/usr/arm-linux-gnueabihf"


@dataclass(frozen=True)
class TargetPreset:
    name: str
    description: str
    target: dict
    # Float lanes of one vector register: 4 on ARMv7 NEON q registers, 8 on AVX2.
    vector_lanes: int
    qemu_cpu: str = ""
    aliases: tuple[str, ...] = field(default=())


def _arm(cpu: str, extra_attrs: tuple[str, ...] = ()) -> dict:
    return {
        "kind": "llvm",
        "mtriple": ARM_TRIPLE,
        "mcpu": cpu,
        "mattr": ["+neon", "+vfp4", *extra_attrs],
        "mfloat-abi": "hard",
    }


def _host_target() -> dict:
    return {"kind": "llvm", "mcpu": _host_cpu()}


def _host_cpu() -> str:
    # LLVM's own detection, so the host artifact uses AVX2/AVX-512 where the CPU has them.
    try:
        cpu = tvm.get_global_func("target.llvm_get_system_cpu")()
    except Exception:  # noqa: BLE001 - an older build without the hook
        cpu = ""
    return str(cpu) or "generic"


PRESETS: dict[str, TargetPreset] = {
    p.name: p
    for p in [
        TargetPreset("host", f"this machine ({platform.machine()}), native code for the TVM runtime",
                     {}, vector_lanes=8),
        TargetPreset("armv7-neon", "generic 32-bit ARMv7-A with NEON, hard-float (tuned for Cortex-A7)",
                     _arm("cortex-a7"), vector_lanes=4, qemu_cpu="cortex-a7"),
        TargetPreset("cortex-a7", "Cortex-A7: Raspberry Pi 2 v1.1, Allwinner H3/A20, i.MX7",
                     _arm("cortex-a7"), vector_lanes=4, qemu_cpu="cortex-a7", aliases=("rpi2",)),
        TargetPreset("cortex-a9", "Cortex-A9: i.MX6, Zynq-7000, older Exynos (NEON, VFPv3)",
                     {**_arm("cortex-a9"), "mattr": ["+neon", "+vfp3"]}, vector_lanes=4, qemu_cpu="cortex-a9"),
        TargetPreset("cortex-a15", "Cortex-A15/A17: Tegra K1, Exynos 5, RK3288 (Tinker Board)",
                     _arm("cortex-a15"), vector_lanes=4, qemu_cpu="cortex-a15", aliases=("cortex-a17", "rk3288")),
        TargetPreset("cortex-a53-32", "Cortex-A53 running a 32-bit OS: Raspberry Pi 3 / Zero 2 W with armhf Raspberry Pi OS",
                     _arm("cortex-a53"), vector_lanes=4, qemu_cpu="max", aliases=("rpi3", "rpi-zero2")),
        TargetPreset("cortex-a72-32", "Cortex-A72 running a 32-bit OS: Raspberry Pi 4 with armhf Raspberry Pi OS",
                     _arm("cortex-a72"), vector_lanes=4, qemu_cpu="max", aliases=("rpi4",)),
    ]
}


@dataclass(frozen=True)
class ResolvedTarget:
    """A target ready for compilation."""

    preset: str  # preset name, or "custom"
    target_dict: dict
    vector_lanes: int
    is_arm: bool
    qemu_cpu: str = ""

    @property
    def tvm_target(self) -> tvm.target.Target:
        return tvm.target.Target(self.target_dict)

    def to_json(self) -> dict:
        return {"preset": self.preset, "target": self.target_dict, "arch": "armv7" if self.is_arm else platform.machine(),
                "qemu_cpu": self.qemu_cpu}


def _lookup(name: str) -> TargetPreset | None:
    if name in PRESETS:
        return PRESETS[name]
    for preset in PRESETS.values():
        if name in preset.aliases:
            return preset
    return None


# The arch field of the triples edgetvm generates code for (32-bit ARM boards, the machines that host
# edgetvm), as LLVM names its backend (``llvm_get_targets``).
_TRIPLE_ARCHES = ((re.compile(r"arm(v\d+[a-z]*)?"), "arm"), (re.compile(r"thumb(v\d+[a-z]*)?"), "thumb"),
                  (re.compile(r"x86_64|amd64"), "x86_64"), (re.compile(r"i[3-6]86"), "i386"),
                  (re.compile(r"aarch64|arm64"), "aarch64"))
# Target-dict keys that are TVM's bookkeeping (``Target.export``), not options a user sets.
_DERIVED_KEYS = ("tag", "keys", "host", "feature.")


def _llvm_arch(triple: str) -> str | None:
    arch = triple.split("-", 1)[0].lower()
    return next((name for pattern, name in _TRIPLE_ARCHES if pattern.fullmatch(arch)), None)


def parse_target_string(text: str) -> dict:
    """``"llvm -mtriple=T -mcpu=C -mattr=+a,+b"`` (TVM's former target-string form) as a target dict."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise TargetError(f"target {text!r}: cannot split it into words ({exc})") from None
    result: dict = {"kind": words[0]}
    for word in words[1:]:
        key, sep, value = word.lstrip("-").partition("=")
        if not word.startswith("-") or not sep or not key:
            raise TargetError(f"target {text!r}: {word!r} is not of the form -key=value "
                              f"(for example -mcpu=cortex-a7)")
        if key in ("mattr", "keys", "libs"):
            result[key] = [v for v in value.split(",") if v]
        else:
            result[key] = int(value) if value.lstrip("-").isdigit() else value
    return result


def _target_object_dict(target: tvm.target.Target) -> dict:
    exported = target.export()
    plain = {}
    for key, value in exported.items():
        if key.startswith(_DERIVED_KEYS) or value is None:
            continue
        if isinstance(value, str):
            value = str(value)
        elif not isinstance(value, (bool, int, float)):
            value = [str(v) for v in value]
        if value not in ("", []):
            plain[key] = value
    return plain


def validate_llvm_target(target: dict) -> None:
    """Refuse, in one line, a triple or CPU LLVM does not know (see the module docstring)."""
    triple = target.get("mtriple")
    where = f"target {target!r}"
    if triple is not None:
        if not isinstance(triple, str) or _llvm_arch(triple) is None:
            choices = ", ".join(["armv7l-unknown-linux-gnueabihf", "armv7a-linux-gnueabihf", "x86_64-linux-gnu",
                                 "aarch64-linux-gnu"])
            raise TargetError(f"{where}: mtriple {triple!r} is not a triple edgetvm generates code for; "
                              f"its architecture must be 32-bit ARM (arm*, thumb*), x86_64, i686 or aarch64, "
                              f"for example {choices}")
        if _llvm_arch(triple) not in set(tvm.target.codegen.llvm_get_targets()):
            raise TargetError(f"{where}: this TVM's LLVM was built without the {_llvm_arch(triple)} backend")
    cpu = target.get("mcpu")
    base = {"kind": "llvm", **({"mtriple": triple} if triple else {})}
    cpus = sorted(str(c) for c in tvm.target.codegen.llvm_get_cpu_archlist(tvm.target.Target(base)))
    if cpu is not None:
        if cpu not in cpus:
            close = difflib.get_close_matches(str(cpu), cpus, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            arm = [c for c in cpus if c.startswith("cortex-a")] or cpus
            raise TargetError(f"{where}: LLVM knows no mcpu {cpu!r} for {triple or 'this machine'}; {hint}"
                              f"valid: {', '.join(arm[:24])}{' ...' if len(arm) > 24 else ''}")
    attrs = target.get("mattr", []) or []
    if isinstance(attrs, str) or any(not isinstance(a, str) or a[:1] not in "+-" or len(a) < 2 for a in attrs):
        raise TargetError(f"{where}: mattr must be a list of +feature or -feature entries (for example ['+neon'])")
    # The features some CPU of this triple has. LLVM also takes features no CPU implies (+strict-align,
    # +thumb-mode), so only a near miss of a known feature, a typo, is refused.
    known = set()
    for name in cpus:
        known |= {str(f) for f in tvm.target.codegen.llvm_get_cpu_features(tvm.target.Target({**base, "mcpu": name}))}
    for attr in attrs:
        close = difflib.get_close_matches(attr[1:], sorted(known), n=3, cutoff=0.75)
        if attr[1:] not in known and close:
            raise TargetError(f"{where}: LLVM knows no feature {attr[1:]!r} for {triple or 'this machine'}; did you "
                              f"mean {' or '.join(close)}?")


def resolve_target(target: str | dict | tvm.target.Target | ResolvedTarget = "host") -> ResolvedTarget:
    """Turn a preset name, a TVM target dict, string or ``tvm.target.Target`` into a :class:`ResolvedTarget`."""
    if isinstance(target, ResolvedTarget):
        return target
    if isinstance(target, tvm.target.Target):
        target = _target_object_dict(target)
    elif isinstance(target, str) and target.strip().startswith(("llvm ", "c ", "cuda ")):
        target = parse_target_string(target.strip())
    elif isinstance(target, str) and target.strip() == "llvm":
        target = {"kind": "llvm"}
    if isinstance(target, str):
        preset = _lookup(target)
        if preset is None:
            names = [*PRESETS, *(a for p in PRESETS.values() for a in p.aliases)]
            close = difflib.get_close_matches(target, names, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TargetError(
                f"unknown target {target!r}; {hint}presets: {', '.join(PRESETS)} "
                f"(run `edgetvm targets`), or pass a TVM target dict such as {{'kind': 'llvm', ...}}"
            )
        target_dict = preset.target or _host_target()
        return ResolvedTarget(preset.name, dict(target_dict), preset.vector_lanes, bool(preset.qemu_cpu),
                              preset.qemu_cpu)
    if isinstance(target, dict):
        if target.get("kind") != "llvm":
            raise TargetError(f"target {target!r}: edgetvm compiles for CPU targets only (kind 'llvm')")
        validate_llvm_target(target)
        try:
            tvm.target.Target(target)
        except Exception as exc:  # noqa: BLE001 - TVM raises its own error types
            raise TargetError(f"TVM rejects the target {target!r}: {str(exc).splitlines()[0]}") from None
        triple = str(target.get("mtriple", ""))
        is_arm = triple.startswith(("arm", "thumb"))
        if is_arm and target.get("mfloat-abi") != "hard" and not triple.endswith("gnueabihf"):
            raise TargetError(
                f"target {target!r}: the ARMv7 boards edgetvm supports use the hard-float ABI; add "
                f"'mfloat-abi': 'hard' or use the triple {ARM_TRIPLE}"
            )
        return ResolvedTarget("custom", dict(target), 4 if is_arm else 8, is_arm, "cortex-a7" if is_arm else "")
    raise TargetError(f"target must be a preset name, a TVM target dict or string, or a tvm.target.Target, "
                      f"not {type(target).__name__}")


def require_tool(tool: str, what: str) -> str:
    """Return the path of ``tool`` or raise a ToolchainError that says how to install it."""
    path = shutil.which(tool)
    if path is None:
        raise ToolchainError(
            f"{tool} is not installed, and {what} needs it. On Debian/Ubuntu: "
            f"apt-get install gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf qemu-user"
        )
    return path


def list_targets() -> list[tuple[str, str, str]]:
    rows = []
    for preset in PRESETS.values():
        names = ", ".join((preset.name, *preset.aliases))
        rows.append((names, preset.target.get("mcpu", "native") if preset.target else "native", preset.description))
    return rows
