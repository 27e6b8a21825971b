/**
 * Frame-level helpers and the FrameReader alone: detection (preface, frame chains), CONTINUATION
 * joining, padding and priority stripping, frames split at every byte, bounds, gaps.
 */
import { describe, expect, test } from "bun:test";
import { decodeHttp2Settings, detectHttp2Frames, FrameReader, type FrameSink, frameChain, isHttp2Preface, looksLikeHttp2Frames, plausibleFrameHeader, prefaceMatch } from "../../src/protocols/http2/frames.ts";
import { concat, dataFrame, frame, goawayFrame, headersFrames, pingFrame, PREFACE, rstFrame, settingsFrame, windowUpdateFrame } from "../../src/protocols/http2/encoder.ts";

const enc = new TextEncoder();

class Log implements FrameSink {
  out: string[] = [];
  private dataBuf = "";
  data(sid: number, b: Uint8Array, s: number, e: number): void { this.dataBuf += `${Buffer.from(b.subarray(s, e)).toString("latin1")}`; void sid; }
  dataEnd(sid: number, end: boolean): void { this.out.push(`DATA ${sid} ${JSON.stringify(this.dataBuf)}${end ? " ES" : ""}`); this.dataBuf = ""; }
  dataGap(sid: number, n: number): void { this.out.push(`GAP ${sid} ${n}`); }
  headers(sid: number, end: boolean, promised: number, b: Uint8Array, s: number, e: number): void {
    this.out.push(`HEADERS ${sid}${promised ? ` promise ${promised}` : ""} ${Buffer.from(b.subarray(s, e)).toString("hex")}${end ? " ES" : ""}`);
  }
  headersLost(sid: number, end: boolean, promised: number, reason: string): void { this.out.push(`LOST ${sid} ${reason}${end ? " ES" : ""}${promised ? ` promise ${promised}` : ""}`); }
  rstStream(sid: number, code: number): void { this.out.push(`RST ${sid} ${code}`); }
  settings(ack: boolean, _b: Uint8Array, s: number, e: number): void { this.out.push(`SETTINGS${ack ? " ACK" : ""} ${(e - s) / 6}`); }
  goaway(last: number, code: number): void { this.out.push(`GOAWAY ${last} ${code}`); }
  malformed(counter: string, reason: string): void { this.out.push(`! ${counter}: ${reason}`); }
  syncLost(): void { this.out.push("SYNC LOST"); }
  resynced(skipped: number): void { this.out.push(`RESYNC ${skipped}`); }
}

const block = (s: string): Uint8Array => enc.encode(s);
const sample = concat([
  PREFACE,
  settingsFrame([[1, 4096], [3, 100]]),
  headersFrames(1, block("abcdefghij"), { pad: 3, priority: true, maxFragment: 4 }),
  dataFrame(1, "hello", { pad: 2 }),
  dataFrame(1, "", { endStream: true }),
  headersFrames(2, block("pushed"), { promised: 4, pad: 1 }),
  pingFrame(), windowUpdateFrame(0, 5), frame(0x42, 0xff, 9, block("unknown type")),
  rstFrame(1, 8), goawayFrame(1, 0, "debug data that is skipped"), settingsFrame([], true),
]);
const expected = [
  "SETTINGS 2", "HEADERS 1 6162636465666768696a", 'DATA 1 "hello"', 'DATA 1 "" ES', "HEADERS 2 promise 4 707573686564",
  "RST 1 8", "GOAWAY 1 0", "SETTINGS ACK 0",
];

