"""ARM CPU targets: the on-device runtime on emulated cores (qemu-user) or on boards over SSH.

target.py     Target (the base class of every target), the runtime's files and how to stage them
registry.py   parse_target("qemu:cortex-a72" | "ssh://user@host:port"): the scheme table
cores.py      the emulated cores and the /proc/cpuinfo each shows
sysroot.py    the cached arm64 Python sysroot (Debian packages) + aarch64 wheels
plugin.py     the instruction-count TCG plugin (insn_count.c): build and read
qemu.py       QemuTarget: qemu-aarch64 -cpu <core> -L <sysroot> [-plugin]
ssh.py        SshTarget: tar over ssh, the board's own Python
evaluate.py   `lite evaluate RUN --target T`: BLEU, agreement, instructions, bit-identity, latency
"""
