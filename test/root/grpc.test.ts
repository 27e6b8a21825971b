/**
 * Root integration tests for gRPC through the compiled binary: @grpc/grpc-js server and client
 * (unary, trailers-only errors, the three streaming kinds, a deadline ending in RST_STREAM, a
 * 1 MiB message, gzip), Debian's python3-grpcio, nginx grpc_pass (server and client spans of one
 * call), and an agent attached to a channel that was busy before it started (flagged, never wrong).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { rootSkipReason, TracerProcess, type SpanJson } from "../support/tracer.ts";
import { startNginx } from "../support/servers.ts";
import { Cleanups, exitStats, onPort, stopNginx } from "../support/http-kit.ts";
import { grpcJsClient, grpcJsClientAsync, pyGrpcClient, startGrpcJs, startPyGrpc, textMsgSize } from "../support/grpc-kit.ts";

const SKIP = rootSkipReason();
if (SKIP) console.warn(`test/root/grpc.test.ts skipped: ${SKIP}`);

const c = new Cleanups();
afterEach(() => c.run());

async function exactly(t: TracerProcess, pred: (s: SpanJson) => boolean, n: number, timeoutMs = 20_000): Promise<SpanJson[]> {
  await t.waitForSpans(n, pred, timeoutMs);
  await Bun.sleep(500);
  return t.spans.filter(pred);
}

function byMethod(spans: SpanJson[]): Record<string, SpanJson[]> {
  const out: Record<string, SpanJson[]> = {};
  for (const s of spans) (out[String(s.attributes["rpc.method"])] ??= []).push(s);
  return out;
}

const GRPC_COMMON = {
  "network.protocol.version": "2",
  "http.request.method": "POST",
  "url.scheme": "http",
  "rpc.system": "grpc",
  "rpc.service": "test.Echo",
  "http.request.header.content-type": "application/grpc",
  "http.request.header.te": "trailers",
};

describe.skipIf(!!SKIP)("gRPC capture: @grpc/grpc-js", () => {
  test("unary, trailers-only errors, server/client/bidi streaming, deadline, cancel (RST_STREAM), 1 MiB message", async () => {
    const srv = c.add(await startGrpcJs(), (s) => s.stop());
    const t = c.add(await TracerProcess.capture(["--pid", String(srv.pid), "--log-level", "info"]), (x) => x.stop());
    const out = grpcJsClient(`127.0.0.1:${srv.port}`, ["unary", "fail", "internal", "serverStream", "clientStream", "bidi", "deadline", "big", "cancel"]);
    // premises: what the client saw
    expect(out.unary).toEqual({ text: "echo:hello", n: 0 });
    expect(out.fail).toEqual({ code: 3, details: "bad input 100% x" });
    expect(out.internal).toEqual({ code: 13, details: "bad input 100% y" });
    expect(out.serverStream).toEqual(["m0", "m1", "m2", "m3", "m4"]);
    expect(out.clientStream).toEqual({ text: "got 3" });
    expect(out.bidi).toEqual(["re:b0", "re:b1", "re:b2", "re:b3"]);
    expect(out.deadline.code).toBe(4);
    expect(out.big).toEqual({ text: "echo:big", n: 1 << 20 });
    expect(out.cancel.code).toBe(1);

    const spans = await exactly(t, onPort(srv.port), 9);
    expect(spans).toHaveLength(9);
    expect(spans.map((s) => s.attributes["ebpf.http2.stream_id"])).toEqual([1, 3, 5, 7, 9, 11, 13, 15, 17]);
    for (const s of spans) {
      expect(s.kind).toBe("server");
      expect(s.attributes).toMatchObject(GRPC_COMMON);
      expect(s.name).toBe(`test.Echo/${s.attributes["rpc.method"]}`);
      expect(s.attributes["url.path"]).toBe(`/test.Echo/${s.attributes["rpc.method"]}`);
      // binary protobuf payloads are never kept as text
      expect(s.attributes["http.request.body"]).toBeUndefined();
      expect(s.attributes["http.response.body"]).toBeUndefined();
      expect(s.attributes["ebpf.http2.headers_incomplete"]).toBeUndefined();
    }
    const m = byMethod(spans);
    const [unary, big] = m.Unary!;
    expect(unary!.error).toBe(false);
    expect(unary!.attributes).toMatchObject({
      "http.response.status_code": 200,
      "rpc.grpc.status_code": 0,
      "rpc.grpc.request.message_count": 1,
      "rpc.grpc.request.message_bytes": textMsgSize("hello"),
      "rpc.grpc.response.message_count": 1,
      // protobufjs writes the explicitly set n = 0 (tag + 0: 2 bytes)
      "rpc.grpc.response.message_bytes": textMsgSize("echo:hello") + 2,
    });
    expect(unary!.attributes["error.type"]).toBeUndefined();

    // errors answered trailers-only (one HEADERS with END_STREAM: no messages, grpc-status in it)
    const [fail, internal] = m.Fail!;
    expect(fail!.attributes).toMatchObject({
      "http.response.status_code": 200,
      "http.response.header.grpc-status": "3",
      "rpc.grpc.status_code": 3,
      "rpc.grpc.status_message": "bad input 100% x",
      "rpc.grpc.response.message_count": 0,
      "http.response.body.size": 0,
    });
    // INVALID_ARGUMENT is the caller's fault: not an error of a server span
    expect(fail!.error).toBe(false);
    expect(fail!.attributes["error.type"]).toBeUndefined();
    expect(internal!.error).toBe(true);
    expect(internal!.attributes).toMatchObject({ "rpc.grpc.status_code": 13, "error.type": "INTERNAL", "rpc.grpc.status_message": "bad input 100% y" });

    expect(m.ServerStream![0]!.attributes).toMatchObject({
      "rpc.grpc.status_code": 0,
      "rpc.grpc.request.message_count": 1,
      "rpc.grpc.response.message_count": 5,
      "rpc.grpc.response.message_bytes": 5 * textMsgSize("m0"),
    });
    expect(m.ClientStream![0]!.attributes).toMatchObject({
      "rpc.grpc.status_code": 0,
      "rpc.grpc.request.message_count": 3,
      "rpc.grpc.request.message_bytes": 3 * textMsgSize("c0"),
      "rpc.grpc.response.message_count": 1,
      "rpc.grpc.response.message_bytes": textMsgSize("got 3"),
    });
    const bidi = m.Bidi![0]!;
    expect(bidi.attributes).toMatchObject({
      "rpc.grpc.status_code": 0,
      "rpc.grpc.request.message_count": 4,
      "rpc.grpc.request.message_bytes": 4 * textMsgSize("b0"),
      "rpc.grpc.response.message_count": 4,
      "rpc.grpc.response.message_bytes": 4 * textMsgSize("re:b0"),
    });
    expect(bidi.durationMs).toBeGreaterThanOrEqual(60); // four writes 20 ms apart: one span for the whole stream
    expect(Number(bidi.attributes["ebpf.http2.time_to_first_response_ns"])).toBeLessThan(bidi.durationMs * 1e6);

    // the deadline: the client resets the stream (RST_STREAM CANCEL, no status ever sent), or the
    // server, which got grpc-timeout too, ends it first with DEADLINE_EXCEEDED; the two race
    const [slow, cancelled] = m.Slow!;
    // cancelled by the client before any answer: RST_STREAM CANCEL, no status was ever sent
    expect(cancelled!.error).toBe(true);
    expect(cancelled!.attributes).toMatchObject({ "ebpf.http2.rst_stream": true, "error.type": "CANCEL", "rpc.grpc.request.message_count": 1 });
    expect(cancelled!.attributes["rpc.grpc.status_code"]).toBeUndefined();
    expect(cancelled!.attributes["http.response.status_code"]).toBeUndefined();
    expect(cancelled!.durationMs).toBeGreaterThanOrEqual(150);
    expect(slow!.error).toBe(true);
    expect(slow!.attributes["http.request.header.grpc-timeout"]).toMatch(/^\d+[mu]$/);
    if (slow!.attributes["ebpf.http2.rst_stream"] === true && slow!.attributes["rpc.grpc.status_code"] === undefined) {
      expect(slow!.attributes["error.type"]).toBe("CANCEL");
    } else {
      expect(slow!.attributes).toMatchObject({ "rpc.grpc.status_code": 4, "error.type": "DEADLINE_EXCEEDED", "rpc.grpc.status_message": "Deadline exceeded" });
    }
    expect(slow!.durationMs).toBeGreaterThanOrEqual(250);

    // 1 MiB blob + "big": protobuf tag+varint(3)+blob, tag+len+text
    expect(big!.attributes).toMatchObject({
      "rpc.grpc.status_code": 0,
      "rpc.grpc.request.message_count": 1,
      "rpc.grpc.request.message_bytes": 1 + 3 + (1 << 20) + textMsgSize("big"),
      "http.request.body.size": 5 + 1 + 3 + (1 << 20) + textMsgSize("big"),
    });
    expect(await t.stop()).toBe(0);
    expect(exitStats(t.stderr)!.EventLost).toBe(0);
  }, 60_000);

  test("gzip-compressed messages are counted as compressed, never kept", async () => {
    const srv = c.add(await startGrpcJs(true), (s) => s.stop());
    const t = c.add(await TracerProcess.capture(["--pid", String(srv.pid)]), (x) => x.stop());
    const out = grpcJsClient(`127.0.0.1:${srv.port}`, ["unary", "bidi"], true);
    expect(out.unary).toEqual({ text: "echo:hello", n: 0 });
    const spans = await exactly(t, onPort(srv.port), 2);
    expect(spans).toHaveLength(2);
    const m = byMethod(spans);
    expect(m.Unary![0]!.attributes).toMatchObject({
      "http.request.header.grpc-encoding": "gzip",
      "rpc.grpc.status_code": 0,
      "rpc.grpc.request.message_count": 1,
      "rpc.grpc.request.compressed_messages": 1,
      "rpc.grpc.response.message_count": 1,
    });
    expect(m.Bidi![0]!.attributes).toMatchObject({ "rpc.grpc.request.message_count": 4, "rpc.grpc.request.compressed_messages": 4, "rpc.grpc.response.message_count": 4 });
    for (const s of spans) expect(s.attributes["http.request.body"]).toBeUndefined();
  }, 40_000);

  test("attached to a channel busy for seconds before the agent started: spans may be flagged incomplete, never wrong", async () => {
    const srv = c.add(await startGrpcJs(), (s) => s.stop());
    const client = grpcJsClientAsync(`127.0.0.1:${srv.port}`, ["loop:7000"]);
    await Bun.sleep(2500); // the channel's HPACK tables are warm before the agent sees a byte
    const t = c.add(await TracerProcess.capture(["--pid", String(srv.pid), "--log-level", "info"]), (x) => x.stop());
    const out = await client.done;
    expect(out.loop.bad).toBe(0);
    await Bun.sleep(1000);
    expect(await t.stop()).toBe(0);
    const spans = t.spans.filter(onPort(srv.port));
    expect(spans.length).toBeGreaterThan(20);
    let flagged = 0;
    let complete = 0;
    for (const s of spans) {
      const a = s.attributes;
      if (a["ebpf.http2.headers_incomplete"] === true) {
        flagged++;
        expect(Number(a["ebpf.http2.unresolved_headers"]) + Number(a["ebpf.http2.lost_header_blocks"] ?? 0)).toBeGreaterThan(0);
      }
      // every value present is one that was sent
      const want: Record<string, string | number | boolean> = {
        "url.path": "/test.Echo/Unary", "http.request.method": "POST", "url.scheme": "http",
        "http.response.status_code": 200, "rpc.method": "Unary", "rpc.service": "test.Echo",
        "rpc.grpc.status_code": 0, "rpc.grpc.status_message": "OK",
        "http.request.header.content-type": "application/grpc", "http.request.header.te": "trailers",
        "http.request.header.accept-encoding": "identity", "http.request.header.grpc-accept-encoding": "identity,deflate,gzip",
        "http.response.header.content-type": "application/grpc+proto", "http.response.header.grpc-status": "0",
        "http.response.header.grpc-message": "OK", "http.response.header.grpc-encoding": "identity",
        "http.response.header.grpc-accept-encoding": "identity,deflate,gzip", "network.protocol.version": "2",
      };
      for (const [k, v] of Object.entries(want)) if (a[k] !== undefined) expect([k, a[k]]).toEqual([k, v]);
      if (a["http.request.header.user-agent"] !== undefined) expect(String(a["http.request.header.user-agent"])).toMatch(/^grpc-node-js\//);
      for (const k of Object.keys(a)) {
        if (k.startsWith("http.request.header.") || k.startsWith("http.response.header.")) {
          expect([
            "content-type", "te", "accept-encoding", "grpc-accept-encoding", "user-agent", "grpc-status", "grpc-message",
            "grpc-encoding", "date",
          ]).toContain(k.slice(k.indexOf(".header.") + 8));
        }
      }
      if (a["rpc.grpc.status_code"] === undefined && a["ebpf.http2.headers_incomplete"] !== true && a["ebpf.http2.incomplete"] !== true) {
        throw new Error(`a span without its status is not flagged: ${JSON.stringify(a)}`);
      }
      if (s.error) expect(a["ebpf.http2.rst_stream"] ?? a["ebpf.http2.goaway"]).toBe(true);
      if (a["rpc.grpc.request.message_count"] !== undefined && a["rpc.grpc.request.messages_incomplete"] === undefined) {
        expect(a["rpc.grpc.request.message_count"]).toBe(1);
      }
      if (a["rpc.grpc.status_code"] === 0 && a["url.path"] === "/test.Echo/Unary" && a["ebpf.http2.headers_incomplete"] === undefined) complete++;
    }
    // nghttp2 keeps referring to the entries it inserted before the agent started (the request
    // headers repeat exactly, so nothing new is inserted): those fields stay unknown, and flagged
    expect(flagged + complete).toBe(spans.length);
    const ids = spans.map((s) => Number(s.attributes["ebpf.http2.stream_id"]));
    expect(new Set(ids).size).toBe(ids.length);
    console.log(`busy channel: ${spans.length} spans, ${flagged} flagged headers_incomplete, ${complete} complete; client made ${out.loop.calls} calls`);
  }, 60_000);
});

describe.skipIf(!!SKIP)("gRPC capture: python3-grpcio", () => {
  test("unary, trailers-only error (abort), server streaming", async () => {
    const srv = c.add(await startPyGrpc(), (s) => s.stop());
    const t = c.add(await TracerProcess.capture(["--pid", String(srv.pid)]), (x) => x.stop());
    const out = pyGrpcClient(`127.0.0.1:${srv.port}`);
    expect(out).toEqual({ unary: "0a0568656c6c6f", fail: [3, "py says no"], stream: ["0a0568656c6c6f", "0a0568656c6c6f", "0a0568656c6c6f"] });
    const spans = await exactly(t, onPort(srv.port), 3);
    expect(spans).toHaveLength(3);
    const m = byMethod(spans);
    for (const s of spans) {
      expect(s.attributes).toMatchObject(GRPC_COMMON);
      expect(String(s.attributes["http.request.header.user-agent"])).toMatch(/^grpc-python\//);
    }
    expect(m.Unary![0]!.attributes).toMatchObject({ "rpc.grpc.status_code": 0, "rpc.grpc.request.message_count": 1, "rpc.grpc.request.message_bytes": 7, "rpc.grpc.response.message_count": 1, "rpc.grpc.response.message_bytes": 7 });
    expect(m.Fail![0]!.error).toBe(false);
    expect(m.Fail![0]!.attributes).toMatchObject({ "rpc.grpc.status_code": 3, "rpc.grpc.status_message": "py says no", "rpc.grpc.response.message_count": 0 });
    expect(m.ServerStream![0]!.attributes).toMatchObject({ "rpc.grpc.status_code": 0, "rpc.grpc.response.message_count": 3, "rpc.grpc.response.message_bytes": 21 });
  }, 40_000);
});

describe.skipIf(!!SKIP)("gRPC capture: nginx grpc_pass", () => {
  test("the agent on nginx (ingress_and_egress) sees the server span and the client span of the same call", async () => {
    const backend = c.add(await startGrpcJs(), (s) => s.stop());
    const ng = c.add(await startNginx((p) => `server {
    listen 127.0.0.1:${p} http2;
    location / { grpc_pass grpc://127.0.0.1:${backend.port}; }
  }`), stopNginx);
    const t = c.add(await TracerProcess.capture(["--pid", String(ng.pid), "--mode", "ingress_and_egress"]), (x) => x.stop());
    const out = grpcJsClient(`127.0.0.1:${ng.port}`, ["unary", "fail", "serverStream"]);
    expect(out.unary).toEqual({ text: "echo:hello", n: 0 });
    expect(out.fail.code).toBe(3);
    const spans = await exactly(t, onPort(ng.port), 3);
    const clientSpans = await exactly(t, onPort(backend.port), 3);
    expect(spans).toHaveLength(3);
    expect(clientSpans).toHaveLength(3);
    for (const [i, method, status] of [[0, "Unary", 0], [1, "Fail", 3], [2, "ServerStream", 0]] as const) {
      const srvSpan = spans[i]!;
      const cliSpan = clientSpans[i]!;
      expect(srvSpan.kind).toBe("server");
      expect(cliSpan.kind).toBe("client");
      for (const s of [srvSpan, cliSpan]) {
        expect(s.attributes).toMatchObject({ ...GRPC_COMMON, "rpc.method": method, "rpc.grpc.status_code": status, "process.executable.name": "nginx" });
        expect(s.name).toBe(`test.Echo/${method}`);
      }
      expect(cliSpan.attributes["http.request.header.user-agent"]).toBe(srvSpan.attributes["http.request.header.user-agent"]!);
    }
    // client spans: any non-zero status is an error (semantic conventions); server spans: not for 3
    expect(clientSpans[1]!.error).toBe(true);
    expect(clientSpans[1]!.attributes["error.type"]).toBe("INVALID_ARGUMENT");
    expect(spans[1]!.error).toBe(false);
    expect(clientSpans[2]!.attributes["rpc.grpc.response.message_count"]).toBe(5);
    expect(spans[2]!.attributes["rpc.grpc.response.message_count"]).toBe(5);
  }, 60_000);
});
