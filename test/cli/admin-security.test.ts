/**
 * The agent's own surfaces (issue 13): the admin endpoint's exposure rules (loopback only
 * without opt-in, bearer token, Host check), /probes and `ebpf-tracer probes`, /status without
 * secrets, and the config file permission checks.
 */
import { afterAll, describe, expect, spyOn, test } from "bun:test";
import { chmodSync, chownSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:net";
import { agentStatusProvider, probeFromSection, publicEndpoint, startAdminServer, type StatusProvider } from "../../src/cli/admin-server.ts";
import { formatProbes, probesCommand } from "../../src/cli/probes-command.ts";
import { configWarnings } from "../../src/cli/config-validate-command.ts";
import { loadConfig } from "../../src/config/config.ts";
import { configFileWarnings, refuseUnsafeConfigFile } from "../../src/config/file-security.ts";
import { TracerError } from "../../src/errors.ts";

const dir = mkdtempSync(join(tmpdir(), "admin-sec-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const provider: StatusProvider = {
  health: () => ({ ok: true, reasons: [] }),
  counters: () => ({ SpansWritten: 1 }),
  status: () => ({ version: "t" }),
  probes: () => [{ program: "tp_read", attach_point: "syscalls/sys_enter_read", kind: "tracepoint", object_sha256: "ab".repeat(32) }],
};

/** A raw HTTP/1.1 request (so the Host header is ours), the response head and body. */
function raw(url: string, request: string): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const s = connect(Number(u.port), u.hostname);
    let out = "";
    s.on("data", (d) => (out += d.toString()));
    s.on("end", () => resolve(out));
    s.on("close", () => resolve(out));
    s.on("error", reject);
    s.write(request);
    setTimeout(() => s.destroy(), 2000);
  });
}

