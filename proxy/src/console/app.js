// Lakehouse console: plain DOM code over the JSON API, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);

// ---- API ------------------------------------------------------------------

function authHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  const token = localStorage.getItem("lakehouse.token");
  if (token) headers["Authorization"] = "Bearer " + token;
  return headers;
}

// Fetches JSON; an OpenAI-shaped error body becomes a thrown Error with its message.
async function api(method, path, body) {
  const init = { method, headers: authHeaders(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  const text = await response.text();
  let value = null;
  try { value = text ? JSON.parse(text) : null; } catch (_) { value = null; }
  if (!response.ok) {
    const message = value && value.error && value.error.message ? value.error.message : text || response.statusText;
    throw new Error(response.status + ": " + message);
  }
  return value;
}

// Reads an SSE response body, calling onData with each event's data string.
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
      const data = block.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, "")).join("\n");
      if (data) onData(data);
    }
  }
}

async function postStream(path, body, onData) {
  const response = await fetch(path, {
    method: "POST",
    headers: authHeaders({ "Content-Type": "application/json", "Accept": "text/event-stream" }),
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    const text = await response.text();
    let message = text;
    try { message = JSON.parse(text).error.message; } catch (_) { /* keep the text */ }
    throw new Error(response.status + ": " + message);
  }
  await readEvents(response, onData);
}

// ---- helpers --------------------------------------------------------------

function flash(message, isError) {
  const el = $("flash");
  el.textContent = message;
  el.className = isError ? "error" : "info";
  el.hidden = false;
}

function cell(row, value, className) {
  const td = document.createElement("td");
  td.textContent = value === undefined || value === null ? "" : String(value);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function button(label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.addEventListener("click", onClick);
  return b;
}

function fixed(x, digits) {
  return typeof x === "number" ? x.toFixed(digits) : "";
}

function when(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "";
}

function guard(fn) {
  return async (event) => {
    if (event && event.preventDefault) event.preventDefault();
    try { await fn(event); } catch (e) { flash(e.message, true); }
  };
}

// ---- tabs -----------------------------------------------------------------

const loaders = {};

function showTab(name) {
  if (!document.getElementById(name)) name = "providers";
  document.querySelectorAll("[data-section]").forEach((s) => { s.hidden = s.id !== name; });
  document.querySelectorAll("#tabs a").forEach((a) => a.classList.toggle("active", a.dataset.tab === name));
  if (loaders[name]) guard(loaders[name])();
}

// ---- providers ------------------------------------------------------------

loaders.providers = async () => {
  const list = await api("GET", "/v1/chat/providers");
  const body = $("providers-rows");
  body.replaceChildren();
  for (const p of list.data) {
    const row = body.insertRow();
    cell(row, p.name);
    cell(row, p.registered ? "yes" : "no", p.registered ? "ok" : "bad");
    cell(row, p.registered ? p.base_url : p.reason);
    const recent = p.recent || {};
    cell(row, recent.requests);
    cell(row, recent.errors, recent.errors ? "bad" : "");
    cell(row, fixed(recent.p50_ms, 1));
    cell(row, fixed(recent.p99_ms, 1));
    cell(row, recent.last_error);
  }
};

// ---- corpora --------------------------------------------------------------

loaders.corpora = async () => {
  const list = await api("GET", "/admin/corpora");
  const body = $("corpora-rows");
  body.replaceChildren();
  const select = $("search-corpus");
  const chosen = select.value;
  select.replaceChildren();
  for (const c of list.data) {
    const row = body.insertRow();
    row.dataset.corpus = c.name;
    cell(row, c.name);
    cell(row, c.rows);
    cell(row, c.vectors);
    cell(row, c.files.length);
    cell(row, c.version);
    cell(row, c.embedder);
    cell(row, c.text_columns.join(", "));
    cell(row, c.updated_at);
    const option = document.createElement("option");
    option.value = option.textContent = c.name;
    select.appendChild(option);
  }
  if (chosen) select.value = chosen;
};

function uploadFormat(file) {
  const name = file.name.toLowerCase();
  if (name.endsWith(".parquet")) return "parquet";
  if (name.endsWith(".jsonl") || name.endsWith(".ndjson")) return "jsonl";
  return "csv";
}

// XMLHttpRequest, because fetch cannot report upload progress.
function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    const headers = authHeaders({ "Content-Type": "application/octet-stream" });
    for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.upload.onload = () => onProgress(1);
    xhr.onload = () => {
      let value = null;
      try { value = JSON.parse(xhr.responseText); } catch (_) { value = null; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(value);
      else reject(new Error(xhr.status + ": " + (value && value.error ? value.error.message : xhr.responseText)));
    };
    xhr.onerror = () => reject(new Error("the upload failed: is the server still running?"));
    xhr.send(file);
  });
}

