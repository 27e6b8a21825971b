/**
 * Go struct offsets: the table in go-offsets.ts against what a Go 1.19 program measures about itself
 * (reflect for tls.Conn → net.TCPConn → netFD → poll.FD.Sysfd; its own g for goid), and the table's
 * version boundaries (never a guess outside the known range).
 */
import { describe, expect, test } from "bun:test";
import { ElfFile } from "../../src/kernel/tls/elf.ts";
import { encodeGoTlsOffsets, goTlsOffsets, goTlsOffsetsFromDwarf } from "../../src/kernel/tls/go-offsets.ts";
import { buildGo, goSkipReason } from "../fixtures/go/build.ts";

const skip = goSkipReason();
if (skip) console.warn(`tls-go.test.ts measurement skipped: ${skip}`);

describe.skipIf(!!skip)("Go 1.19 offsets measured in a running program", () => {
  test("the table matches the program's own layout", () => {
    const bin = buildGo("offsets");
    const r = Bun.spawnSync([bin]);
    expect(r.exitCode).toBe(0);
    const m = JSON.parse(r.stdout.toString());
    expect(m.goidCandidates).toBe(1);
    expect(m.tlsConnConnKind).toBe("interface");
    expect(m.sysfdSize).toBe(8);
    const t = goTlsOffsets(m.go);
    if (!("offsets" in t)) throw new Error(t.reason);
    expect(t.offsets).toEqual({
      release: "go1.19", source: "table", measured: true, ifaceData: 8,
      tlsConnConn: m.tlsConnConn, tcpConnConn: m.tcpConnConn, connFd: m.connFd, netFDPfd: m.netFDPfd,
      pollFDSysfd: m.pollFDSysfd, gGoid: m.gGoid,
    });
    // The binary's DWARF says the same; without DWARF (-w) there is no DWARF answer.
    const dwarf = ElfFile.with(bin, (e) => goTlsOffsetsFromDwarf(e, m.go));
    expect(dwarf).toEqual({ ...t.offsets, source: "dwarf", measured: false });
    expect(ElfFile.with(buildGo("offsets", "-w"), (e) => goTlsOffsetsFromDwarf(e, m.go))).toBeUndefined();
  }, 180_000);
});

describe("offset table by version", () => {
  test("goid moves in 1.23–1.24 only; unknown versions give a reason", () => {
    const goid = (v: string) => {
      const t = goTlsOffsets(v);
      return "offsets" in t ? t.offsets.gGoid : t.reason;
    };
    expect(goid("go1.17")).toBe(152);
    expect(goid("go1.22.5")).toBe(152);
    expect(goid("go1.23.0")).toBe(160);
    expect(goid("go1.24rc1")).toBe(160);
    expect(goid("go1.25.3")).toBe(152);
    expect(goid("go1.16.15")).toMatch(/predates the register ABI/);
    expect(goid("go1.27")).toMatch(/newer than the offset table/);
    expect(goid("devel +abc")).toMatch(/unreadable Go version/);
    const t = goTlsOffsets("go1.21.1");
    expect("offsets" in t && t.offsets.measured).toBe(false);
  });

  test("map value: eight little-endian u32, arch flag last", () => {
    const t = goTlsOffsets("go1.19.8");
    if (!("offsets" in t)) throw new Error(t.reason);
    const v = new DataView(encodeGoTlsOffsets(t.offsets, "aarch64").buffer);
    expect(Array.from({ length: 8 }, (_, i) => v.getUint32(i * 4, true))).toEqual([0, 8, 0, 0, 0, 16, 152, 1]);
    expect(new DataView(encodeGoTlsOffsets(t.offsets, "x86_64").buffer).getUint32(28, true)).toBe(0);
  });
});
