/**
 * Builds ring-buffer records byte for byte as bpf/include/events.h lays them out, so pipeline tests and
 * the replay benchmark can feed recorded-looking events without a kernel.
 */
import { EV, LAYOUT, DATA_FLAG_LAST, ROLE_SERVER } from "../../src/kernel/event-layout.ts";

function header(buf: Uint8Array, type: number, tgid: number, tsNs: number): DataView {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  dv.setUint32(0, type, true);
  dv.setUint32(4, tgid, true);
  dv.setUint32(8, tgid, true);
  dv.setBigUint64(16, BigInt(tsNs), true);
  return dv;
}

export interface ConnSpec {
  connId: number;
  tgid: number;
  fd?: number;
  role?: number;
  family?: number;
  local?: [number, number, number, number];
  localPort?: number;
  remote?: [number, number, number, number];
  remotePort?: number;
  comm?: string;
  /** SYS_* that opened it; SYS_COUNT = first seen on data (mid-stream) */
  syscall?: number;
}

export function connRecord(
  kind: "open" | "close", c: ConnSpec, tsNs = 1000, sent = 0, recv = 0,
  tls: { sent?: number; recv?: number; flags?: number } = {},
): Uint8Array {
  const C = LAYOUT.conn_event;
  const buf = new Uint8Array(C.$size);
  const dv = header(buf, kind === "open" ? EV.CONN_OPEN : EV.CONN_CLOSE, c.tgid, tsNs);
  dv.setBigUint64(C.conn_id, BigInt(c.connId), true);
  dv.setBigUint64(C.sent, BigInt(sent), true);
  dv.setBigUint64(C.recv, BigInt(recv), true);
  dv.setBigUint64(C.tls_sent, BigInt(tls.sent ?? 0), true);
  dv.setBigUint64(C.tls_recv, BigInt(tls.recv ?? 0), true);
  dv.setUint32(C.flags, tls.flags ?? 0, true);
  dv.setInt32(C.fd, c.fd ?? 5, true);
  dv.setUint16(C.family, c.family ?? 2, true);
  dv.setUint16(C.local_port, c.localPort ?? 8080, true);
  dv.setUint16(C.remote_port, c.remotePort ?? 40000, true);
  buf[C.role] = c.role ?? ROLE_SERVER;
  buf[C.syscall] = c.syscall ?? 0;
  const l = c.local ?? [127, 0, 0, 1];
  const r = c.remote ?? [127, 0, 0, 1];
  buf.set([0xff, 0xff, ...l], C.local_addr + 10);
  buf.set([0xff, 0xff, ...r], C.remote_addr + 10);
  buf.set(new TextEncoder().encode(c.comm ?? "server"), C.comm);
  return buf;
}

export function dataRecord(
  connId: number, tgid: number, dir: number, pos: number, payload: Uint8Array | string,
  opts: { tsNs?: number; skipped?: number; last?: boolean; role?: number; layer?: number; flags?: number } = {},
): Uint8Array {
  const D = LAYOUT.data_event;
  const bytes = typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
  const buf = new Uint8Array(D.data + bytes.length);
  const dv = header(buf, EV.DATA, tgid, opts.tsNs ?? 2000);
  dv.setBigUint64(D.conn_id, BigInt(connId), true);
  dv.setBigUint64(D.pos, BigInt(pos), true);
  dv.setUint32(D.len, bytes.length, true);
  dv.setUint32(D.skipped, opts.skipped ?? 0, true);
  dv.setUint32(D.call_bytes, bytes.length + (opts.skipped ?? 0), true);
  dv.setInt32(D.fd, 5, true);
  buf[D.dir] = dir;
  buf[D.flags] = (opts.last === false ? 0 : DATA_FLAG_LAST) | (opts.flags ?? 0);
  buf[D.layer] = opts.layer ?? 0;
  buf[D.role] = opts.role ?? ROLE_SERVER;
  buf.set(bytes, D.data);
  return buf;
}

export function execRecord(tgid: number, path: string, args: string[], tsNs = 500): Uint8Array {
  const P = LAYOUT.process_event;
  const buf = new Uint8Array(P.$size);
  const dv = header(buf, EV.PROC_EXEC, tgid, tsNs);
  buf[P.mode] = 3;
  const p = new TextEncoder().encode(path);
  const a = new TextEncoder().encode(args.join("\0") + "\0");
  dv.setUint32(P.path_len, p.length, true);
  dv.setUint32(P.args_len, a.length, true);
  buf.set(p, P.path);
  buf.set(a, P.args);
  buf.set(new TextEncoder().encode(path.slice(path.lastIndexOf("/") + 1).slice(0, 15)), P.comm);
  return buf;
}

/** EV_PROC_EXIT of a selected process (the kernel sends the header, ppid/mode and comm). */
export function exitRecord(tgid: number, tsNs = 9000): Uint8Array {
  const P = LAYOUT.process_event;
  const buf = new Uint8Array(P.path);
  header(buf, EV.PROC_EXIT, tgid, tsNs);
  buf[P.mode] = 3;
  return buf;
}
