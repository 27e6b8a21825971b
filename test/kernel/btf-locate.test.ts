import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  btfhubArch, btfhubDirs, btfKey, safeSegment, btfhubVersions, locateBtf, parseOsRelease, vmlinuxPaths, KERNEL_BTF_SYSFS,
  type LocateInput, type OsRelease,
} from "../../src/kernel/btf/locate.ts";

const FIX = join(import.meta.dir, "../fixtures/btf");
/** All 341 names of kyanos' BTFHub-layout tree, as a bundled index ("<id>/<ver>/<arch>/<rel>.btf"). */
const KYANOS = readFileSync(join(FIX, "kyanos/index.txt"), "utf8").trim().split("\n").map((l) => l.replace(/^custom-archive\//, ""));

const os = (text: string): OsRelease => parseOsRelease(text);
const UBUNTU_2004 = os('NAME="Ubuntu"\nVERSION_ID="20.04"\nID=ubuntu\nID_LIKE=debian\nPRETTY_NAME="Ubuntu 20.04.6 LTS"\nVERSION_CODENAME=focal\nUBUNTU_CODENAME=focal\n');
const CENTOS_7 = os('NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="7"\nPRETTY_NAME="CentOS Linux 7 (Core)"\n');

function input(over: Partial<LocateInput>): LocateInput {
  return {
    release: "5.4.0-26-generic", os: UBUNTU_2004, arch: "x86_64",
    exists: () => false, bundled: KYANOS, configuredPath: "", ...over,
  };
}

describe("parseOsRelease", () => {
  test("reads quoted and unquoted fields, lowercases ID and ID_LIKE", () => {
    const r = os('ID="CentOS"\nID_LIKE="rhel fedora"\nVERSION_ID=7\nPRETTY_NAME="CentOS Linux 7 (Core)" \n# comment\nVERSION_CODENAME=\n');
    expect(r).toEqual({
      id: "centos", versionId: "7", prettyName: "CentOS Linux 7 (Core)", versionCodename: "", ubuntuCodename: "", idLike: ["rhel", "fedora"],
    });
  });
  test("empty input gives a usable placeholder name", () => {
    expect(os("").prettyName).toBe("unknown Linux");
    expect(os("NAME=Foo").prettyName).toBe("Foo");
  });
  test("unescapes shell escapes in double quotes", () => {
    expect(os('PRETTY_NAME="a \\"b\\" c"').prettyName).toBe('a "b" c');
  });
});

describe("btfhubArch", () => {
  test("maps uname -m and Node names to BTFHub's x86_64/arm64", () => {
    expect(btfhubArch("x86_64")).toBe("x86_64");
    expect(btfhubArch("x64")).toBe("x86_64");
    expect(btfhubArch("aarch64")).toBe("arm64");
    expect(btfhubArch("arm64")).toBe("arm64");
    expect(btfhubArch("s390x")).toBeUndefined();
  });
});

describe("btfhubVersions (BTFHub directory quirks)", () => {
  test.each([
    ["ubuntu", "20.04", "focal", ["20.04", "focal"]],
    ["ubuntu", "18.04", "", ["18.04", "bionic"]],
    ["debian", "10", "buster", ["10", "buster"]],
    ["debian", "11", "bullseye", ["bullseye", "11"]],
    ["debian", "11", "", ["bullseye", "11"]],
    ["debian", "12", "bookworm", ["12", "bookworm"]],
    ["debian", "", "trixie", ["13", "trixie"]],
    ["centos", "7", "", ["7"]],
    ["centos", "8", "", ["8"]],
    ["rhel", "8.4", "", ["8"]],
    ["ol", "7.9", "", ["7"]],
    ["amzn", "2", "", ["2"]],
    ["amzn", "2018.03", "", ["1", "2018"]],
    ["amzn", "2023", "", ["2023"]],
    ["fedora", "34", "", ["34"]],
    ["sles", "15.3", "", ["15.3", "15"]],
  ])("%s %s %s → %j", (id, ver, code, want) => {
    expect(btfhubVersions(id, ver, code)).toEqual(want);
  });

  test("derivatives fall back to ID_LIKE distributions BTFHub knows", () => {
    const rocky = os('ID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="8.6"\n');
    expect(btfhubDirs(rocky)).toEqual([
      { id: "rocky", version: "8.6" }, { id: "rocky", version: "8" },
      { id: "rhel", version: "8" }, { id: "centos", version: "8" }, { id: "fedora", version: "8.6" }, { id: "fedora", version: "8" },
    ]);
    const mint = os("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\nVERSION_ID=21.1\nVERSION_CODENAME=vera\nUBUNTU_CODENAME=jammy\n");
    expect(btfhubDirs(mint)).toContainEqual({ id: "ubuntu", version: "22.04" });
    expect(btfhubDirs(mint).some((d) => d.id === "debian")).toBe(false); // vera is no Debian codename
    const raspbian = os("ID=raspbian\nID_LIKE=debian\nVERSION_ID=11\nVERSION_CODENAME=bullseye\n");
    expect(btfhubDirs(raspbian)).toContainEqual({ id: "debian", version: "bullseye" });
  });
});

describe("locateBtf", () => {
  test("kernel BTF in sysfs is chosen, candidates keep their order", () => {
    const r = locateBtf(input({ exists: (p) => p === KERNEL_BTF_SYSFS }));
    expect(r.chosen).toMatchObject({ source: "kernel", path: KERNEL_BTF_SYSFS });
    expect(r.kernelBtf).toBe(true);
    expect(r.candidates.map((c) => c.path).slice(0, 7)).toEqual([KERNEL_BTF_SYSFS, ...vmlinuxPaths("5.4.0-26-generic")]);
  });

  test("btf.path comes first when set, even when the kernel has BTF", () => {
    const r = locateBtf(input({ configuredPath: "/opt/my.btf", exists: () => true }));
    expect(r.candidates[0]).toMatchObject({ source: "path", path: "/opt/my.btf", found: true });
    expect(r.chosen?.source).toBe("path");
  });

  test("a missing btf.path falls through to the kernel's BTF", () => {
    const r = locateBtf(input({ configuredPath: "/opt/missing.btf", exists: (p) => p === KERNEL_BTF_SYSFS }));
    expect(r.candidates[0]).toMatchObject({ source: "path", found: false });
    expect(r.chosen?.path).toBe(KERNEL_BTF_SYSFS);
  });

  test("vmlinux images are probed in libbpf's order", () => {
    const rel = "4.19.0-6-amd64";
    expect(vmlinuxPaths(rel)).toEqual([
      `/boot/vmlinux-${rel}`, `/lib/modules/${rel}/vmlinux-${rel}`, `/lib/modules/${rel}/build/vmlinux`,
      `/usr/lib/modules/${rel}/kernel/vmlinux`, `/usr/lib/debug/boot/vmlinux-${rel}`, `/usr/lib/debug/lib/modules/${rel}/vmlinux`,
    ]);
    const r = locateBtf(input({ release: rel, exists: (p) => p === `/usr/lib/debug/boot/vmlinux-${rel}` }));
    expect(r.chosen).toMatchObject({ source: "kernel", path: `/usr/lib/debug/boot/vmlinux-${rel}` });
    expect(r.kernelBtf).toBe(false);
  });

  test.each([
    ["ubuntu 20.04", UBUNTU_2004, "5.4.0-26-generic", "ubuntu/20.04/x86_64/5.4.0-26-generic.btf"],
    ["ubuntu 18.04", os("ID=ubuntu\nVERSION_ID=18.04\n"), "4.15.0-101-generic", "ubuntu/18.04/x86_64/4.15.0-101-generic.btf"],
    ["centos 7", CENTOS_7, "3.10.0-957.el7.x86_64", "centos/7/x86_64/3.10.0-957.el7.x86_64.btf"],
    ["centos 8 (rhel-style 8.x VERSION_ID)", os("ID=centos\nVERSION_ID=8.1\n"), "4.18.0-147.el8.x86_64", "centos/8/x86_64/4.18.0-147.el8.x86_64.btf"],
    ["rocky 8 via ID_LIKE centos", os('ID=rocky\nID_LIKE="rhel centos fedora"\nVERSION_ID=8.1\n'), "4.18.0-147.el8.x86_64", "centos/8/x86_64/4.18.0-147.el8.x86_64.btf"],
  ])("bundled lookup in the kyanos BTFHub layout: %s", (_name, osr, rel, key) => {
    const r = locateBtf(input({ os: osr, release: rel }));
    expect(r.chosen).toMatchObject({ source: "bundled", path: key, found: true });
    expect(KYANOS).toContain(key);
  });

  test("bundled lookup needs the exact release and arch", () => {
    expect(locateBtf(input({ release: "5.4.0-999-generic" })).chosen).toBeUndefined();
    expect(locateBtf(input({ arch: "arm64" })).chosen).toBeUndefined();
    const arm = locateBtf(input({ arch: "aarch64", bundled: ["ubuntu/20.04/arm64/5.4.0-26-generic.btf"] }));
    expect(arm.chosen?.path).toBe("ubuntu/20.04/arm64/5.4.0-26-generic.btf");
  });

  test("Debian 11 is found filed as bullseye or as 11", () => {
    const deb11 = os("ID=debian\nVERSION_ID=11\nVERSION_CODENAME=bullseye\n");
    const rel = "5.10.0-9-amd64";
    for (const key of [`debian/bullseye/x86_64/${rel}.btf`, `debian/11/x86_64/${rel}.btf`]) {
      expect(locateBtf(input({ os: deb11, release: rel, bundled: [key] })).chosen?.path).toBe(key);
    }
  });

  test("nothing found: no choice, every place listed, download dirs in order", () => {
    const r = locateBtf(input({ os: CENTOS_7, release: "3.10.0-1.el7.x86_64", configuredPath: "/x.btf" }));
    expect(r.chosen).toBeUndefined();
    expect(r.kernelBtf).toBe(false);
    expect(r.candidates.map((c) => `${c.source}:${c.path}`)).toEqual([
      "path:/x.btf", `kernel:${KERNEL_BTF_SYSFS}`, ...vmlinuxPaths("3.10.0-1.el7.x86_64").map((p) => `kernel:${p}`),
      "bundled:centos/7/x86_64/3.10.0-1.el7.x86_64.btf",
      "bundled:rhel/7/x86_64/3.10.0-1.el7.x86_64.btf", "bundled:fedora/7/x86_64/3.10.0-1.el7.x86_64.btf",
    ]);
    expect(r.downloadDirs[0]).toEqual({ id: "centos", version: "7" });
  });

  test("os-release values or a release that could leave the cache directory give no BTFHub path", () => {
    const evil = os('ID="../../etc"\nVERSION_ID="12"\nID_LIKE="debian"\nVERSION_CODENAME=bookworm\n');
    const r = locateBtf(input({ os: evil }));
    // the hostile ID is dropped; the Debian it names through ID_LIKE and its codename still counts
    expect(r.downloadDirs).toEqual([{ id: "debian", version: "12" }, { id: "debian", version: "bookworm" }]);
    for (const v of ["12/../../x", "a/b", "..", ".hidden", "x?y", "x#y", "%2e%2e", ""]) {
      expect(locateBtf(input({ os: os(`ID=debian\nVERSION_ID="${v}"\n`) })).downloadDirs.some((d) => d.version === v)).toBe(false);
    }
    const badRelease = locateBtf(input({ release: "6.1.0/../../../tmp/x" }));
    expect(badRelease.downloadDirs).toEqual([]);
    expect(badRelease.candidates.every((c) => c.source !== "bundled")).toBe(true);
    expect(() => btfKey({ id: "debian", version: ".." }, "x86_64", "6.1.0")).toThrow(/path segment/);
    expect(safeSegment("6.1.0-28-amd64")).toBe(true);
    expect(safeSegment("5.15.0-1019-aws+")).toBe(true);
  });

  test("an architecture BTFHub lacks yields no bundled or download candidates", () => {
    const r = locateBtf(input({ arch: "riscv64" }));
    expect(r.arch).toBeUndefined();
    expect(r.downloadDirs).toEqual([]);
    expect(r.candidates.every((c) => c.source !== "bundled")).toBe(true);
  });

  test("every kyanos file is found by the lookup from its own os-release fields", () => {
    let checked = 0;
    for (const key of KYANOS) {
      const [id, ver, arch, file] = key.split("/") as [string, string, string, string];
      const r = locateBtf(input({ os: os(`ID=${id}\nVERSION_ID=${ver}\n`), arch, release: file.replace(/\.btf$/, "") }));
      expect(r.chosen?.path).toBe(key);
      checked++;
    }
    expect(checked).toBe(341);
  });
});
