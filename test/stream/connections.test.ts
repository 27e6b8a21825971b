import { describe, expect, test } from "bun:test";
import { Connection, LAYER_SOCKET, LAYER_TLS, type ConnectionHooks } from "../../src/stream/connections.ts";
import { DIR_RECV, DIR_SEND, ROLE_CLIENT, ROLE_SERVER } from "../../src/kernel/event-layout.ts";
import type { ProtocolSession } from "../../src/protocols/session.ts";

const b = (s: string | number[]) => (typeof s === "string" ? new Uint8Array(Buffer.from(s, "latin1")) : Uint8Array.from(s));

function conn(role = ROLE_SERVER, midstream = false) {
  const log: string[] = [];
  const session: ProtocolSession = {
    protocol: "http1",
    data: (from, bytes) => log.push(`${from}:${Buffer.from(bytes).toString("latin1")}`),
    gap: (from, n, _ts, lost) => log.push(`${from}:gap ${n}${lost ? " lost" : ""}`),
    close: () => log.push("close"),
  };
  const events: string[] = [];
  const hooks: ConnectionHooks = {
    createSession: (p, _c, init) => { events.push(`session ${p}${init.midstream ? " midstream" : ""}`); return session; },
    unsupported: (_c, why) => events.push(`unsupported: ${why}`),
    tlsDetected: () => events.push("tls"),
  };
  const c = new Connection({ id: 1, tgid: 1, fd: 3, role, family: 2, localAddr: "", localPort: 1, remoteAddr: "", remotePort: 2, comm: "t" }, hooks, { midstream });
  return { c, log, events };
}

describe("connection layers and detection", () => {
  test("socket bytes go to the detected protocol; the client is the sender of requests", () => {
    const { c, log, events } = conn(ROLE_CLIENT);
    c.feed(LAYER_SOCKET, DIR_SEND, 0, b("GET / HTTP/1.1\r\n\r\n"), 1n, true);
    c.feed(LAYER_SOCKET, DIR_RECV, 0, b("HTTP/1.1 200 OK\r\n"), 2n, true);
    expect(events).toEqual(["session http1"]);
    expect(log).toEqual(["client:GET / HTTP/1.1\r\n\r\n", "server:HTTP/1.1 200 OK\r\n"]);
  });

  test("a TLS connection: ciphertext is never parsed, plaintext from the TLS layer is, with its own positions", () => {
    const { c, log, events } = conn(ROLE_SERVER);
    c.feed(LAYER_SOCKET, DIR_RECV, 0, b([0x16, 3, 1, 0, 0x20, 1, 2, 3]), 1n, true);
    c.feed(LAYER_SOCKET, DIR_SEND, 0, b([0x16, 3, 3, 0, 0x20]), 2n, true);
    c.feed(LAYER_TLS, DIR_RECV, 0, b("GET /s HTTP/1.1\r\n\r\n"), 3n, true);
    c.feed(LAYER_SOCKET, DIR_RECV, 8, b([0x17, 3, 3, 0, 0x40]), 3n, true);
    c.feed(LAYER_TLS, DIR_SEND, 0, b("HTTP/1.1 200 OK\r\n\r\n"), 4n, true);
    expect(events).toEqual(["tls", "session http1"]);
    expect(c.meta.tls).toBe(true);
    expect(log).toEqual(["client:GET /s HTTP/1.1\r\n\r\n", "server:HTTP/1.1 200 OK\r\n\r\n"]);
    // the socket layer's final positions do not count as application loss; the TLS layer's do
    expect(c.close([[100, 100], [19 + 5, 19]], 5n)).toBe(5);
    expect(log.slice(2)).toEqual(["client:gap 5 lost", "close"]);
  });

  test("TLS plaintext that arrives without a socket-layer TLS record still switches the connection", () => {
    const { c, log } = conn(ROLE_CLIENT);
    c.feed(LAYER_TLS, DIR_SEND, 0, b("GET / HTTP/1.1\r\n\r\n"), 1n, true);
    expect(c.meta.tls).toBe(true);
    expect(log).toEqual(["client:GET / HTTP/1.1\r\n\r\n"]);
  });

  test("first seen mid-stream (accept not observed) but starting with the client preface: an HTTP/2 session from the start", () => {
    const { c, events } = conn(ROLE_SERVER, true);
    c.feed(LAYER_SOCKET, DIR_RECV, 0, b("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"), 1n, true);
    expect(events).toEqual(["session http2"]);
  });

  test("first seen mid-stream on a chain of HTTP/2 frames: a mid-stream HTTP/2 session", () => {
    const { c, events } = conn(ROLE_SERVER, true);
    // SETTINGS ACK then PING, both on stream 0
    c.feed(LAYER_SOCKET, DIR_RECV, 0, b([0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]), 1n, true);
    expect(events).toEqual(["session http2 midstream"]);
  });

  test("a connection seen from its start gives up on the first unknown bytes", () => {
    const { c, events } = conn();
    c.feed(LAYER_SOCKET, DIR_RECV, 0, b("\x00\x00\x00\x08binary"), 1n, true);
    expect(events).toEqual(["unsupported: not a supported protocol"]);
    c.feed(LAYER_SOCKET, DIR_RECV, 10, b("GET / HTTP/1.1\r\n\r\n"), 2n, true);
    expect(events.length).toBe(1);
  });

  test("mid-stream: bytes inside a syscall never start detection, and tries are bounded", () => {
    const { c, events } = conn(ROLE_SERVER, true);
    let pos = 0;
    for (let i = 0; i < 7; i++) {
      c.feed(LAYER_SOCKET, DIR_RECV, pos, b("\x01ody bytes"), 1n, true);
      pos += 10;
    }
    expect(events).toEqual([]);
    c.feed(LAYER_SOCKET, DIR_RECV, pos, b("\x01ore body "), 1n, true);
    expect(events).toEqual(["unsupported: not a supported protocol"]);
  });

  test("a gap while detecting drops the held prefix (it is no longer contiguous)", () => {
    const { c, log, events } = conn();
    c.feed(LAYER_SOCKET, DIR_RECV, 0, b("GE"), 1n, true);
    c.gap(LAYER_SOCKET, DIR_RECV, 100, 2n, true);
    c.feed(LAYER_SOCKET, DIR_RECV, 102, b("GET /b HTTP/1.1\r\n\r\n"), 3n, true);
    expect(events).toEqual(["session http1 midstream"]);
    expect(log).toEqual(["client:GET /b HTTP/1.1\r\n\r\n"]);
  });
});
