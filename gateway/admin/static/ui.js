// agentplex admin UI: catalog search, the playground's call, live counters and the reload button.
"use strict";

async function postJson(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: {"content-type": "application/json"},
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  let answer = null;
  try { answer = await response.json(); } catch (_) { answer = {error_description: `HTTP ${response.status}`}; }
  return {status: response.status, answer};
}

function el(tag, attributes, text) {
  const node = document.createElement(tag);
  Object.entries(attributes || {}).forEach(([key, value]) => node.setAttribute(key, value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- catalog search: hide the rows that do not contain every word typed ----------------------------
function setupSearch() {
  const box = document.getElementById("search");
  if (!box) return;
  const apply = () => {
    const words = box.value.toLowerCase().split(/\s+/).filter(Boolean);
    document.querySelectorAll("tr.item").forEach((row) => {
      const text = row.dataset.search || "";
      row.hidden = !words.every((word) => text.includes(word));
    });
    const url = new URL(window.location);
    if (box.value) url.searchParams.set("q", box.value); else url.searchParams.delete("q");
    history.replaceState(null, "", url);
  };
  box.addEventListener("input", apply);
  box.form.addEventListener("submit", (event) => { event.preventDefault(); apply(); });
  apply();  // the same rule as the server's ?q= filter, once the page is here
}

// -- playground ---------------------------------------------------------------------------------
function readArguments(form) {
  const args = Object.create(null);  // a property named __proto__ is an argument like any other
  const more = document.getElementById("arguments-json");
  if (more && more.value.trim()) {
    let parsed;
    try { parsed = JSON.parse(more.value); } catch (_) { throw new Error("the JSON arguments are not valid JSON"); }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("the JSON arguments must be an object");
    Object.assign(args, parsed);
  }
  for (const input of form.querySelectorAll("[data-arg]")) {
    const name = input.dataset.arg;
    const kind = input.dataset.kind;
    if (kind === "boolean") { args[name] = input.checked; continue; }
    const text = input.value;
    if (text === "") {
      if (input.required) throw new Error(`${name} is required`);
      continue;  // an optional field left empty is not sent
    }
    if (kind === "integer") {
      if (!/^-?\d+$/.test(text.trim())) throw new Error(`${name} must be an integer`);
      args[name] = parseInt(text, 10);
    } else if (kind === "number") {
      const number = Number(text);
      if (Number.isNaN(number)) throw new Error(`${name} must be a number`);
      args[name] = number;
    } else if (kind === "enum" || kind === "json") {
      try { args[name] = JSON.parse(text); } catch (_) { throw new Error(`${name} is not valid JSON`); }
    } else {
      args[name] = text;
    }
  }
  return args;
}

function showResult(status, answer) {
  const out = document.getElementById("result");
  const label = document.getElementById("result-status");
  out.replaceChildren();
  if (status !== 200) {
    label.textContent = `failed (HTTP ${status})`;
    label.className = "bad";
    out.append(el("pre", {class: "error", id: "result-error"}, answer.error_description || JSON.stringify(answer)));
    return;
  }
  const result = answer.result || {};
  label.textContent = result.isError ? "the tool reported an error" : "ok";
  label.className = result.isError ? "bad" : "ok";
  (result.content || []).forEach((block, index) => {
    if (block.type === "text") {
      out.append(el("pre", {class: "block text", "data-index": String(index)}, block.text));
    } else if (block.type === "image" && /^image\//.test(block.mimeType || "")) {
      out.append(el("img", {class: "block image", src: `data:${block.mimeType};base64,${block.data}`, alt: `image ${index}`}));
    } else {
      out.append(el("pre", {class: "block other", "data-index": String(index)}, JSON.stringify(block, null, 2)));
    }
  });
  if (result.structuredContent !== undefined) {
    out.append(el("h4", {}, "Structured content"));
    out.append(el("pre", {class: "structured"}, JSON.stringify(result.structuredContent, null, 2)));
  }
}

function setupPlayground() {
  const picker = document.getElementById("tool-picker");
  if (picker) {
    picker.addEventListener("change", () => {
      if (!picker.value) return;
      const [route, ...rest] = picker.value.split("|");
      const url = new URL("/ui/playground", window.location);
      url.searchParams.set("route", route);
      url.searchParams.set("tool", rest.join("|"));
      window.location = url;
    });
  }
  const form = document.getElementById("call-form");
  if (!form) return;
  const section = document.getElementById("tool");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const label = document.getElementById("result-status");
    let args;
    try {
      args = readArguments(form);
    } catch (problem) {
      showResult(400, {error_description: problem.message});
      return;
    }
    const button = document.getElementById("call");
    button.disabled = true;
    label.textContent = "calling…";
    label.className = "muted";
    try {
      const {status, answer} = await postJson("/call", {route: section.dataset.route, tool: section.dataset.tool, arguments: args});
      showResult(status, answer);
    } catch (problem) {
      showResult(0, {error_description: `the admin address did not answer: ${problem}`});
    } finally {
      button.disabled = false;
    }
  });
}

// -- live counters ------------------------------------------------------------------------------
function setupCounters() {
  const panel = document.getElementById("counters");
  if (!panel) return;
  const lookup = (data, path) => path.split(".").reduce((value, key) => (value == null ? value : value[key]), data);
  const refresh = async () => {
    try {
      const response = await fetch(panel.dataset.source, {credentials: "same-origin"});
      if (!response.ok) return;
      const data = await response.json();
      panel.querySelectorAll("[data-stat]").forEach((node) => {
        const value = lookup(data, node.dataset.stat);
        node.textContent = value == null ? "0" : String(value);
      });
      const body = document.querySelector("#tool-calls tbody");
      const calls = data.totals ? JSON.stringify(data.totals.toolCalls) : null;
      if (body && data.totals && calls !== body.dataset.shown) {  // rows are replaced only when they changed
        body.dataset.shown = calls;
        const rows = data.totals.toolCalls.map((tool) => {
          const row = el("tr");
          [tool.route, tool.name, tool.target, tool.calls, tool.failed].forEach((cell) => row.append(el("td", {}, String(cell))));
          return row;
        });
        if (!rows.length) {
          const empty = el("tr", {class: "empty"});
          empty.append(el("td", {colspan: "5"}, "no tool calls yet"));
          rows.push(empty);
        }
        body.replaceChildren(...rows);
      }
      panel.dataset.refreshed = String(Date.now());
    } catch (_) {
      // the gateway may be restarting: try again on the next tick
    }
  };
  setInterval(refresh, 2000);
}

// -- config reload ------------------------------------------------------------------------------
function setupReload() {
  const button = document.getElementById("reload");
  if (!button) return;
  button.addEventListener("click", async () => {
    const status = document.getElementById("reload-status");
    const problems = document.getElementById("reload-problems");
    button.disabled = true;
    status.textContent = "reloading…";
    problems.replaceChildren();
    try {
      const {status: code, answer} = await postJson("/reload");
      if (code === 200) {
        status.textContent = `reloaded: generation ${answer.generation}`;
        setTimeout(() => window.location.reload(), 800);
      } else {
        status.textContent = answer.problems ? "the file was not applied:" : (answer.error_description || `HTTP ${code}`);
        (answer.problems || []).forEach((problem) => problems.append(el("li", {}, problem)));
      }
    } finally {
      button.disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupSearch();
  setupPlayground();
  setupCounters();
  setupReload();
});
