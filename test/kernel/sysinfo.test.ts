import { describe, expect, test } from "bun:test";
import { collectSystemInfo, logSystemInfo, type SysInfoProbes } from "../../src/kernel/btf/sysinfo.ts";
import { Logger } from "../../src/log/log.ts";

const OS_RELEASE = 'ID=ubuntu\nID_LIKE=debian\nVERSION_ID="20.04"\nVERSION_CODENAME=focal\nPRETTY_NAME="Ubuntu 20.04.6 LTS"\n';

/** Fake systeminformation answers (only the fields sysinfo.ts reads matter). */
function fakeProbes(over: Partial<Record<keyof SysInfoProbes, () => Promise<unknown>>> = {}): SysInfoProbes {
  const p = {
    osInfo: async () => ({ distro: "Ubuntu", release: "20.04.6 LTS", codename: "focal", kernel: "5.4.0-26-generic", arch: "x64", hostname: "web-1", fqdn: "web-1.example" }),
    system: async () => ({ manufacturer: "QEMU", model: "Standard PC", uuid: "hw-uuid", virtual: true, virtualHost: "KVM" }),
    cpu: async () => ({ manufacturer: "Intel", vendor: "GenuineIntel", brand: "Xeon", family: "6", model: "85", stepping: "7", cores: 4, physicalCores: 2, speed: 2.5, flags: "fpu sse hypervisor" }),
    mem: async () => ({ total: 8_000_000_000, available: 6_000_000_000 }),
    uuid: async () => ({ os: "machine-id-123", hardware: "", macs: [] }),
    ...over,
  };
  return p as unknown as SysInfoProbes;
}

describe("collectSystemInfo", () => {
  test("maps every probe into one flat record", async () => {
    const info = await collectSystemInfo({ probes: fakeProbes(), osReleaseText: OS_RELEASE });
    expect(info).toMatchObject({
      os_name: "Ubuntu", os_vendor: "ubuntu", os_version: "20.04.6 LTS", os_codename: "focal",
      os_pretty_name: "Ubuntu 20.04.6 LTS", os_id_like: "debian", os_arch: "x64",
      kernel_release: "5.4.0-26-generic", hostname: "web-1", fqdn: "web-1.example",
      machine_id: "machine-id-123", hardware_uuid: "hw-uuid",
      system_manufacturer: "QEMU", system_model: "Standard PC", virtual: true, hypervisor: "KVM",
      cpu_vendor: "GenuineIntel", cpu_brand: "Xeon", cpu_cores: 4, cpu_physical_cores: 2, cpu_hypervisor_flag: true,
      mem_total_bytes: 8_000_000_000, mem_available_bytes: 6_000_000_000,
    });
    expect(typeof info.kernel_version).toBe("string");
    expect(info.probe_errors).toBeUndefined();
  });

  test("a failing or hanging probe only drops its own fields", async () => {
    const t0 = Date.now();
    const info = await collectSystemInfo({
      probes: fakeProbes({ cpu: async () => { throw new Error("boom"); }, system: () => new Promise(() => {}) }),
      osReleaseText: OS_RELEASE, timeoutMs: 200,
    });
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(info.probe_errors).toEqual(["cpu: boom", "system: timed out after 200 ms"]);
    expect(info.cpu_brand).toBe("");
    expect(info.hypervisor).toBe("");
    expect(info.hostname).toBe("web-1");
  });

  test("falls back to os-release when systeminformation has no OS data", async () => {
    const info = await collectSystemInfo({ probes: fakeProbes({ osInfo: async () => { throw new Error("x"); } }), osReleaseText: OS_RELEASE });
    expect(info.os_name).toBe("Ubuntu 20.04.6 LTS");
    expect(info.os_version).toBe("20.04");
  });
});

describe("logSystemInfo", () => {
  test("writes exactly one structured line", async () => {
    const lines: string[] = [];
    await logSystemInfo(new Logger("info", { write: (l) => lines.push(l) }), { probes: fakeProbes(), osReleaseText: OS_RELEASE });
    expect(lines.length).toBe(1);
    const rec = JSON.parse(lines[0]!);
    expect(rec.msg).toBe("system information");
    expect(rec.level).toBe("info");
    expect(rec.machine_id).toBe("machine-id-123");
  });

  test("real probes on this machine answer within the limit", async () => {
    const info = await collectSystemInfo({ timeoutMs: 10_000 });
    expect(info.kernel_release).not.toBe("");
    expect(info.os_arch).not.toBe("");
    expect(Number(info.mem_total_bytes)).toBeGreaterThan(0);
  }, 30_000);
});
