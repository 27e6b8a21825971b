#!/usr/bin/env bash
# Compiles the CO-RE BPF object. vmlinux.h is generated from a kernel's BTF; CO-RE relocations
# make the object load on other kernels, so this only needs the type names.
#
#   scripts/build-bpf.sh [x86_64|aarch64]     (default: the build machine's architecture)
#
# The build machine's architecture: vmlinux.h from its own kernel BTF (or $VMLINUX_BTF), object
# at .output/tracer.bpf.o. aarch64 on an x86_64 machine: object at .output/aarch64/tracer.bpf.o,
# vmlinux.h = the build machine's vmlinux.h plus arm64's register layout (struct user_pt_regs,
# which bpf_tracing.h's arm64 PT_REGS_* macros read) from the BTF of Debian's bookworm arm64
# kernel (package fetched from the archive, pinned by SHA-256; BTF cut out of its boot image by
# scripts/kernel-btf.ts). Why not that kernel's whole vmlinux.h: bpf/ reads fields of newer
# kernels behind bpf_core_field_exists (struct file's f_ref), which 6.1 lacks, so they would not
# compile; the type and member names are relocated against the running kernel either way.
set -euo pipefail
cd "$(dirname "$0")/.."
host_arch=$(uname -m)
ARCH=${1:-$host_arch}
[[ "$ARCH" == arm64 ]] && ARCH=aarch64
case "$ARCH" in
  x86_64) TARGET=x86 ;;
  aarch64) TARGET=arm64 ;;
  *) echo "build-bpf: unsupported architecture $ARCH (x86_64, aarch64)" >&2; exit 2 ;;
esac

# The arm64 kernel whose BTF gives the arm64 vmlinux.h: the one the kernel matrix boots
# (test/kernels, bookworm arm64 cell) and whose minimised BTF is bundled (btf/manifest.txt).
ARM64_KERNEL_DEB=pool/main/l/linux-signed-arm64/linux-image-6.1.0-50-cloud-arm64_6.1.176-1_arm64.deb
ARM64_KERNEL_SHA256=9d41a53f5d687ae1a33cf546d0ed8be955f72e5f9e97b2b4e45e41dff3353b97

if [[ "$ARCH" == "$host_arch" ]]; then
  OUT=.output
  BTF=${VMLINUX_BTF:-/sys/kernel/btf/vmlinux}
else
  OUT=.output/$ARCH
  BTF=${VMLINUX_BTF:-$OUT/vmlinux.btf}
fi
mkdir -p "$OUT"

# arm64_btf: Debian's arm64 kernel package → $OUT/vmlinux.btf (once)
arm64_btf() {
  local deb=".output/src/${ARM64_KERNEL_DEB##*/}" tmp
  mkdir -p .output/src
  if [[ ! -f "$deb" ]] || ! echo "$ARM64_KERNEL_SHA256  $deb" | sha256sum -c --quiet - >/dev/null 2>&1; then
    echo "fetching ${ARM64_KERNEL_DEB##*/} from the Debian archive (for the arm64 vmlinux.h)" >&2
    curl -fsSL --retry 3 -o "$deb.tmp" "http://deb.debian.org/debian/$ARM64_KERNEL_DEB"
    echo "$ARM64_KERNEL_SHA256  $deb.tmp" | sha256sum -c --quiet - >&2
    mv "$deb.tmp" "$deb"
  fi
  tmp=$(mktemp -d)
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards './boot/vmlinuz-*'
  bun scripts/kernel-btf.ts "$tmp"/boot/vmlinuz-* "$BTF"
  rm -rf "$tmp"
}

if [[ ! -s "$OUT/vmlinux.h" ]]; then
  if [[ "$ARCH" != "$host_arch" ]]; then
    [[ -s .output/vmlinux.h ]] || bash "$0" "$host_arch"
    if [[ ! -r "$BTF" && -z "${VMLINUX_BTF:-}" ]]; then arm64_btf; fi
    # struct user_pt_regs { ... }; from the arm64 kernel, inside vmlinux.h's preserve_access_index block
    bpftool btf dump file "$BTF" format c | awk '/^struct user_pt_regs \{/ { p = 1 } p { print } p && /^\};/ { p = 0 }' > "$OUT/regs.h"
    grep -q '^struct user_pt_regs {' "$OUT/regs.h" || { echo "build-bpf: no struct user_pt_regs in $BTF" >&2; exit 1; }
    awk -v regs="$OUT/regs.h" '/^#pragma clang attribute pop/ && !done { while ((getline l < regs) > 0) print l; print ""; done = 1 } { print }' \
      .output/vmlinux.h > "$OUT/vmlinux.h.tmp"
  else
    [[ -r "$BTF" ]] || { echo "build: need kernel BTF at $BTF (or set VMLINUX_BTF) to generate vmlinux.h" >&2; exit 1; }
    bpftool btf dump file "$BTF" format c > "$OUT/vmlinux.h.tmp"
  fi
  mv "$OUT/vmlinux.h.tmp" "$OUT/vmlinux.h"
fi
clang -g -O2 -target bpf -D__TARGET_ARCH_$TARGET -I"$OUT" -Ibpf/include -Ibpf \
  -Wall -Wextra -Wpadded -Werror -Wno-unused-parameter \
  -c bpf/tracer.bpf.c -o "$OUT/tracer.bpf.o.tmp"
# Drop DWARF (keeps .BTF and .BTF.ext, which CO-RE needs) so the embedded object stays small.
llvm-strip -g "$OUT/tracer.bpf.o.tmp"
mv "$OUT/tracer.bpf.o.tmp" "$OUT/tracer.bpf.o"
