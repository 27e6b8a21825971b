import { describe, expect, test } from "bun:test";
import { Http1Connection, MAX_PENDING_REQUESTS, contentTypeAllowed, type ExchangeOptions, type HttpExchange } from "../../src/protocols/http1/exchange.ts";

const enc = new TextEncoder();
const text = (b: Uint8Array): string => Buffer.from(b).toString("latin1");

interface Conn {
  c: Http1Connection;
  exchanges: HttpExchange[];
  reqErrors: string[];
  resErrors: string[];
}

function conn(over: Partial<ExchangeOptions> = {}): Conn {
  const r: Conn = { c: undefined as unknown as Http1Connection, exchanges: [], reqErrors: [], resErrors: [] };
  r.c = new Http1Connection({
    bodyMaxSize: 1 << 16,
    keepBody: () => true,
    onExchange: (x) => r.exchanges.push(x),
    onRequestError: (e) => r.reqErrors.push(e),
    onResponseError: (e) => r.resErrors.push(e),
    ...over,
  });
  return r;
}

let clock = 1000n;
const req = (r: Conn, s: string): void => r.c.request(enc.encode(s), clock++);
const res = (r: Conn, s: string): void => r.c.response(enc.encode(s), clock++);

/** "METHOD target -> status body" per exchange, for compact assertions. */
const lines = (r: Conn): string[] => r.exchanges.map((x) =>
  `${x.request.method} ${x.request.target} -> ${x.response ? `${x.response.status} ${text(x.response.body)}` : "none"}${x.partial ? " (partial)" : ""}`);

