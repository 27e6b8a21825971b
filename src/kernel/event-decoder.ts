/**
 * Pure decoding of ring-buffer records (layouts in event-layout.ts). A record is a Uint8Array
 * view that is only valid during the callback that received it: DataEvent.data points into the
 * ring, so whoever keeps payload bytes must copy them.
 */
import { EV, LAYOUT } from "./event-layout.ts";

export interface EventBase {
  tgid: number;
  tid: number;
  /** CLOCK_MONOTONIC nanoseconds (a double: exact to the ns for 104 days of uptime, then to <1 µs) */
  tsNs: number;
}

export interface ConnEvent extends EventBase {
  kind: "open" | "close" | "listen";
  connId: number;
  /** On close: final socket-layer positions (bytes sent / received on the socket); 0 otherwise. */
  sent: number;
  recv: number;
  /** On close: final TLS-layer positions (plaintext bytes through the TLS library); 0 otherwise. */
  tlsSent: number;
  tlsRecv: number;
  /** On close: CONN_F_* of the connection (CONN_F_TLS when its socket carried TLS). */
  flags: number;
  /** fd of the call that opened/closed it; -1 when the socket itself went away (no syscall). */
  fd: number;
  family: number;
  localPort: number;
  remotePort: number;
  role: number;
  syscall: number;
  localAddr: string;
  remoteAddr: string;
  comm: string;
}

export interface DataEvent extends EventBase {
  kind: "data";
  connId: number;
  pos: number;
  skipped: number;
  callBytes: number;
  fd: number;
  dir: number;
  syscall: number;
  /** DATA_FLAG_* */
  flags: number;
  role: number;
  /** LAYER_SOCKET or LAYER_TLS: which stream (of this direction) `pos` counts in */
  layer: number;
  data: Uint8Array;
}

export interface ProcEvent extends EventBase {
  kind: "exec" | "fork" | "exit";
  ppid: number;
  mode: number;
  cgroupId: bigint;
  comm: string;
  path: string;
  args: string[];
}

/** EV_TLS_MAP_EXEC: a TLS-probed process mapped an executable file not yet classified. */
export interface TlsMapEvent extends EventBase {
  kind: "tlsmap";
  /** kernel dev_t (MKDEV) and inode of the mapped file */
  dev: number;
  ino: number;
  /** the mapped fd (open while the loader maps it) */
  fd: number;
}

export type TracerEvent = ConnEvent | DataEvent | ProcEvent | TlsMapEvent;

const C = LAYOUT.conn_event;
const D = LAYOUT.data_event;
const P = LAYOUT.process_event;
const M = LAYOUT.tls_map_event;
const latin1 = new TextDecoder("latin1");
const utf8 = new TextDecoder("utf-8");

function u64(dv: DataView, off: number): number {
  return dv.getUint32(off, true) + dv.getUint32(off + 4, true) * 4294967296;
}

function cString(bytes: Uint8Array, dec: TextDecoder = latin1): string {
  const end = bytes.indexOf(0);
  return dec.decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/** Decodes one record; undefined for unknown types or short records (the caller counts them). */
export function decodeEvent(rec: Uint8Array): TracerEvent | undefined {
  return decodeEventAt(rec, 0, rec.length);
}

/** decodeEvent for the record at [at, at + len) of `buf` (EventSource's RecordHandler). */
export function decodeEventAt(buf: Uint8Array, at: number, len: number): TracerEvent | undefined {
  // Data records are most of the ring: read straight from the reader's bytes (no view of the
  // record, no DataView, and no `buffer` getter, which JSC makes costly on views).
  const type = len >= 4 ? le32(buf, at) : 0;
  if (type === EV.DATA) return len >= D.data ? decodeData(buf, at, len) : undefined;
  return decodeOther(buf.subarray(at, at + len), type);
}

function decodeOther(rec: Uint8Array, type: number): TracerEvent | undefined {
  const dv = new DataView(rec.buffer, rec.byteOffset, rec.byteLength);
  if (type === EV.CONN_OPEN || type === EV.CONN_CLOSE || type === EV.LISTEN) return rec.length >= C.$size ? decodeConn(rec, dv, type) : undefined;
  if (type === EV.PROC_EXEC || type === EV.PROC_FORK || type === EV.PROC_EXIT) return rec.length >= P.path ? decodeProc(rec, dv, type) : undefined;
  if (type === EV.TLS_MAP_EXEC) {
    if (rec.length < M.$size) return undefined;
    return { kind: "tlsmap", tgid: dv.getUint32(4, true), tid: dv.getUint32(8, true), tsNs: u64(dv, 16), ino: u64(dv, M.ino), dev: dv.getUint32(M.dev, true), fd: dv.getInt32(M.fd, true) };
  }
  return undefined;
}

/** Little-endian u32 / i32 / u64 (as a number: exact below 2^53) at `o` of `b`. */
function le32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16)) + b[o + 3]! * 16777216;
}
function lei32(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24);
}
function le64(b: Uint8Array, o: number): number {
  return le32(b, o) + le32(b, o + 4) * 4294967296;
}