async function ingest() {
  const name = $("ingest-name").value.trim();
  const file = $("ingest-file").files[0];
  if (!file) throw new Error("choose a file to ingest");
  const textColumns = $("ingest-text").value.split(",").map((s) => s.trim()).filter(Boolean);
  const status = $("ingest-status");
  const progress = $("ingest-progress");
  await api("POST", "/admin/corpora", { name, text_columns: textColumns, id_column: $("ingest-id").value.trim() || "id" });
  progress.hidden = false;
  progress.value = 0;
  status.textContent = "uploading…";
  const report = await upload(
    "/admin/corpora/" + encodeURIComponent(name) + "/ingest?format=" + uploadFormat(file),
    file,
    (fraction) => {
      progress.value = Math.round(fraction * 100);
      status.textContent = fraction < 1 ? "uploading " + Math.round(fraction * 100) + "%" : "ingesting and indexing…";
    },
  );
  progress.value = 100;
  status.textContent = "ingested " + report.rows + " rows into " + name;
  status.dataset.done = "true";
  await loaders.corpora();
  $("search-corpus").value = name;
}

async function search() {
  const corpus = $("search-corpus").value;
  if (!corpus) throw new Error("no corpus to search: ingest one first");
  const result = await api("POST", "/admin/corpora/" + encodeURIComponent(corpus) + "/search", {
    query: $("search-query").value,
    k: Number($("search-k").value) || 5,
  });
  const body = $("search-results");
  body.replaceChildren();
  result.data.forEach((hit, i) => {
    const row = body.insertRow();
    row.className = "hit";
    cell(row, i + 1);
    cell(row, hit.id);
    cell(row, fixed(hit.score, 3), "score");
    cell(row, fixed(hit.boost, 3), hit.boost > 0 ? "ok boost" : hit.boost < 0 ? "bad boost" : "boost");
    cell(row, fixed(hit.final_score, 3));
    const text = Object.values(hit.row).filter((v) => typeof v === "string").join(" · ");
    cell(row, text.length > 240 ? text.slice(0, 240) + "…" : text, "text");
  });
  // Marks each finished render so a watcher (or the browser test) knows the rows are the new ones.
  body.dataset.renders = String(Number(body.dataset.renders || 0) + 1);
  if (!result.data.length) flash("no hits", false);
}

// ---- playground -----------------------------------------------------------

let lastChat = null;

async function loadModels() {
  const list = await api("GET", "/v1/models");
  const datalist = $("model-list");
  datalist.replaceChildren();
  for (const m of list.data) {
    const option = document.createElement("option");
    option.value = m.id;
    datalist.appendChild(option);
  }
}

function showSources(sources) {
  const list = $("chat-sources");
  list.replaceChildren();
  for (const s of sources || []) {
    const li = document.createElement("li");
    li.className = "source";
    li.textContent = s.corpus + " / " + s.id + " — score " + fixed(s.score, 3) + (s.boost ? " (boost " + fixed(s.boost, 3) + ")" : "");
    list.appendChild(li);
  }
}

