// metalab dashboard pages. Every value shown comes from the JSON API under /api and is
// written with textContent (never innerHTML), so a param or log line cannot inject markup.
"use strict";

const POLL_MS = 3000;
const MAX_TRACES = 100; // plot builder: more hue groups than this become one coloured trace

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function fmt(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toPrecision(6);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

async function api(path, params) {
  const url = params ? `${path}?${params.toString()}` : path;
  const response = await fetch(url, { credentials: "same-origin" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? `${body.error.type}: ${body.error.message}` : response.statusText);
  return body;
}

function showError(id, err) {
  const box = document.getElementById(id);
  if (!box) return;
  box.hidden = !err;
  box.textContent = err ? String(err.message || err) : "";
}

function ctx(name) {
  return document.getElementById("ctx").dataset[name];
}

function live(text) {
  document.getElementById("live").textContent = text;
}

function kvTable(id, obj) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren();
  for (const [k, v] of Object.entries(obj || {})) {
    const row = el("tr");
    row.append(el("th", {}, k), el("td", {}, fmt(v)));
    body.append(row);
  }
}

// -- experiments -------------------------------------------------------------------------

async function experimentsPage() {
  const body = document.querySelector("#experiments tbody");
  const refresh = async () => {
    const doc = await api("/api/experiments");
    body.replaceChildren();
    document.getElementById("empty").hidden = doc.experiments.length > 0;
    for (const e of doc.experiments) {
      const row = el("tr", { "data-experiment": e.experiment_id });
      const link = el("a", { href: `/experiment?experiment=${encodeURIComponent(e.experiment_id)}` }, e.experiment_id);
      const first = el("td");
      first.append(link);
      const bar = el("progress", { max: "1", value: String(e.progress || 0) });
      const progress = el("td");
      progress.append(bar, el("span", {}, e.progress === null ? "" : ` ${(100 * e.progress).toFixed(1)}%`));
      const plot = el("td");
      plot.append(el("a", { href: `/plot?experiment=${encodeURIComponent(e.experiment_id)}` }, "plot"));
      const meta = el("td", { class: "metadata" });
      const entries = Object.entries(e.metadata || {});
      if (entries.length) {
        const box = el("details");
        box.append(el("summary", {}, entries.map(([k]) => k).join(", ")),
          el("pre", {}, JSON.stringify(e.metadata, null, 2)));
        meta.append(box);
      }
      row.append(first, el("td", {}, e.name), el("td", {}, e.version), el("td", {}, e.launches),
        el("td", { class: "num total" }, fmt(e.total)), el("td", { class: "num success" }, e.counts.success),
        el("td", { class: "num failed" }, e.counts.failed), el("td", { class: "num pending" }, e.counts.pending),
        progress, el("td", {}, e.last_activity || ""), meta, plot);
      body.append(row);
    }
    live(`updated ${new Date().toLocaleTimeString()}`);
  };
  await refresh();
  setInterval(() => refresh().catch((err) => live(`refresh failed: ${err.message}`)), POLL_MS);
}

// -- runs table --------------------------------------------------------------------------

function filterParams(form) {
  const params = new URLSearchParams();
  params.set("experiment", ctx("experiment"));
  const statuses = [...form.querySelectorAll("input[name=status]:checked")].map((b) => b.value);
  if (statuses.length) params.set("status", statuses.join(","));
  const errorType = document.getElementById("error-type").value;
  if (errorType) params.set("error_type", errorType);
  for (const line of document.getElementById("where").value.split("\n")) {
    if (line.trim()) params.append("where", line.trim());
  }
  const sort = document.getElementById("sort").value;
  if (sort) {
    params.set("sort", sort);
    params.set("order", document.getElementById("order").value);
  }
  return params;
}

function restoreFilters(search, columns) {
  const statuses = (search.get("status") || "").split(",").filter(Boolean);
  const boxes = document.getElementById("status-boxes");
  for (const s of ["success", "failed", "cancelled", "running"]) {
    const label = el("label");
    const box = el("input", { type: "checkbox", name: "status", value: s });
    box.checked = statuses.includes(s);
    label.append(box, ` ${s} `);
    boxes.append(label);
  }
  const errorType = document.getElementById("error-type");
  for (const t of columns.error_types) errorType.append(el("option", { value: t }, t));
  errorType.value = search.get("error_type") || "";
  const sort = document.getElementById("sort");
  for (const c of [...columns.record, ...columns.params, ...columns.metrics]) sort.append(el("option", { value: c }, c));
  sort.value = search.get("sort") || "";
  document.getElementById("order").value = search.get("order") || "asc";
  document.getElementById("where").value = search.getAll("where").join("\n");
}

async function runsPage() {
  const experiment = ctx("experiment");
  const form = document.getElementById("filters");
  const info = await api("/api/experiment", new URLSearchParams({ experiment }));
  document.getElementById("metadata").textContent = JSON.stringify(info.metadata, null, 2);
  document.getElementById("manifest").textContent = JSON.stringify(info.manifest, null, 2);
  const search = new URLSearchParams(location.search);
  restoreFilters(search, info.columns);
  let offset = Number(search.get("offset") || 0);
  let loadedAt = null;
  const selected = new Set();
  const compare = document.getElementById("compare");
  compare.addEventListener("click", () => { location.href = `/compare?ids=${[...selected].join(",")}`; });

  const load = async () => {
    const params = filterParams(form);
    const limit = Number(document.getElementById("limit").value);
    const pageParams = new URLSearchParams(params);
    pageParams.set("offset", String(offset));
    pageParams.set("limit", String(limit));
    history.replaceState(null, "", `/experiment?${pageParams.toString()}`);
    document.getElementById("csv").href = `/api/runs.csv?${params.toString()}`;
    let doc;
    try {
      doc = await api("/api/runs", pageParams);
      showError("error", null);
    } catch (err) {
      showError("error", err);
      return;
    }
    loadedAt = doc.loaded_at;
    document.getElementById("run-count").textContent = String(doc.matched);
    document.getElementById("run-total").textContent = String(doc.total);
    const pages = Math.max(1, Math.ceil(doc.matched / limit));
    document.getElementById("page-info").textContent = `page ${Math.floor(offset / limit) + 1} / ${pages}`;
    document.getElementById("prev").disabled = offset === 0;
    document.getElementById("next").disabled = offset + limit >= doc.matched;
    drawRuns(doc, selected, compare);
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); offset = 0; load(); });
  document.getElementById("prev").addEventListener("click", () => {
    offset = Math.max(0, offset - Number(document.getElementById("limit").value)); load();
  });
  document.getElementById("next").addEventListener("click", () => {
    offset += Number(document.getElementById("limit").value); load();
  });
  await load();
  const counts = async () => {
    const doc = await api("/api/experiments");
    const e = doc.experiments.find((x) => x.experiment_id === experiment);
    if (e) {
      document.getElementById("counts").textContent =
        `${e.counts.success} success · ${e.counts.failed} failed · ${e.counts.pending} pending of ${fmt(e.total)}`;
    }
    const probe = await api("/api/runs", new URLSearchParams({ experiment, limit: "1" }));
    if (probe.loaded_at !== loadedAt) await load();  // the table was reloaded: new runs
    live(`updated ${new Date().toLocaleTimeString()}`);
  };
  await counts();
  setInterval(() => counts().catch((err) => live(`refresh failed: ${err.message}`)), POLL_MS);
}

