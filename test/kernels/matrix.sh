#!/usr/bin/env bash
# The kernel matrix: runs test/kernels/run.sh for every kernel × mode cell below, one VM at a
# time, then prints a table kernel × mode → pass/FAIL with the number of spans (and the seconds
# the VM ran). Exits 1 when any cell fails, 2 when nothing could run.
#
#   test/kernels/matrix.sh                 every row below
#   test/kernels/matrix.sh bookworm trixie only these rows (first column)
#   KT_MODES="default perf" test/kernels/matrix.sh   only these columns
#
# Rows: a kernel spec for run.sh (SUITE, SUITE/PACKAGE or .deb path; "@arm64": the arm64 kernel
# under qemu-system-aarch64 with dist/ebpf-tracer-linux-aarch64), then its modes. Bundled BTF
# exists for bullseye's and bookworm's kernels (btf/manifest.txt); the download cells run where
# nothing is bundled, since the agent prefers a bundled file over a download.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"

MATRIX="
bullseye            default kprobes perf bundled
bookworm            default kprobes perf bundled
bookworm-backports  default kprobes perf download
trixie              default kprobes perf download
bookworm@arm64      default kprobes perf bundled
"
COLUMNS_ALL="default kprobes perf bundled download"
columns=${KT_MODES:-$COLUMNS_ALL}

rows=()
while read -r spec modes; do
  [[ -n "$spec" ]] || continue
  if (($#)) && [[ " $* " != *" $spec "* ]]; then continue; fi
  rows+=("$spec|$modes")
done <<< "$MATRIX"
((${#rows[@]})) || kt_die "no matrix row matches: $*"

mkdir -p "$KT_CACHE/logs"
declare -A cell release
failures=()
total=0 failed=0 t0=$SECONDS
ncells=0
for r in "${rows[@]}"; do for m in ${r#*|}; do [[ " $columns " == *" $m "* ]] && ncells=$((ncells + 1)); done; done

i=0
for r in "${rows[@]}"; do
  spec=${r%%|*}
  for m in ${r#*|}; do
    [[ " $columns " == *" $m "* ]] || continue
    i=$((i + 1))
    errlog="$KT_CACHE/logs/matrix--${spec//\//_}--$m.stderr"
    ts=$SECONDS
    out=$(bash "$here/run.sh" "$spec" "$m" 2>"$errlog")
    rc=$?
    res=$(grep '^RESULT ' <<< "$out" | tail -n 1)
    secs=$((SECONDS - ts))
    total=$((total + 1))
    get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< "$res"; }
    if [[ -z "$res" ]]; then
      cell[$spec|$m]="ERROR"
      why=$(grep -E 'error:' "$errlog" | tail -n 1)
      failures+=("$spec $m: ${why:-run.sh exited $rc without a RESULT line} (see $errlog)")
      failed=$((failed + 1))
    else
      release[$spec]=$(get kernel)
      spans=$(get spans)
      if [[ $rc == 0 && "$(get status)" == pass ]]; then
        cell[$spec|$m]="pass $spans"
      else
        cell[$spec|$m]="FAIL $spans"
        failed=$((failed + 1))
        failures+=("$spec $m: ${res#* why=} (log $(get log))")
      fi
      cell[$spec|$m]+=" ${secs}s"
    fi
    echo "[$i/$ncells] $spec $m: ${cell[$spec|$m]}" >&2
  done
done

# ---- table
w=8
for r in "${rows[@]}"; do spec=${r%%|*}; l="${release[$spec]:-?} ($spec)"; ((${#l} > w)) && w=${#l}; done
printf '\n%-*s' "$w" "kernel"
for m in $columns; do printf ' | %-12s' "$m"; done
printf '\n%s' "$(printf '%*s' "$w" '' | tr ' ' '-')"
for m in $columns; do printf -- '-|-%s' "------------"; done
echo
for r in "${rows[@]}"; do
  spec=${r%%|*}
  printf '%-*s' "$w" "${release[$spec]:-?} ($spec)"
  for m in $columns; do printf ' | %-12s' "${cell[$spec|$m]:--}"; done
  echo
done
echo
echo "cells: pass <spans> <seconds>; FAIL <spans>; - not run. $((total - failed))/$total passed in $((SECONDS - t0))s."
if ((failed)); then
  echo "failures:"
  printf '  %s\n' "${failures[@]}"
  exit 1
fi
exit 0
