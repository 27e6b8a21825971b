/**
 * install.sh without a real systemd: every path goes under EBPF_TRACER_INSTALL_ROOT, and
 * systemctl, id and journalctl are stubs on PATH that record their
 * calls and keep the service's state in files. The binary is a small script that answers
 * `check`, `version` and `status`. The real thing (systemd as PID 1, the real binary) is
 * test/root/install.test.ts.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadConfig } from "../../src/config/config.ts";

const REPO = join(import.meta.dir, "..", "..");
const SCRIPT = join(REPO, "install.sh");
const work = mkdtempSync(join(tmpdir(), "install-sh-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const STUBS: Record<string, string> = {
  systemctl: `#!/bin/bash
S=$STUB_STATE
echo "$*" >> "$S/calls"
state() { cat "$S/state" 2>/dev/null || echo inactive; }
start() { if [[ -n \${STUB_START_FAIL:-} ]]; then echo failed > "$S/state"; exit 1; fi; echo active > "$S/state"; echo "$1" >> "$S/starts"; }
case $1 in
  --version) echo "systemd \${STUB_SYSTEMD_VERSION:-252} (252.39-1~deb12u2)";;
  daemon-reload|reset-failed|status) ;;
  enable) touch "$S/enabled"; if [[ $2 == --now ]]; then start enable; fi;;
  disable) rm -f "$S/enabled"; if [[ $2 == --now ]]; then echo inactive > "$S/state"; fi;;
  start) start start;;
  restart) start restart;;
  stop) echo inactive > "$S/state";;
  is-enabled) [[ -f "$S/enabled" ]];;
  is-active) [[ $(state) == active ]];;
  show) if [[ "$*" == *--value* ]]; then state; else printf 'ActiveState=%s\\nSubState=running\\nMainPID=4242\\nStatusText=capturing\\n' "$(state)"; fi;;
  *) echo "stub systemctl: unexpected $*" >&2; exit 1;;
esac
`,
  id: `#!/bin/sh\nif [ "$1" = -u ]; then echo "\${STUB_UID:-0}"; else /usr/bin/id "$@"; fi\n`,
  journalctl: `#!/bin/sh\nexit 0\n`,
};

/** A stand-in for the agent binary; FAKE_CHECK_EXIT / FAKE_CHECK_OUT script its preflight. */
function fakeBinary(path: string, marker = "v1", checkExit = 0, checkOut = "capture can work on this host"): string {
  writeFileSync(
    path,
    `#!/bin/sh
# ${marker}
case $1 in
  check) echo "${checkOut}"; exit ${checkExit};;
  version) echo "ebpf-tracer 0.1.0-${marker}";;
  status) echo "ebpf-tracer: running, healthy"; exit 0;;
  *) echo "error: unknown command '$1'" >&2; exit 2;;
esac
`,
  );
  chmodSync(path, 0o755);
  return path;
}

interface Box {
  root: string;
  state: string;
  env: Record<string, string>;
  run(args: string[], extra?: Record<string, string>): { code: number; out: string; err: string };
  /** the same without blocking this process (when it also serves the downloads) */
  runAsync(args: string[], extra?: Record<string, string>): Promise<{ code: number; out: string; err: string }>;
  calls(): string[];
  /** systemctl calls that change something */
  mutations(): string[];
  starts(): string[];
}

