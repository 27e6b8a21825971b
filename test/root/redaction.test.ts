/**
 * Root end-to-end tests of redaction (issue 13) through the compiled binary: a Node server
 * started with `--api-key=…` on its command line gets a login request carrying Authorization:
 * Bearer, a Cookie, `?password=` and a JSON password, and answers with Set-Cookie and
 * {"access_token": …}. No secret may appear in `capture --json`, in a file exporter's output or
 * in what an HTTPS OTLP receiver decodes, while header names, query keys and body keys remain.
 * Hash mode gives the same hash after an agent restart; `capture --no-redact` shows raw values.
 */
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { BIN, rootSkipReason, TracerProcess, type SpanJson } from "../support/tracer.ts";
import { port, waitForPort, type Server } from "../support/servers.ts";
import { Cleanups, curlOk, onPort } from "../support/http-kit.ts";
import { makeTestCerts, removeTestCerts, type TestCerts } from "../support/certs.ts";
import { OtlpReceiver } from "../support/otlp-receiver.ts";
import { toYaml } from "../support/yaml.ts";

const SKIP = rootSkipReason();
if (SKIP) console.warn(`test/root/redaction.test.ts skipped: ${SKIP}`);

const c = new Cleanups();
afterEach(() => c.run());
setDefaultTimeout(60_000);

let certs: TestCerts;
beforeAll(() => {
  if (!SKIP) certs = makeTestCerts();
});
afterAll(() => {
  if (certs) removeTestCerts(certs);
});

const SECRETS = {
  bearer: "BEARER-SECRET-4f8a2c",
  cookie: "COOKIE-SECRET-77d1",
  query: "QUERY-SECRET-pw9",
  body: "BODY-SECRET-pw3",
  setCookie: "SETCOOKIE-SECRET-e41",
  accessToken: "ACCESS-SECRET-tok55",
  cmdline: "CMDLINE-SECRET-k0",
};

const LOGIN_APP = String.raw`
const http = require("http");
http.createServer((req, res) => {
  const parts = [];
  req.on("data", (c) => parts.push(c));
  req.on("end", () => {
    const body = JSON.stringify({ access_token: "${SECRETS.accessToken}", token_type: "Bearer", expires_in: 3600 });
    res.writeHead(200, { "Content-Type": "application/json", "Set-Cookie": "sid=${SECRETS.setCookie}; Path=/; HttpOnly", "Content-Length": Buffer.byteLength(body) });
    res.end(body);
  });
}).listen(Number(process.env.PORT), "127.0.0.1");
`;

