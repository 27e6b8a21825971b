/**
 * User-space throughput of the agent: ring-buffer records in, spans out, through the real
 * Pipeline (decoder, connection table, stream reassembly, HTTP/1 parser and pairing, span
 * builder) into a sink that only counts spans. No kernel involved.
 *
 *   bun bench/replay.ts [--seconds 5] [--connections 2000] [--per-conn 50] [--open 64]
 *                       [--write FILE] [--file FILE] [--sink count|json|otlp] [--compression gzip|zstd|none]
 *                       [--api|--api-noop] [--no-redact] [--compare-redact] [--no-pin]
 *
 * Default: builds a synthetic recording of realistic JSON API traffic with test/support/records.ts:
 * per connection an open record, then keep-alive exchanges (request: method, path with query,
 * ~10 headers, small JSON body on POST/PUT; response: ~8 headers, JSON body, sometimes chunked),
 * each message one data record, then a close record with the final stream positions; `--open`
 * connections are in flight at once and their records interleave, as several worker threads'
 * would. `--write FILE` saves it in the `capture --record` format.
 *
 * `--file FILE` replays a real recording made with `dist/ebpf-tracer capture --record FILE`
 * (frames: u32 little-endian length + record, see src/kernel/event-source.ts ReplaySource) instead.
 *
 * The recording is replayed whole, round after round (a fresh Pipeline each round, so every
 * round sees the opens again), for at least `--seconds`; one warm-up round is not counted.
 * `--sink json` formats every span as `capture --json` does (jsonLine) and discards the line;
 * `--sink otlp` encodes them as `run`'s exporter does (protobuf as spans join a batch, gzip per
 * 512) and discards the batches,
 * to show what the JSON output costs on top of the pipeline. `--api` measures the route/metrics
 * stage (src/metrics/tap.ts ApiTap: http.route templates + RED histograms, no inventory file, in
 * front of the sink as `run` has it; its state lives across passes like an agent's): passes
 * alternate without and with it, each measured in CPU time of this process (other processes
 * on a busy machine inflate wall time, not this), and the medians of both are printed with the
 * difference.
 * to show what the JSON output costs on top of the pipeline. Spans go through the RedactingSink
 * with the default rules (data_capture.redact), as in `run` and `capture`, unless --no-redact.
 * `--compare-redact` alternates rounds with and without redaction and prints the CPU cost of each
 * (fastest round), which stays meaningful on a busy machine.
 * Pinned to CPU 0 with taskset (re-exec) unless --no-pin. Prints exchanges/s (goal >= 50,000/s
 * on one core), MB/s of records and of HTTP payload, ms per 100k exchanges and CPU time / wall
 * time (above 1.0 means GC or other threads used a second core).
 */
import { readFileSync, writeFileSync, existsSync } from "node:fs";
import { Pipeline } from "../src/agent/pipeline.ts";
import { ReplaySource, encodeRecording } from "../src/kernel/event-source.ts";
import { defaultConfig } from "../src/config/config.ts";
import { DIR_RECV, DIR_SEND, MODE_BOTH, ROLE_CLIENT, ROLE_SERVER, LAYOUT, EV } from "../src/kernel/event-layout.ts";
import type { Span, SpanSink } from "../src/spans/span.ts";
import { jsonLine } from "../src/export/stdout.ts";
import { OpenBatch, type Compression } from "../src/export/otlp/batch.ts";
import { ApiTap } from "../src/metrics/tap.ts";
import { RedactingSink } from "../src/spans/redact.ts";
import { request, response } from "./api-traffic.ts";
import { connRecord, dataRecord, execRecord } from "../test/support/records.ts";

function arg(name: string, def?: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : def;
}
const flag = (name: string) => process.argv.includes(name);

// ------------------------------------------------------------------ pin to one core

if (!flag("--no-pin") && !process.env.ET_BENCH_PINNED && existsSync("/usr/bin/taskset")) {
  const r = Bun.spawnSync(["/usr/bin/taskset", "-c", "0", process.execPath, ...process.argv.slice(1)], {
    stdio: ["inherit", "inherit", "inherit"],
    env: { ...process.env, ET_BENCH_PINNED: "1" },
  });
  process.exit(r.exitCode ?? 1);
}