describe("pairing", () => {
  test("an exchange is emitted as soon as its response completes", () => {
    const r = conn();
    req(r, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    expect(r.exchanges.length).toBe(0);
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel");
    expect(r.exchanges.length).toBe(0);
    res(r, "lo");
    expect(lines(r)).toEqual(["GET /a -> 200 hello"]);
    expect(r.exchanges[0].partial).toBe(false);
    expect(r.exchanges[0].request.firstByteNs < r.exchanges[0].response!.lastByteNs).toBe(true);
  });

  test("pipelined requests are answered in order", () => {
    const r = conn();
    req(r, "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nPOST /3 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx");
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nb");
    res(r, "HTTP/1.1 202 Accepted\r\nContent-Length: 1\r\n\r\nc");
    expect(lines(r)).toEqual(["GET /1 -> 200 a", "GET /2 -> 201 b", "POST /3 -> 202 c"]);
    expect(r.reqErrors.concat(r.resErrors)).toEqual([]);
  });

  test("Expect: 100-continue: the interim 100 is skipped, the final response pairs", () => {
    const r = conn();
    req(r, "PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    res(r, "HTTP/1.1 100 Continue\r\n\r\n");
    req(r, "data");
    res(r, "HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
    expect(lines(r)).toEqual(["PUT /f -> 204 "]);
    expect(text(r.exchanges[0].request.body)).toBe("data");
  });

  test("an early response waits for the end of its request", () => {
    const r = conn();
    req(r, "POST /upload HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234");
    res(r, "HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n");
    expect(r.exchanges.length).toBe(0);
    req(r, "56789");
    expect(lines(r)).toEqual(["POST /upload -> 413 "]);
  });

  test("HEAD responses are bodyless even with Content-Length", () => {
    const r = conn();
    req(r, "HEAD /big HTTP/1.1\r\n\r\nGET /small HTTP/1.1\r\n\r\n");
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    expect(lines(r)).toEqual(["HEAD /big -> 200 ", "GET /small -> 200 ok"]);
    expect(r.resErrors).toEqual([]);
  });

  test("a response with no pending request is an error and dropped", () => {
    const r = conn();
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    expect(r.resErrors).toEqual(["response without a pending request"]);
    req(r, "GET /a HTTP/1.1\r\n\r\n");
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz");
    expect(lines(r)).toEqual(["GET /a -> 200 z"]);
  });

  test("the pending queue is bounded; overflow is a request error and evicts the oldest", () => {
    const r = conn();
    for (let k = 0; k <= MAX_PENDING_REQUESTS; k++) req(r, `GET /${k} HTTP/1.1\r\n\r\n`);
    expect(r.reqErrors.length).toBe(1);
    expect(lines(r)).toEqual(["GET /0 -> none (partial)"]);
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    expect(lines(r)[1]).toBe("GET /1 -> 200 ");
  });

  test("close(): close-delimited response completes, unanswered requests are emitted partial", () => {
    const r = conn();
    req(r, "GET /stream HTTP/1.1\r\n\r\nGET /never HTTP/1.1\r\n\r\nPOST /cut HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc");
    res(r, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close");
    expect(r.exchanges.length).toBe(0);
    r.c.close(clock++);
    expect(lines(r)).toEqual(["GET /stream -> 200 until close", "GET /never -> none (partial)", "POST /cut -> none (partial)"]);
    expect(r.exchanges[2].request.partial).toBe(true);
    req(r, "GET /late HTTP/1.1\r\n\r\n");
    expect(r.exchanges.length).toBe(3);
  });
});

describe("upgrades", () => {
  test("101 Switching Protocols: upgraded, exchange emitted, later bytes ignored", () => {
    const r = conn();
    req(r, "GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    res(r, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x02hi");
    expect(r.c.upgraded).toBe(true);
    expect(lines(r)).toEqual(["GET /ws -> 101 "]);
    req(r, "\x81\x82garbage");
    res(r, "more frames");
    r.c.close(clock++);
    expect(r.exchanges.length).toBe(1);
    expect(r.reqErrors.concat(r.resErrors)).toEqual([]);
  });

  test("refused upgrade (h2c attempt answered 200): HTTP/1.1 continues on the connection", () => {
    const r = conn();
    req(r, "GET /a HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n");
    req(r, "GET /b HTTP/1.1\r\n\r\n"); // sent before the verdict: held, then replayed
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA");
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nB");
    expect(r.c.upgraded).toBe(false);
    expect(lines(r)).toEqual(["GET /a -> 200 A", "GET /b -> 200 B"]);
  });

  test("CONNECT 200 opens a tunnel; CONNECT 407 keeps HTTP", () => {
    const t = conn();
    req(t, "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n");
    res(t, "HTTP/1.1 200 Connection Established\r\n\r\n");
    expect(t.c.upgraded).toBe(true);
    expect(lines(t)).toEqual(["CONNECT api.example.com:443 -> 200 "]);

    const p = conn();
    req(p, "CONNECT h:443 HTTP/1.1\r\n\r\n");
    res(p, "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 3\r\n\r\nno!");
    req(p, "CONNECT h:443 HTTP/1.1\r\nProxy-Authorization: Basic eA==\r\n\r\n");
    res(p, "HTTP/1.1 200 OK\r\n\r\n");
    expect(lines(p)).toEqual(["CONNECT h:443 -> 407 no!", "CONNECT h:443 -> 200 "]);
    expect(p.c.upgraded).toBe(true);
  });

  test("an HTTP/2 prior-knowledge preface counts one request error and ends parsing", () => {
    const r = conn();
    req(r, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    expect(r.reqErrors.length).toBe(1);
    expect(r.c.upgraded).toBe(true);
  });
});

describe("capture loss", () => {
  test("a lost gap inside a response body marks that exchange partial only", () => {
    const r = conn();
    req(r, "GET /a HTTP/1.1\r\n\r\n");
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab");
    r.c.gap("response", 2, clock++, true);
    res(r, "ef");
    req(r, "GET /b HTTP/1.1\r\n\r\n");
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nB");
    expect(lines(r)).toEqual(["GET /a -> 200 ab (partial)", "GET /b -> 200 B"]);
  });

  test("a cut (not lost) body gap keeps the exchange whole but truncated", () => {
    const r = conn();
    req(r, "POST /a HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789");
    r.c.gap("request", 90, clock++, false);
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    expect(r.exchanges[0].partial).toBe(false);
    expect([r.exchanges[0].request.bodySize, r.exchanges[0].request.bodyTruncated]).toEqual([100, true]);
  });

  test("a whole response lost: the next response answers the newest request before it", () => {
    const r = conn();
    req(r, "GET /1 HTTP/1.1\r\n\r\n");
    r.c.gap("response", 300, clock++, true); // response to /1 lost
    req(r, "GET /2 HTTP/1.1\r\n\r\n");
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n#2");
    expect(lines(r)).toEqual(["GET /1 -> none (partial)", "GET /2 -> 200 #2 (partial)"]);
    req(r, "GET /3 HTTP/1.1\r\n\r\n");
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n#3");
    expect(lines(r)[2]).toBe("GET /3 -> 200 #3");
    expect(r.resErrors).toEqual([]);
  });

  test("a capture-cap gap that swallowed a pipelined response also realigns", () => {
    const r = conn();
    req(r, "GET /1 HTTP/1.1\r\n\r\n");
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n#1");
    req(r, "GET /2 HTTP/1.1\r\n\r\n");
    r.c.gap("response", 500, clock++, false); // cut, not lost: yet response /2 is gone
    req(r, "GET /3 HTTP/1.1\r\n\r\n");
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n#3");
    expect(lines(r)).toEqual(["GET /1 -> 200 #1", "GET /2 -> none (partial)", "GET /3 -> 200 #3 (partial)"]);
  });

  test("a whole request lost: its response is dropped instead of shifting every later pair", () => {
    const r = conn();
    r.c.gap("request", 200, clock++, true); // request /1 lost
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n#1");
    req(r, "GET /2 HTTP/1.1\r\n\r\n");
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n#2");
    expect(r.resErrors).toEqual(["response without a pending request"]);
    expect(lines(r)).toEqual(["GET /2 -> 200 #2 (partial)"]);

    const s = conn();
    req(s, "GET /0 HTTP/1.1\r\n\r\n");
    s.c.gap("request", 200, clock++, true);
    req(s, "GET /2 HTTP/1.1\r\n\r\n");   // /1 was in the gap; /0 and /2 wait
    res(s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n#0");
    expect(lines(s)).toEqual(["GET /0 -> 200 #0"]);
  });

  test("a response that predates the oldest waiting request is dropped after request loss", () => {
    const r = conn();
    req(r, "GET /1 HTTP/1.1\r\n\r\n");
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n#1");
    r.c.gap("request", 100, clock++, true); // request /2 lost
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"); // response /2 starts...
    req(r, "GET /3 HTTP/1.1\r\n\r\n");                  // ...before request /3 is seen
    res(r, "#2");
    res(r, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n#3");
    expect(r.resErrors).toEqual(["response started before the oldest waiting request (its request was lost)"]);
    expect(lines(r)).toEqual(["GET /1 -> 200 #1", "GET /3 -> 200 #3 (partial)"]);
  });
});

describe("splitting", () => {
  test("a conversation fed at every split point gives the same exchanges", () => {
    const reqs = [
      "GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
      "POST /b HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
      "HEAD /c HTTP/1.1\r\n\r\n",
    ];
    const ress = [
      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n1;x=y\r\nZ\r\n0\r\nT: 1\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n",
    ];
    const run = (cut: number): string[] => {
      const r = conn();
      for (let k = 0; k < reqs.length; k++) {
        const q = enc.encode(reqs[k]), s = enc.encode(ress[k]);
        const qc = Math.min(cut, q.length), sc = Math.min(cut, s.length);
        r.c.request(q.subarray(0, qc), clock++);
        r.c.request(q.subarray(qc), clock++);
        r.c.response(s.subarray(0, sc), clock++);
        r.c.response(s.subarray(sc), clock++);
      }
      r.c.close(clock++);
      expect(r.reqErrors.concat(r.resErrors)).toEqual([]);
      return lines(r);
    };
    const want = run(1 << 20);
    expect(want).toEqual(["GET /a -> 200 abc", "POST /b -> 201 Z", "HEAD /c -> 200 "]);
    for (let cut = 0; cut < 120; cut++) expect(run(cut)).toEqual(want);
  });
});

describe("contentTypeAllowed", () => {
  const allow = contentTypeAllowed(["json", "x-www-form-urlencoded", "xml", "graphql", "text"]);

  test("matches substrings of the media type, case-insensitively", () => {
    expect(allow("application/json")).toBe(true);
    expect(allow("Application/JSON; charset=utf-8")).toBe(true);
    expect(allow("application/vnd.api+json")).toBe(true);
    expect(allow("application/x-www-form-urlencoded")).toBe(true);
    expect(allow("text/html")).toBe(true);
    expect(allow("application/graphql-response+json")).toBe(true);
    expect(allow("  application/soap+xml ; action=x")).toBe(true);
  });

  test("ignores parameters and rejects other or missing types", () => {
    expect(allow("image/png")).toBe(false);
    expect(allow("application/octet-stream; note=json")).toBe(false);
    expect(allow("multipart/form-data; boundary=text")).toBe(false);
    expect(allow(undefined)).toBe(false);
    expect(allow("")).toBe(false);
    expect(allow("; json")).toBe(false);
    expect(contentTypeAllowed([])("application/json")).toBe(false);
  });

  test("repeated lookups give the same answer (memoised)", () => {
    for (let k = 0; k < 600; k++) {
      expect(allow(`application/x-${k % 300}`)).toBe(false);
      expect(allow(k % 2 ? "application/json" : "TEXT/plain")).toBe(true);
    }
  });
});
