/**
 * Synthetic JSON API traffic for the benchmarks: exchange k of a keep-alive stream (GET, POST,
 * PUT, DELETE on order/customer paths, ~10 request headers, 201/204/404/200 responses, every 4th
 * body chunked). Deterministic in k.
 */
const PATHS = ["/api/v1/orders", "/api/v1/customers", "/api/v1/cart/items", "/api/v2/inventory/lookup", "/healthz"];
const METHODS = ["GET", "GET", "POST", "GET", "PUT", "DELETE", "GET", "POST"];

export function request(k: number): string {
  const method = METHODS[k % METHODS.length]!;
  const path = `${PATHS[k % PATHS.length]}/${100000 + k}?include=items&page=${k % 7}`;
  const body = method === "POST" || method === "PUT"
    ? JSON.stringify({ orderId: 100000 + k, sku: `SKU-${k % 97}`, quantity: 1 + (k % 5), note: "deliver to back door" })
    : "";
  return `${method} ${path} HTTP/1.1\r\n` +
    "Host: orders.internal.example.com:8080\r\n" +
    "User-Agent: okhttp/4.12.0\r\n" +
    "Accept: application/json\r\n" +
    "Accept-Encoding: gzip, deflate\r\n" +
    "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzdmMtY2hlY2tvdXQifQ.c2lnbmF0dXJl\r\n" +
    `X-Request-Id: 6f1c2a9e-4b7d-4c1a-9e0f-${(100000000000 + k).toString(16)}\r\n` +
    `traceparent: 00-4bf92f3577b34da6a3ce929d0e0e${(0x1000 + (k % 0xefff)).toString(16)}-00f067aa0ba902b7-01\r\n` +
    "X-Forwarded-For: 10.1.2.3\r\n" +
    "Connection: keep-alive\r\n" +
    (body ? `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n` : "") +
    "\r\n" + body;
}

export function response(k: number): string {
  const method = METHODS[k % METHODS.length]!;
  const status = method === "POST" ? "201 Created" : method === "DELETE" ? "204 No Content" : k % 50 === 49 ? "404 Not Found" : "200 OK";
  const body = status.startsWith("204") ? "" : JSON.stringify({
    orderId: 100000 + k, status: "CONFIRMED", total: 42.5 + k, currency: "EUR",
    items: [{ sku: `SKU-${k % 97}`, qty: 1 + (k % 5), price: 8.5 }], updatedAt: "2024-05-01T12:00:00Z",
  });
  const common =
    "Date: Wed, 01 May 2024 12:00:00 GMT\r\n" +
    "Server: envoy\r\n" +
    "Cache-Control: no-store\r\n" +
    `X-Request-Id: 6f1c2a9e-4b7d-4c1a-9e0f-${(100000000000 + k).toString(16)}\r\n` +
    "X-Envoy-Upstream-Service-Time: 3\r\n" +
    "Vary: Accept-Encoding\r\n";
  if (!body) return `HTTP/1.1 ${status}\r\n${common}\r\n`;
  const ct = "Content-Type: application/json; charset=utf-8\r\n";
  if (k % 4 === 3) {
    const half = body.length >> 1;
    return `HTTP/1.1 ${status}\r\n${common}${ct}Transfer-Encoding: chunked\r\n\r\n` +
      `${half.toString(16)}\r\n${body.slice(0, half)}\r\n${(body.length - half).toString(16)}\r\n${body.slice(half)}\r\n0\r\n\r\n`;
  }
  return `HTTP/1.1 ${status}\r\n${common}${ct}Content-Length: ${body.length}\r\n\r\n${body}`;
}

