/**
 * TLS stack discovery: which files mapped by a process carry a TLS implementation the agent can
 * probe, where (file offsets), and why not when it cannot.
 *
 * Stacks are identified by the symbols a file exports (Debian's libssl3.so is NSS, not OpenSSL) or,
 * for files without them, by tell-tale strings, and the answer is cached per (dev, inode): a library
 * mapped by 300 processes is read once. Files are opened through /proc/PID/map_files/<range> (works
 * for deleted files and other mount namespaces), falling back to /proc/PID/root/<path>.
 *
 * Pure user space and unprivileged-testable: `analyzeElf` needs only an ElfFile; `discoverProcess`
 * needs read access to the target's /proc entries (root for other users' processes).
 */
import { readFileSync, readlinkSync } from "node:fs";
import { TracerError } from "../../errors.ts";
import { ElfFile, STT_FUNC, type ElfSymbol } from "./elf.ts";
import { encodeGoTlsOffsets, goRelease, goTlsOffsets, goTlsOffsetsFromDwarf, GO_MIN_MINOR, type GoTlsOffsets } from "./go-offsets.ts";
import { arm64Rets, x86Rets } from "./x86-ret.ts";
import { goReadCopySite, goStackCheck, x86CallTargets, x86EntrySite, x86ThinWrapperCallee } from "./probe-site.ts";

export type TlsKind = "openssl" | "boringssl" | "gnutls" | "go" | "nss" | "java" | "rustls" | "custom";

/**
 * entry: uprobe at the function's first instruction. return: uretprobe (C code only).
 * ret-offsets: uprobes at each RET instruction of a Go function (`retOffsets`), never a uretprobe.
 * copy: a uprobe on the CALL where Go's (*Conn).Read copies its plaintext out (goReadCopySite),
 * instead of its RETs.
 */
export type ProbeKind = "entry" | "return" | "ret-offsets" | "copy";

export interface TlsProbe {
  /** the function's name; for OpenSSL's internal read/write function (probe-site.ts), which has
   * none, "<both exported functions>→0x<its address>" */
  symbol: string;
  /** file offset where the entry uprobe (and a uretprobe) goes: the function's first byte, or an
   * instruction that runs once per call with the entry's arguments and that the kernel emulates
   * (probe-site.ts: past ENDBR64 or a NULL check, Go's stack-check branch) */
  offset: number;
  kind: ProbeKind;
  /** the BPF program (in bpf/lib/tls.h) that handles this probe */
  program: string;
  /** ret-offsets only: file offsets of every RET instruction of the function */
  retOffsets?: number[];
}

export interface TlsStack {
  kind: TlsKind;
  /** e.g. "3.0.19", "1.1" (from the soname only), "go1.19.8"; undefined when unreadable */
  version?: string;
  /** path as the process sees it (from /proc/PID/maps) */
  path: string;
  /** kernel dev_t of the file (MKDEV: major << 20 | minor) and its inode: the cache and attach key */
  dev: number;
  ino: number;
  /** probes to attach; empty when not decryptable */
  probes: TlsProbe[];
  decryptable: boolean;
  /** why not decryptable (undefined when decryptable) */
  reason?: string;
  arch: "x86_64" | "aarch64" | "other";
  /** Go binaries: offsets for the per-binary BPF map (see go-offsets.ts) */
  go?: { offsets: GoTlsOffsets; mapValue: Uint8Array };
}

/** Per-binary offsets a user gives for a stripped static TLS library (config `custom_ssl_address`). */
export interface CustomSslAddress {
  /** the executable or library path as mapped in the process (exact match) */
  binary: string;
  /** virtual addresses as `nm`/`readelf -s` print them; converted to file offsets through PT_LOAD */
  sslRead: number;
  sslWrite: number;
  sslFree?: number;
}

/** config `uprobe_attach_exclusion_rules`: a process matching a rule gets no TLS probes. */
export interface ExclusionRule {
  /** exact executable path (/proc/PID/exe, as the process sees it) */
  exe?: string;
  /** substring of the command line (arguments joined by spaces); with `exe`, both must match */
  cmdline?: string;
}

export interface DiscoverOptions {
  exclusionRules?: ExclusionRule[];
  /**
   * config `libssl_prefixes`: when set, shared libraries are analyzed only when their file name starts
   * with one of these (the process's executable always is). Unset: every mapped file is analyzed.
   */
  libsslPrefixes?: string[];
  customSslAddress?: CustomSslAddress[];
  /** the /proc to read (tests point it elsewhere) */
  procRoot?: string;
}

