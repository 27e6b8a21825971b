#!/usr/bin/env bash
# install.sh — installs, upgrades or removes ebpf-tracer as a systemd service.
#
#   sudo ./install.sh --endpoint collector.example:4318 --token T --exe nginx [--binary dist/ebpf-tracer]
#   sudo ./install.sh --upgrade --binary ./ebpf-tracer        # swap the binary, restart once
#   sudo ./install.sh --uninstall [--purge] --yes
#   curl -fsSL https://releases.example/ebpf-tracer/install.sh | sudo bash -s -- --endpoint …
#
# Piped into bash it works as from a file: it never looks next to itself then, and with no
# --binary/--download-url/--from-source it downloads the release stamped below for `uname -m`.
# All code is in functions and the last line calls main, so a truncated download runs nothing.
#
# It checks first (root, architecture, systemd, the binary's own `check` preflight) and changes
# nothing when a check fails; a failure after it started changing things is rolled back. Running it
# again with the same inputs changes nothing and restarts nothing (files are compared by SHA-256).
# An existing config is never overwritten: new defaults go to ebpf-tracer-config.yaml.new.
# Every flag has an environment variable (EBPF_TRACER_<FLAG>); flags win. `--help` lists them.
# Exit status: 0 ok, 1 failed (rolled back), 2 usage, 69 host unsupported, 77 not root, 78 bad input.
set -euo pipefail

