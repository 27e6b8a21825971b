import { describe, expect, test } from "bun:test";
import { CATCH_ALL, RouteTable, placeholderOf } from "../../src/spans/routes.ts";
import { parseConfigText } from "../../src/config/config.ts";
import type { Span } from "../../src/spans/span.ts";
import { TracerError } from "../../src/errors.ts";

function span(path: string, extra: Record<string, string | number> = {}, service = "shop"): Span {
  return {
    traceId: "0".repeat(32), spanId: "1".repeat(16), name: `GET ${path}`, kind: "server",
    startTimeUnixNano: 0n, endTimeUnixNano: 1n, error: false,
    attributes: { "http.request.method": "GET", "url.path": path, ...extra },
    resource: { "service.name": service },
  };
}

describe("segment placeholders", () => {
  test.each([
    ["12345", "{id}"],
    ["0", "{id}"],
    ["3f2504e0-4f89-11d3-9a0c-0305e82c3301", "{uuid}"],
    ["2024-05-01", "{date}"],
    ["2024-05-01T12:00:00Z", "{date}"],
    ["alice@example.com", "{email}"],
    ["bob%40example.org", "{email}"],
    ["9f86d081884c7d659a2feaa0c55ad015", "{token}"],
    ["dGhpcyBpcyBhIHNlY3JldCB0b2tlbg2", "{token}"],
    ["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "{token}"],
    ["AbC123xYz789QwErTy00", "{token}"],
  ])("%s → %s", (seg, want) => {
    expect(placeholderOf(seg)).toBe(want);
  });
  test.each(["users", "v1", "api", "orders.json", "get-user-preferences-list", "item123", "", "deadbeef", "customer_profile_settings_v2"])("%s stays literal", (seg) => {
    expect(placeholderOf(seg)).toBeUndefined();
  });
});

describe("route templates", () => {
  test("50 distinct /users/<n> paths collapse into one route", () => {
    const t = new RouteTable();
    const routes = new Set<string>();
    for (let i = 0; i < 50; i++) routes.add(t.route("shop", `/users/${1000 + i * 7}`));
    expect([...routes]).toEqual(["/users/{id}"]);
    expect(t.stats().RoutesKnown).toBe(1);
  });

  test("mixed placeholders and literals", () => {
    const t = new RouteTable();
    expect(t.route("s", "/users/42/orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301")).toBe("/users/{id}/orders/{uuid}");
    expect(t.route("s", "/reports/2024-05-01/summary")).toBe("/reports/{date}/summary");
    expect(t.route("s", "/accounts/alice@example.com")).toBe("/accounts/{email}");
    expect(t.route("s", "/files/9f86d081884c7d659a2feaa0c55ad015")).toBe("/files/{token}");
    expect(t.route("s", "/")).toBe("/");
    expect(t.route("s", "/users/")).toBe("/users/");
    expect(t.route("s", "/api/v1/items")).toBe("/api/v1/items");
  });

  test("a position with many distinct non-numeric values is learned as {param}", () => {
    const t = new RouteTable({ learnThreshold: 20 });
    const names = Array.from({ length: 30 }, (_, i) => `user${String.fromCharCode(97 + (i % 26))}${"xyz"[i % 3]}name${String.fromCharCode(97 + Math.floor(i / 26))}`);
    const seen = new Set<string>();
    for (const n of names) seen.add(t.route("shop", `/profiles/${n}/settings`));
    // before the threshold each name is its own route; after it, one template
    expect(t.route("shop", "/profiles/somebody-new/settings")).toBe("/profiles/{param}/settings");
    expect(t.route("shop", `/profiles/${names[0]}/settings`)).toBe("/profiles/{param}/settings");
    expect(t.stats().RoutesKnown).toBe(1);
    expect(t.stats().RoutesLearnedCollapses).toBe(1);
    // a sibling position with few values stays literal
    expect(t.route("shop", "/about")).toBe("/about");
  });

  test("learning merges the subtrees under the learned position", () => {
    const t = new RouteTable({ learnThreshold: 10 });
    const names = "abcdefghijklmnop".split("").map((c) => `name${c}x`);
    for (const n of names.slice(0, 8)) {
      t.route("s", `/p/${n}/a`);
      t.route("s", `/p/${n}/b/42`);
    }
    expect(t.stats().RoutesKnown).toBe(16);
    for (const n of names.slice(8)) t.route("s", `/p/${n}/a`);
    expect(t.stats().RoutesKnown).toBe(2);
    expect(t.route("s", `/p/${names[0]}/b/7`)).toBe("/p/{param}/b/{id}");
    expect(t.route("s", "/p/zzz/a")).toBe("/p/{param}/a");
    expect(t.stats().RoutesKnown).toBe(2);
  });

  test("services learn separately", () => {
    const t = new RouteTable({ learnThreshold: 5 });
    for (let i = 0; i < 6; i++) t.route("a", `/x/name${"abcdef"[i]}`);
    expect(t.route("a", "/x/other")).toBe("/x/{param}");
    expect(t.route("b", "/x/other")).toBe("/x/other");
  });

  test("cardinality is capped per service with a catch-all and a counter", () => {
    const t = new RouteTable({ maxRoutesPerService: 10, learnThreshold: 1000 });
    const out = Array.from({ length: 15 }, (_, i) => t.route("s", `/p${"abcdefghijklmno"[i]}`));
    expect(out.slice(0, 10).every((r) => r !== CATCH_ALL)).toBe(true);
    expect(out.slice(10)).toEqual(Array(5).fill(CATCH_ALL));
    expect(t.route("s", "/pa")).toBe("/pa"); // known routes still resolve
    expect(t.stats()).toMatchObject({ RoutesKnown: 10, RoutesOverflow: 5 });
    expect(t.route("other", "/pz")).toBe("/pz");
  });

  test("memory stays bounded under random paths", () => {
    const t = new RouteTable();
    for (let i = 0; i < 20_000; i++) t.route("s", `/${Math.random().toString(36).slice(2, 8)}/${Math.random().toString(36).slice(2, 6)}x`);
    expect(t.stats().RoutesKnown).toBeLessThanOrEqual(1000);
  });

  test("very deep paths end in *", () => {
    const t = new RouteTable();
    const deep = "/a".repeat(40);
    expect(t.route("s", deep)).toBe("/a".repeat(32) + "/*");
  });

  test("overrides win, per service and global", () => {
    const t = new RouteTable({
      overrides: [
        { service: "shop", patterns: ["/api/{version}/items/{sku}", "/static/*"] },
        { patterns: ["/v/{x}"] },
      ],
    });
    expect(t.route("shop", "/api/v3/items/ABC-1")).toBe("/api/{version}/items/{sku}");
    expect(t.route("shop", "/static/js/app.js")).toBe("/static/*");
    expect(t.route("other", "/static/js/app.js")).toBe("/static/js/app.js");
    expect(t.route("other", "/v/anything")).toBe("/v/{x}");
  });

  test("gRPC paths are kept; http.route only on HTTP spans", () => {
    const t = new RouteTable();
    const g = span("/shop.v1.Cart/AddItem", { "rpc.system": "grpc", "rpc.service": "shop.v1.Cart", "rpc.method": "AddItem" });
    expect(t.annotate(g)).toBe("/shop.v1.Cart/AddItem");
    expect(g.attributes["http.route"]).toBeUndefined();
    const h = span("/users/7");
    expect(t.annotate(h)).toBe("/users/{id}");
    expect(h.attributes["http.route"]).toBe("/users/{id}");
  });
});

describe("routes config", () => {
  test("patterns are read per service", () => {
    const c = parseConfigText("routes:\n  - service: shop\n    patterns: [\"/a/{id}\", \"/s/*\"]\n  - patterns: [\"/x\"]\n", "c.yaml");
    expect(c.routes.map((r) => [r.service, r.patterns])).toEqual([["shop", ["/a/{id}", "/s/*"]], [undefined, ["/x"]]]);
  });
  test.each([
    ["routes:\n  - service: shop\n    patterns: [\"a/b\"]\n", "routes[0].patterns[0]", "must start with /"],
    ["routes:\n  - patterns: [\"/a/*/b\"]\n", "routes[0].patterns[0]", "last segment"],
    ["routes:\n  - patterns: [\"/a/x{id}\"]\n", "routes[0].patterns[0]", "whole segment"],
    ["routes:\n  - service: shop\n", "routes[0].patterns", "at least one pattern"],
    ["routes:\n  - service: shop\n    pattern: /a\n", "routes[0].pattern", "unknown key"],
  ])("bad pattern names file, key and reason", (text, key, reason) => {
    let e: TracerError | undefined;
    try {
      parseConfigText(text, "/etc/x.yaml");
    } catch (err) {
      e = err as TracerError;
    }
    expect(e?.code).toBe("CONFIG");
    expect(e?.message).toStartWith("/etc/x.yaml");
    expect(e?.message).toContain(`key "${key}"`);
    expect(e?.message).toContain(reason);
  });
});