async function startLoginServer(): Promise<Server> {
  const p = port();
  const dir = mkdtempSync(join(tmpdir(), "et-redact-node-"));
  writeFileSync(join(dir, "server.js"), LOGIN_APP);
  const proc = Bun.spawn(["/usr/bin/node", "server.js", `--api-key=${SECRETS.cmdline}`, "--port", String(p)], { cwd: dir, env: { ...process.env, PORT: String(p) }, stdout: "ignore", stderr: "inherit" });
  await waitForPort(p);
  return {
    pid: proc.pid,
    port: p,
    dir,
    async stop() {
      proc.kill("SIGKILL");
      await proc.exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function login(server: Server): void {
  const r = curlOk([
    "-H", `Authorization: Bearer ${SECRETS.bearer}`,
    "-H", `Cookie: session=${SECRETS.cookie}; theme=dark`,
    "-H", "Content-Type: application/json",
    "--data", JSON.stringify({ username: "bob", password: SECRETS.body }),
    `http://127.0.0.1:${server.port}/login?user=bob&password=${SECRETS.query}`,
  ]);
  expect(r.stdout).toContain(SECRETS.accessToken); // the client itself sees it: the agent must not pass it on
}

function expectNoSecret(text: string, where: string): void {
  for (const [kind, s] of Object.entries(SECRETS)) {
    if (text.includes(s)) throw new Error(`${where}: the ${kind} secret ${s} leaked`);
  }
}

/** Names stay: header names, query keys and body keys, with masked values. */
function expectShape(a: Record<string, unknown>, marker: RegExp): void {
  expect(String(a["http.request.header.authorization"])).toMatch(new RegExp(`^Bearer ${marker.source}$`));
  expect(String(a["http.request.header.cookie"])).toMatch(new RegExp(`^session=${marker.source}; theme=${marker.source}$`));
  expect(String(a["http.response.header.set-cookie"])).toMatch(new RegExp(`^sid=${marker.source}; Path=/; HttpOnly$`));
  expect(String(a["url.query"])).toMatch(new RegExp(`^user=bob&password=${marker.source}$`));
  const reqBody = JSON.parse(String(a["http.request.body"]));
  expect(reqBody.username).toBe("bob");
  expect(String(reqBody.password)).toMatch(marker);
  const resBody = JSON.parse(String(a["http.response.body"]));
  expect(String(resBody.access_token)).toMatch(marker);
  expect(resBody.token_type).toBe("Bearer");
  expect(String(a["process.command_line"])).toContain("--api-key=");
  expect(String(a["process.command_line"])).toContain(`--port `);
  const listed = String(a["ebpf.redacted"]).split(",");
  for (const n of ["http.request.header.authorization", "http.request.header.cookie", "http.response.header.set-cookie", "url.query:password", "http.request.body:password", "http.response.body:access_token", "process.command_line:api-key"]) {
    expect(listed).toContain(n);
  }
}

const MASKED = /\[REDACTED\]/;
const HASHED = /\[hmac:[0-9a-f]{16}\]/;

function tempDir(): string {
  return c.add(mkdtempSync(join(tmpdir(), "et-redact-")), (d) => rmSync(d, { recursive: true, force: true }));
}

async function captureOne(args: string[], server: Server): Promise<{ span: SpanJson; stdout: string; stderr: string }> {
  const t = await TracerProcess.capture(["--port", String(server.port), ...args]);
  try {
    login(server);
    const [span] = await t.waitForSpans(1, onPort(server.port));
    if (!span) throw new Error(`no span: ${t.stderr}`);
    return { span, stdout: t.stdoutLines.join("\n"), stderr: t.stderr };
  } finally {
    await t.stop();
  }
}

describe.skipIf(!!SKIP)("redaction through the compiled binary", () => {
  test("capture --json: no secret, names kept; --no-redact shows them", async () => {
    const server = c.add(await startLoginServer(), (s) => s.stop());
    const r = await captureOne([], server);
    expectNoSecret(r.stdout, "capture --json");
    expectShape(r.span.attributes, MASKED);

    const raw = await captureOne(["--no-redact"], server);
    expect(raw.span.attributes["http.request.header.authorization"]).toBe(`Bearer ${SECRETS.bearer}`);
    expect(raw.span.attributes["ebpf.redacted"]).toBeUndefined();
    expect(raw.stderr).toContain("--no-redact");
  });

  test("run with a file exporter: no secret in the file; /status and /probes of the running agent", async () => {
    const server = c.add(await startLoginServer(), (s) => s.stop());
    const dir = tempDir();
    const out = join(dir, "spans.jsonl");
    const cfgPath = join(dir, "cfg.yaml");
    const adminAddress = `127.0.0.1:${port()}`;
    const agentToken = "AGENT-TOKEN-SECRET-91";
    writeFileSync(cfgPath, toYaml({
      exporter: `file:${out}`,
      admin: { enabled: true, address: adminAddress },
      stats_interval: "1s",
      targets: [{ port: server.port }],
      agent_config: { reporting: { agent_token: agentToken, endpoint: "https://u:PASS-SECRET@collector.invalid:4318" } },
    }).replace(/^\n/, ""));
    chmodSync(cfgPath, 0o644);
    // ready once its admin endpoint listens (logged after "capture started")
    const t = c.add(await TracerProcess.start(["run", "-c", cfgPath], "admin endpoint"), (x) => x.stop("SIGTERM"));
    // the token-holding config is readable by everyone: a warning at start
    expect(t.stderr).toContain("holds agent_config.reporting.agent_token and is readable by everyone");
    const status = await (await fetch(`http://${adminAddress}/status`)).text();
    const metrics = await (await fetch(`http://${adminAddress}/metrics`)).text();
    for (const text of [status, metrics]) {
      expect(text).not.toContain(agentToken);
      expect(text).not.toContain("PASS-SECRET");
      expect(text).not.toContain(SECRETS.cmdline);
    }
    const probes = Bun.spawnSync([BIN, "probes", "--address", adminAddress, "-c", cfgPath]);
    expect(probes.exitCode).toBe(0);
    expect(probes.stdout.toString()).toMatch(/^KIND\s+ATTACH POINT/);
    expect(probes.stdout.toString()).toMatch(/(tracepoint|kprobe|kretprobe)\s+\S+/);
    login(server);
    const deadline = Date.now() + 10_000;
    let text = "";
    while (Date.now() < deadline) {
      try {
        text = readFileSync(out, "utf8");
      } catch {
        /* not yet */
      }
      if (text.includes("/login")) break;
      await Bun.sleep(50);
    }
    await t.stop("SIGTERM");
    text = readFileSync(out, "utf8");
    expectNoSecret(text, "file exporter");
    const span = text.split("\n").filter(Boolean).map((l) => JSON.parse(l)).find((s) => s.attributes["server.port"] === server.port);
    expect(span).toBeDefined();
    expectShape(span.attributes, MASKED);
    expect(t.stderr).toMatch(/"RedactedSpans":[1-9]/);
  });

  test("run with the OTLP exporter over HTTPS: no secret in what the receiver decodes", async () => {
    const server = c.add(await startLoginServer(), (s) => s.stop());
    const dir = tempDir();
    const rx = c.add(await OtlpReceiver.start({ tls: { cert: certs.server.cert, key: certs.server.key } }), (r) => r.close());
    const caPath = join(dir, "ca.pem");
    copyFileSync(certs.ca.cert, caPath);
    const cfgPath = join(dir, "cfg.yaml");
    writeFileSync(cfgPath, toYaml({
      exporter: "otlp",
      admin: { enabled: false },
      targets: [{ port: server.port }],
      spool: { path: join(dir, "spool") },
      agent_config: { ca_cert_file: caPath, reporting: { endpoint: `https://127.0.0.1:${rx.port}`, max_batch_delay: "200ms", encoding: "json", compression: "none" } },
    }).replace(/^\n/, ""));
    const t = c.add(await TracerProcess.start(["run", "-c", cfgPath], "capture started"), (x) => x.stop("SIGTERM"));
    login(server);
    await rx.waitForSpans(1, 15_000);
    await t.stop("SIGTERM");
    expectNoSecret(JSON.stringify(rx.spans), "OTLP receiver");
    const span = rx.spans.find((s) => (s.attributes["url.path"] as { stringValue?: string } | undefined)?.stringValue === "/login");
    expect(span).toBeDefined();
    const flat = Object.fromEntries(Object.entries(span!.attributes).map(([k, v]) => [k, (v as { stringValue?: string }).stringValue ?? JSON.stringify(v)]));
    expectShape(flat, MASKED);
  });

  test("run refuses a non-loopback admin address without opt-in (exit 78, naming the key)", () => {
    const dir = tempDir();
    const cfgPath = join(dir, "cfg.yaml");
    writeFileSync(cfgPath, toYaml({ exporter: "stdout", capture_all: true, admin: { address: "0.0.0.0:9464" } }).replace(/^\n/, ""));
    const r = Bun.spawnSync([BIN, "run", "-c", cfgPath], { stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(78);
    expect(r.stderr.toString()).toContain('key "admin.address": 0.0.0.0:9464 is not a loopback address');
    writeFileSync(cfgPath, "exporter: stdout\ncapture_all: true\n");
    chmodSync(cfgPath, 0o666);
    const w = Bun.spawnSync([BIN, "run", "-c", cfgPath], { stdout: "pipe", stderr: "pipe" });
    expect(w.exitCode).toBe(78);
    expect(w.stderr.toString()).toContain("refusing a world-writable config file");
  });

  test("hash mode: the same credential hashes the same after an agent restart; key file 0600", async () => {
    const server = c.add(await startLoginServer(), (s) => s.stop());
    const dir = tempDir();
    const keyFile = join(dir, "state", "redact.key");
    mkdirSync(join(dir, "state"), { mode: 0o700 });
    const cfgPath = join(dir, "cfg.yaml");
    writeFileSync(cfgPath, toYaml({ data_capture: { redact: { mode: "hash", key_file: keyFile } } }).replace(/^\n/, ""));
    const first = await captureOne(["-c", cfgPath], server);
    expectNoSecret(first.stdout, "hash mode");
    expectShape(first.span.attributes, HASHED);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    const second = await captureOne(["-c", cfgPath], server);
    for (const k of ["http.request.header.authorization", "http.request.header.cookie", "url.query", "http.response.body", "process.command_line"]) {
      expect(second.span.attributes[k]).toBe(first.span.attributes[k]);
    }
  });
});