describe("admin endpoint exposure", () => {
  test("a non-loopback bind is refused without allow_remote, and without a long enough token", () => {
    for (const a of ["0.0.0.0:0", ":0", "[::]:0", "10.0.0.1:0", "example.com:0"]) {
      expect(() => startAdminServer(a, provider)).toThrow(/key "admin\.address": .* is not a loopback address/);
    }
    expect(() => startAdminServer("0.0.0.0:0", provider, { allowRemote: true })).toThrow(/admin\.bearer_token/);
    expect(() => startAdminServer("0.0.0.0:0", provider, { allowRemote: true, bearerToken: "short" })).toThrow(/at least 16/);
    try {
      startAdminServer("0.0.0.0:0", provider);
    } catch (e) {
      expect((e as TracerError).code).toBe("CONFIG");
    }
  });

  test("loopback binds work for 127.x, ::1 and localhost", () => {
    for (const a of ["127.0.0.1:0", "127.0.0.9:0", "[::1]:0", "localhost:0"]) {
      const s = startAdminServer(a, provider);
      s.stop();
    }
  });

  test("with a bearer token every request needs it (401 otherwise); wrong tokens too", async () => {
    const token = "t0k3n-0123456789abcdef";
    const s = startAdminServer("127.0.0.1:0", provider, { bearerToken: token });
    try {
      expect((await fetch(`${s.url}/healthz`)).status).toBe(401);
      const r = await fetch(`${s.url}/healthz`, { headers: { authorization: "Bearer nope" } });
      expect(r.status).toBe(401);
      expect(r.headers.get("www-authenticate")).toContain("Bearer");
      expect((await fetch(`${s.url}/healthz`, { headers: { authorization: `Bearer ${token}x` } })).status).toBe(401);
      expect((await fetch(`${s.url}/status`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
      expect((await fetch(`${s.url}/metrics`, { headers: { authorization: `bearer ${token}` } })).status).toBe(200);
    } finally {
      s.stop();
    }
  });

  test("opted in with a token, a non-loopback bind works and requires the token", async () => {
    const token = "remote-token-0123456789";
    const s = startAdminServer("0.0.0.0:0", provider, { allowRemote: true, bearerToken: token });
    try {
      const port = new URL(s.url).port;
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(401);
      expect((await fetch(`http://127.0.0.1:${port}/healthz`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    } finally {
      s.stop();
    }
  });

  test("without a token, a non-loopback Host header is refused (DNS rebinding)", async () => {
    const s = startAdminServer("127.0.0.1:0", provider);
    try {
      expect(await raw(s.url, "GET /status HTTP/1.1\r\nHost: evil.example:9464\r\nConnection: close\r\n\r\n")).toStartWith("HTTP/1.1 403");
      expect(await raw(s.url, "GET /status HTTP/1.1\r\nHost: localhost:9464\r\nConnection: close\r\n\r\n")).toStartWith("HTTP/1.1 200");
      expect(await raw(s.url, "GET /status HTTP/1.1\r\nHost: [::1]:9464\r\nConnection: close\r\n\r\n")).toStartWith("HTTP/1.1 200");
      expect(await raw(s.url, "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")).toStartWith("HTTP/1.1 200");
    } finally {
      s.stop();
    }
  });
});

describe("/probes and ebpf-tracer probes", () => {
  test("the route lists the provider's probes; the command prints them", async () => {
    const s = startAdminServer("127.0.0.1:0", provider);
    try {
      const body = (await (await fetch(`${s.url}/probes`)).json()) as { probes: Record<string, unknown>[] };
      expect(body.probes[0]).toMatchObject({ program: "tp_read", kind: "tracepoint" });
      let out = "";
      const w = spyOn(process.stdout, "write").mockImplementation(((x: string) => ((out += x), true)) as never);
      let code: number;
      try {
        code = await probesCommand(new URL(s.url).host);
      } finally {
        w.mockRestore();
      }
      expect(code).toBe(0);
      expect(out).toContain("tracepoint");
      expect(out).toContain("syscalls/sys_enter_read");
      expect(out).toContain("abababababababab");
    } finally {
      s.stop();
    }
  });
  test("a provider without probes answers an empty list; nothing listening is exit 3", async () => {
    const s = startAdminServer("127.0.0.1:0", { ...provider, probes: undefined });
    try {
      expect(await (await fetch(`${s.url}/probes`)).json()).toEqual({ probes: [] });
    } finally {
      s.stop();
    }
    const w = spyOn(process.stdout, "write").mockImplementation((() => true) as never);
    try {
      expect(await probesCommand("127.0.0.1:1")).toBe(3);
    } finally {
      w.mockRestore();
    }
  });
  test("sections become kinds and attach points", () => {
    expect(probeFromSection("tracepoint/syscalls/sys_enter_read")).toEqual({ program: "tracepoint/syscalls/sys_enter_read", attach_point: "syscalls/sys_enter_read", kind: "tracepoint" });
    expect(probeFromSection("kretsyscall/connect")).toMatchObject({ kind: "kretprobe", attach_point: "connect" });
    expect(probeFromSection("uprobe//usr/lib/libssl.so.3:SSL_write")).toMatchObject({ kind: "uprobe", target: "/usr/lib/libssl.so.3" });
    expect(formatProbes([])).toBe("no probes attached\n");
  });
});

describe("/status holds no secret", () => {
  test("endpoint credentials and query are cut; no command line, token or header appears", () => {
    expect(publicEndpoint("https://user:pa55@collector.example:4318/v1/traces?token=abc#x")).toBe("https://collector.example:4318/v1/traces");
    expect(publicEndpoint("user:pa55@collector:4318")).toBe("collector:4318");
    expect(publicEndpoint("collector:4318")).toBe("collector:4318");
    const agent = {
      startedAt: 0,
      stats: () => ({}),
      kernelCounters: () => ({ probes: {} }),
      selector: { selected: () => [{ pid: 7, name: "node", exe: "/usr/bin/node", mode: "ingress", cmdline: "node --api-key=SECRETKEY" } as never] },
      kernel: { attachMode: "tracepoints", buffer: "ringbuf", libbpfVersion: "v1.1", attached: ["tracepoint/syscalls/sys_enter_read"] },
      currentConfig: { exporter: "otlp", agent_config: { reporting: { endpoint: "https://u:SECRETPASS@c:4318/?k=SECRETQ", agent_token: "SECRETTOKEN", headers: { x: "SECRETHDR" } } } },
    };
    const p = agentStatusProvider(agent, { version: "t", btfSource: "kernel" });
    const text = JSON.stringify(p.status()) + JSON.stringify(p.counters()) + JSON.stringify(p.probes!());
    expect(text).not.toMatch(/SECRET/);
    expect(p.probes!()).toEqual([{ program: "tracepoint/syscalls/sys_enter_read", attach_point: "syscalls/sys_enter_read", kind: "tracepoint" }]);
  });
});

describe("config file permissions", () => {
  const file = (name: string, text: string, mode: number) => {
    const f = join(dir, name);
    writeFileSync(f, text);
    chmodSync(f, mode);
    return f;
  };
  test("world-writable is refused, naming the file", () => {
    const f = file("ww.yaml", "mode: ingress\n", 0o666);
    expect(() => loadConfig(f)).toThrow(`${f}: refusing a world-writable config file (mode 0666)`);
  });
  test("not owned by root while running as root is refused", () => {
    expect(() => refuseUnsafeConfigFile("/x.yaml", { mode: 0o600, uid: 1000, isFile: true }, 0)).toThrow("owned by uid 1000 while running as root");
    expect(() => refuseUnsafeConfigFile("/x.yaml", { mode: 0o600, uid: 1000, isFile: true }, 1000)).not.toThrow();
    expect(() => refuseUnsafeConfigFile("/x.yaml", { mode: 0o666, uid: 0, isFile: false }, 0)).not.toThrow();
    if (process.geteuid?.() === 0) {
      const f = file("owned.yaml", "mode: ingress\n", 0o600);
      chownSync(f, 1000, 1000);
      expect(() => loadConfig(f)).toThrow("owned by uid 1000");
    }
  });
  test("a token in a group- or world-readable file is a warning (check, config validate, run)", () => {
    const f = file("tok.yaml", "agent_config:\n  reporting:\n    agent_token: abc\nexporter: stdout\ncapture_all: true\n", 0o644);
    const w = configWarnings(loadConfig(f));
    expect(w.join("\n")).toContain(`${f} holds agent_config.reporting.agent_token and is readable by everyone (mode 0644)`);
    chmodSync(f, 0o640);
    expect(configWarnings(loadConfig(f)).join("\n")).toContain("readable by its group");
    chmodSync(f, 0o600);
    expect(configWarnings(loadConfig(f))).toEqual([]);
    const g = file("notok.yaml", "exporter: stdout\ncapture_all: true\n", 0o644);
    expect(configWarnings(loadConfig(g))).toEqual([]);
    expect(configFileWarnings("/y", { mode: 0o644, uid: 0, isFile: true }, ["admin.bearer_token"])[0]).toContain("admin.bearer_token");
  });
});