function drawRuns(doc, selected, compare) {
  const head = document.querySelector("#runs-table thead");
  const body = document.querySelector("#runs-table tbody");
  const shown = doc.columns.filter((c) => c !== "experiment_id" && c !== "error_message");
  const headRow = el("tr");
  headRow.append(el("th", {}, ""));
  for (const c of shown) headRow.append(el("th", {}, c.replace(/^param_/, "")));
  head.replaceChildren(headRow);
  body.replaceChildren();
  for (const values of doc.rows) {
    const row = {};
    doc.columns.forEach((c, i) => { row[c] = values[i]; });
    const tr = el("tr", { class: `status-${row.status}`, "data-run": row.run_id });
    const pick = el("td");
    const box = el("input", { type: "checkbox", class: "pick" });
    box.checked = selected.has(row.run_id);
    box.addEventListener("change", () => {
      if (box.checked) selected.add(row.run_id); else selected.delete(row.run_id);
      compare.disabled = selected.size < 2;
    });
    pick.append(box);
    tr.append(pick);
    for (const c of shown) {
      const td = el("td", {});
      if (c === "run_id") td.append(el("a", { href: `/run/${row.run_id}` }, row.run_id.slice(0, 12)));
      else td.textContent = fmt(row[c]);
      if (c === "error_type" && row.error_message) td.title = row.error_message;
      tr.append(td);
    }
    body.append(tr);
  }
}