// Exported symbols per stack. OpenSSL ≥ 1.1.1 adds the _ex pair (optional).
const OPENSSL_REQUIRED = ["SSL_read", "SSL_write", "SSL_free"];
const OPENSSL_OPTIONAL = ["SSL_read_ex", "SSL_write_ex"];
/** Symbols only BoringSSL exports (OpenSSL has none of these). */
const BORINGSSL_MARKERS = ["CRYPTO_BUFFER_new", "SSL_CTX_set_grease_enabled", "SSL_set_enable_ech_grease"];
const GNUTLS_REQUIRED = ["gnutls_record_recv", "gnutls_record_send", "gnutls_deinit"];
const NSS_MARKERS = ["SSL_ImportFD"];
const JVM_MARKERS = ["JNI_CreateJavaVM"];
const GO_READ = "crypto/tls.(*Conn).Read";
const GO_WRITE = "crypto/tls.(*Conn).Write";
const GO_MEMMOVE = "runtime.memmove";
const GO_READER_READ = "bytes.(*Reader).Read";
const OPENSSL_VERSION_RE = /OpenSSL (\d+\.\d+\.\d+[a-z]?)(?:[+-][\w.]+)? +\d{1,2} \w{3} \d{4}/;

/** The TLS part of one file (undefined: no TLS stack here), and the OpenSSL version its .rodata names. */
export interface FileAnalysis {
  stack?: Omit<TlsStack, "path" | "dev" | "ino">;
  /** "3.0.19" when the file holds OpenSSL_version's text (libcrypto, static builds) */
  opensslVersion?: string;
}

/**
 * Classifies one ELF file. `isExecutable`: the process's main program (string heuristics for
 * symbol-less stacks are applied to it only: libraries without the symbols are not TLS stacks we
 * could name). `custom`: user-given addresses for this file.
 */
