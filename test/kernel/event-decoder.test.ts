import { describe, expect, test } from "bun:test";
import { decodeEvent, formatAddress, splitArgs } from "../../src/kernel/event-decoder.ts";
import { CONN_F_TLS, DATA_FLAG_LAST, DATA_FLAG_TLS, DIR_SEND, LAYER_SOCKET, LAYER_TLS, LAYOUT, ROLE_CLIENT } from "../../src/kernel/event-layout.ts";
import { connRecord, dataRecord, execRecord } from "../support/records.ts";

describe("event decoder", () => {
  test("conn open carries addresses, ports, role and comm", () => {
    const e = decodeEvent(connRecord("open", { connId: 7, tgid: 42, role: ROLE_CLIENT, local: [10, 0, 0, 1], localPort: 5555, remote: [127, 0, 0, 1], remotePort: 80, comm: "curl" }));
    expect(e).toMatchObject({ kind: "open", connId: 7, tgid: 42, role: ROLE_CLIENT, localAddr: "10.0.0.1", localPort: 5555, remoteAddr: "127.0.0.1", remotePort: 80, comm: "curl" });
  });
  test("conn close carries final positions of both layers and the connection flags", () => {
    const e = decodeEvent(connRecord("close", { connId: 1, tgid: 1 }, 5, 123, 456));
    expect(e).toMatchObject({ kind: "close", sent: 123, recv: 456, tlsSent: 0, tlsRecv: 0, flags: 0 });
    const t = decodeEvent(connRecord("close", { connId: 2, tgid: 1 }, 5, 2000, 3000, { sent: 77, recv: 5_000_000_000, flags: CONN_F_TLS }));
    expect(t).toMatchObject({ kind: "close", sent: 2000, recv: 3000, tlsSent: 77, tlsRecv: 5_000_000_000, flags: CONN_F_TLS });
  });
  test("data events say their layer; the TLS marker is a zero-length event with DATA_FLAG_TLS", () => {
    expect(decodeEvent(dataRecord(1, 1, 0, 0, "x"))).toMatchObject({ layer: LAYER_SOCKET, flags: DATA_FLAG_LAST });
    expect(decodeEvent(dataRecord(1, 1, 0, 10, "GET / HTTP/1.1\r\n", { layer: LAYER_TLS }))).toMatchObject({ layer: LAYER_TLS, pos: 10 });
    const m = decodeEvent(dataRecord(1, 1, 0, 0, "", { skipped: 517, flags: DATA_FLAG_TLS }));
    if (m?.kind !== "data") throw new Error("not data");
    expect(m.data.length).toBe(0);
    expect(m).toMatchObject({ layer: LAYER_SOCKET, flags: DATA_FLAG_LAST | DATA_FLAG_TLS, skipped: 517, callBytes: 517 });
  });
  test("data event exposes the payload without copying and its stream position", () => {
    const rec = dataRecord(9, 3, DIR_SEND, 4096, "hello", { skipped: 10 });
    const e = decodeEvent(rec);
    if (e?.kind !== "data") throw new Error("not data");
    expect(new TextDecoder().decode(e.data)).toBe("hello");
    expect(e.data.buffer).toBe(rec.buffer);
    expect(e).toMatchObject({ connId: 9, pos: 4096, skipped: 10, callBytes: 15, dir: DIR_SEND });
  });
  test("data fields at their full widths: u64 above 2^32, u32 above 2^31, a negative fd", () => {
    const rec = dataRecord(1, 1, 0, 0, "x");
    const dv = new DataView(rec.buffer);
    const D = LAYOUT.data_event;
    dv.setUint32(4, 0xfffffffe, true); // tgid
    dv.setUint32(8, 0x80000001, true); // tid
    dv.setBigUint64(16, 0x1234_5678_9abcn * 1000n, true); // ts
    dv.setBigUint64(D.conn_id, 0x1f_ffff_ffff_fffen, true); // 2^53 - 2
    dv.setBigUint64(D.pos, 5_000_000_000n, true);
    dv.setUint32(D.skipped, 0xffffffff, true);
    dv.setUint32(D.call_bytes, 0x80000000, true);
    dv.setInt32(D.fd, -1, true);
    expect(decodeEvent(rec)).toMatchObject({
      tgid: 0xfffffffe, tid: 0x80000001, tsNs: 0x1234_5678_9abc * 1000, connId: 2 ** 53 - 2, pos: 5_000_000_000,
      skipped: 0xffffffff, callBytes: 0x80000000, fd: -1,
    });
  });
  test("data length is clamped to the record", () => {
    const rec = dataRecord(1, 1, 0, 0, "abc");
    new DataView(rec.buffer).setUint32(40, 1000, true);
    const e = decodeEvent(rec);
    expect(e?.kind === "data" && e.data.length).toBe(3);
  });
  test("exec event carries path and argv", () => {
    const e = decodeEvent(execRecord(77, "/usr/bin/curl", ["curl", "-s", "http://x/"]));
    expect(e).toMatchObject({ kind: "exec", tgid: 77, path: "/usr/bin/curl", args: ["curl", "-s", "http://x/"], comm: "curl" });
  });
  test("short and unknown records are rejected", () => {
    expect(decodeEvent(new Uint8Array(2))).toBeUndefined();
    expect(decodeEvent(Uint8Array.of(99, 0, 0, 0, 0, 0, 0, 0))).toBeUndefined();
    expect(decodeEvent(dataRecord(1, 1, 0, 0, "x").subarray(0, 30))).toBeUndefined();
  });
  test("addresses: v4-mapped, v6 compression, zero", () => {
    const a = new Uint8Array(16);
    expect(formatAddress(a)).toBe("");
    a[15] = 1;
    expect(formatAddress(a)).toBe("::1");
    const b = Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42);
    expect(formatAddress(b)).toBe("2001:db8::42");
    const m = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 2);
    expect(formatAddress(m)).toBe("192.168.1.2");
    const full = Uint8Array.of(0xfe, 0x80, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7);
    expect(formatAddress(full)).toBe("fe80:1:2:3:4:5:6:7");
  });
  test("argv blocks split on NUL", () => {
    expect(splitArgs(new TextEncoder().encode("a\0b c\0"))).toEqual(["a", "b c"]);
  });
});
