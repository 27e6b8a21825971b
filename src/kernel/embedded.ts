/**
 * Build outputs embedded in the compiled binary. `type: "file"` imports are what Bun 1.4 embeds
 * in a --compile executable (`type: "bytes"` is not); at run time they are read through
 * Bun.file from the binary's internal filesystem. `bun run build` must have produced them.
 */
// @ts-ignore -- a build output with no type declarations; the import yields its path (string)
import bpfObjectPath from "../../.output/tracer.bpf.o" with { type: "file" };
// @ts-ignore -- same
import libbpfPath from "../../.output/libbpf.so" with { type: "file" };

export async function bpfObjectBytes(): Promise<Uint8Array> {
  return new Uint8Array(await Bun.file(bpfObjectPath).arrayBuffer());
}

export async function libbpfBytes(): Promise<Uint8Array> {
  return new Uint8Array(await Bun.file(libbpfPath).arrayBuffer());
}