export function analyzeElf(elf: ElfFile, isExecutable: boolean, custom?: CustomSslAddress): FileAnalysis {
  const arch = elf.arch;
  if (custom) return { stack: customStack(elf, custom) };
  const names = [...OPENSSL_REQUIRED, ...OPENSSL_OPTIONAL, ...BORINGSSL_MARKERS, ...GNUTLS_REQUIRED, ...NSS_MARKERS, ...JVM_MARKERS, "OpenSSL_version"];
  let syms = elf.findSymbols(names, [".dynsym"]);
  // A static executable that keeps its symbol table (envoy-style builds) carries SSL_* locally:
  // probe-able at the same file offsets, so look there when nothing is exported.
  if (isExecutable && !OPENSSL_REQUIRED.every((s) => syms.has(s)) && !GNUTLS_REQUIRED.every((s) => syms.has(s))) {
    const local = elf.findSymbols(names, [".symtab"]);
    if (OPENSSL_REQUIRED.every((s) => local.has(s)) || GNUTLS_REQUIRED.every((s) => local.has(s))) syms = local;
  }
  const opensslVersion = syms.has("OpenSSL_version") || syms.has("SSL_read") ? elf.findString(OPENSSL_VERSION_RE)?.match(OPENSSL_VERSION_RE)?.[1] : undefined;

  if (NSS_MARKERS.some((s) => syms.has(s))) {
    return { stack: { kind: "nss", arch, probes: [], decryptable: false, reason: "NSS (Mozilla) TLS: no probes for NSS/NSPR yet" } };
  }
  if (OPENSSL_REQUIRED.every((s) => syms.has(s))) {
    const boring = BORINGSSL_MARKERS.some((s) => syms.has(s));
    // OpenSSL's internal functions have SSL_x_ex's contract; BoringSSL's are not known to
    const read = boring ? undefined : opensslInternal(elf, syms, "SSL_read", "SSL_read_ex", "ssl_read_ex");
    const write = boring ? undefined : opensslInternal(elf, syms, "SSL_write", "SSL_write_ex", "ssl_write_ex");
    const probes = [...(read ?? cProbes(elf, syms, "SSL_read", "ssl_read")), ...(write ?? cProbes(elf, syms, "SSL_write", "ssl_write"))];
    if (!read && syms.has("SSL_read_ex")) probes.push(...cProbes(elf, syms, "SSL_read_ex", "ssl_read_ex"));
    if (!write && syms.has("SSL_write_ex")) probes.push(...cProbes(elf, syms, "SSL_write_ex", "ssl_write_ex"));
    probes.push(entry(elf, syms.get("SSL_free")!, "tls_free_entry"));
    const version = boring ? undefined : (opensslVersion ?? sonameVersion(elf.soname(), "libssl.so."));
    return { opensslVersion, stack: { kind: boring ? "boringssl" : "openssl", version, arch, probes, decryptable: true } };
  }
  if (GNUTLS_REQUIRED.every((s) => syms.has(s))) {
    // gnutls_record_recv/send(session, data, size) → ssize_t: the SSL_read/SSL_write shape.
    const probes = [...cProbes(elf, syms, "gnutls_record_recv", "ssl_read"), ...cProbes(elf, syms, "gnutls_record_send", "ssl_write"), entry(elf, syms.get("gnutls_deinit")!, "tls_free_entry")];
    const version = elf.findString(/GnuTLS (\d+\.\d+\.\d+)/)?.match(/(\d+\.\d+\.\d+)/)?.[1];
    return { stack: { kind: "gnutls", version, arch, probes, decryptable: true } };
  }
  if (JVM_MARKERS.some((s) => syms.has(s))) {
    return { stack: { kind: "java", arch, probes: [], decryptable: false, reason: "Java: JSSE runs as bytecode in the JVM (no native TLS functions to probe)" } };
  }
  const go = goStack(elf);
  if (go) return { opensslVersion, stack: go };
  if (!isExecutable) return { opensslVersion };
  // Symbol-less stacks in the program itself: say what it is rather than stay silent.
  if (elf.findString(/BoringSSL/)) {
    return { stack: { kind: "boringssl", arch, probes: [], decryptable: false, reason: "BoringSSL linked without exported symbols (e.g. Bun); set custom_ssl_address for this binary" } };
  }
  const staticOpenssl = opensslVersion ?? elf.findString(OPENSSL_VERSION_RE)?.match(OPENSSL_VERSION_RE)?.[1];
  if (staticOpenssl) {
    return { opensslVersion: staticOpenssl, stack: { kind: "openssl", version: staticOpenssl, arch, probes: [], decryptable: false, reason: "OpenSSL linked statically without exported SSL_* symbols; set custom_ssl_address for this binary" } };
  }
  if (elf.findString(/rustls[-/]\d/)) {
    return { stack: { kind: "rustls", arch, probes: [], decryptable: false, reason: "rustls: no stable symbols to probe" } };
  }
  return {};
}