// -- run detail --------------------------------------------------------------------------

async function runPage() {
  const runId = ctx("run");
  let doc;
  try {
    doc = await api(`/api/runs/${encodeURIComponent(runId)}`);
  } catch (err) {
    showError("error-msg", err);
    return;
  }
  const link = `/experiment?experiment=${encodeURIComponent(doc.experiment_id)}`;
  const summary = document.getElementById("run-summary");
  summary.append(el("a", { href: link }, doc.experiment_id),
    ` · ${doc.status} · replicate ${doc.replicate} · task ${doc.task_index} · ${doc.started_at || ""} → ${doc.finished_at || ""}`);
  kvTable("params", doc.params);
  kvTable("metrics", doc.metrics);
  if (doc.error) {
    document.getElementById("failure").hidden = false;
    document.getElementById("run-error").textContent =
      `${doc.error.type}: ${doc.error.message}\n\n${doc.error.traceback || ""}`;
  }
  document.getElementById("log").textContent = (doc.log_truncated ? "[... earlier lines cut]\n" : "") + (doc.log || "(empty log)");
  const series = document.getElementById("series");
  const names = Object.keys(doc.metric_series || {});
  if (!names.length) series.textContent = "none";
  for (const name of names) {
    const div = el("div", { class: "chart", id: `series-${name}` });
    series.append(div);
    const pairs = doc.metric_series[name];
    Plotly.newPlot(div, [{ x: pairs.map((p) => p[0]), y: pairs.map((p) => p[1]), mode: "lines+markers", name }],
      { title: { text: name }, xaxis: { title: { text: "step" } }, margin: { t: 40 }, height: 300 },
      { displaylogo: false, responsive: true });
  }
  const artifacts = document.getElementById("artifacts");
  if (!doc.artifacts.length) artifacts.textContent = "none";
  for (const a of doc.artifacts) {
    const box = el("figure", { class: "artifact", "data-artifact": a.name });
    if (a.url) box.append(el("img", { src: a.url, alt: a.name, class: "figure" }));
    else box.append(el("pre", {}, a.summary || ""));
    box.append(el("figcaption", {}, `${a.name} (${a.kind}, ${a.size} bytes)`));
    artifacts.append(box);
  }
}

// -- plot builder ------------------------------------------------------------------------

async function plotPage() {
  const experiment = ctx("experiment");
  const info = await api("/api/experiment", new URLSearchParams({ experiment }));
  const c = info.columns;
  const fill = (id, names) => { for (const n of names) document.getElementById(id).append(el("option", { value: n }, n)); };
  fill("y", c.metrics.filter((m) => c.numeric.includes(m)).concat(c.numeric.filter((m) => m === "duration")));
  fill("x", [...c.params, ...c.metrics.filter((m) => c.numeric.includes(m))]);
  fill("hue", c.params);
  fill("col", c.params);
  const search = new URLSearchParams(location.search);
  for (const key of ["x", "y", "hue", "col", "errorbar"]) {
    if (search.get(key) !== null) document.getElementById(key).value = search.get(key);
  }
  document.getElementById("where").value = search.getAll("where").join("\n");
  const form = document.getElementById("plot-form");
  form.addEventListener("submit", (event) => { event.preventDefault(); draw(experiment); });
  if (search.get("x") && search.get("y")) await draw(experiment);
}

