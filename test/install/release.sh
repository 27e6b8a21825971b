#!/usr/bin/env bash
# The release as a user gets it: in a minimal Debian 12 container booted with systemd (no
# libelf1; test/install/lib.sh), which trusts a private CA, `curl -fsSL URL/install.sh | bash`
# installs from a release served over HTTPS on the host's loopback (the container shares the
# host's network). test/root/release.test.ts builds the releases, serves them, runs the OTLP
# receiver and answers span queries; this script drives the container and prints ok / not ok.
#
#   test/install/release.sh --url https://127.0.0.1:PORT --ca CA.pem --collector 127.0.0.1:PORT [--keep]
#
# The server at --url serves: /install.sh (release 1), /next/install.sh (release 2, a newer
# version), the tarballs of both, and /_test/spans?path=P → the number of spans with url.path P
# the receiver got. Checks: a download that fails (unknown --version) leaves nothing behind;
# curl | bash installs and the unit is active; spans for a curl to a demo server reach the
# receiver; a re-run changes nothing; release 2's install.sh --upgrade restarts exactly once.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=test/install/lib.sh
source "$REPO/test/install/lib.sh"
OUT=${EBPF_TRACER_TEST_OUT:-/tmp/ebpf-tracer-release-test}
MACHINE="ebpf-tracer-release-$$"
URL="" CA="" COLLECTOR=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --url) URL=$2; shift ;;
    --ca) CA=$(realpath "$2"); shift ;;
    --collector) COLLECTOR=$2; shift ;;
    --keep) KEEP=1 ;;
    *) echo "usage: $0 --url URL --ca CA.pem --collector HOST:PORT [--keep]" >&2; exit 2 ;;
  esac
  shift
done
[[ -n $URL && -f $CA && -n $COLLECTOR ]] || { echo "usage: $0 --url URL --ca CA.pem --collector HOST:PORT [--keep]" >&2; exit 2; }

spans_for() { curl -fsS --cacert "$CA" "$URL/_test/spans?path=$1"; }
# shellcheck disable=SC2317 # called through wait_for
has_spans() { [[ $(spans_for "$1") -ge 1 ]]; }
bin_sum() { sh_ct 'sha256sum /usr/local/bin/ebpf-tracer | cut -d" " -f1'; }
# The user's command, run as root in the container (its stdin is the script: curl | bash).
INSTALL_ARGS="--endpoint $COLLECTOR --ca-cert /etc/traceable/collector-ca.pem --service-name demo --exe python3.11"
curl_bash() { sh_ct "curl -fsSL $URL/$1 | bash -s -- $2"; }

