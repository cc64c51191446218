// A TypeScript client of the gateway, typed by openapi-typescript from the served document and
// calling it with openapi-fetch: list, create, update, read back, delete, and a problem+json.
// tests/openapi/test_node_tools.py generates generated/gateway.ts, typechecks this file
// strictly, runs it against a live gateway and checks what it prints (one JSON object).
import createClient from "openapi-fetch";
import type { components, paths } from "./generated/gateway.js";

type Problem = components["schemas"]["Problem"];
type Where = components["schemas"]["ApiV4Where"];

// JSON answers and problems only: NDJSON and CSV are for streaming, not for a typed client.
const client = createClient<paths, "application/json" | "application/problem+json">({
  baseUrl: process.env.GATEWAY_URL ?? "",
  headers: { Authorization: `Bearer ${process.env.GATEWAY_TOKEN ?? ""}` },
});

function fail(step: string, error: Problem | undefined, status: number): never {
  throw new Error(`${step}: HTTP ${status} ${error?.type ?? ""} ${error?.detail ?? ""}`);
}

// 1. List through the generic GET route: named query parameters, where as a JSON string.
const where: Where = [["last_name", "=", "Garcia"], ["OR", [["id", ">", 0], ["id", "IS NULL"]]]];
const listed = await client.GET("/v4/{entity}/{action}", {
  params: {
    path: { entity: "Contact", action: "get" },
    query: { select: "id,display_name,last_name", where: JSON.stringify(where), limit: 3 },
  },
});
if (listed.error || !listed.data) fail("list", listed.error, listed.response.status);
const listedNames = listed.data.map((record) => record["last_name"]);

// 2. Create through the per-entity route: the body and the answer are typed by Contact's fields.
const created = await client.POST("/v4/Contact/create", {
  body: { contact_type: "Individual", first_name: "Grace", last_name: "Hopper" },
});
if (created.error || !created.data) fail("create", created.error, created.response.status);
const id: number | null | undefined = created.data[0]?.id;
if (typeof id !== "number") throw new Error("create answered no id");

// 3. Update (simple form: id selects, the other fields are the new values).
const updated = await client.POST("/v4/Contact/update", { body: { id, job_title: "Rear Admiral" } });
if (updated.error || !updated.data) fail("update", updated.error, updated.response.status);

// 4. Read it back: native form with a typed where clause, and a joined key in the select.
const read = await client.POST("/v4/Contact/get", {
  body: { select: ["id", "display_name", "job_title", "gender_id:label"], where: [["id", "=", id]] },
});
if (read.error || !read.data) fail("read", read.error, read.response.status);
const back = read.data[0];
const readBack = {
  display_name: back?.display_name ?? null,
  job_title: back?.job_title ?? null,
  label_key: back !== undefined && "gender_id:label" in back,
  count: read.response.headers.get("X-Result-Count"),
};

// 5. Delete it, then find nothing.
const deleted = await client.POST("/v4/Contact/delete", { body: { id } });
if (deleted.error || !deleted.data) fail("delete", deleted.error, deleted.response.status);
const gone = await client.POST("/v4/Contact/get", { body: { id, select: ["id"] } });
if (gone.error || !gone.data) fail("gone", gone.error, gone.response.status);

// 6. An error comes back as a typed problem+json.
const missing = await client.GET("/v4/{entity}/{action}", {
  params: { path: { entity: "NoSuchThing", action: "get" }, query: { limit: 1 } },
});
const problem: Problem | undefined = missing.error;

console.log(JSON.stringify({
  listed: listedNames,
  created: { id, first_name: created.data[0]?.first_name ?? null },
  updated: updated.data.length,
  read: readBack,
  deleted: deleted.data.length,
  gone: gone.data.length,
  problem: {
    status: missing.response.status,
    content_type: missing.response.headers.get("Content-Type"),
    type: problem?.type ?? null,
  },
}));