describe("FrameReader", () => {
  test("every frame type; padding and priority stripped; CONTINUATION joined", () => {
    const log = new Log();
    new FrameReader(log, { expectPreface: true }).push(sample, 1n, true);
    expect(log.out).toEqual(expected);
  });

  test("split at every byte, and byte by byte", () => {
    for (let at = 1; at < sample.length; at++) {
      const log = new Log();
      const r = new FrameReader(log, { expectPreface: true });
      r.push(sample.subarray(0, at), 1n, false);
      r.push(sample.subarray(at), 2n, true);
      expect(log.out).toEqual(expected);
    }
    const log = new Log();
    const r = new FrameReader(log, { expectPreface: true });
    for (let i = 0; i < sample.length; i++) r.push(sample.subarray(i, i + 1), 1n, i === sample.length - 1);
    expect(log.out).toEqual(expected);
  });

  test("CONTINUATION without HEADERS, interrupted blocks, oversized blocks", () => {
    const log = new Log();
    const r = new FrameReader(log, { expectPreface: false, maxHeaderBlock: 100 });
    r.push(concat([
      frame(9, 4, 1, block("x")),
      frame(1, 0, 3, block("ab")), dataFrame(3, "interrupts"),
      headersFrames(5, new Uint8Array(300), { maxFragment: 60 }),
      headersFrames(7, block("ok"), { endStream: true }),
    ]), 1n, true);
    expect(log.out).toEqual([
      "! Http2FramesMalformed: CONTINUATION without HEADERS",
      "! Http2FramesMalformed: header block interrupted by another frame", "LOST 3 header block interrupted", 'DATA 3 "interrupts"',
      "! Http2HeaderBlockTooLarge: header block over 100 bytes", "LOST 5 header block too large",
      "HEADERS 7 6f6b ES",
    ]);
  });

  test("gaps: inside DATA, inside a header block, over frame headers then resync", () => {
    const log = new Log();
    const r = new FrameReader(log, { expectPreface: false });
    const d = dataFrame(1, "0123456789");
    r.push(d.subarray(0, 12), 1n, false);
    r.gap(4, 1n);
    r.push(d.subarray(16), 1n, true);
    const h = headersFrames(3, block("0123456789"), { maxFragment: 4, endStream: true });
    r.push(h.subarray(0, 11), 2n, false);
    r.gap(2, 2n);                                      // the rest of the HEADERS payload
    r.push(h.subarray(13), 2n, true);                  // its CONTINUATIONs are skipped
    r.push(dataFrame(3, "z", { endStream: true }), 3n, true);
    const two = concat([dataFrame(5, "a"), dataFrame(5, "b", { endStream: true })]);
    r.push(two.subarray(0, 12), 4n, false);
    r.gap(20, 4n);                                     // over the next frame header
    r.push(block("garbage tail"), 5n, true);          // rest of that syscall: skipped
    r.push(block("no frames here at all"), 6n, true);  // a syscall without a frame chain: skipped
    r.push(concat([windowUpdateFrame(0, 1), dataFrame(7, "c", { endStream: true })]), 7n, true);
    expect(log.out).toEqual([
      "GAP 1 4", 'DATA 1 "012789"', "LOST 3 gap inside a header block ES", 'DATA 3 "z" ES',
      'DATA 5 "a"', "SYNC LOST", "RESYNC 53", 'DATA 7 "c" ES',
    ]);
  });

  test("absurd lengths are counted and skipped without memory", () => {
    for (const type of [0xee, 1]) {
      const log = new Log();
      const r = new FrameReader(log, { expectPreface: false });
      r.push(Uint8Array.of(0xff, 0xff, 0xff, type, type === 1 ? 4 : 0, 0, 0, 0, 1), 1n, false);
      const heapBefore = process.memoryUsage().heapUsed;
      for (let i = 0; i < 1000; i++) r.push(new Uint8Array(16777), 1n, false);
      r.push(new Uint8Array(16777215 - 16777000), 1n, true);
      expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(8 << 20);
      r.push(rstFrame(3, 2), 1n, true);
      expect(log.out).toEqual(type === 1
        ? ["! Http2FrameTooLarge: frame of 16777215 bytes, limit 16384", "! Http2HeaderBlockTooLarge: header block over 262144 bytes", "LOST 1 header block too large", "RST 3 2"]
        : ["! Http2FrameTooLarge: frame of 16777215 bytes, limit 16384", "RST 3 2"]);
    }
  });

  test("a mismatched preface counts and waits for frames", () => {
    const log = new Log();
    const r = new FrameReader(log, { expectPreface: true });
    r.push(enc.encode("GET / HTTP/1.1\r\n\r\n"), 1n, true);
    r.push(concat([settingsFrame(), settingsFrame([], true)]), 2n, true);
    expect(log.out).toEqual(["! Http2PrefaceMismatch: client connection preface expected", "SYNC LOST", "RESYNC 0", "SETTINGS 0", "SETTINGS ACK 0"]);
  });
});

