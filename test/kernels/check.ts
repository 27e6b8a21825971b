/**
 * Judges one kernel-matrix VM run from its serial log (lines "KT ..." written by test/kernels/init).
 *
 *   bun test/kernels/check.ts SERIAL_LOG --mode MODE --requests "PATH PATH ..."
 *
 * MODE is "default" or features joined by "+": kprobes, perf, bundled, download. Prints one line
 * "pass spans=N attach=... buffer=... btf=..." or "fail spans=N ... why=<reasons, to the end of
 * the line>" and exits 0 / 1.
 *
 * Checks: the agent started and said "capture started"; attach mode, buffer and BTF source are
 * what the mode asks for; exactly one server span on :8080 per request, each with
 * http.request.method GET, the request's url.path (and url.query), the status nginx answers (404
 * for /missing*, else 200), process.executable.name nginx and, for /hello.txt and /echo, the
 * response body; the agent exited 0 after SIGINT.
 */
import { readFileSync } from "node:fs";

interface Span {
  name: string;
  kind: string;
  attributes: Record<string, string | number | boolean>;
}

function arg(name: string, def = ""): string {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] ?? def : def;
}

const logFile = process.argv[2];
if (!logFile) {
  console.error("usage: bun test/kernels/check.ts SERIAL_LOG --mode MODE --requests 'PATHS'");
  process.exit(2);
}
const mode = arg("--mode", "default");
const requests = arg("--requests", "/hello.txt").split(/\s+/).filter(Boolean);
const features = new Set(mode.split("+").filter((f) => f && f !== "default"));

const lines = readFileSync(logFile, "latin1").split(/\r?\n/);
const kt = lines.filter((l) => l.startsWith("KT ")).map((l) => l.slice(3));
const why: string[] = [];

const result = kt.findLast((l) => l.startsWith("RESULT "));
const fields = Object.fromEntries(
  (result ?? "").slice(7).split(" ").map((kv) => kv.split("=") as [string, string]).filter((kv) => kv.length === 2),
);

let started: Record<string, unknown> | undefined;
const logLines = kt.filter((l) => l.startsWith("log ")).map((l) => l.slice(4));
for (const l of logLines) {
  try {
    const j = JSON.parse(l.slice(l.indexOf("{")));
    if (typeof j === "object" && j && (j.msg === "capture started" || j.message === "capture started")) started = j;
  } catch {
    if (l.includes("capture started")) {
      try { started = JSON.parse(l.slice(l.indexOf("{", l.indexOf("capture started")))); } catch { /* not JSON */ }
    }
  }
}

const spans: Span[] = [];
for (const l of kt.filter((x) => x.startsWith("span "))) {
  try {
    spans.push(JSON.parse(l.slice(5)));
  } catch {
    why.push("unparsable span line");
  }
}

if (!result) why.push("no RESULT line (guest did not finish: timeout or crash)");
else if (fields.status === "fail") why.push(`guest: ${fields.reason ?? "failed"}`);
// the agent's own words when it stopped: its last non-JSON line and the verifier's first complaint
const plain = logLines.filter((l) => !l.startsWith("{") && !l.startsWith("capturing"));
const verifier = plain[plain.findIndex((l) => l.includes("BEGIN PROG LOAD LOG")) + 1];
const fatal = plain.findLast((l) => l.startsWith("ebpf-tracer:"));
if (fatal) why.push(`agent: ${fatal}${verifier && plain.some((l) => l.includes("BEGIN PROG LOAD LOG")) ? ` [verifier: ${verifier}]` : ""}`);
if (result && fields.agent_exit !== undefined && fields.agent_exit !== "0") why.push(`agent exit ${fields.agent_exit}`);
if (!started) why.push('no "capture started" log line');

const attach = String(started?.attachMode ?? "?");
const buffer = String(started?.buffer ?? "?");
const btf = String(started?.btf ?? "?");
if (started) {
  const wantAttach = features.has("kprobes") ? "kprobes" : "tracepoints";
  const wantBuffer = features.has("perf") ? "perf" : "ringbuf";
  const wantBtf = features.has("bundled") ? "bundled" : features.has("download") ? "downloaded" : "kernel";
  if (attach !== wantAttach) why.push(`attachMode ${attach}, want ${wantAttach}`);
  if (buffer !== wantBuffer) why.push(`buffer ${buffer}, want ${wantBuffer}`);
  if (btf !== wantBtf) why.push(`btf ${btf}, want ${wantBtf}`);
}

/** What the guest's nginx answers (test/kernels/lib.sh: web root and nginx.conf). */
function expectedBody(path: string, query: string | undefined): string | undefined {
  if (path === "/hello.txt") return "hello from the kernel matrix\n";
  if (path === "/echo") return `{"query":"${query ?? ""}"}\n`;
  return undefined;
}
const server = spans.filter((s) => s.kind === "server" && s.attributes["server.port"] === 8080);
if (started) judgeSpans();

function judgeSpans(): void {
  if (server.length !== requests.length) why.push(`${server.length} server spans on :8080, want ${requests.length}`);
  for (const r of requests) {
    const [path, query] = r.split("?") as [string, string | undefined];
    const status = path.startsWith("/missing") ? 404 : 200;
    const hit = server.find((s) => s.attributes["url.path"] === path);
    if (!hit) { why.push(`no span for ${path}`); continue; }
    const a = hit.attributes;
    if (a["http.request.method"] !== "GET") why.push(`${path}: method ${a["http.request.method"]}`);
    if (query !== undefined && a["url.query"] !== query) why.push(`${path}: url.query ${a["url.query"]}, want ${query}`);
    if (a["http.response.status_code"] !== status) why.push(`${path}: status ${a["http.response.status_code"]}, want ${status}`);
    if (a["process.executable.name"] !== "nginx") why.push(`${path}: process.executable.name ${a["process.executable.name"]}`);
    const body = expectedBody(path, query);
    if (body !== undefined && a["http.response.body"] !== body) why.push(`${path}: response body ${JSON.stringify(a["http.response.body"])}`);
  }
}

const summary = `spans=${spans.length} attach=${attach} buffer=${buffer} btf=${btf}`;
if (why.length === 0) {
  console.log(`pass ${summary}`);
  process.exit(0);
}
console.log(`fail ${summary} why=${why.join("; ").replace(/\s+/g, " ")}`);
process.exit(1);