const SECONDS = Number(arg("--seconds", "5"));
const CONNECTIONS = Number(arg("--connections", "2000"));
const PER_CONN = Number(arg("--per-conn", "50"));
const OPEN = Number(arg("--open", "64"));
const SINK = arg("--sink", "count");
/** --compression gzip|zstd|none: how --sink otlp compresses its batches (default gzip, as `run`) */
const COMPRESSION = arg("--compression", "gzip") as Compression;
if (!["gzip", "zstd", "none"].includes(COMPRESSION)) throw new Error(`--compression gzip|zstd|none, got ${COMPRESSION}`);
if (SINK !== "count" && SINK !== "json" && SINK !== "otlp") throw new Error(`--sink count|json|otlp, got ${SINK}`);

// ------------------------------------------------------------------ synthetic traffic

const enc = new TextEncoder();
interface Synthetic {
  records: Uint8Array[];
  exchanges: number;
  payloadBytes: number;
}

/** `connections` connections of `perConn` exchanges, `open` of them interleaved at a time. */
function synthesize(connections: number, perConn: number, open: number): Synthetic {
  const records: Uint8Array[] = [];
  const TGIDS = [4101, 4102, 4103, 4104];
  for (const tgid of TGIDS) records.push(execRecord(tgid, "/usr/bin/orders-api", ["/usr/bin/orders-api", "--port", "8080"]));
  let ts = 1_000_000;
  let payloadBytes = 0;
  let k = 0;
  interface Live { id: number; tgid: number; left: number; pos: [number, number]; port: number }
  const live: Live[] = [];
  let nextId = 1;
  const openOne = () => {
    const c: Live = { id: nextId, tgid: TGIDS[nextId % TGIDS.length]!, left: perConn, pos: [0, 0], port: 30000 + (nextId % 30000) };
    nextId++;
    records.push(connRecord("open", { connId: c.id, tgid: c.tgid, fd: 10 + (c.id % 1000), role: ROLE_SERVER, localPort: 8080, remotePort: c.port, remote: [10, 1, (c.id >> 8) & 255, c.id & 255], comm: "orders-api" }, (ts += 1000)));
    live.push(c);
  };
  while (live.length < open && nextId <= connections) openOne();
  while (live.length) {
    for (let i = 0; i < live.length; i++) {
      const c = live[i]!;
      const req = enc.encode(request(k));
      const res = enc.encode(response(k));
      k++;
      records.push(dataRecord(c.id, c.tgid, DIR_RECV, c.pos[DIR_RECV], req, { tsNs: (ts += 20_000) }));
      records.push(dataRecord(c.id, c.tgid, DIR_SEND, c.pos[DIR_SEND], res, { tsNs: (ts += 180_000) }));
      c.pos[DIR_RECV] += req.length;
      c.pos[DIR_SEND] += res.length;
      payloadBytes += req.length + res.length;
      if (--c.left === 0) {
        records.push(connRecord("close", { connId: c.id, tgid: c.tgid, fd: 10 + (c.id % 1000) }, (ts += 1000), c.pos[DIR_SEND], c.pos[DIR_RECV]));
        live.splice(i--, 1);
        if (nextId <= connections) openOne();
      }
    }
  }
  return { records, exchanges: k, payloadBytes };
}

// ------------------------------------------------------------------ the recording

let recording: Uint8Array;
let source: string;
const file = arg("--file");
if (file) {
  recording = new Uint8Array(readFileSync(file));
  source = `${file} (real capture)`;
} else {
  const t0 = performance.now();
  const syn = synthesize(CONNECTIONS, PER_CONN, OPEN);
  recording = encodeRecording(syn.records);
  source = `synthetic: ${CONNECTIONS} connections x ${PER_CONN} exchanges, ${OPEN} interleaved (built in ${(performance.now() - t0).toFixed(0)} ms)`;
  const out = arg("--write");
  if (out) {
    writeFileSync(out, recording);
    console.log(`wrote ${out}`);
  }
}

