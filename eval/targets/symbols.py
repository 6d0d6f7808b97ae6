"""Guest code addresses to (library, function): where an emulated core's instructions went.

The instruction-count plugin's profile mode (eval/targets/insn_count.c) reports instructions per
translated-block start address; the guest writes its own /proc/self/maps (qemu-user shows the guest's
address space there, with the host paths of the mapped files). An address falls in one executable
mapping of a file; its file offset, through that ELF file's program headers, gives the address the
file's symbol table uses. Symbols come from binutils' `nm` (the aarch64 wheels keep their local
symbols in .symtab, so XNNPACK's micro-kernels are named; stripped files fall back to .dynsym).
Written by hand because no maintained Python package maps qemu-user guest addresses to symbols.
"""

from __future__ import annotations

import bisect
import shutil
import struct
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lite.errors import TargetRunError, TargetSetupError


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    offset: int
    path: str


def read_maps(path: Path) -> list[Mapping]:
    """The executable, file-backed mappings of a /proc/<pid>/maps copy, sorted by start address."""
    out = []
    for line in path.read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or "x" not in fields[1] or not fields[5].startswith("/"):
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        out.append(Mapping(start, end, int(fields[2], 16), fields[5].strip()))
    if not out:
        raise TargetRunError(f"{path}: no executable file mappings (not a /proc/self/maps copy?)")
    return sorted(out, key=lambda m: m.start)


def _load_segments(path: str) -> list[tuple[int, int, int]]:
    """(p_offset, p_filesz, p_vaddr) of each PT_LOAD segment of a 64-bit little-endian ELF file."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            return []
        phoff = struct.unpack_from("<Q", head, 0x20)[0]
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    segments = []
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
        if p_type == 1:  # PT_LOAD
            segments.append((p_offset, p_filesz, p_vaddr))
    return segments


class SymbolTable:
    """One ELF file's functions (address, size, name), sorted by address, looked up by file offset."""

    def __init__(self, path: str):
        self.path = path
        self.segments = _load_segments(path)
        symbols: list[tuple[int, int, str]] = []
        for dynamic in (False, True):  # .symtab if the file kept one, else the dynamic symbols
            symbols = _nm(path, dynamic)
            if symbols:
                break
        self.addresses = [a for a, _, _ in symbols]
        self.ends = [a + n for a, n, _ in symbols]
        self.names = [name for _, _, name in symbols]

    def lookup(self, file_offset: int) -> str:
        """The function containing `file_offset`, or "?" where the file names none (a stripped file's
        local functions: their code counts, under no name rather than under a neighbour's)."""
        vaddr = next((file_offset - o + v for o, n, v in self.segments if o <= file_offset < o + n), None)
        if vaddr is None:
            return "?"
        i = bisect.bisect_right(self.addresses, vaddr) - 1
        for j in range(i, max(i - 8, -1), -1):  # the nearest start first; aliases and nested symbols behind it
            if vaddr < self.ends[j]:
                return self.names[j]
        return "?"


def _nm(path: str, dynamic: bool) -> list[tuple[int, int, str]]:
    """(address, size, demangled name) of the sized code symbols of `path`, by address; [] if none.
    Unsized symbols are assembler labels inside functions (XNNPACK's and KleidiAI's "label_3"), not
    functions: they would take their function's instructions."""
    nm = shutil.which("nm")
    if nm is None:
        raise TargetSetupError("nm (binutils) not found: it names the functions of a profile (apt install binutils)")
    cmd = [nm, "--defined-only", "-n", "-S", "-C", *(["-D"] if dynamic else []), path]
    done = subprocess.run(cmd, capture_output=True, text=True)
    out = []
    for line in done.stdout.splitlines():
        fields = line.split(" ", 3)
        if len(fields) == 4 and fields[2] in ("t", "T", "W", "w", "i") and int(fields[1], 16) > 0:
            out.append((int(fields[0], 16), int(fields[1], 16), fields[3]))
    return out


@lru_cache(maxsize=None)
def symbol_table(path: str) -> SymbolTable:
    return SymbolTable(path)


def attribute(blocks: dict[int, int], maps: list[Mapping]) -> dict[tuple[str, str], int]:
    """Instructions per (library file name, function) from instructions per block start address.
    Addresses outside every file mapping (qemu's signal trampolines, JIT code) count as ("?", "?")."""
    starts = [m.start for m in maps]
    out: dict[tuple[str, str], int] = {}
    for addr, n in blocks.items():
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0 and addr < maps[i].end:
            m = maps[i]
            key = (Path(m.path).name, symbol_table(m.path).lookup(addr - m.start + m.offset))
        else:
            key = ("?", "?")
        out[key] = out.get(key, 0) + n
    return out