/** Go crypto/tls, or undefined when the file is not Go or does not use crypto/tls. */
function goStack(elf: ElfFile): FileAnalysis["stack"] | undefined {
  const isGo = elf.section(".go.buildinfo") !== undefined || elf.section(".gopclntab") !== undefined || elf.section(".note.go.buildid") !== undefined;
  if (!isGo) return undefined;
  const arch = elf.arch;
  const version = elf.goBuildInfo()?.version;
  const syms = elf.findSymbols([GO_READ, GO_WRITE, GO_MEMMOVE, GO_READER_READ], [".symtab"]);
  if (!syms.has(GO_READ) || !syms.has(GO_WRITE)) {
    if (elf.hasSymbols(".symtab")) return undefined; // symbols present, crypto/tls not linked in
    // Stripped: the function names are still in the pc-line table when crypto/tls is linked in.
    if (!elf.findString(/crypto\/tls\.\(\*Conn\)\.Read/, ".gopclntab")) return undefined;
    return { kind: "go", version, arch, probes: [], decryptable: false, reason: "stripped Go binary (no symbol table): crypto/tls functions cannot be located" };
  }
  if (!version) return { kind: "go", arch, probes: [], decryptable: false, reason: "Go build info unreadable: struct offsets unknown" };
  // The binary's own DWARF wins over the table (and covers releases newer than it); the register
  // ABI still has to be there (Go ≥ 1.17).
  const rel = goRelease(version);
  let dwarf: GoTlsOffsets | undefined;
  if (rel && rel[0] === 1 && rel[1] >= GO_MIN_MINOR) {
    try {
      dwarf = goTlsOffsetsFromDwarf(elf, version);
    } catch {
      dwarf = undefined; // unreadable DWARF: the table decides
    }
  }
  const off = dwarf ? { offsets: dwarf } : goTlsOffsets(version);
  if ("reason" in off) return { kind: "go", version, arch, probes: [], decryptable: false, reason: off.reason };
  if (arch === "other") return { kind: "go", version, arch, probes: [], decryptable: false, reason: `unsupported machine ${elf.machine}` };
  const probes: TlsProbe[] = [];
  const fns = ([[GO_READ, "go_tls_read"], [GO_WRITE, "go_tls_write"]] as const).map(([name, prog]) => {
    const s = syms.get(name)!;
    const code = elf.functionBytes(s);
    const copy = name === GO_READ ? goReadCopySite(code, s.value, syms.get(GO_MEMMOVE)?.value, syms.get(GO_READER_READ)?.value, arch) : undefined;
    // RETs only where they are probed: a Read probed at its copy has none
    const scan = copy === undefined ? (arch === "x86_64" ? x86Rets(code) : arm64Rets(code)) : undefined;
    return { name, prog, base: fileOffset(elf, s), check: goStackCheck(code, arch), scan, copy };
  });
  // Entries on the stack check's branch (emulated: ~1 µs a hit instead of ~10, probe-site.ts) when
  // both functions have one: the kernel then skips the hit whose branch goes to morestack (the
  // per-binary flag). Else past the check, or at the start of a function without one.
  const atBranch = fns.every((f) => f.check !== undefined);
  // Read's plaintext is taken where it is copied out when that CALL is found (one emulated probe
  // instead of one single-stepped RET per call), else at its RETs.
  for (const { name, prog, base, check, scan, copy } of fns) {
    if (scan && (scan.error || scan.rets.length === 0)) {
      return { kind: "go", version, arch, probes: [], decryptable: false, reason: `${name}: ${scan.error ?? "no RET instruction found"}` };
    }
    probes.push({ symbol: name, offset: base + (atBranch ? check!.branch : (check?.past ?? 0)), kind: "entry", program: `${prog}_entry` });
    if (scan) probes.push({ symbol: name, offset: base, kind: "ret-offsets", program: `${prog}_ret`, retOffsets: scan.rets.map((r) => base + r) });
    else probes.push({ symbol: name, offset: base + copy!, kind: "copy", program: `${prog}_copy` });
  }
  return { kind: "go", version, arch, probes, decryptable: true, go: { offsets: off.offsets, mapValue: encodeGoTlsOffsets(off.offsets, arch, atBranch, fns[0]!.copy !== undefined) } };
}

function customStack(elf: ElfFile, c: CustomSslAddress): FileAnalysis["stack"] {
  const fake = (name: string, value: number): ElfSymbol => ({ name, value, size: 0, type: STT_FUNC, bind: 1, shndx: 1 });
  for (const [key, v] of [["ssl_read", c.sslRead], ["ssl_write", c.sslWrite], ["ssl_free", c.sslFree]] as const) {
    if (v !== undefined && elf.vaddrToOffset(v) === undefined) {
      throw new TracerError("CONFIG", `custom_ssl_address: ${key} 0x${v.toString(16)} for ${c.binary} is not in a loaded segment of that file`);
    }
  }
  const probes: TlsProbe[] = [];
  probes.push(...cProbesFor(elf, fake("SSL_read", c.sslRead), "ssl_read"), ...cProbesFor(elf, fake("SSL_write", c.sslWrite), "ssl_write"));
  if (c.sslFree !== undefined) probes.push(entry(elf, fake("SSL_free", c.sslFree), "tls_free_entry"));
  return { kind: "custom", arch: elf.arch, probes, decryptable: true };
}

function fileOffset(elf: ElfFile, s: ElfSymbol): number {
  const off = elf.vaddrToOffset(s.value);
  if (off === undefined) throw new TracerError("IO", `${elf.path}: ${s.name} at 0x${s.value.toString(16)} is not in a loaded segment`);
  return off;
}

function entry(elf: ElfFile, s: ElfSymbol, program: string): TlsProbe {
  return { symbol: s.name, offset: siteOffset(elf, s), kind: "entry", program };
}

/** The file offset of a C function's probe site: its start, or on x86-64 past the instructions
 * x86EntrySite steps over. */
function siteOffset(elf: ElfFile, s: ElfSymbol): number {
  return fileOffset(elf, s) + (elf.arch === "x86_64" ? x86EntrySite(elf.readVaddr(s.value, 16) ?? new Uint8Array()).offset : 0);
}

