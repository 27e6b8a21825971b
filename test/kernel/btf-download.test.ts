/**
 * Downloader against a local HTTPS server with a throwaway CA (made with openssl here) and a
 * loopback CONNECT proxy. The served .btf.tar.xz is built from this machine's
 * /sys/kernel/btf/vmlinux with the host's tar and xz (test-only).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DownloadError, downloadBtf, expandUrl, fetchArchive, proxyFor, type DownloadOptions } from "../../src/kernel/btf/download.ts";
import { buildTarXz, hostToolsPresent, makeCerts, sampleBtf, startProxy, startServer, type TestProxy, type TestServer } from "./btf-https-server.ts";

const FIXTURE = join(import.meta.dir, "../fixtures/btf/kyanos/custom-archive/centos/7/x86_64/3.10.0-957.el7.x86_64.btf");
const REL = "6.1.0-99-amd64";
let tmp: string;
let srv: TestServer;
let proxy: TestProxy;
let btf: Uint8Array;
let archive: Uint8Array;

beforeAll(async () => {
  if (!hostToolsPresent) return;
  tmp = mkdtempSync(join(tmpdir(), "btf-download-"));
  srv = startServer(makeCerts(join(tmp, "pki")));
  proxy = await startProxy();
  btf = sampleBtf(FIXTURE);
  archive = buildTarXz(tmp, `${REL}.btf`, btf);
  const corrupt = archive.slice();
  for (let i = 200; i < 260; i++) corrupt[i]! ^= 0x5a;
  const r = srv.routes;
  r.set("/ok.btf.tar.xz", { body: archive });
  r.set("/corrupt.btf.tar.xz", { body: corrupt });
  r.set("/invalid.btf.tar.xz", { body: buildTarXz(tmp, `${REL}.btf`, new TextEncoder().encode("this is not BTF at all, sorry")) });
  r.set("/notxz.btf.tar.xz", { body: new TextEncoder().encode("<html>rate limited</html>") });
  r.set("/hang.btf.tar.xz", { hang: true });
  r.set("/stall.btf.tar.xz", { stall: archive.subarray(0, 1000) });
  r.set("/redirect.btf.tar.xz", { redirect: "/ok.btf.tar.xz" });
  r.set("/forbidden.btf.tar.xz", { status: 403 });
});

afterAll(async () => {
  if (!hostToolsPresent) return;
  await srv.stop();
  await proxy.stop();
  rmSync(tmp, { recursive: true, force: true });
});

const opts = (path: string, over: Partial<DownloadOptions> = {}): DownloadOptions => ({
  url: `${srv.origin}${path}`, release: REL, destPath: join(tmp, "out", path.slice(1).replace(/\W/g, "_") + ".btf"),
  timeoutMs: 5000, ca: srv.ca, env: {}, ...over,
});

async function failure(p: Promise<unknown>): Promise<DownloadError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(DownloadError);
    return e as DownloadError;
  }
  throw new Error("expected a DownloadError");
}

describe("expandUrl", () => {
  test("fills the four placeholders, URL-encoded", () => {
    const t = "https://h/{id}/{version_id}/{arch}/{release}.btf.tar.xz";
    expect(expandUrl(t, { id: "ubuntu", version_id: "20.04", arch: "x86_64", release: "5.4.0-26-generic" }))
      .toBe("https://h/ubuntu/20.04/x86_64/5.4.0-26-generic.btf.tar.xz");
    expect(expandUrl(t, { id: "x", version_id: "1", arch: "arm64", release: "5.10+deb/1 x" })).toBe("https://h/x/1/arm64/5.10%2Bdeb%2F1%20x.btf.tar.xz");
    expect(expandUrl("https://h/{unknown}", { id: "a", version_id: "b", arch: "c", release: "d" })).toBe("https://h/{unknown}");
  });
});

describe("proxyFor", () => {
  const url = "https://github.com/x";
  test("HTTPS_PROXY / https_proxy, lowercase first", () => {
    expect(proxyFor(url, {})).toBeUndefined();
    expect(proxyFor(url, { HTTPS_PROXY: "http://p:3128" })).toBe("http://p:3128");
    expect(proxyFor(url, { https_proxy: "http://lower:1", HTTPS_PROXY: "http://upper:2" })).toBe("http://lower:1");
    expect(proxyFor(url, { HTTP_PROXY: "http://p:3128" })).toBeUndefined();
    expect(proxyFor("http://h/x", { http_proxy: "http://p:1" })).toBe("http://p:1");
  });
  test("NO_PROXY: names, subdomains, leading dot, ports and *", () => {
    const env = (no: string) => ({ HTTPS_PROXY: "http://p:1", NO_PROXY: no });
    expect(proxyFor(url, env("github.com"))).toBeUndefined();
    expect(proxyFor("https://raw.github.com/x", env(".github.com"))).toBeUndefined();
    expect(proxyFor("https://raw.github.com/x", env("github.com"))).toBeUndefined();
    expect(proxyFor("https://notgithub.com/x", env("github.com"))).toBe("http://p:1");
    expect(proxyFor(url, env("example.org, github.com:443"))).toBeUndefined();
    expect(proxyFor(url, env("github.com:8443"))).toBe("http://p:1");
    expect(proxyFor(url, env("*"))).toBeUndefined();
    expect(proxyFor("https://127.0.0.1:9/x", { HTTPS_PROXY: "http://p:1", no_proxy: "127.0.0.1" })).toBeUndefined();
  });
});

describe.skipIf(!hostToolsPresent)("downloadBtf over HTTPS", () => {
  test("downloads, extracts, validates and stores the BTF", async () => {
    const o = opts("/ok.btf.tar.xz");
    const d = await downloadBtf(o);
    expect(d.path).toBe(o.destPath);
    expect(d.bytes).toBe(btf.byteLength);
    expect(d.typeCount).toBeGreaterThan(10);
    expect(Buffer.compare(readFileSync(d.path), btf)).toBe(0);
    expect(readdirNoTemps(join(tmp, "out"))).toBe(true);
  });

  test("follows redirects", async () => {
    const d = await downloadBtf(opts("/redirect.btf.tar.xz"));
    expect(d.bytes).toBe(btf.byteLength);
  });

  test("404 and 403 are http failures with the status; nothing is written", async () => {
    const o = opts("/missing.btf.tar.xz");
    const e = await failure(downloadBtf(o));
    expect([e.kind, e.status, e.message, e.url]).toEqual(["http", 404, "HTTP 404", o.url]);
    expect(existsSync(o.destPath)).toBe(false);
    expect((await failure(downloadBtf(opts("/forbidden.btf.tar.xz")))).status).toBe(403);
  });

  test("a corrupt archive is an archive failure", async () => {
    const o = opts("/corrupt.btf.tar.xz");
    const e = await failure(downloadBtf(o));
    expect(e.kind).toBe("archive");
    expect(e.message).toMatch(/^xz: /);
    expect(existsSync(o.destPath)).toBe(false);
    expect((await failure(downloadBtf(opts("/notxz.btf.tar.xz")))).message).toContain("not an .xz stream");
  });

  test("a valid archive holding invalid BTF is rejected before anything is stored", async () => {
    const o = opts("/invalid.btf.tar.xz");
    const e = await failure(downloadBtf(o));
    expect(e.kind).toBe("invalid");
    expect(e.message).toContain("archive holds invalid BTF: bad magic");
    expect(existsSync(o.destPath)).toBe(false);
  });

  test("a server that never answers fails after download_timeout", async () => {
    const t0 = Date.now();
    const e = await failure(downloadBtf(opts("/hang.btf.tar.xz", { timeoutMs: 400 })));
    const ms = Date.now() - t0;
    expect(e.kind).toBe("timeout");
    expect(e.message).toBe("no complete answer within 400 ms");
    expect(ms).toBeGreaterThanOrEqual(350);
    expect(ms).toBeLessThan(5000);
  });

  test("a body that stalls midway also times out", async () => {
    const e = await failure(downloadBtf(opts("/stall.btf.tar.xz", { timeoutMs: 400 })));
    expect(e.kind).toBe("timeout");
  });

  test("the system CA store does not trust the test CA (no ca option)", async () => {
    const e = await failure(fetchArchive({ url: `${srv.origin}/ok.btf.tar.xz`, timeoutMs: 5000, env: {} }));
    expect(e.kind).toBe("network");
    expect(e.message.toLowerCase()).toMatch(/certificate|self.signed|verify/);
  });

  test("connection refused is a network failure", async () => {
    const e = await failure(fetchArchive({ url: "https://127.0.0.1:1/x", timeoutMs: 2000, env: {} }));
    expect(e.kind).toBe("network");
  });

  test("goes through HTTPS_PROXY with a CONNECT tunnel; NO_PROXY bypasses it", async () => {
    const before = proxy.connects;
    const d = await downloadBtf(opts("/ok.btf.tar.xz", { env: { HTTPS_PROXY: proxy.url } }));
    expect(d.bytes).toBe(btf.byteLength);
    expect(proxy.connects).toBe(before + 1);
    await downloadBtf(opts("/ok.btf.tar.xz", { env: { https_proxy: proxy.url, NO_PROXY: "localhost" } }));
    expect(proxy.connects).toBe(before + 1);
  });

  test("oversized downloads are cut off", async () => {
    const e = await failure(fetchArchive({ url: `${srv.origin}/ok.btf.tar.xz`, timeoutMs: 5000, ca: srv.ca, env: {}, maxBytes: 1000 }));
    expect(e.message).toBe("download exceeds 1000 bytes");
  });
});

function readdirNoTemps(dir: string): boolean {
  return !readdirSync(dir).some((f) => f.includes(".tmp-"));
}