async function draw(experiment) {
  const params = new URLSearchParams({ experiment });
  for (const key of ["x", "y", "hue", "col", "errorbar"]) {
    const value = document.getElementById(key).value;
    if (value) params.set(key, value);
  }
  for (const line of document.getElementById("where").value.split("\n")) {
    if (line.trim()) params.append("where", line.trim());
  }
  history.replaceState(null, "", `/plot?${params.toString()}`);
  const plots = document.getElementById("plots");
  let doc;
  try {
    doc = await api("/api/plot", params);
    showError("error", null);
  } catch (err) {
    showError("error", err);
    plots.replaceChildren();
    return;
  }
  document.getElementById("plot-info").textContent =
    `${doc.points} points from ${doc.runs} successful runs (${doc.ylabel})`;
  const d = doc.data;
  const facets = new Map();
  for (let i = 0; i < d.x.length; i++) {
    const facet = d.col ? fmt(d.col[i]) : "";
    const group = d.hue ? fmt(d.hue[i]) : doc.y;
    if (!facets.has(facet)) facets.set(facet, new Map());
    const traces = facets.get(facet);
    if (!traces.has(group)) traces.set(group, { x: [], y: [], err: [], xerr: [] });
    const t = traces.get(group);
    t.x.push(d.x[i]); t.y.push(d.mean[i]); t.err.push(d.err[i]);
    if (d.x_err) t.xerr.push(d.x_err[i]);
  }
  plots.replaceChildren();
  const logx = document.getElementById("logx").checked;
  const logy = document.getElementById("logy").checked;
  for (const [facet, traces] of facets) {
    const div = el("div", { class: "chart plot" });
    plots.append(div);
    const bars = doc.errorbar !== null;
    let data = [...traces].map(([name, t]) => ({
      x: t.x, y: t.y, name, type: "scatter", mode: "lines+markers",
      error_y: { type: "data", array: t.err, visible: bars },
      error_x: d.x_err ? { type: "data", array: t.xerr, visible: bars } : undefined,
    }));
    if (data.length > MAX_TRACES) {
      // Thousands of lines (one per hue value) make plotly slow and the legend useless:
      // one trace of markers coloured by the hue value instead.
      const all = { x: [], y: [], err: [], xerr: [], color: [] };
      [...traces].forEach(([name, t], i) => {
        const value = Number(name);
        for (let j = 0; j < t.x.length; j++) {
          all.x.push(t.x[j]); all.y.push(t.y[j]); all.err.push(t.err[j]);
          if (d.x_err) all.xerr.push(t.xerr[j]);
          all.color.push(Number.isFinite(value) ? value : i);
        }
      });
      data = [{
        x: all.x, y: all.y, type: "scattergl", mode: "markers", name: doc.hue,
        marker: { color: all.color, colorscale: "Viridis", size: 4,
          colorbar: { title: { text: doc.hue.replace(/^param_/, "") } } },
        error_y: { type: "data", array: all.err, visible: bars },
        error_x: d.x_err ? { type: "data", array: all.xerr, visible: bars } : undefined,
      }];
      document.getElementById("plot-info").textContent +=
        ` · ${traces.size} groups: drawn as markers coloured by ${doc.hue}`;
    }
    const title = doc.col ? `${doc.col.replace(/^param_/, "")} = ${facet}` : "";
    await Plotly.newPlot(div, data, {
      title: { text: title }, height: 420, margin: { t: 40 },
      xaxis: { title: { text: doc.x }, type: logx ? "log" : "-" },
      yaxis: { title: { text: doc.ylabel }, type: logy ? "log" : "-" },
      showlegend: Boolean(doc.hue) && data.length > 1,
    }, { displaylogo: false, responsive: true });
  }
}

// -- compare -----------------------------------------------------------------------------

async function comparePage() {
  let doc;
  try {
    doc = await api("/api/compare", new URLSearchParams({ ids: ctx("ids") }));
  } catch (err) {
    showError("error", err);
    return;
  }
  const head = el("tr");
  head.append(el("th", {}, "field"));
  for (const id of doc.run_ids) {
    const th = el("th");
    th.append(el("a", { href: `/run/${id}` }, id.slice(0, 12)));
    head.append(th);
  }
  document.querySelector("#compare-table thead").replaceChildren(head);
  const body = document.querySelector("#compare-table tbody");
  for (const [section, fields] of Object.entries(doc.sections)) {
    const sectionRow = el("tr", { class: "section" });
    sectionRow.append(el("th", { colspan: String(doc.run_ids.length + 1) }, section));
    body.append(sectionRow);
    for (const f of fields) {
      const tr = el("tr", { class: f.differs ? "differs" : "same", "data-field": `${section}.${f.name}` });
      tr.append(el("th", {}, f.name));
      for (const v of f.values) tr.append(el("td", {}, fmt(v)));
      body.append(tr);
    }
  }
}

const PAGES = { experiments: experimentsPage, runs: runsPage, run: runPage, plot: plotPage, compare: comparePage };

document.addEventListener("DOMContentLoaded", () => {
  const page = PAGES[document.body.dataset.page];
  if (page) page().catch((err) => { live(`error: ${err.message}`); showError("error", err); });
});
