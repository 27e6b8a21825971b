import { describe, expect, test } from "bun:test";
import { detect } from "../../src/protocols/detect.ts";

const b = (s: string | number[]) => (typeof s === "string" ? new Uint8Array(Buffer.from(s, "latin1")) : Uint8Array.from(s));

describe("protocol detector", () => {
  test("HTTP/1 request lines, any method token, from the client or an unknown role", () => {
    for (const s of ["GET / HTTP/1.1\r\n", "MOOO /x HTTP/1.0\r\n", "OPTIONS * HTTP/1.1\r\n", "GET /\r\n", "CONNECT a:443 HTTP/1.1\r\n"]) {
      expect([s, detect(b(s), "client")]).toEqual([s, "http1"]);
      expect([s, detect(b(s), undefined)]).toEqual([s, "http1"]);
    }
  });

  test("HTTP/1 status lines from the server", () => {
    expect(detect(b("HTTP/1.1 200 OK\r\n"), "server")).toBe("http1");
    expect(detect(b("HTTP/1.0 404"), undefined)).toBe("http1");
    expect(detect(b("HTTP/1.1 2x0"), "server")).toBe("unknown");
  });

  test("the HTTP/2 client preface, whole or as a prefix", () => {
    expect(detect(b("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04"), "client")).toBe("http2");
    expect(detect(b("PRI * HTTP/2"), "client")).toBe("more");
  });

  test("TLS record headers", () => {
    expect(detect(b([0x16, 3, 1, 0, 0xc8, 1]), "client")).toBe("tls");
    expect(detect(b([0x16, 3, 3]), "server")).toBe("tls");
    expect(detect(b([0x17, 3, 3, 0, 5]), undefined)).toBe("tls");
    expect(detect(b([0x16]), "client")).toBe("more");
    expect(detect(b([0x16, 9, 9]), "client")).toBe("unknown");
  });

  test("other protocols are unknown; short prefixes ask for more", () => {
    expect(detect(b("*1\r\n$4\r\nPING\r\n"), "client")).toBe("unknown"); // Redis
    expect(detect(b([0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f]), "client")).toBe("unknown"); // PostgreSQL SSLRequest
    expect(detect(b("SSH-2.0-OpenSSH_9.2\r\n"), "server")).toBe("unknown");
    expect(detect(b("hello world\r\n"), "client")).toBe("unknown");
    expect(detect(b("GE"), "client")).toBe("more");
    expect(detect(b("HTT"), "server")).toBe("more");
    expect(detect(b(""), "client")).toBe("more");
  });

  test("a request line with no version yet asks for more, up to a bound", () => {
    expect(detect(b("GET /a-long-path"), "client")).toBe("more");
    expect(detect(b(`GET /${"a".repeat(9000)}`), "client")).toBe("unknown");
  });
});

describe("HTTP/2 servers speak first", () => {
  test("a SETTINGS frame on stream 0 from the server is HTTP/2; other frames are not", () => {
    const settings = b([0, 0, 12, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100, 0, 4, 0, 0, 255, 255]);
    expect(detect(settings, "server")).toBe("http2");
    expect(detect(b([0, 0, 0, 4, 0, 0, 0, 0, 0]), "server")).toBe("http2"); // empty SETTINGS
    expect(detect(b([0, 0, 12, 4, 1, 0, 0, 0, 0]), "server")).toBe("unknown"); // ACK: not a preface
    expect(detect(b([0, 0, 7, 4, 0, 0, 0, 0, 0]), "server")).toBe("unknown"); // length not a multiple of 6
    expect(detect(b([0, 0, 12, 1, 4, 0, 0, 0, 1]), "server")).toBe("unknown"); // HEADERS
    expect(detect(b([0, 0, 12]), "server")).toBe("more");
  });

  test("mid-stream: a chain of frame headers is HTTP/2", () => {
    const frame = (type: number, flags: number, stream: number, payload: number[]) =>
      [payload.length >> 16, (payload.length >> 8) & 255, payload.length & 255, type, flags, 0, 0, 0, stream, ...payload];
    const frames = b([...frame(8, 0, 0, [0, 0, 1, 0]), ...frame(4, 1, 0, []), ...frame(6, 0, 0, [1, 2, 3, 4, 5, 6, 7, 8])]);
    expect(detect(frames, "client", { callEnd: true })).toBe("http2");
    expect(detect(b("GET / HTTP/1.1\r\n"), "client", { callEnd: true })).toBe("http1");
  });
});
