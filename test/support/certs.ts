/**
 * Test certificates made with the `openssl` CLI in a fresh temp dir (EC P-256, fast):
 *  - ca / server (SAN localhost, 127.0.0.1, ::1) / client (clientAuth), all signed by `ca`
 *  - otherCa: an unrelated CA (the "wrong CA" for a client, or the signer of `strangerClient`)
 *  - wrongHost: signed by `ca` for "not-this-host.example" only (hostname mismatch)
 *  - expired: signed by `ca`, valid 2020-01-01..2020-01-02 (CERT_HAS_EXPIRED)
 *  - strangerClient: a client cert signed by `otherCa` (refused by a server trusting only `ca`)
 * Every entry holds file paths; `readPem(path)` returns the text. `removeTestCerts` deletes the dir.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface CertPair {
  cert: string;
  key: string;
}

export interface TestCerts {
  dir: string;
  ca: CertPair;
  otherCa: CertPair;
  server: CertPair;
  client: CertPair;
  wrongHost: CertPair;
  expired: CertPair;
  strangerClient: CertPair;
}

export function readPem(path: string): string {
  return readFileSync(path, "utf8");
}

function openssl(args: string[], cwd: string): void {
  const r = Bun.spawnSync(["openssl", ...args], { cwd, stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) {
    throw new Error(`openssl ${args.join(" ")} failed: ${r.stderr.toString()}`);
  }
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

function makeCa(dir: string, name: string): CertPair {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  openssl(["req", "-x509", ...EC, "-keyout", key, "-out", cert, "-days", "3650", "-subj", `/CN=${name} test CA`,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], dir);
  return { cert, key };
}

function makeCsr(dir: string, name: string, cn: string): { csr: string; key: string } {
  const csr = join(dir, `${name}.csr`);
  const key = join(dir, `${name}.key`);
  openssl(["req", "-new", ...EC, "-keyout", key, "-out", csr, "-subj", `/CN=${cn}`], dir);
  return { csr, key };
}

function writeExt(dir: string, name: string, lines: string[]): string {
  const path = join(dir, `${name}.ext`);
  writeFileSync(path, lines.join("\n") + "\n");
  return path;
}

/** Signs a leaf valid from now for 10 years. */
function signLeaf(dir: string, name: string, ca: CertPair, cn: string, ext: string[]): CertPair {
  const { csr, key } = makeCsr(dir, name, cn);
  const cert = join(dir, `${name}.crt`);
  const extfile = writeExt(dir, name, ext);
  openssl(["x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial", "-out", cert,
    "-days", "3650", "-sha256", "-extfile", extfile], dir);
  return { cert, key };
}

/** Signs a leaf with fixed past dates through `openssl ca` (x509 -req cannot backdate in OpenSSL 3.0). */
function signExpired(dir: string, name: string, ca: CertPair, ext: string[]): CertPair {
  const { csr, key } = makeCsr(dir, name, "localhost");
  const cert = join(dir, `${name}.crt`);
  writeFileSync(join(dir, "index.txt"), "");
  writeFileSync(join(dir, "serial"), "1000\n");
  const cnf = join(dir, "ca.cnf");
  writeFileSync(cnf, [
    "[ca]", "default_ca = test_ca", "[test_ca]", `dir = ${dir}`, `database = ${join(dir, "index.txt")}`,
    `serial = ${join(dir, "serial")}`, `new_certs_dir = ${dir}`, "default_md = sha256", "policy = any",
    "unique_subject = no", "copy_extensions = none", "[any]", "commonName = supplied", "[leaf]", ...ext, "",
  ].join("\n"));
  openssl(["ca", "-batch", "-config", cnf, "-extensions", "leaf", "-cert", ca.cert, "-keyfile", ca.key,
    "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-in", csr, "-out", cert, "-notext"], dir);
  return { cert, key };
}

const SERVER_EXT = [
  "basicConstraints=CA:FALSE",
  "keyUsage=critical,digitalSignature,keyEncipherment",
  "extendedKeyUsage=serverAuth",
  "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
];
const CLIENT_EXT = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature", "extendedKeyUsage=clientAuth"];

export function makeTestCerts(): TestCerts {
  const dir = mkdtempSync(join(tmpdir(), "ebpf-tracer-certs-"));
  const ca = makeCa(dir, "ca");
  const otherCa = makeCa(dir, "other-ca");
  return {
    dir,
    ca,
    otherCa,
    server: signLeaf(dir, "server", ca, "localhost", SERVER_EXT),
    client: signLeaf(dir, "client", ca, "ebpf-tracer test client", CLIENT_EXT),
    wrongHost: signLeaf(dir, "wrong-host", ca, "not-this-host.example", [
      ...SERVER_EXT.slice(0, 3), "subjectAltName=DNS:not-this-host.example",
    ]),
    expired: signExpired(dir, "expired", ca, SERVER_EXT),
    strangerClient: signLeaf(dir, "stranger-client", otherCa, "stranger", CLIENT_EXT),
  };
}

export function removeTestCerts(c: TestCerts): void {
  rmSync(c.dir, { recursive: true, force: true });
}
