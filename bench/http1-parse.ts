/**
 * Throughput of HTTP/1.x parsing and request/response matching.
 *
 *   bun bench/http1-parse.ts [seconds-per-case]
 *
 * Feeds a realistic keep-alive conversation (JSON API: requests with ~10 headers and small JSON
 * bodies, responses with Content-Length or chunked JSON bodies) through Http1Connection, the way
 * the agent delivers it: one chunk per syscall, alternating directions. Also measures the bare
 * request parser and a variant where the stream arrives in 1460-byte segments (heads split
 * across pushes). Prints messages/s (requests + responses), exchanges/s and MB/s.
 */
import { Http1Connection, contentTypeAllowed } from "../src/protocols/http1/exchange.ts";
import { Http1Parser } from "../src/protocols/http1/parser.ts";
import { request as apiRequest, response as apiResponse } from "./api-traffic.ts";

const enc = new TextEncoder();
const SECONDS = Number(process.argv[2] ?? 2);

function request(k: number): Uint8Array {
  return enc.encode(apiRequest(k));
}

function response(k: number): Uint8Array {
  return enc.encode(apiResponse(k));
}

const N = 1024;
const requests = Array.from({ length: N }, (_, k) => request(k));
const responses = Array.from({ length: N }, (_, k) => response(k));
const requestBytes = requests.reduce((a, b) => a + b.length, 0);
const responseBytes = responses.reduce((a, b) => a + b.length, 0);
const keepBody = contentTypeAllowed(["json", "x-www-form-urlencoded", "xml", "graphql", "text"]);

/**
 * Cuts one direction into `size`-byte segments; `last[k]` is the highest message index segment k
 * reaches, used to keep the two directions causally ordered (a response never precedes its request).
 */
function segments(msgs: Uint8Array[], size: number): { segs: Uint8Array[]; last: number[] } {
  const all = new Uint8Array(msgs.reduce((a, b) => a + b.length, 0));
  const ends: number[] = [];
  let o = 0;
  for (const m of msgs) { all.set(m, o); o += m.length; ends.push(o); }
  const segs: Uint8Array[] = [], last: number[] = [];
  let msg = 0;
  for (let k = 0; k < all.length; k += size) {
    segs.push(all.slice(k, k + size));
    const end = Math.min(k + size, all.length);
    while (msg < ends.length - 1 && ends[msg] < end) msg++;
    last.push(msg);
  }
  return { segs, last };
}
const reqSegments = segments(requests, 1460);
const resSegments = segments(responses, 1460);

interface Result { rounds: number; seconds: number; exchanges: number; errors: number }

function measure(round: (sink: { exchanges: number; errors: number }) => void): Result {
  const sink = { exchanges: 0, errors: 0 };
  for (let w = 0; w < 20; w++) round(sink); // warm up the JIT
  sink.exchanges = sink.errors = 0;
  let rounds = 0;
  const t0 = performance.now();
  let t = t0;
  while (t - t0 < SECONDS * 1000) {
    round(sink);
    rounds++;
    t = performance.now();
  }
  return { rounds, seconds: (t - t0) / 1000, exchanges: sink.exchanges, errors: sink.errors };
}

function connection(sink: { exchanges: number; errors: number }): Http1Connection {
  return new Http1Connection({
    bodyMaxSize: 131072,
    keepBody,
    onExchange: () => { sink.exchanges++; },
    onRequestError: () => { sink.errors++; },
    onResponseError: () => { sink.errors++; },
  });
}

/** `exchanges`: whether the sink counted exchanges (Http1Connection) or bare messages. */
function report(name: string, r: Result, messagesPerRound: number, bytesPerRound: number, exchanges: boolean): void {
  const msgs = (r.rounds * messagesPerRound) / r.seconds;
  const mb = (r.rounds * bytesPerRound) / r.seconds / 1e6;
  const ex = exchanges ? `${Math.round(r.exchanges / r.seconds).toLocaleString("en-US").padStart(10)} exchanges/s` : " ".repeat(22);
  console.log(
    `${name.padEnd(40)} ${Math.round(msgs).toLocaleString("en-US").padStart(10)} messages/s ${ex} ` +
    `${mb.toFixed(0).padStart(5)} MB/s` + (r.errors > 0 ? `  (${r.errors} errors!)` : ""));
}

let ts = 0n;
report("Http1Connection, one chunk per message", measure((sink) => {
  const c = connection(sink);
  for (let k = 0; k < N; k++) {
    c.request(requests[k], ts++);
    c.response(responses[k], ts++);
  }
  c.close(ts++);
}), 2 * N, requestBytes + responseBytes, true);

report("Http1Connection, 1460-byte segments", measure((sink) => {
  const c = connection(sink);
  let q = 0; // request segments fed; a response segment goes out once its requests are complete
  let reqsDone = -1;
  for (let s = 0; s < resSegments.segs.length; s++) {
    while (q < reqSegments.segs.length && reqsDone < resSegments.last[s]) {
      c.request(reqSegments.segs[q], ts++);
      reqsDone = q + 1 < reqSegments.segs.length ? reqSegments.last[q] - 1 : N - 1;
      q++;
    }
    c.response(resSegments.segs[s], ts++);
  }
  c.close(ts++);
}), 2 * N, requestBytes + responseBytes, true);

report("Http1Parser (requests only)", measure((sink) => {
  const p = new Http1Parser("request", {
    bodyMaxSize: 131072, keepBody,
    onMessage: () => { sink.exchanges++; }, onError: () => { sink.errors++; },
  });
  for (let k = 0; k < N; k++) p.push(requests[k], ts++);
}), N, requestBytes, false);

report("Http1Parser (responses only)", measure((sink) => {
  const p = new Http1Parser("response", {
    bodyMaxSize: 131072, keepBody,
    onMessage: () => { sink.exchanges++; }, onError: () => { sink.errors++; },
  });
  for (let k = 0; k < N; k++) p.push(responses[k], ts++);
}), N, responseBytes, false);

console.log(`stream: ${N} requests (${(requestBytes / N).toFixed(0)} bytes avg) + ${N} responses ` +
  `(${(responseBytes / N).toFixed(0)} bytes avg), bodies kept (json), bun ${Bun.version}`);
