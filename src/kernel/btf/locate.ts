/**
 * Where BTF for the running kernel may be found: a PURE function of its inputs (kernel release,
 * /etc/os-release fields, architecture, an `exists` probe, the bundled index and the configured
 * path), so every distribution quirk is testable without root or network.
 *
 * Order of candidates (first found wins; btf-resolve validates and may fall through):
 *   1. `btf.path` from the config, when set
 *   2. the kernel's own: /sys/kernel/btf/vmlinux, then the vmlinux images libbpf also probes
 *   3. bundled files keyed `<id>/<version>/<arch>/<release>.btf` (BTFHub layout)
 * Downloading (step 3 of the chain) uses `downloadDirs`, the same BTFHub directories in order.
 *
 * BTFHub directory names versus /etc/os-release (ID / VERSION_ID), as BTFHub files them:
 *   ubuntu  VERSION_ID as is ("18.04", "20.04"); the codename ("bionic") is tried second because
 *           BTFHub's first generator (tools/update.sh) filed Ubuntu by codename
 *   debian  "9", "10" as is, codename second; Debian 11 is tried as "bullseye" first, then "11"
 *           (BTFHub's Go generator files bullseye kernels under debian/bullseye, the older script
 *           under debian/11); with no VERSION_ID (testing/sid) VERSION_CODENAME is mapped to its number
 *   centos, rhel, ol   the major version only ("7.9" → "7"), BTFHub has one directory per major
 *   amzn    "2" as is; Amazon Linux 1 reports "2018.03" and is filed as "1" (older: "2018")
 *   fedora, sles, others   VERSION_ID as is, then its major when it has a dot
 * Derivatives fall back to the BTFHub distributions named in ID_LIKE (e.g. Rocky "8.6" with
 * ID_LIKE="rhel centos fedora" → rhel/8, centos/8; Mint with UBUNTU_CODENAME=jammy → ubuntu/22.04),
 * since they run the parent's kernels and only an exact `<release>.btf` file ever matches.
 * Architecture directories are "x86_64" and "arm64" (uname -m "aarch64" and Node's "x64" map to them).
 */

import { TracerError } from "../../errors.ts";

export const KERNEL_BTF_SYSFS = "/sys/kernel/btf/vmlinux";

export interface OsRelease {
  id: string;
  versionId: string;
  prettyName: string;
  versionCodename: string;
  ubuntuCodename: string;
  idLike: string[];
}

export type CandidateSource = "path" | "kernel" | "bundled";

export interface Candidate {
  source: CandidateSource;
  /** file path for "path"/"kernel"; bundled index key for "bundled" */
  path: string;
  found: boolean;
  /** why it is on the list, for the log */
  why: string;
}

export interface BtfhubDir {
  id: string;
  version: string;
}

export interface LocateInput {
  /** uname -r */
  release: string;
  os: OsRelease;
  /** uname -m or process.arch */
  arch: string;
  exists(path: string): boolean;
  /** bundled index: relative keys like "ubuntu/20.04/x86_64/5.4.0-26-generic.btf" */
  bundled: readonly string[];
  /** cfg.btf.path; "" when unset */
  configuredPath: string;
}

export interface LocateResult {
  candidates: Candidate[];
  /** first found candidate, if any */
  chosen: Candidate | undefined;
  /** /sys/kernel/btf/vmlinux exists (the kernel carries its own BTF) */
  kernelBtf: boolean;
  /** BTFHub arch directory, undefined when the architecture has none */
  arch: string | undefined;
  /** BTFHub directories to try, in order, for bundled lookup and download */
  downloadDirs: BtfhubDir[];
}

/** Parses /etc/os-release text (shell-style KEY=value, optionally quoted). */
export function parseOsRelease(text: string): OsRelease {
  const kv = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^\s*([A-Z0-9_]+)=(.*)$/.exec(line);
    if (!m) continue;
    kv.set(m[1]!, unquote(m[2]!.trim()));
  }
  const get = (k: string) => kv.get(k) ?? "";
  return {
    id: get("ID").toLowerCase(),
    versionId: get("VERSION_ID"),
    prettyName: get("PRETTY_NAME") || get("NAME") || "unknown Linux",
    versionCodename: get("VERSION_CODENAME"),
    ubuntuCodename: get("UBUNTU_CODENAME"),
    idLike: get("ID_LIKE").toLowerCase().split(/\s+/).filter(Boolean),
  };
}

