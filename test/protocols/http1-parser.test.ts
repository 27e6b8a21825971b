import { describe, expect, test } from "bun:test";
import { Http1Parser, HEAD_MAX_SIZE, type HttpMessage, type ParserOptions } from "../../src/protocols/http1/parser.ts";

const enc = new TextEncoder();
const bytes = (s: string): Uint8Array => enc.encode(s);
const text = (b: Uint8Array): string => Buffer.from(b).toString("latin1");

interface Run {
  parser: Http1Parser;
  messages: HttpMessage[];
  errors: string[];
}

function parser(kind: "request" | "response", over: Partial<ParserOptions> = {}): Run {
  const run: Run = { parser: undefined as unknown as Http1Parser, messages: [], errors: [] };
  run.parser = new Http1Parser(kind, {
    bodyMaxSize: 1 << 20,
    keepBody: () => true,
    onMessage: (m) => run.messages.push(m),
    onError: (e) => run.errors.push(e),
    ...over,
  });
  return run;
}

/** Feeds `parts` through one scratch buffer that is clobbered after every push. */
function feed(run: Run, parts: (string | Uint8Array)[], ts0 = 1n): Run {
  let ts = ts0;
  for (const part of parts) {
    const b = typeof part === "string" ? bytes(part) : part;
    const scratch = new Uint8Array(b);
    run.parser.push(scratch, ts++);
    scratch.fill(0x23);
  }
  return run;
}

function parse(kind: "request" | "response", input: string | (string | Uint8Array)[], over: Partial<ParserOptions> = {}): Run {
  return feed(parser(kind, over), typeof input === "string" ? [input] : input);
}

/** Stable, comparable view of what a parser produced. */
function summary(run: Run): unknown {
  return {
    errors: run.errors.length,
    messages: run.messages.map((m) => ({
      kind: m.kind, method: m.method, target: m.target, status: m.status, reason: m.reason,
      version: m.version, headers: m.headers, trailers: m.trailers, body: text(m.body),
      bodySize: m.bodySize, bodyTruncated: m.bodyTruncated, partial: m.partial, upgrade: m.upgrade,
    })),
  };
}

/** Whole, split in two at every byte, and byte-by-byte feeding must all agree. */
function expectSplitInvariant(kind: "request" | "response", input: string, over: Partial<ParserOptions> = {}, end = false): unknown {
  const b = bytes(input);
  const whole = parse(kind, [b], over);
  if (end) whole.parser.end(99n);
  const want = summary(whole);
  for (let k = 1; k < b.length; k++) {
    const r = parse(kind, [b.subarray(0, k), b.subarray(k)], over);
    if (end) r.parser.end(99n);
    const got = summary(r);
    if (JSON.stringify(got) !== JSON.stringify(want)) expect({ split: k, got }).toEqual({ split: k, got: want });
  }
  const single = parse(kind, Array.from(b, (_, k) => b.subarray(k, k + 1)), over);
  if (end) single.parser.end(99n);
  expect(summary(single)).toEqual(want);
  return want;
}

const JSON_BODY = '{"id":42,"name":"widget"}';

