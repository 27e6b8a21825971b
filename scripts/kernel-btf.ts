#!/usr/bin/env bun
/**
 * Extracts a kernel's BTF from its boot image (an arm64 `Image`, as Debian's linux-image-*-arm64
 * packages ship it uncompressed, or a gzip of one, or a vmlinux ELF), for generating vmlinux.h
 * and bundled BTF of an architecture the build machine does not run.
 *
 *   bun scripts/kernel-btf.ts IMAGE OUT.btf
 *
 * A kernel built with CONFIG_DEBUG_INFO_BTF carries its .BTF section verbatim in the image
 * (between __start_BTF and __stop_BTF): the largest blob that starts with the BTF header and
 * parses completely is it. Fails when there is none.
 */
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import { bytesSource, isElf, parseBtf, readElfSection } from "../src/kernel/btf/validate.ts";

export function extractKernelBtf(image: Uint8Array): Uint8Array {
  if (image[0] === 0x1f && image[1] === 0x8b) image = gunzipSync(image);
  if (isElf(image)) {
    const sec = readElfSection(bytesSource(image), ".BTF");
    if (sec) return sec;
  }
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  let best: Uint8Array | undefined;
  // header: magic 0xeb9f (LE), version 1, flags 0, hdr_len 24, then type_off/len, str_off/len
  for (let i = image.indexOf(0x9f); i >= 0 && i + 24 <= image.length; i = image.indexOf(0x9f, i + 1)) {
    if (image[i + 1] !== 0xeb || image[i + 2] !== 1 || image[i + 3] !== 0 || v.getUint32(i + 4, true) !== 24) continue;
    const typeOff = v.getUint32(i + 8, true), typeLen = v.getUint32(i + 12, true);
    const strOff = v.getUint32(i + 16, true), strLen = v.getUint32(i + 20, true);
    const size = 24 + Math.max(typeOff + typeLen, strOff + strLen);
    if (i + size > image.length || (best && size <= best.length)) continue;
    const blob = image.subarray(i, i + size);
    try {
      parseBtf(blob);
      best = blob;
    } catch {
      // not BTF after all (the magic bytes inside other data)
    }
  }
  if (!best) throw new Error("no BTF in this image (kernel built without CONFIG_DEBUG_INFO_BTF?)");
  return best;
}

if (import.meta.main) {
  const [img, out] = Bun.argv.slice(2);
  if (!img || !out) {
    console.error("usage: bun scripts/kernel-btf.ts IMAGE OUT.btf");
    process.exit(2);
  }
  try {
    const btf = extractKernelBtf(new Uint8Array(readFileSync(img)));
    writeFileSync(out + ".tmp", btf);
    renameSync(out + ".tmp", out);
    console.error(`kernel-btf: ${out}: ${btf.length} bytes of BTF from ${img}`);
  } catch (e) {
    console.error(`kernel-btf: ${img}: ${(e as Error).message}`);
    process.exit(1);
  }
}
