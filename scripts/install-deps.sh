#!/usr/bin/env bash
# Installs the build and test dependencies on Debian 12: toolchain for the BPF object and the
# embedded libbpf, the servers and clients the integration tests drive, and Bun (npm package).
set -euo pipefail
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo
PKGS=(clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev make gcc bzip2 curl ca-certificates openssl
      nginx wrk python3 python3-hpack python3-grpcio python3-h2 nghttp2-client nodejs golang-1.19-go binutils iproute2 xz-utils tar debootstrap
      systemd-container shellcheck util-linux qemu-system-x86 gcc-aarch64-linux-gnu libc6-dev-arm64-cross tmux)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v bun >/dev/null 2>&1; then
  $SUDO npm install -g --allow-scripts=bun bun@1.4.5 >/dev/null 2>&1 || $SUDO npm install -g bun@1.4.5 >/dev/null
fi
# The BPF side needs tracefs and bpffs; mount them when the machine has not.
if [[ $(id -u) -eq 0 ]]; then
  mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
fi
echo "deps ok: $(bun --version) $(clang --version | head -1)"
