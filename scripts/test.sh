#!/usr/bin/env bash
# `bun run test`: unit tests (no root needed) and root-only integration tests that drive the
# compiled dist/ebpf-tracer against real servers. Root tests skip, saying why, when not root.
# Ends with the line "N passed, N failed[, N skipped]".
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x dist/ebpf-tracer ]]; then bun run build || exit 1; fi
log=$(mktemp)
# bunfig.toml's [test] timeout is not read by bun 1.4: the per-test limit is set here. Root tests
# start the agent and real servers; on a loaded machine one of them can take well over bun's 5 s.
bun test --timeout 120000 "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
pass=$(grep -Eo '^ *[0-9]+ pass$' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
fail=$(grep -Eo '^ *[0-9]+ fail$' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
skip=$(grep -Eo '^ *[0-9]+ skip$' "$log" | tail -1 | grep -Eo '[0-9]+' || echo 0)
# Bun prints a failure's error above its "(fail)" line, far from the end of a long run; it is
# repeated here, next to the summary, so a CI log's tail says why (at most 40 lines each, 5 failures).
if [[ ${fail:-0} -gt 0 ]]; then
  echo
  echo "--- failures, again ---"
  awk '/^\((pass|skip|todo)\) /{n=0; next} /^\(fail\) /{if (shown < 5) {s = (n > 40 ? n - 40 : 0); for (i = s; i < n; i++) print buf[i]; print; print ""}; shown++; n=0; next} {buf[n++] = $0}' "$log"
fi
rm -f "$log"
if [[ $status -ne 0 && $fail -eq 0 ]]; then fail=1; fi
echo "${pass:-0} passed, ${fail:-0} failed, ${skip:-0} skipped"
exit $status
