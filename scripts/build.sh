#!/usr/bin/env bash
# `bun run build`: BPF object + embedded libbpf + bundled BTF index → dist/ebpf-tracer (one file).
#
#   scripts/build.sh                                   the build machine's architecture → dist/ebpf-tracer
#   scripts/build.sh --arch aarch64 [--version V] [--out FILE]
#
# --arch x86_64|aarch64  cross-builds on an x86_64 machine: libbpf/libelf/zlib with
#                        gcc-aarch64-linux-gnu, the BPF object with -D__TARGET_ARCH_arm64, and
#                        Bun's linux-arm64 runtime from the npm package @oven/bun-linux-aarch64
#                        (the version of the bun doing the build; `bun build` cannot download it here)
# --version V            stamp V as the binary's version instead of package.json's
# --out FILE             default dist/ebpf-tracer, or dist/ebpf-tracer-linux-<arch> for another arch
# Anything but the default build compiles from a staged copy of src/ (.output/stage-<arch>) whose
# .output/ holds that architecture's libbpf.so and BPF object, so the checkout's own build
# outputs (which the tests import) stay those of the build machine.
set -euo pipefail
cd "$(dirname "$0")/.."
host_arch=$(uname -m)
ARCH=$host_arch
VERSION=""
OUTFILE=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --arch) ARCH=$2; shift ;;
    --version) VERSION=$2; shift ;;
    --out) OUTFILE=$2; shift ;;
    *) echo "usage: scripts/build.sh [--arch x86_64|aarch64] [--version V] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
[[ "$ARCH" == arm64 ]] && ARCH=aarch64
case "$ARCH" in
  x86_64) BUN_TARGET=bun-linux-x64; BTF_ARCH=x86_64 ;;
  aarch64) BUN_TARGET=bun-linux-arm64; BTF_ARCH=arm64 ;;
  *) echo "build: unsupported architecture $ARCH (x86_64, aarch64)" >&2; exit 2 ;;
esac
[[ -n "$VERSION" && ! "$VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+([.+~-][0-9A-Za-z.+~-]+)?$ ]] && { echo "build: --version $VERSION is not a version" >&2; exit 2; }

# The build machine's objects come first: the bundled-BTF check and the BTF index use them.
bash scripts/build-libbpf.sh
bash scripts/build-bpf.sh
if [[ "$ARCH" != "$host_arch" ]]; then
  bash scripts/build-libbpf.sh "$ARCH"
  bash scripts/build-bpf.sh "$ARCH"
  # gen-min-btf.sh names objects by BTF arch (x86_64, arm64)
  export "OBJECT_$BTF_ARCH=.output/$ARCH/tracer.bpf.o"
fi
# Bundled BTF is minimised against the object(s): fail when it is stale (regenerate with
# scripts/gen-min-btf.sh on a machine that has the listed kernels' full BTF).
bash scripts/gen-min-btf.sh --check
bun scripts/gen-btf-bundle.ts
mkdir -p dist
COMPILE=(bun build --compile --compile-exec-argv=--smol --no-compile-autoload-dotenv --no-compile-autoload-bunfig
         --minify-syntax --minify-whitespace "--target=$BUN_TARGET")

if [[ "$ARCH" == "$host_arch" && -z "$VERSION" ]]; then
  OUTFILE=${OUTFILE:-dist/ebpf-tracer}
  "${COMPILE[@]}" src/cli/main.ts --outfile "$OUTFILE.tmp" >/dev/null
  mv "$OUTFILE.tmp" "$OUTFILE"
  echo "built $OUTFILE ($(stat -c %s "$OUTFILE") bytes)"
  exit 0
fi

# ---- staged build: another architecture and/or another version ------------------------------
OUTFILE=${OUTFILE:-dist/ebpf-tracer-linux-$ARCH}
if [[ "$ARCH" != "$host_arch" ]]; then
  # Bun's runtime for the target, from npm (same version as this bun), cached in .output/bun-runtime
  bun_version=$(bun --version)
  rt_dir=.output/bun-runtime/$ARCH-$bun_version
  if [[ ! -x "$rt_dir/package/bin/bun" ]]; then
    echo "fetching @oven/bun-linux-$ARCH@$bun_version from npm (Bun's $ARCH runtime)" >&2
    rm -rf "$rt_dir" && mkdir -p "$rt_dir"
    (cd "$rt_dir" && npm pack --silent "@oven/bun-linux-$ARCH@$bun_version" >/dev/null && tar -xzf oven-bun-linux-*.tgz && rm -f oven-bun-linux-*.tgz)
    [[ -x "$rt_dir/package/bin/bun" ]] || { echo "build: the npm package has no bin/bun" >&2; exit 1; }
  fi
  COMPILE+=("--compile-executable-path=$rt_dir/package/bin/bun")
  objs=.output/$ARCH
else
  objs=.output
fi
stage=.output/stage-$ARCH
rm -rf "$stage"
mkdir -p "$stage/.output"
cp -r src btf tsconfig.json "$stage/"
ln -s "$PWD/node_modules" "$stage/node_modules"
cp "$objs/libbpf.so" "$objs/tracer.bpf.o" "$stage/.output/"
if [[ -n "$VERSION" ]]; then
  bun -e 'const [f, v] = process.argv.slice(1); const p = await Bun.file(f).json(); p.version = v; await Bun.write(f + ".out", JSON.stringify(p, null, 2) + "\n");' package.json "$VERSION"
  mv package.json.out "$stage/package.json"
else
  cp package.json "$stage/package.json"
fi
"${COMPILE[@]}" "$stage/src/cli/main.ts" --outfile "$OUTFILE.tmp" >/dev/null
mv "$OUTFILE.tmp" "$OUTFILE"
rm -rf "$stage"
echo "built $OUTFILE ($ARCH, version ${VERSION:-$(bun -e 'console.log((await Bun.file("package.json").json()).version)')}, $(stat -c %s "$OUTFILE") bytes)"
