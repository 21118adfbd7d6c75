// Renders the OpenAPI 3.1 document at /openapi.json as a readable reference: operations by
// tag, with their parameters, request bodies, responses and schemas. Self-contained (no
// library, no network beyond this server); text goes in through textContent only.
"use strict";
(function () {
  const root = document.getElementById("doc");

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    for (const c of children) {
      if (c === null || c === undefined || c === "") continue;
      node.append(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return node;
  }

  // Descriptions use `code` spans (as Markdown); they become <code>, the rest stays text.
  function prose(tag, text) {
    const node = el(tag, {});
    String(text).split("`").forEach((part, i) => node.append(i % 2 ? el("code", {}, part) : document.createTextNode(part)));
    return node;
  }

  function resolve(doc, schema) {
    const prefix = "#/components/schemas/";
    if (schema && typeof schema.$ref === "string" && schema.$ref.startsWith(prefix)) {
      const name = schema.$ref.slice(prefix.length);
      return [name, (doc.components && doc.components.schemas || {})[name] || {}];
    }
    return [null, schema || {}];
  }

  function typeName(doc, schema) {
    const [name, s] = resolve(doc, schema);
    if (name) return name;
    if (s.oneOf || s.anyOf) return (s.oneOf || s.anyOf).map((x) => typeName(doc, x)).join(" | ");
    let t = Array.isArray(s.type) ? s.type.join(" | ") : s.type || "any";
    if (s.type === "array" || (Array.isArray(s.type) && s.type.includes("array"))) t += " of " + typeName(doc, s.items);
    if (s.format) t += " (" + s.format + ")";
    if (s.enum) t += ": " + s.enum.map((e) => JSON.stringify(e)).join(", ");
    return t;
  }

  // A schema as a nested list of its fields; `seen` stops at a schema already open above.
  function schemaList(doc, schema, seen, depth) {
    const [name, s] = resolve(doc, schema);
    if (depth > 6 || (name && seen.has(name))) return null;
    const inner = new Set(seen);
    if (name) inner.add(name);
    const target = s.type === "array" || (Array.isArray(s.type) && s.type.includes("array")) ? resolve(doc, s.items)[1] : s;
    const variants = target.oneOf || target.anyOf;
    if (variants) {
      const list = el("ul", { class: "schema" });
      variants.forEach((v, i) => list.append(el("li", {}, el("span", { class: "t" }, "variant " + (i + 1) + ": " + typeName(doc, v)), schemaList(doc, v, inner, depth + 1))));
      return list;
    }
    const props = target.properties;
    if (!props) return null;
    const required = new Set(target.required || []);
    const list = el("ul", { class: "schema" });
    for (const [field, sub] of Object.entries(props)) {
      const [, subSchema] = resolve(doc, sub);
      list.append(el("li", {},
        el("code", {}, field), required.has(field) ? el("span", { class: "req" }, " *") : null, " ",
        el("span", { class: "t" }, typeName(doc, sub)),
        subSchema.description || sub.description ? prose("span", " — " + (sub.description || subSchema.description)) : null,
        schemaList(doc, sub, inner, depth + 1)));
    }
    return list;
  }

  function parameters(doc, params) {
    if (!params || !params.length) return null;
    const table = el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "description")));
    for (const p of params) {
      table.append(el("tr", {},
        el("td", {}, el("code", {}, p.name), p.required ? el("span", { class: "req" }, " *") : null),
        el("td", {}, p.in), el("td", {}, typeName(doc, p.schema)), prose("td", p.description || "")));
    }
    return el("div", {}, el("h4", {}, "Parameters"), table);
  }

  function content(doc, c) {
    if (!c) return null;
    const out = el("div", {});
    for (const [type, media] of Object.entries(c)) {
      out.append(el("div", {}, el("span", { class: "t" }, type + ": " + typeName(doc, media.schema)), schemaList(doc, media.schema, new Set(), 0)));
    }
    return out;
  }

  function operation(doc, path, method, op) {
    const scopes = (op.security || []).flatMap((r) => Object.values(r).flat());
    const box = el("section", { class: "op", id: op.operationId || method + path },
      el("h3", {}, el("span", { class: "m " + method }, method.toUpperCase()), path,
        ...scopes.map((s) => el("span", { class: "scope" }, "scope: " + s))),
      op.summary ? prose("p", op.summary) : null,
      op.description && op.description !== op.summary ? prose("p", op.description) : null,
      parameters(doc, op.parameters));
    if (op.requestBody) box.append(el("h4", {}, "Request body"), content(doc, op.requestBody.content));
    const responses = el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "description")));
    for (const [status, r] of Object.entries(op.responses || {})) {
      const resp = r.$ref ? {} : r;
      const cell = prose("td", resp.description || "");
      const body = content(doc, resp.content);
      if (body) cell.append(body);
      responses.append(el("tr", {}, el("td", {}, el("code", {}, status)), cell));
    }
    box.append(el("h4", {}, "Responses"), responses);
    const auth = scopes.length ? ' -H "Authorization: Bearer $TOKEN"' : "";
    box.append(el("pre", {}, "curl" + (method === "get" ? "" : " -X " + method.toUpperCase()) + auth + " '" + location.origin + path + "'"));
    return box;
  }

  function render(doc) {
    root.textContent = "";
    const info = doc.info || {};
    root.append(el("h1", {}, info.title || "API"), el("p", { class: "muted" }, "version " + (info.version || "?") + " · OpenAPI " + (doc.openapi || "?") + " · ", el("a", { href: "/openapi.json" }, "/openapi.json")));
    if (info.description) root.append(prose("p", info.description));
    const byTag = new Map();
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const method of ["get", "put", "post", "patch", "delete"]) {
        if (!item[method]) continue;
        const tag = (item[method].tags || ["other"])[0];
        if (!byTag.has(tag)) byTag.set(tag, []);
        byTag.get(tag).push([path, method, item[method]]);
      }
    }
    const nav = el("nav", {});
    root.append(nav);
    for (const [tag, ops] of [...byTag.entries()].sort()) {
      root.append(el("h2", { id: "tag-" + tag }, tag));
      for (const [path, method, op] of ops.sort((a, b) => a[0].localeCompare(b[0]))) {
        const box = operation(doc, path, method, op);
        root.append(box);
        nav.append(el("a", { href: "#" + box.id }, method.toUpperCase() + " " + path));
      }
    }
  }

  fetch("/openapi.json")
    .then((r) => { if (!r.ok) throw new Error("GET /openapi.json: " + r.status); return r.json(); })
    .then(render)
    .catch((e) => { root.textContent = "Cannot load the API description: " + e.message; });
})();