/** Records and data payload bytes in a recording (from the record headers). */
function census(rec: Uint8Array): { records: number; dataBytes: number } {
  let records = 0;
  let dataBytes = 0;
  new ReplaySource(rec).drain((b, at, len) => {
    const r = b.subarray(at, at + len);
    records++;
    if (r.length >= LAYOUT.data_event.data && new DataView(r.buffer, r.byteOffset, r.byteLength).getUint32(0, true) === EV.DATA) {
      dataBytes += r.length - LAYOUT.data_event.data;
    }
  }, Number.MAX_SAFE_INTEGER);
  return { records, dataBytes };
}
const { records: recordCount, dataBytes } = census(recording);

// ------------------------------------------------------------------ replay

class CountSink implements SpanSink {
  spans = 0;
  outBytes = 0;
  private readonly json = SINK === "json";
  /** --sink otlp: the exporter's batch (protobuf encoded as spans join, gzip at 512 spans) */
  private readonly batch = SINK === "otlp" ? new OpenBatch({ encoding: "protobuf", compression: COMPRESSION, fallbackService: "replay" }) : undefined;
  private seq = 0;
  export(s: Span): void {
    this.spans++;
    if (this.json) this.outBytes += jsonLine(s).length + 1;
    else if (this.batch) {
      this.batch.add(s);
      if (this.batch.count >= 512) this.outBytes += this.batch.seal(++this.seq).body.length;
    }
  }
  async shutdown(): Promise<void> {}
  stats(): Record<string, number> {
    return { spans: this.spans };
  }
}

const cfg = defaultConfig();
cfg.metrics.export_interval = 0;
// --api-noop: the same A/B with the stage disabled (metrics.enabled: false, a pass-through), to see
// the difference the machine alone makes between the two halves.
if (flag("--api-noop")) cfg.metrics.enabled = false;
const apiTap = flag("--api") || flag("--api-noop") ? new ApiTap(new CountSink(), cfg) : undefined;
const WALL_OFFSET = BigInt(Date.now()) * 1_000_000n;

const REDACT = !flag("--no-redact");

/** One pass over the recording. The sink chain is the agent's: redaction, then the route/metrics
 * stage (with --api), then the counting sink. */
function round(o: { api?: boolean; redact?: boolean } = {}): { spans: number; pipeline: Pipeline } {
  const counter = new CountSink();
  apiTap?.swap(counter);
  const staged: SpanSink = o.api && apiTap ? apiTap : counter;
  const sink = (o.redact ?? REDACT) ? RedactingSink.fromConfig(staged, cfg) : staged;
  const pipeline = new Pipeline(
    {
      bodyMaxSize: cfg.data_capture.body_max_size_bytes,
      allowedContentTypes: cfg.data_capture.allowed_content_types,
      span: { hostName: "bench", serviceName: "", environment: "bench", customAttributes: {}, toWallNs: (n) => n + WALL_OFFSET },
      modeOf: () => MODE_BOTH,
      classify: (m) => (m.localPort === 8080 ? ROLE_SERVER : ROLE_CLIENT),
    },
    sink,
  );
  const src = new ReplaySource(recording);
  const handle = (b: Uint8Array, at: number, len: number) => pipeline.handleAt(b, at, len);
  while (src.drain(handle, 4096) > 0) {
    /* all of it */
  }
  return { spans: counter.spans, pipeline };
}

const warm = round({ api: true });
const counters = warm.pipeline.counters;
console.log(`recording: ${source}; sink: ${SINK === "json" ? "capture --json lines, discarded" : SINK === "otlp" ? `OTLP protobuf batches of 512, ${COMPRESSION}, discarded` : "count only"}${REDACT ? ", redacted (default rules)" : ", not redacted"}${apiTap ? "; with the route/metrics stage (--api)" : ""}`);
console.log(`  ${recordCount} records, ${(recording.length / 1e6).toFixed(1)} MB, ${(dataBytes / 1e6).toFixed(1)} MB of HTTP payload, ${warm.spans} spans per pass`);
console.log(`  parse errors: request ${counters.ReqParsingErrors}, response ${counters.ResParsingErrors}; partial spans ${counters.PartialSpans}; lost bytes ${counters.LostBytes}; decode errors ${counters.DecodeErrors}`);
if (warm.spans === 0) {
  console.error("no spans produced: nothing to measure");
  process.exit(1);
}