function cProbes(elf: ElfFile, syms: Map<string, ElfSymbol>, name: string, prog: string): TlsProbe[] {
  return cProbesFor(elf, syms.get(name)!, prog);
}

function cProbesFor(elf: ElfFile, s: ElfSymbol, prog: string): TlsProbe[] {
  const offset = siteOffset(elf, s);
  return [
    { symbol: s.name, offset, kind: "entry", program: `tls_${prog}_entry` },
    { symbol: s.name, offset, kind: "return", program: `tls_${prog}_return` },
  ];
}

/**
 * OpenSSL's internal function behind `f` and `fEx` (probe-site.ts), probed with fEx's programs,
 * when that is where a uprobe is emulated and `f`'s own entry is not (x86-64 only); undefined:
 * probe the exported functions.
 */
function opensslInternal(elf: ElfFile, syms: Map<string, ElfSymbol>, f: string, fEx: string, progEx: string): TlsProbe[] | undefined {
  const s = syms.get(f);
  const sx = syms.get(fEx);
  if (elf.arch !== "x86_64" || !s || !sx || s.size === 0 || sx.size === 0) return undefined;
  const code = elf.readVaddr(s.value, s.size, 1 << 16);
  const codeEx = elf.readVaddr(sx.value, sx.size, 1 << 16);
  if (!code || !codeEx || x86EntrySite(code).emulated) return undefined;
  const inner = x86ThinWrapperCallee(codeEx, sx.value);
  if (inner === undefined || !x86CallTargets(code, s.value)?.includes(inner)) return undefined;
  const head = elf.readVaddr(inner, 16);
  const at = elf.vaddrToOffset(inner);
  if (!head || at === undefined) return undefined;
  const site = x86EntrySite(head);
  if (!site.emulated) return undefined;
  const symbol = `${f}+${fEx}→0x${inner.toString(16)}`;
  const offset = at + site.offset;
  return [
    { symbol, offset, kind: "entry", program: `tls_${progEx}_entry` },
    { symbol, offset, kind: "return", program: `tls_${progEx}_return` },
  ];
}

function sonameVersion(soname: string | undefined, prefix: string): string | undefined {
  return soname?.startsWith(prefix) ? soname.slice(prefix.length) : undefined;
}

// ---------------------------------------------------------------------------------------------
// Processes

export interface MappedFile {
  path: string;
  dev: number;
  ino: number;
  /** "start-end" of its first mapping, the name under /proc/PID/map_files/ */
  range: string;
}

/** The kernel's dev_t encoding (MKDEV), which is also what BPF sees in inode->i_sb->s_dev. */
export function mkdev(major: number, minor: number): number {
  return major * 2 ** 20 + minor;
}

