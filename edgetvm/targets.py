"""Target presets: the host and 32-bit ARMv7 boards with NEON, hard-float.

A preset is a TVM target dict plus what edgetvm needs around it: the cross compiler, the vector
width of the float unit (for the default schedules), and the qemu CPU name for emulation.
``resolve_target`` takes a preset name or a raw TVM target dict.
"""

from __future__ import annotations

import platform
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


def resolve_target(target: str | dict | ResolvedTarget = "host") -> ResolvedTarget:
    """Turn a preset name or a TVM target dict into a :class:`ResolvedTarget`."""
    if isinstance(target, ResolvedTarget):
        return target
    if isinstance(target, str):
        preset = _lookup(target)
        if preset is None:
            raise TargetError(
                f"unknown target {target!r}; presets: {', '.join(PRESETS)} "
                f"(run `edgetvm targets`), or pass a TVM target dict such as {{'kind': 'llvm', ...}}"
            )
        target_dict = preset.target or _host_target()
        return ResolvedTarget(preset.name, dict(target_dict), preset.vector_lanes, bool(preset.qemu_cpu),
                              preset.qemu_cpu)
    if isinstance(target, dict):
        if target.get("kind") != "llvm":
            raise TargetError(f"target {target!r}: edgetvm compiles for CPU targets only (kind 'llvm')")
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
    raise TargetError(f"target must be a preset name or a TVM target dict, not {type(target).__name__}")


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
