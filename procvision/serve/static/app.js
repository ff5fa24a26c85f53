// procvision memory explorer: plain JavaScript over the service's JSON API (no build step).
"use strict";
const $ = (sel) => document.querySelector(sel);
const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777",
  "#65a30d", "#475569", "#ea580c"];
const selected = new Set();
let lastFile = null;

function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

async function api(path, options = {}) {
  const resp = await fetch(path, options);
  const body = await resp.json().catch(() => ({ detail: resp.statusText }));
  if (!resp.ok) throw new Error(`${resp.status}: ${body.detail || resp.statusText}`);
  return body;
}

function setStatus(text, error = false) {
  const s = $("#status");
  s.textContent = text;
  s.className = error ? "error" : "";
}

async function refreshHealth() {
  const h = await api("/health");
  $("#memory-info").textContent =
    `${h.memory} · ${h.count} items · content ${h.content_hash.slice(0, 16)}… · ` +
    `${h.device}${h.read_only ? " · read-only" : ""}`;
  $("#memory-info").dataset.count = h.count;
}

async function refreshAudit() {
  const page = await api("/audit?limit=1000");
  const body = $("#audit-table tbody");
  body.replaceChildren();
  for (const r of page.records.slice().reverse()) {
    const tr = el("tr");
    const ids = (r.removed_ids || []).join(" ");
    const cells = [r.time_utc, r.action, r.count, ids, `${r.n_before} → ${r.n_after}`, r.reason || ""];
    for (const c of cells) tr.append(el("td", {}, String(c ?? "")));
    tr.append(el("td", { class: "hash" }, (r.content_hash_after || "").slice(0, 16)));
    body.append(tr);
  }
}

function updateForgetButton() {
  const b = $("#forget-btn");
  b.textContent = `Forget selected (${selected.size})`;
  b.disabled = selected.size === 0;
}

async function showItem(id) {
  const item = await api(`/items/${id}`);
  $("#item").hidden = false;
  $("#item-id").textContent = `${item.id} (${item.label})`;
  $("#item-image").src = `/items/${item.id}/image`;
  $("#item-json").textContent = JSON.stringify(item, null, 1);
}

function renderAnswer(res) {
  $("#answer").hidden = false;
  $("#prediction").textContent = res.prediction ?? "(empty memory)";
  const bar = $("#vote-bar"), legend = $("#vote-legend");
  bar.replaceChildren();
  legend.replaceChildren();
  Object.entries(res.scores).forEach(([name, share], i) => {
    const colour = COLOURS[i % COLOURS.length];
    const seg = el("div", { title: `${name} ${(100 * share).toFixed(1)}%` });
    seg.style.width = `${100 * share}%`;
    seg.style.background = colour;
    bar.append(seg);
    const key = el("span");
    const dot = el("i");
    dot.style.background = colour;
    key.append(dot, `${name} ${(100 * share).toFixed(1)}%`);
    legend.append(key);
  });
  const grid = $("#neighbours");
  grid.replaceChildren();
  for (const nb of res.neighbours) {
    const card = el("div", { class: "neighbour", "data-id": nb.id });
    const top = el("div", { class: "top" });
    const box = el("input", { type: "checkbox", class: "select", "aria-label": `select item ${nb.id}` });
    box.checked = selected.has(nb.id);
    box.addEventListener("click", (ev) => {
      ev.stopPropagation();
      if (box.checked) selected.add(nb.id); else selected.delete(nb.id);
      card.classList.toggle("selected", box.checked);
      updateForgetButton();
    });
    top.append(el("span", {}, `#${nb.rank} · id ${nb.id}`), box);
    const img = el("img", { src: `/items/${nb.id}/image`, alt: `item ${nb.id}`, loading: "lazy" });
    card.append(top, img, el("div", {}, `${nb.label} · ${nb.similarity.toFixed(4)}`),
      el("div", { class: "src", title: nb.source }, nb.source.split("/").pop()));
    card.addEventListener("click", () => showItem(nb.id).catch((e) => setStatus(e.message, true)));
    grid.append(card);
  }
}

async function classify(file) {
  lastFile = file;
  $("#query-preview").src = URL.createObjectURL(file);
  const form = new FormData();
  form.append("files", file, file.name);
  const params = new URLSearchParams();
  if ($("#k").value) params.set("k", $("#k").value);
  if ($("#method").value) params.set("method", $("#method").value);
  setStatus("classifying…");
  const out = await api(`/classify?${params}`, { method: "POST", body: form });
  renderAnswer(out.results[0]);
  setStatus(`answered from ${out.count} items (content ${out.content_hash.slice(0, 16)}…)`);
}

async function forgetSelected() {
  const ids = [...selected];
  const token = $("#token").value.trim();
  const resp = await api("/items/forget", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify({ ids, reason: $("#reason").value }),
  });
  selected.clear();
  updateForgetButton();
  $("#item").hidden = true;
  setStatus(`forgot ${resp.count} item(s): ${resp.removed_ids.join(", ")}`);
  await Promise.all([refreshHealth(), refreshAudit()]);
  if (lastFile) {
    const note = $("#status").textContent;
    await classify(lastFile);
    setStatus(note);
  }
}

function onFiles(files) {
  if (files && files.length) classify(files[0]).catch((e) => setStatus(e.message, true));
}

window.addEventListener("DOMContentLoaded", () => {
  const drop = $("#drop");
  $("#file-input").addEventListener("change", (ev) => onFiles(ev.target.files));
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    onFiles(ev.dataTransfer.files);
  });
  $("#forget-btn").addEventListener("click", () => forgetSelected().catch((e) => setStatus(e.message, true)));
  refreshHealth().catch((e) => setStatus(e.message, true));
  refreshAudit().catch((e) => setStatus(e.message, true));
});