async function chat() {
  const messages = [];
  const system = $("chat-system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push({ role: "user", content: $("chat-prompt").value });
  const answer = $("chat-answer");
  const status = $("chat-status");
  answer.textContent = "";
  $("chat-sources").replaceChildren();
  $("chat-rate").hidden = true;
  $("rate-status").textContent = "";
  status.textContent = "streaming…";
  status.dataset.state = "streaming";
  lastChat = null;
  let usage = null;
  let failure = null;
  await postStream("/v1/chat/completions", {
    model: $("chat-model").value.trim(),
    messages,
    stream: true,
    stream_options: { include_usage: true },
  }, (data) => {
    if (data === "[DONE]") return;
    const event = JSON.parse(data);
    if (event.error) { failure = event.error.message; return; }
    if (!lastChat) {
      lastChat = { id: event.id, sources: event.lakehouse ? event.lakehouse.sources || [] : [] };
      $("chat-id").textContent = event.id;
      showSources(lastChat.sources);
    }
    for (const choice of event.choices || []) {
      if (choice.delta && choice.delta.content) answer.textContent += choice.delta.content;
    }
    if (event.usage) usage = event.usage;
  });
  if (failure) {
    status.textContent = "failed: " + failure;
    status.dataset.state = "failed";
    return;
  }
  status.textContent = "done" + (usage ? " · " + usage.prompt_tokens + " in / " + usage.completion_tokens + " out" : "");
  status.dataset.state = "done";
  $("chat-rate").hidden = !(lastChat && lastChat.sources.length);
}

async function rate(rating) {
  if (!lastChat) throw new Error("send a chat first");
  const result = await api("POST", "/v1/feedback", { id: lastChat.id, rating });
  $("rate-status").textContent = "rated " + (rating > 0 ? "good" : "bad") + " (" + result.outcome.sources.length + " sources)";
  $("rate-status").dataset.done = "true";
}

// ---- memory ---------------------------------------------------------------

function showTraces(traces) {
  const body = $("memory-results");
  body.replaceChildren();
  for (const { trace, score } of traces) {
    const row = body.insertRow();
    cell(row, trace.id);
    cell(row, trace.version);
    cell(row, fixed(score, 3));
    cell(row, trace.text, "text");
    const actions = cell(row, "");
    actions.appendChild(button("History", guard(() => history(trace.id))));
    if (!trace.retired) actions.appendChild(button("Retire", guard(() => retire(trace.id))));
  }
}

async function memorySearch() {
  const result = await api("POST", "/admin/memory/search", {
    namespace: $("memory-namespace").value,
    query: $("memory-query").value,
  });
  showTraces(result.data);
}

async function memoryList() {
  const ns = encodeURIComponent($("memory-namespace").value);
  const result = await api("GET", "/admin/memory/namespaces/" + ns + "?limit=100");
  showTraces(result.data.map((trace) => ({ trace })));
}

async function history(id) {
  const result = await api("GET", "/admin/memory/traces/" + encodeURIComponent(id) + "/history");
  const list = $("memory-history");
  list.replaceChildren();
  for (const v of result.versions) {
    const li = document.createElement("li");
    li.textContent = "v" + v.version + " " + v.id + (v.retired ? " (retired)" : "") + ": " + v.text;
    list.appendChild(li);
  }
}

async function retire(id) {
  await api("POST", "/admin/memory/traces/" + encodeURIComponent(id) + "/retire", {});
  flash("retired " + id, false);
  await memoryList();
}

// ---- playbook -------------------------------------------------------------

loaders.playbook = async () => {
  const result = await api("GET", "/admin/playbook/outcomes?limit=200");
  const body = $("playbook-rows");
  body.replaceChildren();
  for (const o of result.data) {
    const row = body.insertRow();
    cell(row, o.id);
    cell(row, o.query, "text");
    cell(row, o.rating, o.rating > 0 ? "ok" : "bad");
    cell(row, o.sources.map((s) => s.corpus + "/" + s.id).join(", "));
    cell(row, o.rated_at ? new Date(o.rated_at * 1000).toLocaleString() : "");
    const actions = cell(row, "");
    actions.appendChild(button("Retire", guard(async () => {
      await api("POST", "/admin/playbook/outcomes/" + encodeURIComponent(o.id) + "/retire", {});
      await loaders.playbook();
    })));
  }
};

// ---- fan-out --------------------------------------------------------------

async function fanout() {
  const models = $("fanout-models").value.split(",").map((s) => s.trim()).filter(Boolean);
  const columns = $("fanout-columns");
  columns.replaceChildren();
  const parts = models.map((model) => {
    const column = document.createElement("div");
    column.className = "column";
    const title = document.createElement("h3");
    title.textContent = model;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = "waiting…";
    const text = document.createElement("pre");
    text.className = "answer";
    column.append(title, meta, text);
    columns.appendChild(column);
    return { meta, text, column };
  });
  await postStream("/v1/fanout", {
    models,
    messages: [{ role: "user", content: $("fanout-prompt").value }],
    stream: true,
  }, (data) => {
    if (data === "[DONE]") return;
    const event = JSON.parse(data);
    const part = parts[event.index];
    if (!part) return;
    if (event.type === "chunk") {
      for (const choice of event.chunk.choices || []) {
        if (choice.delta && choice.delta.content) part.text.textContent += choice.delta.content;
      }
      part.meta.textContent = "streaming…";
    } else if (event.type === "done") {
      part.meta.textContent = event.provider + " · " + event.latency_ms + " ms" + (event.usage ? " · " + event.usage.completion_tokens + " tokens" : "");
      part.column.dataset.state = "done";
    } else if (event.type === "error") {
      part.meta.textContent = "error: " + (event.error && event.error.error ? event.error.error.message : JSON.stringify(event.error));
      part.column.dataset.state = "error";
    }
  });
}

// ---- requests -------------------------------------------------------------

loaders.requests = async () => {
  const result = await api("GET", "/admin/requests?limit=100");
  const body = $("requests-rows");
  body.replaceChildren();
  for (const e of result.data) {
    const row = body.insertRow();
    cell(row, when(e.at_ms));
    cell(row, e.request_id);
    cell(row, e.model);
    cell(row, e.provider);
    cell(row, e.stream ? "yes" : "no");
    cell(row, e.outcome, e.outcome === "ok" ? "ok" : "bad");
    cell(row, fixed(e.latency_ms, 1));
    cell(row, fixed(e.ttft_ms, 1));
    cell(row, e.tokens_in !== undefined ? e.tokens_in + " / " + e.tokens_out : "");
    cell(row, e.lakehouse && e.lakehouse.sources ? e.lakehouse.sources.length : "");
    cell(row, e.error);
    cell(row, e.rating, e.rating > 0 ? "ok" : e.rating < 0 ? "bad" : "");
  }
};

// ---- wiring ---------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  const token = $("token");
  token.value = localStorage.getItem("lakehouse.token") || "";
  token.addEventListener("change", () => {
    if (token.value) localStorage.setItem("lakehouse.token", token.value);
    else localStorage.removeItem("lakehouse.token");
  });
  document.querySelectorAll("[data-refresh]").forEach((b) => {
    b.addEventListener("click", guard(() => loaders[b.dataset.refresh]()));
  });
  $("ingest-form").addEventListener("submit", guard(ingest));
  $("search-form").addEventListener("submit", guard(search));
  $("chat-form").addEventListener("submit", guard(async () => {
    try { await chat(); } catch (e) {
      $("chat-status").textContent = "failed: " + e.message;
      $("chat-status").dataset.state = "failed";
      throw e;
    }
  }));
  $("rate-up").addEventListener("click", guard(() => rate(1)));
  $("rate-down").addEventListener("click", guard(() => rate(-1)));
  $("memory-form").addEventListener("submit", guard(memorySearch));
  $("memory-list").addEventListener("click", guard(memoryList));
  $("fanout-form").addEventListener("submit", guard(fanout));
  window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));
  guard(loadModels)();
  guard(loaders.corpora)();
  showTab(location.hash.slice(1) || "providers");
});
