/**
 * Offsets the Go crypto/tls uprobes need, by Go version, and their encoding for a per-binary BPF map
 * value (`struct go_tls_offsets` in bpf/lib/tls.h; layout documented in docs/tls.md).
 *
 * From a *tls.Conn to the socket fd (amd64 and arm64 lay these out alike, 8-byte words):
 *   tls.Conn.conn     net.Conn interface {itab, data}; the data word points to *net.TCPConn
 *   net.TCPConn.conn  embedded net.conn
 *   net.conn.fd       *net.netFD
 *   netFD.pfd         poll.FD (embedded by value)
 *   poll.FD.Sysfd     int, after fdmu (fdMutex: uint64 + 2 × uint32 = 16 bytes)
 * These have not moved from Go 1.17 to 1.26. The goroutine id lives in runtime.g, which did change:
 *   1.17–1.22  goid at 152
 *   1.23–1.24  160 (g.syscallbp added)
 *   1.25–1.26  152 (gobuf.ret removed, which takes the 8 bytes back)
 * Go 1.19 is measured by test/kernel/tls-go.test.ts (a program that reads its own g and reflects the
 * net/tls types, built with Debian's golang-1.19-go); the other rows come from the runtime's source
 * layout and are marked `measured: false` so the coverage report can say so.
 *
 * Register ABI (Go ≥ 1.17, ABIInternal): the current g is in r14 (amd64) / x28 (arm64). Arguments of
 * (*Conn).Read/Write(c *Conn, b []byte) (n int, err error): amd64 c=rax, b.ptr=rbx, b.len=rcx;
 * arm64 c=x0, b.ptr=x1, b.len=x2. At each RET: n=rax/x0, err.itab=rbx/x1 (0 when err == nil).
 */

import { structMemberOffsets } from "./dwarf.ts";
import type { ElfFile } from "./elf.ts";

export interface GoTlsOffsets {
  /** the Go release these apply to, e.g. "go1.19" */
  release: string;
  /** "dwarf": read from this binary's own debug info; "table": from the version table below */
  source: "dwarf" | "table";
  /** table rows: verified on this release by the test suite (true) or taken from the runtime's source (false) */
  measured: boolean;
  tlsConnConn: number;
  /** offset of the data word inside an interface value */
  ifaceData: number;
  tcpConnConn: number;
  connFd: number;
  netFDPfd: number;
  pollFDSysfd: number;
  gGoid: number;
}

const NET = { tlsConnConn: 0, ifaceData: 8, tcpConnConn: 0, connFd: 0, netFDPfd: 0, pollFDSysfd: 16 };
const MEASURED = new Set(["go1.19"]);

/** Parses "go1.19.8", "go1.21rc2", "go1.22.0 X:boringcrypto" → [1, 19]; undefined when not a release. */
export function goRelease(version: string): [number, number] | undefined {
  const m = /^go(\d+)\.(\d+)/.exec(version);
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

export const GO_MIN_MINOR = 17;
export const GO_MAX_KNOWN_MINOR = 26;

/**
 * Offsets for a Go version string, or a reason when the agent cannot know them (too old for the
 * register ABI, or newer than the table: never guessed).
 */
export function goTlsOffsets(version: string): { offsets: GoTlsOffsets } | { reason: string } {
  const r = goRelease(version);
  if (!r) return { reason: `unreadable Go version "${version}"` };
  const [major, minor] = r;
  if (major !== 1 || minor < GO_MIN_MINOR) return { reason: `Go ${version} predates the register ABI (Go ≥ 1.17 is decrypted)` };
  if (minor > GO_MAX_KNOWN_MINOR) return { reason: `Go ${version} is newer than the offset table (≤ 1.${GO_MAX_KNOWN_MINOR})` };
  const gGoid = minor === 23 || minor === 24 ? 160 : 152;
  const release = `go1.${minor}`;
  return { offsets: { release, source: "table", measured: MEASURED.has(release), ...NET, gGoid } };
}

/** DWARF type names of the structs on the path from *tls.Conn to the fd, and runtime.g. */
const DWARF_PATH: [type: string, member: string, field: keyof GoTlsOffsets][] = [
  ["crypto/tls.Conn", "conn", "tlsConnConn"],
  ["net.TCPConn", "conn", "tcpConnConn"],
  ["net.conn", "fd", "connFd"],
  ["net.netFD", "pfd", "netFDPfd"],
  ["internal/poll.FD", "Sysfd", "pollFDSysfd"],
  ["runtime.g", "goid", "gGoid"],
];

/**
 * The offsets from the binary's DWARF (go build keeps it unless -ldflags=-w), or undefined when it
 * has no DWARF or lacks one of the members. Any Go version with DWARF is covered this way, including
 * releases newer than the table.
 */
export function goTlsOffsetsFromDwarf(elf: ElfFile, version: string): GoTlsOffsets | undefined {
  const r = goRelease(version);
  const types = structMemberOffsets(elf, DWARF_PATH.map(([t]) => t));
  if (!types) return undefined;
  const out: GoTlsOffsets = { release: r ? `go${r[0]}.${r[1]}` : version, source: "dwarf", measured: false, ...NET, gGoid: 0 };
  for (const [type, member, field] of DWARF_PATH) {
    const off = types.get(type)?.get(member);
    if (off === undefined) return undefined;
    (out as unknown as Record<string, number>)[field] = off;
  }
  return out;
}

/**
 * The BPF map value for one Go binary: eight little-endian u32 fields, in this order:
 * tls_conn_conn, iface_data, tcp_conn_conn, conn_fd, netfd_pfd, pollfd_sysfd, g_goid, flags
 * (bit 0: arm64 (g in x28) instead of amd64 (g in r14); bit 1: the entry probes sit on the
 * functions' stack-check branch, and a hit whose branch goes to morestack is not the call's:
 * probe-site.ts goStackCheck, bpf/lib/tls.h go_enter; bit 2: (*Conn).Read is probed at its copy of
 * the plaintext, and its calls are keyed by their buffer: probe-site.ts goReadCopySite,
 * bpf/lib/tls.h go_copy).
 */
export const GO_OFFSETS_VALUE_SIZE = 32;
export const GO_F_ARM64 = 1;
export const GO_F_ENTRY_AT_BRANCH = 2;
export const GO_F_READ_AT_COPY = 4;

export function encodeGoTlsOffsets(o: GoTlsOffsets, arch: "x86_64" | "aarch64", entryAtBranch = false, readAtCopy = false): Uint8Array {
  const out = new Uint8Array(GO_OFFSETS_VALUE_SIZE);
  const v = new DataView(out.buffer);
  const flags = (arch === "aarch64" ? GO_F_ARM64 : 0) | (entryAtBranch ? GO_F_ENTRY_AT_BRANCH : 0) | (readAtCopy ? GO_F_READ_AT_COPY : 0);
  const fields = [o.tlsConnConn, o.ifaceData, o.tcpConnConn, o.connFd, o.netFDPfd, o.pollFDSysfd, o.gGoid, flags];
  fields.forEach((f, i) => v.setUint32(i * 4, f, true));
  return out;
}