if (apiTap) {
  // A/B: alternate passes without / with the stage; medians of per-pass rates
  const rates: [number[], number[]] = [[], []];
  const tA = performance.now();
  for (let i = 0; performance.now() - tA < SECONDS * 2000 || i < 6; i++) {
    const withApi = i % 2 === 1;
    Bun.gc(true);
    const c0 = process.cpuUsage();
    const n = round({ api: withApi }).spans;
    const c = process.cpuUsage(c0);
    rates[withApi ? 1 : 0]!.push(n / ((c.user + c.system) / 1e6));
  }
  const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[xs.length >> 1]!;
  const [off, on] = [median(rates[0]), median(rates[1])];
  const [bestOff, bestOn] = [Math.max(...rates[0]), Math.max(...rates[1])];
  const fmt = (x: number) => Math.round(x).toLocaleString("en-US");
  console.log(`route/metrics stage (A/B, ${rates[0].length}+${rates[1].length} alternating passes, per second of this process's CPU time):`);
  console.log(`  medians: without ${fmt(off)} exchanges/CPU-s, with ${fmt(on)}: ${((1 - on / off) * 100).toFixed(1)} % slower (budget 10 %)`);
  console.log(`  best:    without ${fmt(bestOff)} exchanges/CPU-s, with ${fmt(bestOn)}: ${((1 - bestOn / bestOff) * 100).toFixed(1)} % slower`);
  console.log(`  stage state: ${JSON.stringify(apiTap.stats())}`);
  process.exit(0);
}

if (flag("--compare-redact")) {
  // Redaction's share on a shared machine: rounds with and without it alternate in this process
  // and each is timed in CPU time; the fastest round of each kind is compared (other load only
  // ever makes a round slower).
  const cpuMsOf = (redact: boolean): number => {
    Bun.gc(true);
    const c0 = process.cpuUsage();
    round({ redact });
    const c = process.cpuUsage(c0);
    return (c.user + c.system) / 1000;
  };
  const times: Record<"on" | "off", number[]> = { on: [], off: [] };
  const t0c = performance.now();
  while (performance.now() - t0c < SECONDS * 2000 || times.on.length < 3) {
    times.off.push(cpuMsOf(false));
    times.on.push(cpuMsOf(true));
  }
  const best = (a: number[]) => Math.min(...a);
  const per100k = (ms: number) => ((ms / warm.spans) * 100_000).toFixed(0);
  console.log(`compare-redact: ${times.on.length} rounds each, fastest round in CPU ms per 100k exchanges`);
  console.log(`  without redaction ${per100k(best(times.off))}, with redaction ${per100k(best(times.on))}: +${((best(times.on) / best(times.off) - 1) * 100).toFixed(1)} %`);
  process.exit(0);
}

Bun.gc(true);
const cpu0 = process.cpuUsage();
const t0 = performance.now();
let rounds = 0;
let spans = 0;
while (performance.now() - t0 < SECONDS * 1000 || rounds < 3) {
  spans += round().spans;
  rounds++;
}
const wallMs = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
const cpuMs = (cpu.user + cpu.system) / 1000;

const perSec = spans / (wallMs / 1000);
const rows: [string, string][] = [
  ["passes", `${rounds} in ${(wallMs / 1000).toFixed(2)} s`],
  ["exchanges/s", `${Math.round(perSec).toLocaleString("en-US")} (goal >= 50,000)`],
  ["ms per 100k exchanges", (100_000 / perSec * 1000).toFixed(0)],
  ["records/s", Math.round((recordCount * rounds) / (wallMs / 1000)).toLocaleString("en-US")],
  ["MB/s of records", ((recording.length * rounds) / 1e6 / (wallMs / 1000)).toFixed(1)],
  ["MB/s of HTTP payload", ((dataBytes * rounds) / 1e6 / (wallMs / 1000)).toFixed(1)],
  ["CPU time / wall time", (cpuMs / wallMs).toFixed(2)],
  ["heap after", `${(process.memoryUsage().heapUsed / 1e6).toFixed(0)} MB`],
];
for (const [k, v] of rows) console.log(`${k.padEnd(24)} ${v}`);
console.log(perSec >= 50_000 ? "PASS: >= 50,000 exchanges/s" : "BELOW GOAL: < 50,000 exchanges/s");
