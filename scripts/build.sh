#!/usr/bin/env bash
# `bun run build`: BPF object + embedded libbpf + bundled BTF index → dist/ebpf-tracer (one file).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-libbpf.sh
bash scripts/build-bpf.sh
if [[ -f scripts/gen-btf-bundle.ts ]]; then bun scripts/gen-btf-bundle.ts; fi
mkdir -p dist
bun build --compile --minify-syntax --minify-whitespace --target=bun-linux-x64 src/main.ts --outfile dist/ebpf-tracer.tmp >/dev/null
mv dist/ebpf-tracer.tmp dist/ebpf-tracer
echo "built dist/ebpf-tracer ($(stat -c %s dist/ebpf-tracer) bytes)"
