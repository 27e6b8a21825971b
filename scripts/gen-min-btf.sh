#!/usr/bin/env bash
# Regenerates the bundled BTF files under btf/ from btf/manifest.txt, minimised to what the
# tracer's BPF object needs (bpftool gen min_core_btf <full.btf> <out.btf> <object>), then
# records the object's CO-RE relocations in btf/core-relocs-<arch>.txt and refreshes
# src/kernel/btf/bundle.generated.ts.
#
#   scripts/gen-min-btf.sh            regenerate every manifest entry that has a full BTF source
#   scripts/gen-min-btf.sh --check    exit 1 when a bundled file is missing, invalid, unlisted or
#                                     stale for the current object; exit 0 with a SKIP line when
#                                     the object has not been built
#
# Objects: OBJECT_x86_64 / OBJECT_arm64 (env); by default .output/tracer.bpf.o is the object for
# the build machine's architecture. Entries of an architecture with no object are skipped.
# Full BTF sources: see btf/README.md (manifest column 2, "sysfs", or $BTF_FULL_DIR).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
manifest=btf/manifest.txt
full_dir=${BTF_FULL_DIR:-.output/btf-full}
check=0
[[ "${1:-}" == "--check" ]] && check=1

die() { echo "gen-min-btf: $*" >&2; exit 1; }
say() { echo "gen-min-btf: $*" >&2; }

host_arch() {
  case "$(uname -m)" in
    x86_64) echo x86_64 ;;
    aarch64|arm64) echo arm64 ;;
    *) uname -m ;;
  esac
}

object_for() { # arch -> object path or ""
  local var="OBJECT_$1"
  if [[ -n "${!var:-}" ]]; then echo "${!var}"; return; fi
  [[ "$1" == "$(host_arch)" ]] && echo ".output/tracer.bpf.o" || echo ""
}

entries() { # "key source" lines, comments and blanks dropped
  [[ -f "$manifest" ]] || die "$manifest is missing"
  sed -e 's/#.*//' -e 's/[[:space:]]\+$//' "$manifest" | awk 'NF { print $1, ($2 == "" ? "-" : $2) }'
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# full_btf KEY SOURCE -> prints a path to the full BTF (raw or vmlinux ELF), or nothing
full_btf() {
  local key=$1 src=$2 release=${1##*/}
  local cands=()
  case "$src" in
    sysfs)
      [[ "$(uname -r)" == "$release" && -r /sys/kernel/btf/vmlinux ]] && cands+=(/sys/kernel/btf/vmlinux) ;;
    -) cands+=("$full_dir/$key.btf" "$full_dir/$key.btf.tar.xz") ;;
    *) cands+=("$src") ;;
  esac
  local c
  for c in "${cands[@]}"; do
    [[ -r "$c" ]] || continue
    if [[ "$c" == *.tar.xz ]]; then
      local out="$tmp/full/$key"
      mkdir -p "$out"
      tar -xJf "$c" -C "$out"
      find "$out" -name '*.btf' -type f | head -n 1
    else
      echo "$c"
    fi
    return
  done
}

relocs() { bun scripts/gen-btf-bundle.ts --core-relocs "$1"; }

arches=$(entries | awk '{ split($1, p, "/"); print p[3] }' | sort -u)
status=0
did_any=0

for arch in $arches; do
  obj=$(object_for "$arch")
  if [[ -z "$obj" || ! -f "$obj" ]]; then
    say "SKIP $arch: BPF object ${obj:-for $arch} not built (set OBJECT_$arch or run the BPF build first)"
    continue
  fi
  did_any=1
  no_source=0
  command -v bpftool >/dev/null || die "bpftool is required (apt-get install bpftool)"
  relocs "$obj" > "$tmp/relocs-$arch.txt"
  stamp="btf/core-relocs-$arch.txt"
  if (( check )) && ! cmp -s "$tmp/relocs-$arch.txt" "$stamp"; then
    say "STALE $arch: the object's CO-RE relocations differ from $stamp (rerun scripts/gen-min-btf.sh):"
    diff -u "$stamp" "$tmp/relocs-$arch.txt" 2>/dev/null | sed -n '3,40p' >&2 || true
    status=1
  fi
  while read -r key src; do
    [[ "$key" == */"$arch"/* ]] || continue
    out="btf/$key.btf"
    full=$(full_btf "$key" "$src")
    if (( check )); then
      if [[ ! -f "$out" ]]; then say "MISSING $out"; status=1; continue; fi
      if [[ -n "$full" ]]; then
        bpftool gen min_core_btf "$full" "$tmp/regen.btf" "$obj" >/dev/null
        cmp -s "$tmp/regen.btf" "$out" || { say "STALE $out: regenerating from $full gives different bytes"; status=1; }
      fi
      continue
    fi
    if [[ -z "$full" ]]; then
      # The stamp must not claim this file matches the object, so it is left as it was.
      say "NO SOURCE for $key (source: $src; looked in $full_dir too): ${out} not regenerated"
      no_source=1
      status=1
      continue
    fi
    mkdir -p "$(dirname "$out")"
    bpftool gen min_core_btf "$full" "$out" "$obj" >/dev/null
    say "wrote $out ($(stat -c %s "$out") bytes) from $full"
  done < <(entries)
  if (( ! check )); then
    if (( no_source )); then
      say "$stamp left unchanged: some $arch entries could not be regenerated"
    else
      cp "$tmp/relocs-$arch.txt" "$stamp"
    fi
  fi
done

# Files in btf/ that the manifest does not list would be bundled without a way to regenerate them.
listed=$(entries | awk '{ print "btf/" $1 ".btf" }' | sort)
present=$(find btf -name '*.btf' -type f | sort)
unlisted=$(comm -13 <(echo "$listed") <(echo "$present") | sed '/^$/d')
if [[ -n "$unlisted" ]]; then
  say "UNLISTED (add to $manifest or delete): $(echo "$unlisted" | tr '\n' ' ')"
  status=1
fi

if (( check )); then
  bun scripts/gen-btf-bundle.ts --check || status=1
  (( did_any )) && (( status == 0 )) && say "OK: bundled BTF matches the BPF object(s)"
else
  bun scripts/gen-btf-bundle.ts || status=1
fi
exit $status
