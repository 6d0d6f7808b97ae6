"""The ARM cores qemu-user emulates for us, and the /proc/cpuinfo each one shows the guest.

qemu-user passes the host's x86 /proc/cpuinfo through; XNNPACK (through the cpuinfo library) reads it
to pick kernels and onnxruntime crashes on it. So every core gets its own file, written from the
core's documented MIDR fields and the hardware-capability names Linux prints for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from lite.errors import UsageError

_V8_0 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_V8_2 = _V8_0 + " atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp"  # asimddp: sdot/udot for int8


@dataclass(frozen=True)
class Core:
    name: str  # qemu's -cpu name
    part: int  # MIDR part number (implementer 0x41, Arm)
    revision: int
    variant: int
    features: str
    note: str


CORES = {
    c.name: c
    for c in (
        Core("cortex-a53", 0xD03, 4, 0x0, _V8_0, "Armv8.0 in-order little core (Raspberry Pi 3, budget phones)"),
        Core("cortex-a72", 0xD08, 3, 0x0, _V8_0, "Armv8.0 out-of-order (Raspberry Pi 4)"),
        Core("cortex-a76", 0xD0B, 1, 0x4, _V8_2, "Armv8.2 with dot product (Raspberry Pi 5, 2019+ phones)"),
        Core("neoverse-n1", 0xD0C, 1, 0x3, _V8_2 + " ssbs", "Armv8.2 server core (AWS Graviton2, Ampere Altra)"),
    )
}


class UnknownCoreError(UsageError):
    """`--target qemu:<core>` names a core not in CORES."""


def get_core(name: str) -> Core:
    if name not in CORES:
        raise UnknownCoreError(f"unknown ARM core {name!r}: expected one of {', '.join(CORES)} (e.g. qemu:cortex-a72)")
    return CORES[name]


def cpuinfo(core: Core, processors: int) -> str:
    """The text of /proc/cpuinfo on an aarch64 Linux with `processors` cores of this kind."""
    block = (
        f"BogoMIPS\t: 50.00\nFeatures\t: {core.features}\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
        f"CPU variant\t: {core.variant:#x}\nCPU part\t: {core.part:#x}\nCPU revision\t: {core.revision}\n\n"
    )
    return "".join(f"processor\t: {i}\n{block}" for i in range(processors))