function unquote(v: string): string {
  const q = v[0];
  if ((q === '"' || q === "'") && v.endsWith(q) && v.length >= 2) {
    return v.slice(1, -1).replace(/\\(["'$`\\])/g, "$1");
  }
  return v.replace(/\s+#.*$/, "");
}

/** BTFHub architecture directory for uname -m / process.arch; undefined when BTFHub has none. */
export function btfhubArch(arch: string): string | undefined {
  switch (arch) {
    case "x86_64": case "x64": case "amd64": return "x86_64";
    case "aarch64": case "arm64": return "arm64";
    default: return undefined;
  }
}

const DEBIAN_CODENAMES: Record<string, string> = {
  stretch: "9", buster: "10", bullseye: "11", bookworm: "12", trixie: "13",
};
const UBUNTU_CODENAMES: Record<string, string> = {
  xenial: "16.04", bionic: "18.04", focal: "20.04", jammy: "22.04", noble: "24.04",
};
/** Distributions BTFHub files BTF for; ID_LIKE entries outside this set are ignored. */
const BTFHUB_IDS = new Set(["ubuntu", "debian", "centos", "rhel", "ol", "amzn", "fedora", "sles"]);

function major(v: string): string {
  return v.split(".")[0] ?? v;
}

function codenameOf(table: Record<string, string>, version: string): string | undefined {
  return Object.keys(table).find((k) => table[k] === version);
}

/** BTFHub version directories for one distribution id, most likely first (see the table above). */
export function btfhubVersions(id: string, versionId: string, codename = ""): string[] {
  const out: string[] = [];
  const add = (...v: (string | undefined)[]) => { for (const x of v) if (x && !out.includes(x)) out.push(x); };
  switch (id) {
    case "ubuntu":
      add(versionId || UBUNTU_CODENAMES[codename], codename || codenameOf(UBUNTU_CODENAMES, versionId));
      break;
    case "debian": {
      const num = versionId ? major(versionId) : DEBIAN_CODENAMES[codename];
      const name = codename || (num ? codenameOf(DEBIAN_CODENAMES, num) : undefined);
      if (num === "11") add(name, num);
      else add(num, name);
      break;
    }
    case "centos": case "rhel": case "ol":
      add(major(versionId));
      break;
    case "amzn":
      if (versionId.startsWith("2018")) add("1", "2018");
      else add(versionId);
      break;
    default:
      add(versionId, versionId.includes(".") ? major(versionId) : undefined);
  }
  return out;
}

/** The os's own BTFHub directories, then those of BTFHub distributions it names in ID_LIKE. */
export function btfhubDirs(os: OsRelease): BtfhubDir[] {
  const dirs: BtfhubDir[] = [];
  const push = (id: string, versions: string[]) => {
    for (const version of versions) {
      if (!safeSegment(id) || !safeSegment(version)) continue;
      if (!dirs.some((d) => d.id === id && d.version === version)) dirs.push({ id, version });
    }
  };
  if (os.id) push(os.id, btfhubVersions(os.id, os.versionId, os.versionCodename));
  for (const like of os.idLike) {
    if (!BTFHUB_IDS.has(like) || like === os.id) continue;
    if (like === "ubuntu") {
      const v = UBUNTU_CODENAMES[os.ubuntuCodename];
      if (v) push("ubuntu", [v]);
    } else if (like === "debian") {
      // a derivative's VERSION_ID is its own; only the codename says which Debian it follows
      const num = DEBIAN_CODENAMES[os.versionCodename];
      if (num) push("debian", btfhubVersions("debian", num, os.versionCodename));
    } else {
      push(like, btfhubVersions(like, os.versionId));
    }
  }
  return dirs;
}

/**
 * Whether `v` may be one path segment of a cache file or download URL. os-release values and
 * the kernel release name files under btf.download_storage_path and parts of a URL: anything
 * that could climb out of that directory (`..`, `/`) or change a URL's meaning (`?`, `#`, `%`)
 * is refused, so such an os-release yields no BTFHub directory instead of a path elsewhere.
 */
export function safeSegment(v: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$/.test(v) && !v.includes("..");
}

/** Bundled-index / cache key in BTFHub layout; throws on a segment safeSegment refuses. */
export function btfKey(dir: BtfhubDir, arch: string, release: string): string {
  for (const v of [dir.id, dir.version, arch, release]) {
    if (!safeSegment(v)) throw new TracerError("INTERNAL", `refusing ${JSON.stringify(v)} as a BTF path segment (from os-release or uname)`);
  }
  return `${dir.id}/${dir.version}/${arch}/${release}.btf`;
}

/** The vmlinux images libbpf's own search also probes, in the same order. */
export function vmlinuxPaths(release: string): string[] {
  return [
    `/boot/vmlinux-${release}`,
    `/lib/modules/${release}/vmlinux-${release}`,
    `/lib/modules/${release}/build/vmlinux`,
    `/usr/lib/modules/${release}/kernel/vmlinux`,
    `/usr/lib/debug/boot/vmlinux-${release}`,
    `/usr/lib/debug/lib/modules/${release}/vmlinux`,
  ];
}

/** Builds the ordered candidate list and picks the first one found. Pure: touches nothing but `exists`. */
export function locateBtf(input: LocateInput): LocateResult {
  const candidates: Candidate[] = [];
  const file = (source: CandidateSource, path: string, why: string) =>
    candidates.push({ source, path, found: input.exists(path), why });
  if (input.configuredPath) file("path", input.configuredPath, "btf.path from the config");
  file("kernel", KERNEL_BTF_SYSFS, "kernel's own BTF (CONFIG_DEBUG_INFO_BTF)");
  for (const p of vmlinuxPaths(input.release)) file("kernel", p, "vmlinux image with a .BTF section");
  const arch = btfhubArch(input.arch);
  // a release name that is no safe path segment gets no bundled, cached or downloaded file
  const downloadDirs = arch && safeSegment(input.release) ? btfhubDirs(input.os) : [];
  const bundled = new Set(input.bundled);
  for (const dir of downloadDirs) {
    const key = btfKey(dir, arch!, input.release);
    candidates.push({ source: "bundled", path: key, found: bundled.has(key), why: "bundled in the binary" });
  }
  return {
    candidates,
    chosen: candidates.find((c) => c.found),
    kernelBtf: candidates.some((c) => c.path === KERNEL_BTF_SYSFS && c.found),
    arch,
    downloadDirs,
  };
}