/** The data record at [at, at + recLen) of `b`. */
function decodeData(b: Uint8Array, at: number, recLen: number): DataEvent {
  const len = Math.min(le32(b, at + D.len), recLen - D.data);
  return {
    kind: "data",
    tgid: le32(b, at + 4),
    tid: le32(b, at + 8),
    tsNs: le64(b, at + 16),
    connId: le64(b, at + D.conn_id),
    pos: le64(b, at + D.pos),
    skipped: le32(b, at + D.skipped),
    callBytes: le32(b, at + D.call_bytes),
    fd: lei32(b, at + D.fd),
    dir: b[at + D.dir]!,
    syscall: b[at + D.syscall]!,
    flags: b[at + D.flags]!,
    role: b[at + D.role]!,
    layer: b[at + D.layer]!,
    data: b.subarray(at + D.data, at + D.data + len),
  };
}

function decodeConn(rec: Uint8Array, dv: DataView, type: number): ConnEvent {
  return {
    kind: type === EV.CONN_OPEN ? "open" : type === EV.CONN_CLOSE ? "close" : "listen",
    tgid: dv.getUint32(4, true),
    tid: dv.getUint32(8, true),
    tsNs: u64(dv, 16),
    connId: u64(dv, C.conn_id),
    sent: u64(dv, C.sent),
    recv: u64(dv, C.recv),
    tlsSent: u64(dv, C.tls_sent),
    tlsRecv: u64(dv, C.tls_recv),
    flags: dv.getUint32(C.flags, true),
    fd: dv.getInt32(C.fd, true),
    family: dv.getUint16(C.family, true),
    localPort: dv.getUint16(C.local_port, true),
    remotePort: dv.getUint16(C.remote_port, true),
    role: rec[C.role]!,
    syscall: rec[C.syscall]!,
    localAddr: formatAddress(rec.subarray(C.local_addr, C.local_addr + 16)),
    remoteAddr: formatAddress(rec.subarray(C.remote_addr, C.remote_addr + 16)),
    comm: cString(rec.subarray(C.comm, C.comm + 16)),
  };
}

function decodeProc(rec: Uint8Array, dv: DataView, type: number): ProcEvent {
  const kind = type === EV.PROC_EXEC ? "exec" : type === EV.PROC_FORK ? "fork" : "exit";
  let path = "";
  let args: string[] = [];
  if (kind === "exec" && rec.length >= P.$size) {
    const pl = Math.min(dv.getUint32(P.path_len, true), 256);
    path = utf8.decode(rec.subarray(P.path, P.path + pl));
    const al = Math.min(dv.getUint32(P.args_len, true), 256);
    args = splitArgs(rec.subarray(P.args, P.args + al));
  }
  return {
    kind,
    tgid: dv.getUint32(4, true),
    tid: dv.getUint32(8, true),
    tsNs: u64(dv, 16),
    ppid: dv.getUint32(P.ppid, true),
    mode: rec[P.mode]!,
    cgroupId: dv.getBigUint64(P.cgroup_id, true),
    comm: cString(rec.subarray(P.comm, P.comm + 16)),
    path,
    args,
  };
}

/** Splits a NUL-separated argv block (as in /proc/PID/cmdline). */
export function splitArgs(block: Uint8Array): string[] {
  const s = utf8.decode(block);
  const parts = s.split("\0");
  if (parts.length && parts[parts.length - 1] === "") parts.pop();
  return parts;
}

/** 16 bytes (IPv6 or IPv4-mapped) → "127.0.0.1" / "::1"; all zero → "". */
export function formatAddress(a: Uint8Array): string {
  let zero = true;
  for (let i = 0; i < 16; i++) if (a[i]) { zero = false; break; }
  if (zero) return "";
  let mapped = a[10] === 0xff && a[11] === 0xff;
  for (let i = 0; i < 10 && mapped; i++) if (a[i]) mapped = false;
  if (mapped) return `${a[12]}.${a[13]}.${a[14]}.${a[15]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((a[i]! << 8) | a[i + 1]!);
  // Compress the longest run of two or more zero groups (RFC 5952).
  let bestAt = -1, bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) { bestAt = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestAt < 0) return hex.join(":");
  return hex.slice(0, bestAt).join(":") + "::" + hex.slice(bestAt + bestLen).join(":");
}