readonly SERVICE=ebpf-tracer
# The directory install.sh was run from (a checkout or an extracted release tarball); empty when
# it was piped into bash (bash -s, bash <(curl …)): then nothing is taken from "next to it".
SCRIPT_DIR=""
if [[ -n ${BASH_SOURCE[0]:-} && -f ${BASH_SOURCE[0]} && ${BASH_SOURCE[0]} != /dev/fd/* && ${BASH_SOURCE[0]} != /proc/* ]]; then
  SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fi
readonly SCRIPT_DIR

# Stamped by scripts/release.ts in the copy it publishes (empty in a checkout): where the release
# tarballs are (<base>/ebpf-tracer-<version>-linux-<arch>.tar.gz + .sha256) and which version
# this script installs when no --version is given.
RELEASE_BASE_URL=""
RELEASE_VERSION=""
readonly RELEASE_BASE_URL RELEASE_VERSION
# The oldest glibc the binary runs on (the Bun runtime's floor; see README "What the binary needs").
readonly MIN_GLIBC=2.17

# EBPF_TRACER_INSTALL_ROOT prefixes every path this script writes; only the tests set it.
ROOT=${EBPF_TRACER_INSTALL_ROOT:-}
BIN_DST="$ROOT/usr/local/bin/ebpf-tracer"
CONF_DIR="$ROOT/etc/traceable"
CONFIG="$CONF_DIR/ebpf-tracer-config.yaml"
UNIT_DIR="$ROOT/etc/systemd/system"
UNIT="$UNIT_DIR/$SERVICE.service"
DROPIN_DIR="$UNIT_DIR/$SERVICE.service.d"
STATE_DIR="$ROOT/var/lib/ebpf-tracer"
LOG_DIR="$ROOT/var/log/ebpf-tracer"
readonly ROOT BIN_DST CONF_DIR CONFIG UNIT_DIR UNIT DROPIN_DIR STATE_DIR LOG_DIR
# The drop-ins install.sh manages (systemd/<name> → $DROPIN_DIR/<name>); others are left alone.
readonly MANAGED_DROPINS="10-cap-sys-admin.conf 20-restart-backoff.conf"

# ---- options (environment first, flags override) ------------------------------------------
ENDPOINT=${EBPF_TRACER_ENDPOINT:-}
TOKEN=${EBPF_TRACER_TOKEN:-}
CA_CERT=${EBPF_TRACER_CA_CERT:-}
SERVICE_NAME=${EBPF_TRACER_SERVICE_NAME:-}
ENVIRONMENT=${EBPF_TRACER_ENVIRONMENT:-}
BINARY=${EBPF_TRACER_BINARY:-}
VERSION=${EBPF_TRACER_VERSION:-}
DOWNLOAD_URL=${EBPF_TRACER_DOWNLOAD_URL:-}
FROM_SOURCE=${EBPF_TRACER_FROM_SOURCE:-0}
UPGRADE=${EBPF_TRACER_UPGRADE:-0}
UNINSTALL=${EBPF_TRACER_UNINSTALL:-0}
PURGE=${EBPF_TRACER_PURGE:-0}
DRY_RUN=${EBPF_TRACER_DRY_RUN:-0}
YES=${EBPF_TRACER_YES:-0}
MODE=${EBPF_TRACER_MODE:-ingress}
EXPORTER=${EBPF_TRACER_EXPORTER:-otlp}
LOG_LEVEL=${EBPF_TRACER_LOG_LEVEL:-info}
ADMIN_ADDRESS=${EBPF_TRACER_ADMIN_ADDRESS:-127.0.0.1:9464}
HEALTH_TIMEOUT=${EBPF_TRACER_HEALTH_TIMEOUT:-120}
KERNEL_RELEASE=${EBPF_TRACER_KERNEL_RELEASE:-$(uname -r)}
MACHINE=${EBPF_TRACER_MACHINE:-$(uname -m)}
EXES=()
if [[ -n ${EBPF_TRACER_EXE:-} ]]; then IFS=, read -r -a EXES <<<"$EBPF_TRACER_EXE"; fi

# ---- state of this run ---------------------------------------------------------------------
STAGE=""            # temp dir: staged binary, rendered files
SRC_BIN=""          # the binary to install (staged copy)
SYSTEMD_SRC=""      # the directory holding ebpf-tracer.service and the drop-ins to install
PRINT_CONFIG=0      # --print-config: print the config the flags produce and exit
CHECK_FAILED=0      # dry run: first failed check's status
COMMITTED=0         # set once the install is complete: no rollback
JOURNAL=()          # rollback steps, "op<TAB>path[<TAB>backup]", undone in reverse
ENABLED_BY_US=0 STARTED_BY_US=0 WAS_ACTIVE=0 SERVICE_TOUCHED=0 UNITS_TOUCHED=0
BIN_CHANGED=0 UNIT_CHANGED=0

usage() {
  cat <<'EOF'
Usage: install.sh [options]            install or update the ebpf-tracer service
       install.sh --upgrade [options]  replace the binary atomically and restart once
       install.sh --uninstall [--purge] [--yes]

Collector and identity (written into a new config; an existing config is never overwritten):
  --endpoint HOST:PORT      OTLP collector (or https://host:port)           EBPF_TRACER_ENDPOINT
  --token TOKEN             agent token (prefer the env var: argv is public) EBPF_TRACER_TOKEN
  --ca-cert FILE            CA bundle to trust for the collector            EBPF_TRACER_CA_CERT
  --service-name NAME       service.name of the spans                       EBPF_TRACER_SERVICE_NAME
  --environment NAME        deployment environment                          EBPF_TRACER_ENVIRONMENT
  --exe NAME                capture this executable (repeatable; env: comma-separated) EBPF_TRACER_EXE
  --mode MODE               ingress | egress | ingress_and_egress           EBPF_TRACER_MODE
  --exporter E              otlp | stdout | file:PATH (default otlp)        EBPF_TRACER_EXPORTER
  --log-level L             trace | debug | info | warn | error             EBPF_TRACER_LOG_LEVEL
  --admin-address A         admin endpoint (default 127.0.0.1:9464)         EBPF_TRACER_ADMIN_ADDRESS

Where the binary comes from (first that applies):
  --binary PATH             a local build                                   EBPF_TRACER_BINARY
  --download-url URL        fetch the release tarball URL ({version} → the version, {arch} →
                            x86_64 or aarch64) and URL.sha256, verify, extract  EBPF_TRACER_DOWNLOAD_URL
  --version V               the release version to fetch (default: the one this script was
                            released with)                                  EBPF_TRACER_VERSION
  --from-source             build from the checkout install.sh is in (needs bun) EBPF_TRACER_FROM_SOURCE=1
  (none)                    ebpf-tracer or dist/ebpf-tracer next to install.sh; else, in a released
                            install.sh, the release it names from its base URL; else the installed binary
  --print-config            print the config these options produce, change nothing

Actions:
  --upgrade                 replace an installed binary (atomic rename), restart once  EBPF_TRACER_UPGRADE=1
  --uninstall               stop, disable, remove unit and binary (config, state and logs kept) EBPF_TRACER_UNINSTALL=1
  --purge                   with --uninstall: also config, state and logs   EBPF_TRACER_PURGE=1
  --dry-run                 print every action, change nothing              EBPF_TRACER_DRY_RUN=1
  --yes                     do not ask for confirmation                     EBPF_TRACER_YES=1
  -h, --help                this text
EOF
}

# ---- output ---------------------------------------------------------------------------------
say() { printf '%s\n' "$*"; }
note() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  local status=$1
  shift
  printf 'install.sh: error: %s\n' "$*" >&2
  exit "$status"
}
is_true() { [[ $1 == 1 || $1 == true || $1 == yes ]]; }
dry() { is_true "$DRY_RUN"; }

# Runs a command, or in a dry run prints it. Every change to the system goes through run().
run() {
  if dry; then
    printf 'would run:'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# A failed check: stop here (real run), or record it and go on (dry run).
check_fail() {
  local status=$1
  shift
  if dry; then
    printf 'CHECK FAILED (exit %s): %s\n' "$status" "$*"
    if ((CHECK_FAILED == 0)); then CHECK_FAILED=$status; fi
  else
    die "$status" "$*"
  fi
}

sha256() { sha256sum "$1" | cut -d' ' -f1; }
same_file() { [[ -f $1 && -f $2 ]] && [[ $(sha256 "$1") == "$(sha256 "$2")" ]]; }

# ---- arguments ------------------------------------------------------------------------------
need_arg() { [[ $# -ge 2 && -n $2 ]] || die 2 "$1 needs a value (see --help)"; }

parse_args() {
  while [[ $# -gt 0 ]]; do
    case $1 in
      --endpoint) need_arg "$@"; ENDPOINT=$2; shift ;;
      --token) need_arg "$@"; TOKEN=$2; shift ;;
      --ca-cert) need_arg "$@"; CA_CERT=$2; shift ;;
      --service-name) need_arg "$@"; SERVICE_NAME=$2; shift ;;
      --environment) need_arg "$@"; ENVIRONMENT=$2; shift ;;
      --exe) need_arg "$@"; EXES+=("$2"); shift ;;
      --mode) need_arg "$@"; MODE=$2; shift ;;
      --exporter) need_arg "$@"; EXPORTER=$2; shift ;;
      --log-level) need_arg "$@"; LOG_LEVEL=$2; shift ;;
      --admin-address) need_arg "$@"; ADMIN_ADDRESS=$2; shift ;;
      --binary) need_arg "$@"; BINARY=$2; shift ;;
      --version) need_arg "$@"; VERSION=$2; shift ;;
      --print-config) PRINT_CONFIG=1 ;;
      --download-url) need_arg "$@"; DOWNLOAD_URL=$2; shift ;;
      --from-source) FROM_SOURCE=1 ;;
      --upgrade) UPGRADE=1 ;;
      --uninstall) UNINSTALL=1 ;;
      --purge) PURGE=1 ;;
      --dry-run) DRY_RUN=1 ;;
      --yes | -y) YES=1 ;;
      -h | --help) usage; exit 0 ;;
      --*=*) parse_args "${1%%=*}" "${1#*=}" ;;
      *) die 2 "unknown argument: $1 (see --help)" ;;
    esac
    shift
  done
}

validate_args() {
  local sources=0
  [[ -n $BINARY ]] && sources=$((sources + 1))
  [[ -n $VERSION || -n $DOWNLOAD_URL ]] && sources=$((sources + 1))
  is_true "$FROM_SOURCE" && sources=$((sources + 1))
  ((sources <= 1)) || die 2 "give only one of --binary, --version/--download-url, --from-source"
  if [[ -n $VERSION && -z $DOWNLOAD_URL && -n $RELEASE_BASE_URL ]]; then
    DOWNLOAD_URL="$RELEASE_BASE_URL/ebpf-tracer-{version}-linux-{arch}.tar.gz"
  fi
  if [[ -n $VERSION || -n $DOWNLOAD_URL ]]; then
    [[ -n $DOWNLOAD_URL ]] || die 2 "--version needs --download-url (the release tarball URL, {version} is replaced)"
    [[ -n $VERSION || -z $RELEASE_VERSION ]] || VERSION=$RELEASE_VERSION
    [[ -n $VERSION || $DOWNLOAD_URL != *"{version}"* ]] || die 2 "--download-url contains {version}: give --version"
  fi
  if is_true "$PURGE" && ! is_true "$UNINSTALL"; then die 2 "--purge goes with --uninstall"; fi
  if is_true "$UNINSTALL" && is_true "$UPGRADE"; then die 2 "--uninstall and --upgrade exclude each other"; fi
  case $MODE in ingress | egress | ingress_and_egress) ;; *) die 78 "--mode must be ingress, egress or ingress_and_egress, got '$MODE'" ;; esac
  case $LOG_LEVEL in trace | debug | info | warn | error) ;; *) die 78 "--log-level must be trace, debug, info, warn or error, got '$LOG_LEVEL'" ;; esac
  case $EXPORTER in otlp | stdout | file:/?*) ;; *) die 78 "--exporter must be otlp, stdout or file:/ABSOLUTE/PATH, got '$EXPORTER'" ;; esac
  if [[ -n $ENDPOINT && ! $ENDPOINT =~ ^(https?://)?[A-Za-z0-9._-]+(:[0-9]{1,5})(/.*)?$ && ! $ENDPOINT =~ ^(https?://)?\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})(/.*)?$ ]]; then
    die 78 "--endpoint must be HOST:PORT or https://HOST:PORT, got '$ENDPOINT'"
  fi
  [[ $ADMIN_ADDRESS =~ ^(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9._-]*):[0-9]{1,5}$ ]] || die 78 "--admin-address must be HOST:PORT, got '$ADMIN_ADDRESS'"
  [[ $HEALTH_TIMEOUT =~ ^[0-9]+$ ]] || die 2 "EBPF_TRACER_HEALTH_TIMEOUT must be a number of seconds"
  if [[ -n $CA_CERT ]]; then
    [[ $CA_CERT == /* ]] || CA_CERT="$PWD/$CA_CERT"
    [[ -r $CA_CERT ]] || die 78 "--ca-cert $CA_CERT: no such readable file"
    grep -q 'BEGIN CERTIFICATE' "$CA_CERT" || die 78 "--ca-cert $CA_CERT: not a PEM certificate bundle"
    # (Under a test root the path is not the service's view; the tests set EBPF_TRACER_INSTALL_ROOT.)
    [[ -n $ROOT ]] || case $CA_CERT in
      /home/* | /root/* | /run/user/* | /tmp/* | /var/tmp/*)
        die 78 "--ca-cert $CA_CERT: the service cannot see /home, /root, /run/user or /tmp (ProtectHome, PrivateTmp); put it under /etc, e.g. /etc/traceable/" ;;
    esac
  fi
  local v
  for v in "$ENDPOINT" "$TOKEN" "$CA_CERT" "$SERVICE_NAME" "$ENVIRONMENT" "${EXES[@]}"; do
    [[ $v != *[[:cntrl:]]* ]] || die 78 "values may not contain control characters or newlines"
  done
}

# ---- checks ---------------------------------------------------------------------------------
check_root() {
  [[ $(id -u) -eq 0 ]] || check_fail 77 "must run as root (try: sudo $0 ...)"
}

# uname -m → the architecture in release file names, or nothing when there is no build for it
release_arch() {
  case $MACHINE in
    x86_64 | amd64) echo x86_64 ;;
    aarch64 | arm64) echo aarch64 ;;
  esac
}

check_arch() {
  [[ -n $(release_arch) ]] || check_fail 69 "unsupported architecture $MACHINE: ebpf-tracer is built for x86_64 and aarch64"
}

# The binary needs glibc (MIN_GLIBC or newer); on musl or an older glibc it cannot even start.
check_glibc() {
  local v
  v=${EBPF_TRACER_GLIBC_VERSION:-$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')}
  if [[ -z $v ]]; then
    check_fail 69 "no glibc here (getconf GNU_LIBC_VERSION failed; musl?): ebpf-tracer needs glibc $MIN_GLIBC or newer"
  elif [[ $(printf '%s\n%s\n' "$MIN_GLIBC" "$v" | sort -V | head -1) != "$MIN_GLIBC" ]]; then
    check_fail 69 "glibc $v is too old: ebpf-tracer needs glibc $MIN_GLIBC or newer"
  fi
}

check_systemd() {
  if ! command -v systemctl >/dev/null 2>&1 || [[ ! -d $ROOT/run/systemd/system ]]; then
    check_fail 69 "systemd is not the init system here (no /run/systemd/system): install.sh sets up a systemd service; without systemd run the agent directly: ebpf-tracer run -c /etc/traceable/ebpf-tracer-config.yaml"
  fi
}

# "5.4.0-150-generic" → 0 when older than 5.8 (no CAP_BPF/CAP_PERFMON), 1 otherwise.
kernel_has_cap_bpf() {
  local major minor
  major=${KERNEL_RELEASE%%.*}
  minor=${KERNEL_RELEASE#*.}
  minor=${minor%%[!0-9]*}
  [[ $major =~ ^[0-9]+$ && $minor =~ ^[0-9]+$ ]] || return 0
  ((major > 5 || (major == 5 && minor >= 8)))
}

systemd_version() {
  local v
  v=$(systemctl --version 2>/dev/null | awk 'NR==1 {print $2}')
  v=${v%%[!0-9]*}
  printf '%s\n' "${v:-0}"
}

# The binary's own preflight (kernel, BTF, capabilities). A binary without a `check` command
# (exit 2 / "unknown command") gets `version` instead, with a warning.
preflight() {
  local bin=$1 cfg=$2 out status=0
  if [[ ! -x $bin ]]; then
    note "preflight: skipped (no binary staged in a dry run)"
    return 0
  fi
  out=$("$bin" check -c "$cfg" 2>&1) || status=$?
  if ((status == 0)); then
    note "preflight: ok"
    [[ -z $out ]] || printf '%s\n' "$out" | sed 's/^/    /'
    return 0
  fi
  if ((status == 2)) || grep -qi "unknown command" <<<"$out"; then
    warn "this ebpf-tracer has no 'check' command: kernel/BTF/capability checks skipped"
    out=$("$bin" version 2>&1) || check_fail 69 "the binary does not run here: $bin version: $out"
    note "binary runs: $out"
    return 0
  fi
  printf '%s\n' "$out" | sed 's/^/    /' >&2
  case $status in
    69 | 77 | 78) check_fail "$status" "preflight failed ('ebpf-tracer check' exited $status, output above): nothing was installed" ;;
    *) check_fail 69 "preflight failed ('ebpf-tracer check' exited $status, output above): nothing was installed" ;;
  esac
}

confirm() {
  local question=$1 answer
  is_true "$YES" && return 0
  dry && return 0
  [[ -t 0 ]] || die 2 "$question — not asked without a terminal: pass --yes"
  read -r -p "$question [y/N] " answer
  [[ $answer == [yY] || $answer == [yY][eE][sS] ]] || die 1 "cancelled"
}

# ---- staging the binary ---------------------------------------------------------------------
fetch() {
  local url=$1 out=$2
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 2 -o "$out" "$url"
  elif command -v wget >/dev/null 2>&1; then
    wget -q -O "$out" "$url"
  else
    die 69 "neither curl nor wget is installed: cannot download $url"
  fi
}

stage_download() {
  local url=${DOWNLOAD_URL//\{version\}/$VERSION} want got found
  url=${url//\{arch\}/$(release_arch)}
  if dry; then
    say "would download: $url and $url.sha256, verify SHA-256, extract ebpf-tracer"
    return 0
  fi
  note "downloading $url"
  fetch "$url" "$STAGE/release.tar.gz" || die 69 "download failed: $url"
  fetch "$url.sha256" "$STAGE/release.sha256" || die 69 "download failed: $url.sha256"
  want=$(awk 'NR==1 {print tolower($1)}' "$STAGE/release.sha256")
  [[ $want =~ ^[0-9a-f]{64}$ ]] || die 69 "$url.sha256 does not hold a SHA-256 hash"
  got=$(sha256 "$STAGE/release.tar.gz")
  [[ $got == "$want" ]] || die 69 "checksum mismatch for $url: expected $want, got $got (nothing installed)"
  note "checksum ok ($got)"
  mkdir "$STAGE/release"
  tar -xzf "$STAGE/release.tar.gz" -C "$STAGE/release" --no-same-owner || die 69 "cannot extract $url"
  found=$(find "$STAGE/release" -type f -name ebpf-tracer | head -1)
  [[ -n $found ]] || die 69 "$url has no file named ebpf-tracer"
  mv "$found" "$STAGE/ebpf-tracer"
  # The release's unit and drop-ins belong with its binary.
  found=$(find "$STAGE/release" -type f -path "*/systemd/$SERVICE.service" | head -1)
  [[ -z $found ]] || SYSTEMD_SRC=$(dirname "$found")
}

stage_from_source() {
  [[ -n $SCRIPT_DIR && -f $SCRIPT_DIR/package.json ]] || die 2 "--from-source needs install.sh in a checkout (run ./install.sh from it)"
  if dry; then
    say "would run: (cd $SCRIPT_DIR && bun install --frozen-lockfile && bun run build)"
    return 0
  fi
  command -v bun >/dev/null 2>&1 || die 69 "--from-source needs bun (see scripts/install-deps.sh)"
  note "building from $SCRIPT_DIR"
  (cd "$SCRIPT_DIR" && bun install --frozen-lockfile && bun run build) || die 1 "build failed"
  cp "$SCRIPT_DIR/dist/ebpf-tracer" "$STAGE/ebpf-tracer"
}

stage_binary() {
  if [[ -n $BINARY ]]; then
    [[ -f $BINARY ]] || die 78 "--binary $BINARY: no such file"
    cp "$BINARY" "$STAGE/ebpf-tracer"
  elif [[ -n $DOWNLOAD_URL ]]; then
    stage_download
  elif is_true "$FROM_SOURCE"; then
    stage_from_source
  elif [[ -n $(local_binary) ]]; then
    note "using $(local_binary) (pass --binary, --version or --from-source to choose)"
    cp "$(local_binary)" "$STAGE/ebpf-tracer"
  elif [[ -n $RELEASE_BASE_URL ]]; then
    DOWNLOAD_URL="$RELEASE_BASE_URL/ebpf-tracer-{version}-linux-{arch}.tar.gz"
    VERSION=${VERSION:-$RELEASE_VERSION}
    stage_download
  elif [[ -f $BIN_DST ]] && ! is_true "$UPGRADE"; then
    note "keeping the installed binary $BIN_DST"
    cp "$BIN_DST" "$STAGE/ebpf-tracer"
  else
    die 2 "no binary: pass --binary PATH, --version V --download-url URL, or --from-source (or use a released install.sh)"
  fi
  if [[ -f $STAGE/ebpf-tracer ]]; then
    chmod 0755 "$STAGE/ebpf-tracer"
    SRC_BIN="$STAGE/ebpf-tracer"
  fi
}

# ---- rendering ------------------------------------------------------------------------------
# A YAML double-quoted scalar.
yq() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}