/** Distinct regular files mapped in a /proc/PID/maps text, in order of first appearance. */
export function parseMaps(text: string): MappedFile[] {
  const out: MappedFile[] = [];
  const seen = new Set<string>();
  for (const line of text.split("\n")) {
    // start-end perms offset dev inode path
    const m = /^([0-9a-f]+-[0-9a-f]+) \S+ [0-9a-f]+ ([0-9a-f]+):([0-9a-f]+) (\d+)\s+(\/.*)$/.exec(line);
    if (!m) continue;
    const ino = Number(m[4]);
    if (ino === 0) continue;
    const dev = mkdev(parseInt(m[2]!, 16), parseInt(m[3]!, 16));
    const key = `${dev}:${ino}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ path: m[5]!.replace(/ \(deleted\)$/, ""), dev, ino, range: m[1]! });
  }
  return out;
}

export interface ProcessTls {
  pid: number;
  /** the executable path (/proc/PID/exe) */
  exe?: string;
  /** "uprobe_attach_exclusion_rules[i]" when a rule matched: stacks are listed, none decryptable */
  excludedBy?: string;
  stacks: TlsStack[];
  /** files that could not be read, with the reason (reported, not fatal) */
  errors: { path: string; reason: string }[];
}

/**
 * Discovery with a (dev, ino) cache shared by all processes. The cache holds the analysis of every
 * file looked at, TLS or not, so the second process mapping libc does not reopen it.
 */
export class TlsDiscovery {
  private readonly cache = new Map<string, FileAnalysis>();
  private readonly proc: string;

  constructor(private readonly opts: DiscoverOptions = {}) {
    this.proc = opts.procRoot ?? "/proc";
  }

  get cachedFiles(): number {
    return this.cache.size;
  }

  /** Forget a file (e.g. when its last user is gone). */
  forget(dev: number, ino: number): void {
    this.cache.delete(`${dev}:${ino}`);
  }

  discoverProcess(pid: number): ProcessTls {
    let maps: string;
    try {
      maps = readFileSync(`${this.proc}/${pid}/maps`, "utf8");
    } catch (e) {
      throw new TracerError("IO", `cannot read ${this.proc}/${pid}/maps: ${(e as Error).message}`);
    }
    let cmdline = "";
    try {
      cmdline = readFileSync(`${this.proc}/${pid}/cmdline`, "latin1").replace(/\0+$/, "").replaceAll("\0", " ");
    } catch {
      /* gone: the maps read above would usually have failed first */
    }
    const files = parseMaps(maps);
    // The executable: /proc/PID/exe (a path in the process's own mount namespace), else the file
    // mapped first.
    let exePath = files[0]?.path;
    try {
      exePath = readlinkSync(`${this.proc}/${pid}/exe`).replace(/ \(deleted\)$/, "");
    } catch {
      /* kernel thread or gone */
    }
    const out: ProcessTls = { pid, exe: exePath, stacks: [], errors: [] };
    const rule = (this.opts.exclusionRules ?? []).findIndex((r) => (r.exe !== undefined || r.cmdline !== undefined) && (r.exe === undefined || r.exe === exePath) && (r.cmdline === undefined || cmdline.includes(r.cmdline)));
    if (rule >= 0) out.excludedBy = `uprobe_attach_exclusion_rules[${rule}]`;
    let opensslVersion: string | undefined;
    for (const f of files) {
      const isExe = f.path === exePath;
      if (!isExe && !this.wanted(f.path)) continue;
      const key = `${f.dev}:${f.ino}`;
      let a = this.cache.get(key);
      if (!a) {
        try {
          a = this.analyzeMapped(pid, f, isExe);
        } catch (e) {
          out.errors.push({ path: f.path, reason: (e as Error).message });
          continue;
        }
        this.cache.set(key, a);
      }
      opensslVersion ??= a.opensslVersion;
      if (a.stack) out.stacks.push({ ...a.stack, path: f.path, dev: f.dev, ino: f.ino });
    }
    // An executable that names an OpenSSL release (nginx prints "built with OpenSSL 3.0.x") but
    // uses a shared libssl the process maps: that library is its TLS stack, not a static copy.
    if (out.stacks.some((s) => (s.kind === "openssl" || s.kind === "boringssl") && s.decryptable)) {
      out.stacks = out.stacks.filter((s) => !(s.kind === "openssl" && !s.decryptable && s.reason?.startsWith("OpenSSL linked statically")));
    }
    // libssl.so.3 names only its major version; libcrypto in the same process names the release.
    for (const s of out.stacks) if (s.kind === "openssl" && opensslVersion && (!s.version || !s.version.includes("."))) s.version = opensslVersion;
    if (out.excludedBy) {
      for (const s of out.stacks) {
        if (s.decryptable) Object.assign(s, { decryptable: false, probes: [], reason: `excluded by ${out.excludedBy}` });
      }
    }
    return out;
  }

  private wanted(path: string): boolean {
    const p = this.opts.libsslPrefixes;
    if (!p || p.length === 0) return true;
    const base = path.slice(path.lastIndexOf("/") + 1);
    return p.some((x) => base.startsWith(x));
  }

  private analyzeMapped(pid: number, f: MappedFile, isExe: boolean): FileAnalysis {
    const custom = this.opts.customSslAddress?.find((c) => c.binary === f.path);
    const candidates = [`${this.proc}/${pid}/map_files/${f.range}`, `${this.proc}/${pid}/root${f.path}`];
    let lastErr: unknown;
    for (const p of candidates) {
      let elf: ElfFile;
      try {
        elf = ElfFile.open(p);
      } catch (e) {
        lastErr = e;
        const msg = (e as Error).message;
        // Opened but not ELF64 (locale archives, ICU data, 32-bit code): not a TLS stack, no second try.
        if (/no ELF magic|not 64-bit|too short for an ELF header/.test(msg)) return {};
        if (msg.includes("not a readable ELF64")) throw e;
        continue;
      }
      try {
        return analyzeElf(elf, isExe, custom);
      } finally {
        elf.close();
      }
    }
    throw lastErr instanceof Error ? lastErr : new TracerError("IO", `cannot open ${f.path}`);
  }
}