let boxes = 0;
function box(opts: { systemd?: boolean } = {}): Box {
  const base = join(work, `box${++boxes}`);
  const root = join(base, "root");
  const state = join(base, "state");
  const stubs = join(base, "stubs");
  for (const d of [root, state, stubs]) mkdirSync(d, { recursive: true });
  if (opts.systemd !== false) mkdirSync(join(root, "run/systemd/system"), { recursive: true });
  for (const [name, text] of Object.entries(STUBS)) {
    writeFileSync(join(stubs, name), text);
    chmodSync(join(stubs, name), 0o755);
  }
  const env: Record<string, string> = {
    PATH: `${stubs}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
    HOME: base,
    STUB_STATE: state,
    EBPF_TRACER_INSTALL_ROOT: root,
    EBPF_TRACER_HEALTH_TIMEOUT: "5",
    EBPF_TRACER_KERNEL_RELEASE: "6.1.0-13-amd64",
    EBPF_TRACER_MACHINE: "x86_64",
  };
  const calls = () => (existsSync(join(state, "calls")) ? readFileSync(join(state, "calls"), "utf8").trim().split("\n").filter(Boolean) : []);
  return {
    root,
    state,
    env,
    run(args, extra = {}) {
      const p = Bun.spawnSync(["bash", SCRIPT, ...args], { env: { ...env, ...extra }, stdin: "ignore", cwd: base });
      return { code: p.exitCode ?? -1, out: p.stdout.toString(), err: p.stderr.toString() };
    },
    async runAsync(args, extra = {}) {
      const p = Bun.spawn(["bash", SCRIPT, ...args], { env: { ...env, ...extra }, stdin: "ignore", stdout: "pipe", stderr: "pipe", cwd: base });
      const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      return { code, out, err };
    },
    calls,
    mutations: () => calls().filter((c) => !/^(--version|show|is-enabled|is-active|status)\b/.test(c)),
    starts: () => (existsSync(join(state, "starts")) ? readFileSync(join(state, "starts"), "utf8").trim().split("\n") : []),
  };
}

/** Every file under dir, relative, sorted. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(join(d, e.name), r);
      else out.push(r);
    }
  };
  if (existsSync(dir)) walk(dir, "");
  return out.sort();
}

const mode = (p: string) => (statSync(p).mode & 0o777).toString(8);
const BASE_ARGS = ["--endpoint", "collector.example:4318", "--service-name", "shop", "--environment", "prod", "--exe", "nginx", "--exe", "/usr/bin/python3"];

describe("install.sh static checks", () => {
  test("shellcheck is clean", () => {
    const sc = Bun.which("shellcheck");
    if (!sc) {
      console.log("SKIP shellcheck: not installed (apt-get install shellcheck)");
      return;
    }
    const files = [SCRIPT, ...["run.sh", "lib.sh", "release.sh"].map((f) => join(REPO, "test/install", f))].filter((f) => existsSync(f));
    const p = Bun.spawnSync([sc, "-x", ...files]);
    expect(p.stdout.toString() + p.stderr.toString()).toBe("");
    expect(p.exitCode).toBe(0);
  });

  test("--help lists every flag; bad flags are usage errors", () => {
    const b = box();
    const help = b.run(["--help"]);
    expect(help.code).toBe(0);
    for (const f of ["--endpoint", "--token", "--ca-cert", "--service-name", "--environment", "--binary", "--version", "--download-url", "--from-source", "--upgrade", "--uninstall", "--purge", "--dry-run", "--yes"]) {
      expect(help.out).toContain(f);
    }
    expect(b.run(["--bogus"])).toMatchObject({ code: 2, err: expect.stringContaining("unknown argument: --bogus") });
    expect(b.run(["--endpoint"])).toMatchObject({ code: 2, err: expect.stringContaining("--endpoint needs a value") });
    expect(b.run(["--binary", "x", "--from-source"])).toMatchObject({ code: 2, err: expect.stringContaining("only one of") });
    expect(b.run(["--version", "1.0"])).toMatchObject({ code: 2, err: expect.stringContaining("needs --download-url") });
    expect(b.run(["--purge"])).toMatchObject({ code: 2, err: expect.stringContaining("--purge goes with --uninstall") });
    expect(b.run(["--mode", "sideways"])).toMatchObject({ code: 78, err: expect.stringContaining("--mode must be") });
    expect(b.run(["--endpoint", "not a host"])).toMatchObject({ code: 78, err: expect.stringContaining("--endpoint must be HOST:PORT") });
    expect(b.run(["--exporter", "file:relative"])).toMatchObject({ code: 78 });
    expect(b.run(["--ca-cert", "/nonexistent.pem"])).toMatchObject({ code: 78, err: expect.stringContaining("no such readable file") });
    // (validated before anything else, so safe without a test root)
    const tmpCa = join(work, "ca-in-tmp.pem");
    writeFileSync(tmpCa, "-----BEGIN CERTIFICATE-----\n");
    expect(b.run(["--ca-cert", tmpCa], { EBPF_TRACER_INSTALL_ROOT: "" })).toMatchObject({ code: 78, err: expect.stringContaining("cannot see /home, /root, /run/user or /tmp") });
    expect(b.calls()).toEqual([]);
  });
});

describe("checks come first and change nothing when they fail", () => {
  test("not root → 77", () => {
    const b = box();
    const r = b.run([...BASE_ARGS, "--binary", fakeBinary(join(b.state, "..", "bin"))], { STUB_UID: "1000" });
    expect(r.code).toBe(77);
    expect(r.err).toContain("must run as root");
    expect(tree(b.root)).toEqual([]);
  });

  test("no systemd → 69 with advice", () => {
    const b = box({ systemd: false });
    const r = b.run([...BASE_ARGS, "--binary", fakeBinary(join(b.state, "..", "bin"))]);
    expect(r.code).toBe(69);
    expect(r.err).toContain("systemd is not the init system");
    expect(tree(b.root)).toEqual([]);
  });

  test("another architecture → 69", () => {
    const b = box();
    const r = b.run([...BASE_ARGS, "--binary", fakeBinary(join(b.state, "..", "bin"))], { EBPF_TRACER_MACHINE: "riscv64" });
    expect(r.code).toBe(69);
    expect(r.err).toContain("unsupported architecture riscv64: ebpf-tracer is built for x86_64 and aarch64");
  });

  test("preflight failure: its output is shown, its status kept, nothing installed", () => {
    const b = box();
    const bin = fakeBinary(join(b.state, "..", "bin"), "v1", 69, "fail  BTF  no kernel BTF and none bundled for this kernel");
    const r = b.run([...BASE_ARGS, "--binary", bin]);
    expect(r.code).toBe(69);
    expect(r.err).toContain("no kernel BTF and none bundled");
    expect(r.err).toContain("preflight failed ('ebpf-tracer check' exited 69");
    expect(tree(b.root)).toEqual([]);
    expect(b.mutations()).toEqual([]);
  });

  test("a binary without `check` falls back to `version` with a warning", () => {
    const b = box();
    const bin = join(b.state, "..", "bin");
    writeFileSync(bin, `#!/bin/sh\ncase $1 in version) echo "ebpf-tracer 0.0.9";; *) echo "error: unknown command '$1'" >&2; exit 2;; esac\n`);
    chmodSync(bin, 0o755);
    const r = b.run([...BASE_ARGS, "--binary", bin]);
    expect(r.code).toBe(0);
    expect(r.err).toContain("has no 'check' command");
    expect(r.out).toContain("binary runs: ebpf-tracer 0.0.9");
  });

  test("otlp without an endpoint is refused before anything is written", () => {
    const b = box();
    const r = b.run(["--binary", fakeBinary(join(b.state, "..", "bin"))]);
    expect(r.code).toBe(78);
    expect(r.err).toContain("--endpoint is required");
    expect(tree(b.root)).toEqual([]);
  });
});