yaml_list() {
  local out="" item
  for item in "$@"; do out+="${out:+, }$(yq "$item")"; done
  printf '[%s]' "$out"
}

render_config() {
  local secure=true
  [[ $ENDPOINT != http://* ]] || secure=false
  cat <<EOF
# ebpf-tracer configuration, written by install.sh. Every key: docs/operations.md and
# src/config-schema.ts. Check an edit with: ebpf-tracer config validate -c $CONFIG
# Apply it with: systemctl reload ebpf-tracer (SIGHUP). This file is mode 0600 (it holds the token).

# service.name for spans of processes that no target below names.
service_name: $(yq "$SERVICE_NAME")
# Deployment environment attached to every span.
environment: $(yq "$ENVIRONMENT")
# Which side of connections to capture: ingress | egress | ingress_and_egress.
mode: $MODE
# Where spans go: otlp (the collector in agent_config) | stdout | file:PATH.
exporter: $(yq "$EXPORTER")

# Which processes to capture.
capture:
  # Executables by file name or full path, including processes started later.
  exe: $(yaml_list "${EXES[@]}")
  # Process ids (and their children).
  pids: []
  # Processes listening on these TCP ports.
  ports: []
# Per-target selection, each with its own service_name/mode (exe, cmdline, systemd_unit, cgroup,
# container, port or pid), for example:
# targets:
#   - exe: nginx
#     service_name: frontend
#     mode: ingress

# Where and how spans are sent (exporter: otlp).
agent_config:
  # true: TLS to the collector (an http:// endpoint is refused); false allows plain http.
  secure: $secure
  # PEM bundle of CAs to trust for the collector; empty: the host's trust store.
  ca_cert_file: $(yq "$CA_CERT")
  # The collector connection.
  reporting:
    # The OTLP/HTTP collector: host:port (https) or https://host:port.
    endpoint: $(yq "$ENDPOINT")
    # Sent as the traceableai-agent-token header.
    agent_token: $(yq "$TOKEN")

# Where the agent keeps spans it could not send yet.
spool:
  # Directory of the on-disk spool (under the service's state directory).
  path: /var/lib/ebpf-tracer/spool
  # Bound of the spool; the oldest spans are dropped past it.
  max_size_mb: 256

# The agent's own log lines.
logging:
  # trace | debug | info | warn | error
  level: $LOG_LEVEL
  # json | console
  encoding: json
  # stdout, stderr (both go to the journal) or file paths.
  output_paths: ["stderr"]
  # Error lines also go here.
  error_output_paths: ["stderr"]
  # Size-rotated log file, in addition to output_paths.
  log_rotation:
    # Write filepath/filename and rotate it.
    enabled: false
    # Name of the current file; rotated ones get .1 ... .max_backups.
    filename: tracer.log
    # Directory (the service may write only here and under /var/lib/ebpf-tracer).
    filepath: /var/log/ebpf-tracer
    # Rotate when the file would exceed this many MB.
    max_size: 100
    # Rotated files to keep.
    max_backups: 5

# The agent logs its counters this often (0 = never).
stats_interval: 60s

# Local admin endpoint: /healthz, /metrics (Prometheus), /status (what ebpf-tracer status reads).
admin:
  # false: no endpoint (and ebpf-tracer status cannot ask the agent).
  enabled: true
  # Listen address; keep it on loopback.
  address: $(yq "$ADMIN_ADDRESS")
EOF
}

# A binary next to install.sh: an extracted release tarball (ebpf-tracer) or a checkout (dist/).
local_binary() {
  [[ -n $SCRIPT_DIR ]] || return 0
  local f
  for f in "$SCRIPT_DIR/ebpf-tracer" "$SCRIPT_DIR/dist/ebpf-tracer"; do
    if [[ -f $f ]]; then printf '%s\n' "$f"; return 0; fi
  done
}

# The unit and drop-ins: a downloaded release's own (set by stage_download), else those next to
# install.sh.
resolve_systemd_src() {
  if [[ -z $SYSTEMD_SRC && -n $SCRIPT_DIR && -f $SCRIPT_DIR/systemd/$SERVICE.service ]]; then
    SYSTEMD_SRC="$SCRIPT_DIR/systemd"
  fi
}

unit_source() {
  if [[ -n $SYSTEMD_SRC && -f $SYSTEMD_SRC/$SERVICE.service ]]; then
    printf '%s\n' "$SYSTEMD_SRC/$SERVICE.service"
  fi
}

wanted_dropins() {
  kernel_has_cap_bpf || printf '%s\n' 10-cap-sys-admin.conf
  (($(systemd_version) >= 254)) && printf '%s\n' 20-restart-backoff.conf
  return 0
}

# ---- changing things (with rollback) ------------------------------------------------------
journal() { JOURNAL+=("$(printf '%s\t' "$@")"); }

# install_file SRC DST MODE — atomic (temp file + rename in DST's directory). Sets CHANGED=1
# when DST was created or replaced; an identical DST is left alone.
CHANGED=0
install_file() {
  local src=$1 dst=$2 mode=$3 tmp backup
  CHANGED=0
  if same_file "$src" "$dst"; then
    say "unchanged: $dst"
    return 0
  fi
  CHANGED=1
  if dry; then
    say "would write: $dst (mode $mode, $(stat -c %s "$src") bytes$([[ -e $dst ]] && printf ', replacing the current one'))"
    return 0
  fi
  if [[ -e $dst ]]; then
    backup="$dst.install-backup.$$"
    cp -p "$dst" "$backup"
    journal restore "$dst" "$backup"
  else
    journal rm "$dst"
  fi
  tmp="$(dirname "$dst")/.$(basename "$dst").new.$$"
  install -m "$mode" "$src" "$tmp"
  mv -f "$tmp" "$dst"
  say "wrote: $dst"
}

make_dir() {
  local dir=$1 mode=$2
  [[ -d $dir ]] && return 0
  if dry; then
    say "would create: $dir (mode $mode)"
    return 0
  fi
  local parent=$dir
  while [[ ! -d $(dirname "$parent") ]]; do parent=$(dirname "$parent"); done
  mkdir -p "$dir"
  chmod "$mode" "$dir"
  journal rmdir "$parent"
  say "created: $dir"
}

remove_file() {
  local f=$1
  [[ -e $f || -L $f ]] || return 0
  if dry; then
    say "would remove: $f"
    return 0
  fi
  local backup="$f.install-backup.$$"
  mv -f "$f" "$backup"
  journal restore "$f" "$backup"
  say "removed: $f"
}

# The unit did not start: show why before rolling back.
start_failed() {
  say "--- journalctl -u $SERVICE (last lines) ---" >&2
  journalctl -u "$SERVICE" -n 25 --no-pager -o cat >&2 2>/dev/null || true
  die 1 "$SERVICE did not $1 (the journal lines above say why)"
}

service_state() { systemctl show -p ActiveState --value "$SERVICE" 2>/dev/null || true; }
service_enabled() { systemctl is-enabled --quiet "$SERVICE" 2>/dev/null; }

rollback() {
  local i entry op path backup
  say "rolling back ..."
  if ((STARTED_BY_US)); then systemctl stop "$SERVICE" >/dev/null 2>&1 || true; fi
  if ((ENABLED_BY_US)); then systemctl disable "$SERVICE" >/dev/null 2>&1 || true; fi
  for ((i = ${#JOURNAL[@]} - 1; i >= 0; i--)); do
    IFS=$'\t' read -r op path backup <<<"${JOURNAL[i]}"
    case $op in
      rm) rm -f "$path" ;;
      rmdir) rm -rf "$path" ;;
      restore) mv -f "$backup" "$path" ;;
    esac
    say "  undone: $op $path"
  done
  if ((UNITS_TOUCHED)); then systemctl daemon-reload || true; fi
  if ((WAS_ACTIVE && SERVICE_TOUCHED)); then
    systemctl restart "$SERVICE" || warn "the previous version did not restart: systemctl status $SERVICE"
  fi
}

on_exit() {
  local status=$?
  if ((status != 0 && COMMITTED == 0)) && ! dry && ((${#JOURNAL[@]} > 0 || STARTED_BY_US || ENABLED_BY_US)); then
    rollback || true
    say "install.sh: failed (exit $status); the previous state was restored"
  fi
  if ((COMMITTED)); then
    local entry op path backup
    for entry in "${JOURNAL[@]}"; do
      IFS=$'\t' read -r op path backup <<<"$entry"
      if [[ $op == restore && -n $backup ]]; then rm -f "$backup"; fi
    done
  fi
  [[ -z $STAGE ]] || rm -rf "$STAGE"
  exit "$status"
}

# ---- health ---------------------------------------------------------------------------------
print_status_line() {
  local line
  line=$(systemctl show -p ActiveState -p SubState -p MainPID -p StatusText "$SERVICE" 2>/dev/null | sort | tr '\n' ' ')
  say "status: $line"
}

# Waits until systemd says active and the agent says healthy (admin endpoint), at most
# HEALTH_TIMEOUT seconds.
wait_healthy() {
  local deadline=$((SECONDS + HEALTH_TIMEOUT)) state out status
  if dry; then
    say "would wait up to ${HEALTH_TIMEOUT}s for: systemctl is-active $SERVICE, then $BIN_DST status"
    return 0
  fi
  while :; do
    state=$(service_state)
    case $state in
      active) break ;;
      failed | inactive)
        systemctl status --no-pager -n 20 "$SERVICE" >&2 || true
        die 1 "$SERVICE is $state after start (journal above)" ;;
    esac
    ((SECONDS < deadline)) || die 1 "$SERVICE still '$state' after ${HEALTH_TIMEOUT}s"
    sleep 1
  done
  while :; do
    status=0
    out=$("$BIN_DST" status -c "$CONFIG" 2>&1) || status=$?
    case $status in
      0)
        printf '%s\n' "$out" | sed 's/^/    /'
        break ;;
      2)
        # no `status` command in this binary: systemd's "active" (READY=1 sent) is the signal
        break ;;
      3)
        if grep -q "disabled" <<<"$out"; then break; fi ;;
    esac
    if ((SECONDS >= deadline)); then
      printf '%s\n' "$out" | sed 's/^/    /' >&2
      die 1 "$SERVICE is running but not healthy after ${HEALTH_TIMEOUT}s (ebpf-tracer status exited $status)"
    fi
    sleep 1
  done
  [[ $(service_state) == active ]] || die 1 "$SERVICE stopped while waiting for it to become healthy"
  print_status_line
}

