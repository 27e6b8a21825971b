#!/usr/bin/env bash
# Builds the libbpf shared object that is embedded in the agent binary, from Debian's libbpf
# source (the same version as bookworm's libbpf-dev, whose BPF-side headers bpf/ compiles with).
# Debian ships libbpf.a without -fPIC, so it cannot be linked into a loadable object: build it.
# Output: .output/libbpf.so (stripped). Needs: curl, make, cc, libelf-dev, zlib1g-dev.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=1.1.2
SHA256=b50ab60637fb713db78aa98e6ca911ddf13c0799d498a1f6ec03ebffc7dca588
URL="http://deb.debian.org/debian/pool/main/libb/libbpf/libbpf_${VERSION}.orig.tar.gz"
OUT=.output
mkdir -p "$OUT"
if [[ -f "$OUT/libbpf.so" && -f "$OUT/libbpf.version" && "$(cat "$OUT/libbpf.version")" == "$VERSION" ]]; then
  exit 0
fi
tarball="$OUT/libbpf_${VERSION}.orig.tar.gz"
if [[ ! -f "$tarball" ]] || ! echo "$SHA256  $tarball" | sha256sum -c --quiet - 2>/dev/null; then
  echo "fetching libbpf ${VERSION} source from the Debian archive" >&2
  curl -fsSL -o "$tarball.tmp" "$URL"
  echo "$SHA256  $tarball.tmp" | sha256sum -c --quiet -
  mv "$tarball.tmp" "$tarball"
fi
rm -rf "$OUT/libbpf-${VERSION}" "$OUT/libbpf-build"
tar -C "$OUT" -xzf "$tarball"
make -s -C "$OUT/libbpf-${VERSION}/src" -j"$(nproc)" OBJDIR="$PWD/$OUT/libbpf-build" BUILD_STATIC_ONLY= >/dev/null
cp "$OUT/libbpf-build/libbpf.so.${VERSION}" "$OUT/libbpf.so"
strip --strip-unneeded "$OUT/libbpf.so"
echo "$VERSION" > "$OUT/libbpf.version"
echo "built $OUT/libbpf.so ($(stat -c %s "$OUT/libbpf.so") bytes)" >&2