describe("requests", () => {
  test("request line, headers (OWS trimmed, case kept), Content-Length body, timestamps", () => {
    const r = parse("request", [
      `POST /api/items?x=1 HTTP/1.1\r\nHost: example.com\r\nX-Odd:  \t spaced value \t \r\n`,
      `Content-Type: application/json\r\nContent-Length: ${JSON_BODY.length}\r\n\r\n${JSON_BODY.slice(0, 5)}`,
      JSON_BODY.slice(5),
    ], { });
    expect(r.errors).toEqual([]);
    expect(r.messages.length).toBe(1);
    const m = r.messages[0];
    expect(m.kind).toBe("request");
    expect(m.method).toBe("POST");
    expect(m.target).toBe("/api/items?x=1");
    expect(m.version).toBe("1.1");
    expect(m.status).toBe(0);
    expect(m.headers).toEqual([
      ["Host", "example.com"], ["X-Odd", "spaced value"], ["Content-Type", "application/json"],
      ["Content-Length", String(JSON_BODY.length)],
    ]);
    expect(text(m.body)).toBe(JSON_BODY);
    expect(m.bodySize).toBe(JSON_BODY.length);
    expect(m.bodyTruncated).toBe(false);
    expect(m.partial).toBe(false);
    expect(m.firstByteNs).toBe(1n);
    expect(m.lastByteNs).toBe(3n);
  });

  test("HTTP/1.0 and HTTP/0.9-style request lines", () => {
    const r = parse("request", "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b\r\n\r\n");
    expect(r.errors).toEqual([]);
    expect(r.messages.map((m) => [m.target, m.version])).toEqual([["/a", "1.0"], ["/b", "0.9"]]);
  });

  test("keep-alive and pipelining: several requests in one chunk, CRLF between them tolerated", () => {
    const r = parse("request",
      "GET /1 HTTP/1.1\r\n\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc" +
      "PUT /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\nDELETE /4 HTTP/1.1\r\n\r\n");
    expect(r.errors).toEqual([]);
    expect(r.messages.map((m) => `${m.method} ${m.target} ${text(m.body)}`)).toEqual(["GET /1 ", "POST /2 abc", "PUT /3 xyz", "DELETE /4 "]);
  });

  test("chunked body with extensions and trailers; framing split at every byte", () => {
    const input =
      "POST /up HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" +
      '4;name=value;q="quoted \\" ; ok"\r\nWiki\r\n5;x\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\nX-Sum: 42 \r\n\r\n';
    const want = expectSplitInvariant("request", input) as { errors: number; messages: { body: string; trailers: unknown; headers: unknown }[] };
    expect(want.errors).toBe(0);
    expect(want.messages.length).toBe(1);
    expect(want.messages[0].body).toBe("Wikipedia in\r\n\r\nchunks.");
    expect(want.messages[0].trailers).toEqual([["Expires", "never"], ["X-Sum", "42"]]);
    expect(want.messages[0].headers).toEqual([["Transfer-Encoding", "gzip, chunked"]]);
  });

  test("representative keep-alive request stream is split-invariant", () => {
    const input =
      "\r\nGET /health HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n" +
      `POST /json HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: ${JSON_BODY.length}\r\n\r\n${JSON_BODY}` +
      "PATCH /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2;a=b\r\nhi\r\n0\r\nT: v\r\n\r\n" +
      "OPTIONS * HTTP/1.1\r\nX-Utf8: Düsseldorf\r\n\r\n";
    const want = expectSplitInvariant("request", input) as { errors: number; messages: { target: string; headers: [string, string][] }[] };
    expect(want.errors).toBe(0);
    expect(want.messages.map((m) => m.target)).toEqual(["/health", "/json", "/c", "*"]);
    expect(want.messages[3].headers).toEqual([["X-Utf8", "Düsseldorf"]]);
  });

  test("Content-Length rules: duplicates, junk, overflow, and CL with TE are errors", () => {
    for (const head of [
      "Content-Length: 3\r\nContent-Length: 3",
      "Content-Length: 3\r\nContent-Length: 4",
      "Content-Length: 3x",
      "Content-Length: -1",
      "Content-Length: 4 2",
      "Content-Length:",
      "Content-Length: 99999999999999999999",
      "Content-Length: 3\r\nTransfer-Encoding: chunked",
      "Transfer-Encoding: chunked\r\nContent-Length: 3",
    ]) {
      const r = parse("request", `POST / HTTP/1.1\r\n${head}\r\n\r\nabc`);
      expect({ head, errors: r.errors.length, messages: r.messages.length }).toEqual({ head, errors: 1, messages: 0 });
    }
    const ok = parse("request", "POST / HTTP/1.1\r\nContent-Length: \t 003 \r\n\r\nabc");
    expect(ok.errors).toEqual([]);
    expect(text(ok.messages[0].body)).toBe("abc");
  });

  test("request Transfer-Encoding must end with chunked", () => {
    for (const te of ["gzip", "chunked, gzip", "chunked\r\nTransfer-Encoding: gzip", ""]) {
      const r = parse("request", `POST / HTTP/1.1\r\nTransfer-Encoding: ${te}\r\n\r\n0\r\n\r\n`);
      expect({ te, errors: r.errors.length }).toEqual({ te, errors: 1 });
    }
  });

  test("any RFC 9110 token is a method (odd methods are kept, not dropped)", () => {
    for (const m of ["MOOO", "get", "X-CUSTOM_1", "M!#$%&'*+-.^_`|~"]) {
      const r = parse("request", [`${m} /x HTTP/1.1\r\nHost: a\r\n\r\n`]);
      expect({ errors: r.errors, method: r.messages[0]?.method }).toEqual({ errors: [], method: m });
    }
  });

  test("strict syntax: bare LF, obs-fold, space before colon, control chars, unknown method, bad version", () => {
    for (const input of [
      "GET / HTTP/1.1\nHost: a\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
      "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
      "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
      "FE@CH / HTTP/1.1\r\n\r\n",
      "FETCH /\r\n\r\n",
      "GET / HTTP/1.2\r\n\r\n",
      "GET / HTTP/1.1 \r\n\r\n",
      "GET /a b HTTP/1.1\r\n\r\n",
      "GET /\xff HTTP/1.1\r\n\r\n",
    ]) {
      const r = parse("request", [new Uint8Array(Buffer.from(input, "latin1"))]);
      expect({ input, errors: r.errors.length, messages: r.messages.length }).toEqual({ input, errors: 1, messages: 0 });
    }
  });

  test("an error resynchronises at the next request line", () => {
    const r = parse("request", "GET / HTTP/1.1\r\nBad Header: x\r\nMore: y\r\n\r\nGET /next HTTP/1.1\r\n\r\n");
    expect(r.errors.length).toBe(1);
    expect(r.messages.map((m) => m.target)).toEqual(["/next"]);
  });

  test("data after Connection: close is an error; the data is still parsed", () => {
    const r = parse("request", "GET /a HTTP/1.1\r\nConnection: close\r\n\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    expect(r.errors).toEqual(["data after Connection: close"]);
    expect(r.messages.map((m) => m.target)).toEqual(["/a", "/b"]);
    const r10 = parse("request", "GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n");
    expect(r10.errors.length).toBe(1);
  });

  test("Upgrade request pauses the parser; resume() replays held bytes, stop() drops them", () => {
    const input = "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /after HTTP/1.1\r\n\r\n";
    const r = parse("request", input);
    expect(r.messages.length).toBe(1);
    expect(r.messages[0].upgrade).toBe(true);
    expect(r.parser.paused).toBe(true);
    r.parser.resume();
    expect(r.messages.map((m) => m.target)).toEqual(["/ws", "/after"]);
    expect(r.errors).toEqual([]);

    const s = parse("request", input);
    s.parser.stop();
    feed(s, ["GET /more HTTP/1.1\r\n\r\n"]);
    expect(s.messages.length).toBe(1);
    expect(s.parser.stopped).toBe(true);
  });

  test("Upgrade request with a body pauses after the body; CONNECT ignores its body", () => {
    const r = parse("request", "POST /u HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nokBINARY");
    expect(text(r.messages[0].body)).toBe("ok");
    expect(r.messages[0].upgrade).toBe(true);
    const c = parse("request", "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\nContent-Length: 5\r\n\r\n\x16\x03\x01");
    expect(c.errors).toEqual([]);
    expect(c.messages[0].target).toBe("db:5432");
    expect(c.messages[0].upgrade).toBe(true);
    expect(c.messages[0].bodySize).toBe(0);
  });

  test("HTTP/2 prior-knowledge preface: one error, then stopped", () => {
    const r = parse("request", ["PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", new Uint8Array([0, 0, 18, 4, 0, 0, 0, 0, 0])]);
    expect(r.errors.length).toBe(1);
    expect(r.parser.http2).toBe(true);
    expect(r.parser.stopped).toBe(true);
  });
});

describe("responses", () => {
  test("status line, reason as sent, chunked body", () => {
    const r = parse("response", "HTTP/1.1 404  Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nnope!\r\n0\r\n\r\n");
    expect(r.errors).toEqual([]);
    const m = r.messages[0];
    expect([m.kind, m.status, m.reason, m.version, m.method, m.target]).toEqual(["response", 404, " Not Found", "1.1", "", ""]);
    expect(text(m.body)).toBe("nope!");
  });

  test("close-delimited body completes at end(); incomplete length body is partial", () => {
    const r = parse("response", ["HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello ", "world"]);
    expect(r.messages.length).toBe(0);
    r.parser.end(9n);
    expect(r.messages.length).toBe(1);
    expect(text(r.messages[0].body)).toBe("hello world");
    expect(r.messages[0].partial).toBe(false);
    expect(r.messages[0].lastByteNs).toBe(2n);

    const cut = parse("response", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    cut.parser.end(9n);
    expect(cut.errors).toEqual([]);
    expect(cut.messages[0].partial).toBe(true);
    expect(cut.messages[0].bodySize).toBe(3);

    const te = parse("response", ["HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", new Uint8Array([0x1f, 0x8b])]);
    te.parser.end(9n);
    expect(te.messages[0].bodySize).toBe(2);
  });

  test("end() inside a head reports one error; between messages nothing", () => {
    const r = parse("response", "HTTP/1.1 200 OK\r\nContent-Le");
    r.parser.end(9n);
    expect(r.errors).toEqual(["connection closed inside message head"]);
    expect(r.messages).toEqual([]);
    const idle = parse("response", "HTTP/1.1 204 No Content\r\n\r\n\r\n");
    idle.parser.end(9n);
    expect(idle.errors).toEqual([]);
    expect(idle.messages.length).toBe(1);
  });

  test("1xx, 204, 304 and HEAD responses have no body even with framing headers", () => {
    let method: string | undefined = "GET";
    const r = parse("response", [
      "HTTP/1.1 100 Continue\r\n\r\n",
      "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
      "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
      "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    ], { requestMethod: () => method });
    method = "HEAD";
    feed(r, ["HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"]);
    method = "GET";
    feed(r, ["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]);
    expect(r.errors).toEqual([]);
    expect(r.messages.map((m) => [m.status, m.bodySize])).toEqual([[100, 0], [103, 0], [204, 0], [304, 0], [200, 0], [200, 2]]);
  });

  test("101 stops parsing; CONNECT 2xx is a tunnel, CONNECT 407 is not", () => {
    const r = parse("response", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello");
    expect(r.messages.length).toBe(1);
    expect(r.messages[0].upgrade).toBe(true);
    expect(r.parser.stopped).toBe(true);
    const t = parse("response", "HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01\x02\x00", { requestMethod: () => "CONNECT" });
    expect(t.errors).toEqual([]);
    expect(t.messages[0].upgrade).toBe(true);
    const p = parse("response", "HTTP/1.1 407 Proxy Auth\r\nContent-Length: 2\r\n\r\nnoHTTP/1.1 200 OK\r\n\r\n", { requestMethod: () => "CONNECT" });
    // The 407 keeps the connection in HTTP; the retried CONNECT's 200 then opens the tunnel.
    expect(p.messages.map((m) => [m.status, m.upgrade])).toEqual([[407, false], [200, true]]);
  });

  test("200 with Upgrade headers is not an upgrade", () => {
    const r = parse("response", "HTTP/1.1 200 OK\r\nConnection: upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 204 No\r\n\r\n");
    expect(r.messages.map((m) => [m.status, m.upgrade])).toEqual([[200, false], [204, false]]);
  });

  test("representative keep-alive response stream is split-invariant (end() completes the last)", () => {
    const input =
      "HTTP/1.1 100 Continue\r\n\r\n" +
      `HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: ${JSON_BODY.length}\r\n\r\n${JSON_BODY}` +
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\n\r\n" +
      "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n" +
      "HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nclose-delimited body";
    const want = expectSplitInvariant("response", input, {}, true) as { errors: number; messages: { status: number; body: string }[] };
    expect(want.errors).toBe(0);
    expect(want.messages.map((m) => [m.status, m.body])).toEqual([
      [100, ""], [201, JSON_BODY], [200, "abc"], [304, ""], [500, "close-delimited body"],
    ]);
  });
});

describe("body capture limits", () => {
  test("bodyMaxSize caps the captured bytes, bodySize counts all", () => {
    const r = parse("request", "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789", { bodyMaxSize: 4 });
    expect(text(r.messages[0].body)).toBe("0123");
    expect(r.messages[0].bodySize).toBe(10);
    expect(r.messages[0].bodyTruncated).toBe(true);
    expect(r.messages[0].partial).toBe(false);
    const c = parse("response", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", { bodyMaxSize: 5 });
    expect(text(c.messages[0].body)).toBe("abcde");
    expect(c.messages[0].bodySize).toBe(6);
  });

  test("keepBody sees the Content-Type; false keeps no bytes", () => {
    const seen: (string | undefined)[] = [];
    const r = parse("request", [
      "POST / HTTP/1.1\r\ncontent-TYPE: image/png\r\nContent-Length: 3\r\n\r\nPNG",
      "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
    ], { keepBody: (ct) => { seen.push(ct); return false; } });
    expect(seen).toEqual(["image/png", undefined]);
    expect(r.messages.map((m) => [m.body.length, m.bodySize, m.bodyTruncated])).toEqual([[0, 3, true], [0, 2, true]]);
  });

  test("a long body arriving in many chunks is captured whole", () => {
    const body = "x".repeat(100_000);
    const input = bytes(`POST / HTTP/1.1\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    const parts: Uint8Array[] = [];
    for (let k = 0; k < input.length; k += 1000) parts.push(input.subarray(k, k + 1000));
    const r = parse("request", parts);
    expect(r.messages[0].body.length).toBe(body.length);
    expect(text(r.messages[0].body)).toBe(body);
  });
});

describe("gaps", () => {
  const head = (n: number): string => `POST /g HTTP/1.1\r\nContent-Length: ${n}\r\n\r\n`;

  test("cut (not lost) bytes in a body: truncated, counted, not partial; capture stops at the gap", () => {
    const r = parser("request");
    feed(r, [head(10) + "abc"]);
    r.parser.gap(4, 5n, false);
    feed(r, ["xyz"], 6n);
    expect(r.errors).toEqual([]);
    const m = r.messages[0];
    expect([text(m.body), m.bodySize, m.bodyTruncated, m.partial, m.lastByteNs]).toEqual(["abc", 10, true, false, 6n]);
  });

  test("lost bytes in a body: partial", () => {
    const r = parser("request");
    feed(r, [head(6) + "abc"]);
    r.parser.gap(3, 5n, true);
    expect(r.messages.length).toBe(1);
    expect([r.messages[0].partial, r.messages[0].bodySize, r.messages[0].lastByteNs]).toEqual([true, 6, 5n]);
    feed(r, ["GET /next HTTP/1.1\r\n\r\n"]);
    expect(r.messages.map((m) => m.target)).toEqual(["/g", "/next"]);
  });

  test("a gap running past the end of a body finishes it and resyncs silently", () => {
    const r = parser("request");
    feed(r, [head(4) + "ab"]);
    r.parser.gap(30, 5n, true);
    feed(r, ["eaders: junk\r\n\r\nGET /next HTTP/1.1\r\n\r\n"]);
    expect(r.errors).toEqual([]);
    expect(r.messages.map((m) => [m.target, m.partial, m.bodySize])).toEqual([["/g", true, 4], ["/next", false, 0]]);
  });

  test("a gap inside a head is an error for that message, then resync", () => {
    for (const lost of [true, false]) {
      const r = parser("request");
      feed(r, ["GET /a HTTP/1.1\r\nHost: x"]);
      r.parser.gap(5, 5n, lost);
      feed(r, ["zz\r\n\r\nGET /b HTTP/1.1\r\n\r\n"]);
      expect(r.errors).toEqual(["capture gap inside message head"]);
      expect(r.messages.map((m) => m.target)).toEqual(["/b"]);
    }
  });

  test("a gap between messages resyncs silently; the bytes right after the gap may start a message", () => {
    const r = parser("response");
    r.parser.gap(100, 1n, true);
    feed(r, ["HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]);
    r.parser.gap(50, 3n, true);
    feed(r, ["tail of something\r\nHTTP/1.1 204 No Content\r\n\r\n"]);
    expect(r.errors).toEqual([]);
    expect(r.messages.map((m) => m.status)).toEqual([200, 204]);
  });

  test("chunked: a gap within chunk data keeps framing, a gap beyond it emits the message", () => {
    const r = parser("response");
    feed(r, ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123"]);
    r.parser.gap(3, 2n, false);
    feed(r, ["789\r\n0\r\n\r\n"]);
    expect(r.messages.map((m) => [text(m.body), m.bodySize, m.bodyTruncated, m.partial])).toEqual([["0123", 10, true, false]]);

    const s = parser("response");
    feed(s, ["HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab"]);
    s.parser.gap(40, 2n, true);
    expect(s.messages.map((m) => [text(m.body), m.partial])).toEqual([["ab", true]]);
    feed(s, ["x\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"]);
    expect(s.errors).toEqual([]);
    expect(s.messages.map((m) => m.status)).toEqual([200, 204]);
  });
});

describe("non-HTTP input and limits", () => {
  test("a TLS stream costs exactly one error however many chunks arrive", () => {
    const r = parser("request");
    const record = new Uint8Array(4096);
    let x = 7;
    for (let k = 0; k < record.length; k++) { x = (x * 1103515245 + 12345) >>> 0; record[k] = x >>> 24; }
    record.set([0x16, 0x03, 0x01, 0x02, 0x00], 0);
    for (let k = 0; k < 200; k++) feed(r, [record]);
    expect(r.errors.length).toBe(1);
    expect(r.messages).toEqual([]);
  });

  test("junk that looks like a request start at line starts stays silent while unsynced", () => {
    const r = parse("request", ["\x00\x01binary\nGET\n", "POST nothing\nHEAD / HTTP/9.9\nG@TX / HTTP/1.1\r\n", "ok\nGET /real HTTP/1.1\r\n\r\n"]);
    expect(r.errors.length).toBe(1);
    expect(r.messages.map((m) => m.target)).toEqual(["/real"]);
    const s = parse("response", ["\x15\x03\x03\x00\x02\x02\x28\nHTTPS\nHello\n", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]);
    expect(s.errors.length).toBe(1);
    expect(s.messages.map((m) => m.status)).toEqual([200]);
  });

  test("once resynced, the next malformed message is reported again", () => {
    const r = parse("request", "\x16\x03junk\nGET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nBad Name: x\r\n\r\n");
    expect(r.errors.length).toBe(2);
    expect(r.messages.map((m) => m.target)).toEqual(["/a"]);
  });

  test("heads larger than 64 KiB are an error, whole or split", () => {
    const big = `GET / HTTP/1.1\r\nX-Big: ${"a".repeat(HEAD_MAX_SIZE)}\r\n\r\n`;
    const next = "GET /after HTTP/1.1\r\n\r\n";
    for (const parts of [[big + next], [big.slice(0, 1000), big.slice(1000, 40_000), big.slice(40_000) + next]]) {
      const r = parse("request", parts);
      expect(r.errors).toEqual(["message head larger than 64 KiB"]);
      expect(r.messages.map((m) => m.target)).toEqual(["/after"]);
    }
    const many = "GET / HTTP/1.1\r\n" + "X-H: v\r\n".repeat(9000) + "\r\n";
    expect(parse("request", many).errors.length).toBe(1);
    const fits = `GET / HTTP/1.1\r\nX-Big: ${"a".repeat(60_000)}\r\n\r\n`;
    expect(parse("request", fits).messages.length).toBe(1);
  });

  test("a throwing callback is contained and reported, parsing continues", () => {
    let calls = 0;
    const r = parser("request", { onMessage: (m) => { calls++; if (m.target === "/boom") throw new Error("consumer bug"); } });
    feed(r, ["GET /boom HTTP/1.1\r\n\r\n", "GET /ok HTTP/1.1\r\n\r\n"]);
    expect(calls).toBe(2);
    expect(r.errors).toEqual(["internal parser error: consumer bug"]);
  });

  test("never throws on random or mutated input, whatever the chunking", () => {
    let x = 12345;
    const rnd = (n: number): number => { x = (x * 1103515245 + 12345) >>> 0; return x % n; };
    const seeds = [
      "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;a=\"b\"\r\nabc\r\n0\r\nT: 1\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 101 Switching\r\n\r\n",
      "GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
    ];
    for (let round = 0; round < 3000; round++) {
      const seed = bytes(seeds[round % seeds.length]);
      const input = new Uint8Array(seed);
      for (let k = rnd(4); k > 0; k--) input[rnd(input.length)] = rnd(256);
      for (const kind of ["request", "response"] as const) {
        const r = parser(kind, { bodyMaxSize: rnd(8), requestMethod: () => (rnd(3) === 0 ? "HEAD" : "CONNECT") });
        let i = 0;
        while (i < input.length) {
          const n = 1 + rnd(9);
          const op = rnd(10);
          if (op === 0) r.parser.gap(1 + rnd(20), 1n, rnd(2) === 0);
          else if (op === 1 && r.parser.paused) r.parser.resume();
          r.parser.push(input.subarray(i, i + n), 2n);
          i += n;
        }
        r.parser.end(3n);
        for (const m of r.messages) expect(m.body.length).toBeLessThanOrEqual(m.bodySize);
        expect(r.errors.filter((e) => e.startsWith("internal"))).toEqual([]);
      }
    }
  });
});