# ---- install / upgrade ----------------------------------------------------------------------
do_install() {
  local installed=0 cfg_for_check new_config unit_src name
  [[ -f $BIN_DST ]] && installed=1
  if is_true "$UPGRADE" && ((installed == 0)); then die 2 "--upgrade: ebpf-tracer is not installed ($BIN_DST missing); run without --upgrade"; fi

  check_root
  check_arch
  check_glibc
  check_systemd

  STAGE=$(mktemp -d /tmp/ebpf-tracer-install.XXXXXX)
  stage_binary
  resolve_systemd_src
  unit_src=$(unit_source)
  [[ -n $unit_src ]] || die 2 "systemd/$SERVICE.service not found (next to install.sh, or in the release tarball)"

  new_config="$STAGE/ebpf-tracer-config.yaml"
  render_config >"$new_config"
  if [[ ! -f $CONFIG && $EXPORTER == otlp && -z $ENDPOINT ]]; then
    check_fail 78 "--endpoint is required for the otlp exporter (or choose --exporter stdout|file:PATH)"
  fi
  cfg_for_check=$new_config
  [[ -f $CONFIG ]] && cfg_for_check=$CONFIG
  preflight "$SRC_BIN" "$cfg_for_check"

  if ((installed)) && [[ -n $SRC_BIN ]] && ! same_file "$SRC_BIN" "$BIN_DST" && ! is_true "$UPGRADE"; then
    die 2 "a different ebpf-tracer is installed at $BIN_DST: pass --upgrade to replace it"
  fi
  if dry && ((CHECK_FAILED)); then
    say "dry run: a real run would stop at the failed check above (exit $CHECK_FAILED); the actions it would then take:"
  fi

  if ! dry; then
    WAS_ACTIVE=0
    [[ $(service_state) == active ]] && WAS_ACTIVE=1
  fi

  # 1. directories
  make_dir "$(dirname "$BIN_DST")" 0755
  make_dir "$CONF_DIR" 0755
  make_dir "$STATE_DIR" 0750
  make_dir "$LOG_DIR" 0750
  make_dir "$UNIT_DIR" 0755

  # 2. binary (atomic rename over the old one)
  if [[ -n $SRC_BIN ]]; then
    install_file "$SRC_BIN" "$BIN_DST" 0755
    BIN_CHANGED=$CHANGED
  elif dry; then
    say "would write: $BIN_DST (mode 0755, the binary fetched or built above)"
    BIN_CHANGED=1
  fi

  # 3. config: never overwritten
  if [[ ! -f $CONFIG ]]; then
    install_file "$new_config" "$CONFIG" 0600
  elif same_file "$new_config" "$CONFIG"; then
    say "unchanged: $CONFIG"
  else
    if same_file "$new_config" "$CONFIG.new"; then
      say "unchanged: $CONFIG.new"
    elif dry; then
      say "would write: $CONFIG.new (mode 0600; $CONFIG exists and is kept)"
    else
      install -m 0600 "$new_config" "$CONFIG.new"
    fi
    note "NOTICE: $CONFIG exists and was kept; the config these options produce is in $CONFIG.new (compare: diff $CONFIG $CONFIG.new)"
  fi

  # 4. unit and drop-ins
  install_file "$unit_src" "$UNIT" 0644
  UNIT_CHANGED=$CHANGED
  local wanted
  wanted=$(wanted_dropins)
  for name in $MANAGED_DROPINS; do
    if grep -qx "$name" <<<"$wanted"; then
      make_dir "$DROPIN_DIR" 0755
      install_file "$SYSTEMD_SRC/$name" "$DROPIN_DIR/$name" 0644
      ((CHANGED)) && UNIT_CHANGED=1
    elif [[ -e $DROPIN_DIR/$name ]]; then
      remove_file "$DROPIN_DIR/$name"
      UNIT_CHANGED=1
    fi
  done
  if grep -qx 10-cap-sys-admin.conf <<<"$wanted"; then
    note "kernel $KERNEL_RELEASE is older than 5.8 (no CAP_BPF/CAP_PERFMON): the service gets CAP_SYS_ADMIN ($DROPIN_DIR/10-cap-sys-admin.conf)"
  fi

  # 5. systemd
  if ((UNIT_CHANGED)); then
    UNITS_TOUCHED=1
    run systemctl daemon-reload
  fi
  if dry; then
    say "would run (unless already so): systemctl enable --now $SERVICE; restart once if the binary or unit changed"
  else
    local enabled=0 active=0
    service_enabled && enabled=1
    [[ $(service_state) == active ]] && active=1
    if ((!enabled && !active)); then
      ENABLED_BY_US=1 STARTED_BY_US=1 SERVICE_TOUCHED=1
      note "systemctl enable --now $SERVICE"
      systemctl enable --now "$SERVICE" || start_failed start
    else
      if ((!enabled)); then
        ENABLED_BY_US=1
        run systemctl enable "$SERVICE"
      fi
      if ((!active)); then
        STARTED_BY_US=1 SERVICE_TOUCHED=1
        note "systemctl start $SERVICE"
        systemctl start "$SERVICE" || start_failed start
      elif ((BIN_CHANGED || UNIT_CHANGED)); then
        SERVICE_TOUCHED=1
        note "systemctl restart $SERVICE (binary or unit changed)"
        systemctl restart "$SERVICE" || start_failed restart
      else
        say "unchanged: $SERVICE is enabled and active (not restarted)"
      fi
    fi
  fi

  wait_healthy
  if dry; then
    if ((CHECK_FAILED)); then exit "$CHECK_FAILED"; fi
    say "dry run: nothing was changed"
    return 0
  fi
  COMMITTED=1
  if ((BIN_CHANGED || UNIT_CHANGED || STARTED_BY_US)); then
    note "ebpf-tracer $("$BIN_DST" version 2>/dev/null | awk '{print $NF}') is installed and running"
  else
    note "nothing to do: already installed with these inputs"
  fi
}