describe("detection helpers", () => {
  test("preface and its prefixes", () => {
    expect(isHttp2Preface(PREFACE)).toBe(true);
    expect(isHttp2Preface(concat([PREFACE, settingsFrame()]))).toBe(true);
    expect(prefaceMatch(PREFACE.subarray(0, 5))).toBe(1);
    expect(prefaceMatch(enc.encode("PRI * HTTP/1.1"))).toBe(0);
    expect(prefaceMatch(enc.encode("GET / HTTP/1.1\r\n"))).toBe(0);
  });

  test("mid-stream chains of plausible frame headers", () => {
    const chain = concat([headersFrames(5, block("abc")), dataFrame(5, "xyz"), dataFrame(5, "", { endStream: true })]);
    expect(looksLikeHttp2Frames(chain)).toBe(true);
    expect(looksLikeHttp2Frames(chain.subarray(0, 9 + 3 + 9 + 3), true)).toBe(true);
    expect(looksLikeHttp2Frames(chain.subarray(0, 12), true)).toBe(false);      // one frame is not a chain
    expect(looksLikeHttp2Frames(chain.subarray(0, 20), false)).toBe(false);
    expect(looksLikeHttp2Frames(enc.encode("GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n"))).toBe(false);
    expect(looksLikeHttp2Frames(enc.encode("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))).toBe(false);
    expect(looksLikeHttp2Frames(Uint8Array.of(0x16, 3, 1, 0, 0xc8, 1, 0, 0, 0xc4, 3, 3))).toBe(false);       // TLS ClientHello
    expect(frameChain(chain)).toEqual({ frames: 3, exact: true, bad: false });
  });

  test("HTTP2-Settings header of an h2c upgrade", () => {
    // curl sends "AAMAAABkAAQCAAAAAAIAAAAA": max concurrent streams 100, window 32 MiB, no push
    expect([...decodeHttp2Settings("AAMAAABkAAQCAAAAAAIAAAAA")!]).toEqual([0, 3, 0, 0, 0, 100, 0, 4, 2, 0, 0, 0, 0, 2, 0, 0, 0, 0]);
    expect(decodeHttp2Settings("")!.length).toBe(0);
    expect(decodeHttp2Settings("AAMAAABk")!.length).toBe(6);
    expect(decodeHttp2Settings("AAMAAAB")).toBeUndefined();       // not whole settings
    expect(decodeHttp2Settings("AA+/AABk")).toBeUndefined();      // not base64url
    expect(decodeHttp2Settings("AAMAA")).toBeUndefined();         // not base64 at all
  });

  test("held-bytes verdicts for a detector", () => {
    const chain = concat([headersFrames(5, block("abc")), dataFrame(5, "xyz"), dataFrame(5, "", { endStream: true })]);
    expect(detectHttp2Frames(chain.subarray(0, 5), false)).toBe("more");
    expect(detectHttp2Frames(chain.subarray(0, 12), true)).toBe("more");
    expect(detectHttp2Frames(chain.subarray(0, 24), true)).toBe("http2");
    expect(detectHttp2Frames(chain.subarray(0, 24), false)).toBe("more");
    expect(detectHttp2Frames(chain, false)).toBe("http2");
    expect(detectHttp2Frames(enc.encode("SSH-2.0-OpenSSH_9.2\r\n"), true)).toBe("unknown");
    expect(detectHttp2Frames(Uint8Array.of(0, 0, 4, 0xaa, 0, 0, 0, 0, 1), false)).toBe("unknown");
  });

  test("plausibility rules per type", () => {
    const ok = (f: Uint8Array): boolean => plausibleFrameHeader(f, 0);
    expect(ok(settingsFrame([[3, 1]]))).toBe(true);
    expect(ok(frame(4, 0, 1, new Uint8Array(6)))).toBe(false);   // SETTINGS on a stream
    expect(ok(frame(4, 1, 0, new Uint8Array(6)))).toBe(false);   // ACK with payload
    expect(ok(frame(6, 0, 0, new Uint8Array(7)))).toBe(false);   // PING of 7
    expect(ok(frame(0, 0, 0, new Uint8Array(1)))).toBe(false);   // DATA on stream 0
    expect(ok(frame(0, 0x40, 1, new Uint8Array(1)))).toBe(false); // undefined flag
    expect(ok(frame(10, 0, 1))).toBe(false);                      // unknown type
    expect(ok(frame(0, 0, 1, new Uint8Array(16385)))).toBe(false); // longer than the default max
    const r = frame(0, 0, 1, new Uint8Array(1));
    r[5] = 0x80;
    expect(ok(r)).toBe(false);                                    // reserved bit
  });
});
