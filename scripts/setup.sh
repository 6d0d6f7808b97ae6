#!/usr/bin/env bash
# Create the project venv and install the pinned dependency set (idempotent).
# torch is pinned in pyproject.toml and installed first, explicitly: an unpinned resolution
# would pull a multi-GB CUDA build from the registry.
set -euo pipefail
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup: warning: apt-get not found; the built-in corpora (Debian packages) will not build" >&2
fi
# ARM targets (eval/targets): qemu-user runs the aarch64 runtime, gcc builds its instruction counter,
# binutils' nm names the profiled functions, perf samples the host profile, OpenSSH reaches boards
# (and the tests' loopback sshd). Installed when missing and apt can run.
need=()
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v nm >/dev/null 2>&1 || need+=(binutils)
command -v perf >/dev/null 2>&1 || need+=(linux-perf)
command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  echo "setup: apt-get install ${need[*]} (ARM targets)"
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; then
    $SUDO apt-get update -q >/dev/null && \
      $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null || \
      echo "setup: warning: could not install ${need[*]}; ARM targets (lite evaluate --target) will not run" >&2
  fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install --quiet "torch==2.13.0"
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
"$VENV/bin/python" -c "import torch, sentencepiece, sacrebleu; print('setup: torch', torch.__version__)"