describe("install, re-run, upgrade, uninstall", () => {
  const b = box();
  const bin1 = fakeBinary(join(work, "bin-v1"), "v1");
  const bin2 = fakeBinary(join(work, "bin-v2"), "v2");
  const ca = join(work, "etc-ca.pem");
  writeFileSync(ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
  const token = `tok"en\\with'quotes: and # hash`;
  const args = [...BASE_ARGS, "--binary", bin1, "--ca-cert", ca];
  const env = { EBPF_TRACER_TOKEN: token };
  const cfgPath = () => join(b.root, "etc/traceable/ebpf-tracer-config.yaml");

  test("fresh install: files, modes, the config from the flags, enable --now, status line", () => {
    const r = b.run(args, env);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(tree(b.root)).toEqual(["etc/systemd/system/ebpf-tracer.service", "etc/traceable/ebpf-tracer-config.yaml", "usr/local/bin/ebpf-tracer"]);
    expect(existsSync(join(b.root, "var/lib/ebpf-tracer"))).toBe(true);
    expect(mode(join(b.root, "var/lib/ebpf-tracer"))).toBe("750");
    expect(existsSync(join(b.root, "var/log/ebpf-tracer"))).toBe(true);
    expect(mode(join(b.root, "usr/local/bin/ebpf-tracer"))).toBe("755");
    expect(mode(cfgPath())).toBe("600");
    expect(mode(join(b.root, "etc/systemd/system/ebpf-tracer.service"))).toBe("644");
    expect(readFileSync(join(b.root, "etc/systemd/system/ebpf-tracer.service"), "utf8")).toBe(readFileSync(join(REPO, "systemd/ebpf-tracer.service"), "utf8"));
    expect(readFileSync(join(b.root, "usr/local/bin/ebpf-tracer"), "utf8")).toContain("# v1");
    expect(b.mutations()).toEqual(["daemon-reload", "enable --now ebpf-tracer"]);
    expect(r.out).toContain("status: ActiveState=active");
    expect(r.out).toContain("ebpf-tracer: running, healthy");

    const cfg = loadConfig(cfgPath());
    expect(cfg.agent_config.reporting.endpoint).toBe("collector.example:4318");
    expect(cfg.agent_config.reporting.agent_token).toBe(token);
    expect(cfg.agent_config.ca_cert_file).toBe(ca);
    expect(cfg.agent_config.secure).toBe(true);
    expect(cfg.service_name).toBe("shop");
    expect(cfg.environment).toBe("prod");
    expect(cfg.mode).toBe("ingress");
    expect(cfg.exporter).toBe("otlp");
    expect(cfg.capture.exe).toEqual(["nginx", "/usr/bin/python3"]);
    expect(cfg.logging.level).toBe("info");
    expect(cfg.admin).toMatchObject({ enabled: true, address: "127.0.0.1:9464" });
    // a comment on every key
    const text = readFileSync(cfgPath(), "utf8").split("\n");
    text.forEach((line, i) => {
      if (/^\s*[a-z_]+:/.test(line) && !/^\s*#/.test(line)) expect(text[i - 1]).toMatch(/^\s*#/);
    });
  });

  test("re-running with the same inputs changes nothing and restarts nothing", () => {
    const before = b.mutations().length;
    const r = b.run(args, env);
    expect(r.code).toBe(0);
    expect(r.out).toContain("nothing to do: already installed with these inputs");
    expect(r.out).toContain("unchanged: " + cfgPath());
    expect(b.mutations().length).toBe(before);
    expect(b.starts()).toEqual(["enable"]);
  });

  test("other flags on an installed host: the config is kept, the new one goes to .new with a notice", () => {
    const before = readFileSync(cfgPath(), "utf8");
    const r = b.run([...args.filter((a) => a !== "prod"), "--environment", "staging"].filter((a, i, all) => !(a === "--environment" && all[i + 1] === "--exe")), env);
    expect(r.code).toBe(0);
    expect(readFileSync(cfgPath(), "utf8")).toBe(before);
    expect(r.out).toContain(`NOTICE: ${cfgPath()} exists and was kept`);
    expect(loadConfig(cfgPath() + ".new").environment).toBe("staging");
    expect(mode(cfgPath() + ".new")).toBe("600");
    expect(b.starts()).toEqual(["enable"]);
  });

  test("a different binary needs --upgrade", () => {
    const r = b.run([...BASE_ARGS, "--binary", bin2, "--ca-cert", ca], env);
    expect(r.code).toBe(2);
    expect(r.err).toContain("pass --upgrade");
    expect(readFileSync(join(b.root, "usr/local/bin/ebpf-tracer"), "utf8")).toContain("# v1");
  });

  test("--upgrade swaps the binary and restarts exactly once; again: nothing", () => {
    let r = b.run(["--upgrade", "--binary", bin2]);
    expect(r.code).toBe(0);
    expect(readFileSync(join(b.root, "usr/local/bin/ebpf-tracer"), "utf8")).toContain("# v2");
    expect(b.starts()).toEqual(["enable", "restart"]);
    expect(readdirSync(join(b.root, "usr/local/bin"))).toEqual(["ebpf-tracer"]); // no temp or backup left
    r = b.run(["--upgrade", "--binary", bin2]);
    expect(r.code).toBe(0);
    expect(b.starts()).toEqual(["enable", "restart"]);
  });

  test("--uninstall asks unless --yes, keeps config and state; --purge removes them", () => {
    let r = b.run(["--uninstall"]);
    expect(r.code).toBe(2);
    expect(r.err).toContain("pass --yes");
    expect(existsSync(join(b.root, "usr/local/bin/ebpf-tracer"))).toBe(true);
    r = b.run(["--uninstall", "--yes"]);
    expect(r.code).toBe(0);
    expect(b.calls()).toContain("disable --now ebpf-tracer");
    expect(tree(b.root)).toEqual(["etc/traceable/ebpf-tracer-config.yaml", "etc/traceable/ebpf-tracer-config.yaml.new"]);
    expect(existsSync(join(b.root, "var/lib/ebpf-tracer"))).toBe(true);
    r = b.run(["--uninstall", "--purge", "--yes"]);
    expect(r.code).toBe(0);
    expect(tree(b.root)).toEqual([]);
    expect(existsSync(join(b.root, "var/lib/ebpf-tracer"))).toBe(false);
    expect(existsSync(join(b.root, "etc/traceable"))).toBe(false);
    r = b.run(["--uninstall", "--yes"]);
    expect(r).toMatchObject({ code: 0, out: expect.stringContaining("not installed: nothing to remove") });
  });
});

describe("dry run", () => {
  test("prints every action and changes nothing", () => {
    const b = box();
    const r = b.run([...BASE_ARGS, "--binary", fakeBinary(join(work, "bin-dry")), "--dry-run"]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/would write: .*\/usr\/local\/bin\/ebpf-tracer \(mode 0755/);
    expect(r.out).toMatch(/would write: .*\/etc\/traceable\/ebpf-tracer-config.yaml \(mode 0600/);
    expect(r.out).toMatch(/would write: .*\/etc\/systemd\/system\/ebpf-tracer.service \(mode 0644/);
    expect(r.out).toContain("would run: systemctl daemon-reload");
    expect(r.out).toContain("enable --now ebpf-tracer");
    expect(r.out).toContain("dry run: nothing was changed");
    expect(tree(b.root)).toEqual([]);
    expect(b.mutations()).toEqual([]);
  });

  test("failed checks are listed, the actions still shown, the exit status is the first failure's", () => {
    const b = box({ systemd: false });
    const r = b.run([...BASE_ARGS, "--binary", fakeBinary(join(work, "bin-dry2")), "--dry-run"], { STUB_UID: "1000" });
    expect(r.code).toBe(77);
    expect(r.out).toContain("CHECK FAILED (exit 77): must run as root");
    expect(r.out).toContain("CHECK FAILED (exit 69): systemd is not the init system");
    expect(r.out).toContain("would write:");
    expect(tree(b.root)).toEqual([]);
  });

  test("--from-source --dry-run shows the build it would run", () => {
    const b = box();
    const r = b.run([...BASE_ARGS, "--from-source", "--dry-run"]);
    expect(r.code).toBe(0);
    expect(r.out).toContain(`would run: (cd ${REPO} && bun install --frozen-lockfile && bun run build)`);
    expect(r.out).toContain("preflight: skipped (no binary staged in a dry run)");
    expect(tree(b.root)).toEqual([]);
  });

  test("--uninstall --purge --dry-run lists the removals", () => {
    const b = box();
    expect(b.run([...BASE_ARGS, "--binary", fakeBinary(join(work, "bin-dry3"))]).code).toBe(0);
    const r = b.run(["--uninstall", "--purge", "--dry-run"]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("would run: systemctl disable --now ebpf-tracer");
    expect(r.out).toMatch(/would run: rm -rf .*\/var\/lib\/ebpf-tracer/);
    expect(tree(b.root).length).toBe(3);
  });
});

describe("drop-ins chosen by kernel and systemd version", () => {
  test("kernel < 5.8 gets CAP_SYS_ADMIN; systemd >= 254 gets the restart backoff; a newer kernel removes the first", () => {
    const b = box();
    const bin = fakeBinary(join(work, "bin-dropin"));
    let r = b.run([...BASE_ARGS, "--binary", bin], { EBPF_TRACER_KERNEL_RELEASE: "5.4.0-150-generic", STUB_SYSTEMD_VERSION: "255" });
    expect(r.code).toBe(0);
    expect(r.out).toContain("older than 5.8");
    const dropins = join(b.root, "etc/systemd/system/ebpf-tracer.service.d");
    expect(readdirSync(dropins).sort()).toEqual(["10-cap-sys-admin.conf", "20-restart-backoff.conf"]);
    expect(readFileSync(join(dropins, "10-cap-sys-admin.conf"), "utf8")).toContain("CapabilityBoundingSet=CAP_SYS_ADMIN");
    // kernel upgraded: the drop-in goes, the unit is reloaded and the service restarted once
    r = b.run([...BASE_ARGS, "--binary", bin], { EBPF_TRACER_KERNEL_RELEASE: "6.1.0", STUB_SYSTEMD_VERSION: "255" });
    expect(r.code).toBe(0);
    expect(readdirSync(dropins)).toEqual(["20-restart-backoff.conf"]);
    expect(b.starts()).toEqual(["enable", "restart"]);
  });
});

describe("failures after changes start are rolled back", () => {
  test("the service does not start: everything installed is removed again", () => {
    const b = box();
    const r = b.run([...BASE_ARGS, "--binary", fakeBinary(join(work, "bin-fail"))], { STUB_START_FAIL: "1" });
    expect(r.code).toBe(1);
    expect(r.err).toContain("did not start (the journal lines above say why)");
    expect(r.out).toContain("the previous state was restored");
    expect(tree(b.root)).toEqual([]);
    expect(existsSync(join(b.root, "etc/traceable"))).toBe(false);
    expect(existsSync(join(b.root, "var/lib/ebpf-tracer"))).toBe(false);
    expect(b.calls()).toContain("disable ebpf-tracer");
  });

  test("an upgrade whose service fails restores the old binary and restarts it", () => {
    const b = box();
    expect(b.run([...BASE_ARGS, "--binary", fakeBinary(join(work, "bin-up1"), "v1")]).code).toBe(0);
    const r = b.run(["--upgrade", "--binary", fakeBinary(join(work, "bin-up2"), "v2")], { STUB_START_FAIL: "1" });
    expect(r.code).toBe(1);
    expect(readFileSync(join(b.root, "usr/local/bin/ebpf-tracer"), "utf8")).toContain("# v1");
    expect(readdirSync(join(b.root, "usr/local/bin"))).toEqual(["ebpf-tracer"]);
    expect(b.calls().filter((c) => c.startsWith("restart")).length).toBe(2); // the failed one, then the old binary again
  });
});

describe("--version with --download-url", () => {
  const dir = join(work, "release");
  mkdirSync(join(dir, "ebpf-tracer-1.2.3"), { recursive: true });
  fakeBinary(join(dir, "ebpf-tracer-1.2.3", "ebpf-tracer"), "release-1.2.3");
  Bun.spawnSync(["tar", "-czf", join(dir, "ebpf-tracer-1.2.3.tar.gz"), "-C", dir, "ebpf-tracer-1.2.3"]);
  const hash = new Bun.CryptoHasher("sha256").update(readFileSync(join(dir, "ebpf-tracer-1.2.3.tar.gz"))).digest("hex");
  let bad = false;
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      const path = new URL(req.url).pathname;
      if (path === "/dl/ebpf-tracer-1.2.3.tar.gz") return new Response(Bun.file(join(dir, "ebpf-tracer-1.2.3.tar.gz")));
      if (path === "/dl/ebpf-tracer-1.2.3.tar.gz.sha256") return new Response(`${bad ? "0".repeat(64) : hash}  ebpf-tracer-1.2.3.tar.gz\n`);
      return new Response("no", { status: 404 });
    },
  });
  afterAll(() => server.stop(true));
  const url = `http://127.0.0.1:${server.port}/dl/ebpf-tracer-{version}.tar.gz`;

  test("downloads, verifies the SHA-256 and installs the binary from the tarball", async () => {
    const b = box();
    const r = await b.runAsync([...BASE_ARGS, "--version", "1.2.3", "--download-url", url]);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toContain(`checksum ok (${hash})`);
    expect(readFileSync(join(b.root, "usr/local/bin/ebpf-tracer"), "utf8")).toContain("# release-1.2.3");
  });

  test("a checksum mismatch stops before anything is installed", async () => {
    bad = true;
    try {
      const b = box();
      const r = await b.runAsync([...BASE_ARGS, "--version", "1.2.3", "--download-url", url]);
      expect(r.code).toBe(69);
      expect(r.err).toContain("checksum mismatch");
      expect(tree(b.root)).toEqual([]);
    } finally {
      bad = false;
    }
  });

  test("a missing release is a clear error", async () => {
    const b = box();
    const r = await b.runAsync([...BASE_ARGS, "--version", "9.9.9", "--download-url", url]);
    expect(r.code).toBe(69);
    expect(r.err).toContain("download failed");
  });
});

describe("a released install.sh piped into bash (curl … | bash -s --)", () => {
  // Releases 1.2.3 (x86_64, aarch64) and 1.2.2 (x86_64) laid out as scripts/release.ts does:
  // <base>/ebpf-tracer-<v>-linux-<arch>.tar.gz holding ebpf-tracer-<v>-linux-<arch>/{ebpf-tracer,systemd/}.
  const dir = join(work, "released");
  const files: Record<string, string> = {};
  for (const [v, arch] of [["1.2.3", "x86_64"], ["1.2.3", "aarch64"], ["1.2.2", "x86_64"]] as const) {
    const name = `ebpf-tracer-${v}-linux-${arch}`;
    mkdirSync(join(dir, name, "systemd"), { recursive: true });
    fakeBinary(join(dir, name, "ebpf-tracer"), `release-${v}-${arch}`);
    for (const f of readdirSync(join(REPO, "systemd"))) {
      const text = readFileSync(join(REPO, "systemd", f), "utf8");
      writeFileSync(join(dir, name, "systemd", f), f === "ebpf-tracer.service" ? `# from the ${v} tarball\n${text}` : text);
    }
    Bun.spawnSync(["tar", "-czf", join(dir, `${name}.tar.gz`), "-C", dir, name]);
    const hash = new Bun.CryptoHasher("sha256").update(readFileSync(join(dir, `${name}.tar.gz`))).digest("hex");
    files[`/${name}.tar.gz`] = join(dir, `${name}.tar.gz`);
    writeFileSync(join(dir, `${name}.tar.gz.sha256`), `${hash}  ${name}.tar.gz\n`);
    files[`/${name}.tar.gz.sha256`] = join(dir, `${name}.tar.gz.sha256`);
  }
  const requested: string[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      const path = new URL(req.url).pathname;
      requested.push(path);
      return files[path] ? new Response(Bun.file(files[path])) : new Response("no", { status: 404 });
    },
  });
  afterAll(() => server.stop(true));
  const base = `http://127.0.0.1:${server.port}`;

  /** install.sh as scripts/release.ts stamps it, fed to `bash -s --` on stdin from a directory
   *  holding a decoy dist/ebpf-tracer and systemd/: a piped script must not look there. */
  async function piped(b: Box, args: string[], extra: Record<string, string> = {}) {
    const { stampInstaller } = await import("../../scripts/release.ts");
    const script = stampInstaller(readFileSync(SCRIPT, "utf8"), base, "1.2.3");
    const cwd = join(b.root, "..", "cwd");
    mkdirSync(join(cwd, "dist"), { recursive: true });
    mkdirSync(join(cwd, "systemd"), { recursive: true });
    fakeBinary(join(cwd, "dist", "ebpf-tracer"), "decoy");
    writeFileSync(join(cwd, "systemd", "ebpf-tracer.service"), "# decoy\n");
    const p = Bun.spawn(["bash", "-s", "--", ...args], { env: { ...b.env, ...extra }, stdin: new Blob([script]), stdout: "pipe", stderr: "pipe", cwd });
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    return { code, out, err };
  }

  test("no source flag: downloads the stamped version for uname -m, installs its binary and unit", async () => {
    const b = box();
    const r = await piped(b, BASE_ARGS);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toContain(`downloading ${base}/ebpf-tracer-1.2.3-linux-x86_64.tar.gz`);
    expect(readFileSync(join(b.root, "usr/local/bin/ebpf-tracer"), "utf8")).toContain("# release-1.2.3-x86_64");
    expect(readFileSync(join(b.root, "etc/systemd/system/ebpf-tracer.service"), "utf8")).toStartWith("# from the 1.2.3 tarball\n");
    expect(existsSync(join(b.root, "etc/systemd/system/ebpf-tracer.service.d/20-restart-backoff.conf"))).toBe(false); // systemd 252
    // the same again: nothing to do
    const again = await piped(b, BASE_ARGS);
    expect(again.code).toBe(0);
    expect(again.out).toContain("nothing to do");
  });

  test("aarch64 gets the aarch64 tarball; --version pins another release", async () => {
    const arm = await piped(box(), BASE_ARGS, { EBPF_TRACER_MACHINE: "aarch64" });
    expect(arm.code).toBe(0);
    expect(arm.out).toContain("ebpf-tracer-1.2.3-linux-aarch64.tar.gz");
    const b = box();
    const pinned = await piped(b, [...BASE_ARGS, "--version", "1.2.2"]);
    expect(pinned.code).toBe(0);
    expect(readFileSync(join(b.root, "usr/local/bin/ebpf-tracer"), "utf8")).toContain("# release-1.2.2-x86_64");
  });

  test("--download-url / EBPF_TRACER_DOWNLOAD_URL override the stamped base URL", async () => {
    const b = box();
    const r = await piped(b, BASE_ARGS, { EBPF_TRACER_DOWNLOAD_URL: `${base}/ebpf-tracer-{version}-linux-{arch}.tar.gz`, EBPF_TRACER_VERSION: "1.2.2" });
    expect(r.code).toBe(0);
    expect(readFileSync(join(b.root, "usr/local/bin/ebpf-tracer"), "utf8")).toContain("# release-1.2.2-x86_64");
  });

  test("failures change nothing: an unknown version, an old glibc, an unknown architecture", async () => {
    for (const [args, env, code, msg] of [
      [["--version", "9.9.9"], {}, 69, "download failed"],
      [[], { EBPF_TRACER_GLIBC_VERSION: "2.12" }, 69, "glibc 2.12 is too old: ebpf-tracer needs glibc 2.17 or newer"],
      [[], { EBPF_TRACER_MACHINE: "riscv64" }, 69, "unsupported architecture riscv64"],
    ] as const) {
      const b = box();
      const r = await piped(b, [...BASE_ARGS, ...args], env);
      expect({ code: r.code, msg: r.err.includes(msg) }).toEqual({ code, msg: true });
      expect(tree(b.root)).toEqual([]);
    }
  });

  test("--print-config prints the config the flags produce and changes nothing", async () => {
    const b = box();
    const before = requested.length;
    const r = await piped(b, [...BASE_ARGS, "--print-config"]);
    expect(r.code).toBe(0);
    expect(r.out).toContain('endpoint: "collector.example:4318"');
    expect(tree(b.root)).toEqual([]);
    expect(requested.length).toBe(before); // nothing downloaded
  });
});
