/** Request-target splitting (RFC 9112 section 3.2: origin-, absolute-, asterisk-form). */
import { describe, expect, test } from "bun:test";
import { splitTarget } from "../../src/protocols/http-attributes.ts";

describe("splitTarget", () => {
  test.each([
    ["/a/b?x=1&y=2#frag", { host: undefined, path: "/a/b", query: "x=1&y=2" }],
    ["/", { host: undefined, path: "/", query: "" }],
    ["//double/slash?q", { host: undefined, path: "//double/slash", query: "q" }],
    ["/p?", { host: undefined, path: "/p", query: "" }],
    ["/x#f?notquery", { host: undefined, path: "/x", query: "" }],
    ["http://api.example:8080/v1/items?id=3", { host: "api.example:8080", path: "/v1/items", query: "id=3" }],
    ["HTTPS://h", { host: "h", path: "/", query: "" }],
    ["svc+x.y-z://h/p", { host: "h", path: "/p", query: "" }],
    ["*", { host: undefined, path: "*", query: "" }],
    ["example.com:443", { host: undefined, path: "example.com:443", query: "" }], // CONNECT's authority-form
  ])("%s", (target, want) => {
    expect(splitTarget(target)).toEqual(want);
  });
});