# ---- uninstall ------------------------------------------------------------------------------
do_uninstall() {
  local f name any=0
  check_root
  for f in "$UNIT" "$BIN_DST" "$DROPIN_DIR"; do [[ -e $f ]] && any=1; done
  if is_true "$PURGE"; then
    for f in "$CONFIG" "$STATE_DIR" "$LOG_DIR"; do [[ -e $f ]] && any=1; done
  fi
  if ((any == 0)); then
    note "ebpf-tracer is not installed: nothing to remove"
    return 0
  fi
  if is_true "$PURGE"; then
    confirm "Remove ebpf-tracer with its config ($CONFIG), state ($STATE_DIR) and logs ($LOG_DIR)?"
  else
    confirm "Remove the ebpf-tracer service and binary (config, state and logs are kept)?"
  fi
  if command -v systemctl >/dev/null 2>&1 && [[ -d $ROOT/run/systemd/system ]]; then
    if [[ -e $UNIT ]]; then run systemctl disable --now "$SERVICE" || true; fi
  fi
  run rm -f "$UNIT"
  for name in $MANAGED_DROPINS; do run rm -f "$DROPIN_DIR/$name"; done
  if [[ -d $DROPIN_DIR ]]; then run rmdir --ignore-fail-on-non-empty "$DROPIN_DIR"; fi
  for f in "$UNIT_DIR/$SERVICE".*.timer "$UNIT_DIR/$SERVICE".timer "$UNIT_DIR"/timers.target.wants/"$SERVICE"*.timer; do
    if [[ -e $f || -L $f ]]; then run rm -f "$f"; fi
  done
  if command -v systemctl >/dev/null 2>&1 && [[ -d $ROOT/run/systemd/system ]]; then
    run systemctl daemon-reload
    run systemctl reset-failed "$SERVICE" 2>/dev/null || true
  fi
  run rm -f "$BIN_DST"
  if is_true "$PURGE"; then
    run rm -f "$CONFIG" "$CONFIG.new"
    if [[ -d $CONF_DIR ]]; then run rmdir --ignore-fail-on-non-empty "$CONF_DIR"; fi
    run rm -rf "$STATE_DIR" "$LOG_DIR"
    note "ebpf-tracer removed, with its config, state and logs"
  else
    note "ebpf-tracer removed; kept: $CONFIG, $STATE_DIR, $LOG_DIR (--uninstall --purge removes them)"
  fi
  if dry; then say "dry run: nothing was changed"; fi
}

main() {
  # Piped into bash, stdin is the rest of this script: nothing may read it.
  [[ -t 0 ]] || exec </dev/null
  parse_args "$@"
  validate_args
  if is_true "$PRINT_CONFIG"; then
    render_config
    return 0
  fi
  trap on_exit EXIT
  if is_true "$UNINSTALL"; then
    do_uninstall
  else
    do_install
  fi
}

main "$@"
