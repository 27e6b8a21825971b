#!/usr/bin/env bash
# `bun run build`: BPF object + embedded libbpf + bundled BTF index → dist/ebpf-tracer (one file).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build-libbpf.sh
bash scripts/build-bpf.sh
# Bundled BTF is minimised against this object: fail when it is stale (regenerate with
# scripts/gen-min-btf.sh on a machine that has the listed kernels' full BTF).
bash scripts/gen-min-btf.sh --check
bun scripts/gen-btf-bundle.ts
mkdir -p dist
bun build --compile --compile-exec-argv=--smol --no-compile-autoload-dotenv --no-compile-autoload-bunfig --minify-syntax --minify-whitespace --target=bun-linux-x64 src/cli/main.ts --outfile dist/ebpf-tracer.tmp >/dev/null
mv dist/ebpf-tracer.tmp dist/ebpf-tracer
echo "built dist/ebpf-tracer ($(stat -c %s dist/ebpf-tracer) bytes)"
