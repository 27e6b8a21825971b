#!/usr/bin/env bash
# Compiles the CO-RE BPF object. vmlinux.h is generated from the build machine's kernel BTF;
# CO-RE relocations make the object load on other kernels, so this only needs the type names.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.output
mkdir -p "$OUT"
BTF=${VMLINUX_BTF:-/sys/kernel/btf/vmlinux}
if [[ ! -s "$OUT/vmlinux.h" ]]; then
  [[ -r "$BTF" ]] || { echo "build: need kernel BTF at $BTF (or set VMLINUX_BTF) to generate vmlinux.h" >&2; exit 1; }
  bpftool btf dump file "$BTF" format c > "$OUT/vmlinux.h.tmp"
  mv "$OUT/vmlinux.h.tmp" "$OUT/vmlinux.h"
fi
clang -g -O2 -target bpf -D__TARGET_ARCH_x86 -I"$OUT" -Ibpf \
  -Wall -Wextra -Wpadded -Werror -Wno-unused-parameter \
  -c bpf/tracer.bpf.c -o "$OUT/tracer.bpf.o.tmp"
# Drop DWARF (keeps .BTF and .BTF.ext, which CO-RE needs) so the embedded object stays small.
llvm-strip -g "$OUT/tracer.bpf.o.tmp"
mv "$OUT/tracer.bpf.o.tmp" "$OUT/tracer.bpf.o"