scenario() {
  local out rc pid1 inv1 n0 n1 sum1
  # the container trusts the private CA (system store, for curl) and has it for the agent
  in_ct mkdir -p /usr/local/share/ca-certificates /etc/traceable
  in_ct cp /opt/ca.pem /usr/local/share/ca-certificates/ebpf-tracer-test-ca.crt
  in_ct update-ca-certificates >/dev/null 2>&1
  in_ct cp /opt/ca.pem /etc/traceable/collector-ca.pem
  check "container has no libelf1 package" sh_ct '! dpkg -s libelf1 >/dev/null 2>&1'
  check "container trusts the release server (curl install.sh over HTTPS)" sh_ct "curl -fsS -o /dev/null $URL/install.sh"

  # 0. a failed download changes nothing
  out=$(curl_bash install.sh "$INSTALL_ARGS --version 9.9.9" 2>&1) && rc=0 || rc=$?
  printf '%s\n' "$out" >"$OUT/install-missing-version.txt"
  check "unknown --version: exit 69, download failed" test "$rc" -eq 69 -a -n "$(grep 'download failed' <<<"$out")"
  check "unknown --version: nothing installed" sh_ct '! test -e /usr/local/bin/ebpf-tracer && ! test -e /etc/systemd/system/ebpf-tracer.service && ! test -e /etc/traceable/ebpf-tracer-config.yaml && ! test -e /var/lib/ebpf-tracer'

  # 1. curl | bash with no source flag: the stamped release for this machine's architecture
  out=$(curl_bash install.sh "$INSTALL_ARGS" 2>&1) && rc=0 || rc=$?
  printf '%s\n' "$out" >"$OUT/install-1.txt"
  check "curl | bash exits 0" test "$rc" -eq 0
  [[ $rc -eq 0 ]] || { printf '%s\n' "$out" | tail -30; fatal "install failed"; }
  check "it downloaded the x86_64 tarball and verified it" grep -q "checksum ok" <<<"$out"
  check "unit is active" test "$(in_ct systemctl is-active ebpf-tracer || true)" = active
  check "unit is enabled" test "$(in_ct systemctl is-enabled ebpf-tracer || true)" = enabled
  check "installed version is release 1" grep -q "^ebpf-tracer $RELEASE1_VERSION\$" <<<"$(in_ct /usr/local/bin/ebpf-tracer version)"
  check "config has the collector and CA from the flags" sh_ct "grep -q 'endpoint: \"$COLLECTOR\"' /etc/traceable/ebpf-tracer-config.yaml && grep -q 'ca_cert_file: \"/etc/traceable/collector-ca.pem\"' /etc/traceable/ebpf-tracer-config.yaml"
  check "the unit came from the tarball, with its drop-ins dir intact" sh_ct 'test -f /etc/systemd/system/ebpf-tracer.service'

  # 2. spans reach the receiver. Selection by exe cannot work in a container (the agent sees its
  #    pids, the kernel reports the host's), so the demo server's unit is selected instead.
  in_ct mkdir -p /srv/a
  sh_ct 'echo hello > /srv/a/index.html'
  in_ct systemd-run -q --unit=demo-a -p WorkingDirectory=/srv/a /usr/bin/python3 -m http.server 8080 --bind 127.0.0.1
  wait_for 10 sh_ct 'curl -fs http://127.0.0.1:8080/ >/dev/null' || fatal "demo server did not start"
  sh_ct 'printf "targets:\n  - systemd_unit: demo-a.service\n" >> /etc/traceable/ebpf-tracer-config.yaml'
  in_ct systemctl reload ebpf-tracer
  sleep 2
  in_ct curl -s -o /dev/null http://127.0.0.1:8080/release-span-1
  if wait_for 30 has_spans /release-span-1; then ok "span for a curl to the demo server reached the receiver"; else not_ok "span for a curl to the demo server reached the receiver ($(spans_for /release-span-1) spans)"; fi

  # 3. the same command again: nothing changes, nothing restarts (the edited config is kept; the
  #    flags' config goes to .new, as documented)
  pid1=$(prop MainPID)
  inv1=$(prop InvocationID)
  sum1=$(bin_sum)
  n0=$(starts)
  out=$(curl_bash install.sh "$INSTALL_ARGS" 2>&1) && rc=0 || rc=$?
  printf '%s\n' "$out" >"$OUT/install-2.txt"
  check "re-run exits 0" test "$rc" -eq 0
  check "re-run says nothing to do" grep -q "nothing to do" <<<"$out"
  check "re-run: same MainPID and InvocationID" test "$(prop MainPID)/$(prop InvocationID)" = "$pid1/$inv1"
  check "re-run: no start in the journal" test "$(starts)" = "$n0"
  check "re-run: same binary" test "$(bin_sum)" = "$sum1"

  # 4. release 2's install.sh with --upgrade: the newer version, exactly one restart
  out=$(curl_bash next/install.sh "--upgrade" 2>&1) && rc=0 || rc=$?
  printf '%s\n' "$out" >"$OUT/install-upgrade.txt"
  check "--upgrade exits 0" test "$rc" -eq 0
  check "--upgrade installed release 2" grep -q "^ebpf-tracer $RELEASE2_VERSION\$" <<<"$(in_ct /usr/local/bin/ebpf-tracer version)"
  n1=$(starts)
  check "--upgrade restarted exactly once (starts $n0 → $n1)" test $((n1 - n0)) -eq 1
  check "--upgrade: active, new invocation" test "$(in_ct systemctl is-active ebpf-tracer || true)/$(prop InvocationID)" != "active/$inv1" -a "$(in_ct systemctl is-active ebpf-tracer || true)" = active
  in_ct curl -s -o /dev/null http://127.0.0.1:8080/release-span-2
  if wait_for 30 has_spans /release-span-2; then ok "spans still reach the receiver after the upgrade"; else not_ok "spans still reach the receiver after the upgrade"; fi
  out=$(curl_bash next/install.sh "--upgrade" 2>&1) || true
  check "--upgrade again: no restart" test "$(starts)" = "$n1"
}

main() {
  preconditions
  RELEASE1_VERSION=$(curl -fsS --cacert "$CA" "$URL/install.sh" | sed -n 's/^RELEASE_VERSION="\(.*\)"$/\1/p')
  RELEASE2_VERSION=$(curl -fsS --cacert "$CA" "$URL/next/install.sh" | sed -n 's/^RELEASE_VERSION="\(.*\)"$/\1/p')
  [[ -n $RELEASE1_VERSION && -n $RELEASE2_VERSION && $RELEASE1_VERSION != "$RELEASE2_VERSION" ]] \
    || { echo "Bail out! $URL must serve two stamped releases (/install.sh, /next/install.sh)"; exit 1; }
  trap 'finish 1' EXIT
  trap 'printf "Bail out! line %s failed: %s\n" "$LINENO" "$BASH_COMMAND"' ERR
  build_rootfs
  boot --bind-ro="$CA:/opt/ca.pem"
  scenario
  finish 0
}

main
