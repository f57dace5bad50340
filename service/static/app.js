// qnetlab live status page: everything from the service's own API, no build step, no CDN.
// Live updates arrive as server-sent events on /api/events (read with fetch so the API key
// travels in the Authorization header, never in a URL). Write controls are drawn only for a
// caller whose key has write scopes; the audit log only for read:audit.
"use strict";

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];
const state = { key: sessionStorage.getItem("qnetlab-key") || "", scopes: [], status: null,
                jobs: [], updates: 0, lastHistory: 0 };

function headers() {
  return state.key ? { "Authorization": "Bearer " + state.key } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options,
    headers: { ...headers(), ...(options.headers || {}) } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(response.status + ": " + (body.detail || response.statusText));
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- the network graph --------------------------------------------------------------------

function targetState(status, target) {
  const rows = status.calibration.filter(r => r.target === target);
  if (rows.some(r => r.state === "failed")) return "failed";
  if (rows.some(r => r.state === "stale")) return "stale";
  return "fresh";
}

function nodeState(status, name) {
  const n = status.nodes[name];
  if (status.watchdog.state !== "running" || n.mxc_k > 0.02) return "bad";
  const cal = targetState(status, name);
  return cal === "fresh" ? "ok" : cal === "failed" ? "bad" : "warn";
}

function drawNetwork(status) {
  const g = document.getElementById("network");
  g.replaceChildren();
  const topo = status.topology, names = topo.nodes;
  const pos = {};
  names.forEach((n, i) => { pos[n] = [60 + i * (520 / Math.max(1, names.length - 1)), 70]; });
  for (const [name, link] of Object.entries(topo.links)) {
    const [a, b] = link.nodes.map(n => pos[n]);
    const mid = [(a[0] + b[0]) / 2, 170];
    pos[link.herald] = pos[link.herald] || mid;
    const cls = targetState(status, name);
    g.append(svg("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1], class: "link " + cls,
                           "data-link": name, "data-state": cls }));
    g.append(svg("text", { x: (a[0] + b[0]) / 2 - 10, y: a[1] - 12 }, "link " + name));
    for (const end of [a, b]) {
      g.append(svg("line", { x1: end[0], y1: end[1], x2: pos[link.herald][0],
                             y2: pos[link.herald][1], class: "fiber " + cls,
                             "stroke-width": 2, "stroke-dasharray": "4 3" }));
    }
  }
  for (const h of topo.heralds) {
    const p = pos[h] || [320, 170], cls = targetState(status, h) === "fresh" ? "ok" :
      targetState(status, h) === "failed" ? "bad" : "warn";
    g.append(svg("rect", { x: p[0] - 14, y: p[1] - 14, width: 28, height: 28, class: cls,
                           "data-herald": h, "data-state": cls }));
    g.append(svg("text", { x: p[0] + 20, y: p[1] + 5 }, "herald " + h));
  }
  for (const n of names) {
    const p = pos[n], cls = nodeState(status, n);
    g.append(svg("circle", { cx: p[0], cy: p[1], r: 22, class: cls, "data-node": n,
                             "data-state": cls }));
    g.append(svg("text", { x: p[0] - 18, y: p[1] + 42 },
                 n + " " + (status.nodes[n].mxc_k * 1e3).toFixed(1) + " mK"));
  }
}

// -- tables -----------------------------------------------------------------------------------

function drawCalibration(status) {
  const box = document.getElementById("calibration");
  const byTarget = {};
  for (const r of status.calibration) (byTarget[r.target] = byTarget[r.target] || []).push(r);
  box.replaceChildren(...Object.entries(byTarget).map(([target, rows]) => el("div", {},
    el("b", {}, target + ": "),
    ...rows.map(r => el("span", { class: "chip " + r.state, "data-cal": r.key,
                                  "data-state": r.state,
                                  title: (r.outcome || "never") + ", age " +
                                    (r.age_s === null ? "never" : (r.age_s / 3600).toFixed(2) + " h") },
                        r.calibration)))));
}

function drawFridges(status) {
  const rows = Object.entries(status.nodes).map(([n, s]) => el("tr", {},
    el("td", {}, n), el("td", { "data-mxc": n }, (s.mxc_k * 1e3).toFixed(2) + " mK"),
    el("td", {}, "interlock " + s.interlock), el("td", {}, s.emitted_dbm.toFixed(1) + " dBm")));
  document.getElementById("fridges").replaceChildren(el("table", {}, ...rows));
}

function drawJobs(jobs, lease) {
  const tbody = document.querySelector("#jobs tbody");
  tbody.replaceChildren(...jobs.map(j => el("tr", { "data-job": j.id, class: j.state },
    el("td", {}, j.id), el("td", {}, j.kind), el("td", {}, j.state),
    el("td", {}, j.submitted_by), el("td", {}, j.submitted_utc || ""),
    el("td", {}, j.error || outcome(j)))));
  document.getElementById("lease").textContent = lease ?
    "lease: " + lease.holder + " until " + lease.expires_utc + " (" + lease.reason + ")" :
    "no lease in force";
}

function outcome(job) {
  const r = job.result;
  if (!r) return "";
  if (r.delivered_pairs !== undefined)
    return r.delivered_pairs + "/" + r.requested + " pairs, " + r.rate_hz.toFixed(1) + " /s" +
      (r.fidelity !== null ? ", F " + r.fidelity.toFixed(3) : "");
  if (r.ok !== undefined) return r.ok ? "calibration ok" : "calibration NOT OK";
  if (r.url) return r.url;
  return JSON.stringify(r).slice(0, 80);
}

// -- charts -------------------------------------------------------------------------------------

function chart(id, series, unit) {
  const g = document.getElementById(id);
  g.replaceChildren();
  const all = series.flatMap(s => s.points);
  if (!all.length) { g.append(svg("text", { x: 10, y: 20 }, "no data yet")); return; }
  const xs = all.map(p => p[0]), ys = all.map(p => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs) || 1, y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = x => 50 + 570 * (x - x0) / ((x1 - x0) || 1);
  const sy = y => 160 - 140 * (y - y0) / ((y1 - y0) || 1);
  series.forEach((s, i) => {
    g.append(svg("polyline", { points: s.points.map(p => sx(p[0]) + "," + sy(p[1])).join(" "),
                               stroke: COLORS[i % COLORS.length] }));
    g.append(svg("text", { x: 60 + 120 * i, y: 14, fill: COLORS[i % COLORS.length] }, s.name));
  });
  g.append(svg("text", { x: 2, y: 24 }, y1.toPrecision(3) + " " + unit));
  g.append(svg("text", { x: 2, y: 164 }, y0.toPrecision(3)));
  g.append(svg("text", { x: 520, y: 176 }, "lab time " + x1.toFixed(0) + " s"));
}

async function drawHistory() {
  const h = await api("/api/history");
  const nodes = [...new Set(h.mxc.map(p => p[1]))];
  chart("mxc-chart", nodes.map(n => ({ name: n, points: h.mxc.filter(p => p[1] === n)
    .map(p => [p[0], p[2] * 1e3]) })), "mK");
  const links = [...new Set(h.requests.map(r => r.link))];
  chart("rate-chart", links.map(l => ({ name: l + " rate", points: h.requests
    .filter(r => r.link === l).map(r => [r.lab_time, r.rate_hz]) })), "/s");
  chart("fidelity-chart", links.map(l => ({ name: l + " fidelity", points: h.requests
    .filter(r => r.link === l && r.fidelity !== null).map(r => [r.lab_time, r.fidelity]) })), "");
}

// -- write controls (only for keys with write scopes) --------------------------------------------

function drawControls(status) {
  const section = document.getElementById("controls");
  const can = s => state.scopes.includes(s);
  const parts = [];
  if (can("write:request") && status.topology) {
    const links = Object.keys(status.topology.links);
    const form = el("form", { id: "request-form", "data-write": "request" },
      el("label", {}, "link ", el("select", { name: "link" },
        ...links.map(l => el("option", { value: l }, l)))),
      el("label", {}, "pairs ", el("input", { name: "pairs", type: "number", value: "1000",
                                             min: "1", max: "1000000" })),
      el("button", { type: "submit", "data-write": "request" }, "submit entanglement request"));
    form.addEventListener("submit", ev => {
      ev.preventDefault();
      const data = new FormData(form);
      submit("/api/requests", { link: data.get("link"), pairs: Number(data.get("pairs")) });
    });
    parts.push(form);
  }
  if (can("write:calibrate")) {
    const button = el("button", { type: "button", "data-write": "calibrate" }, "maintain calibration");
    button.addEventListener("click", () => submit("/api/jobs", { kind: "calibrate", params: {} }));
    parts.push(button);
  }
  if (can("write:lease")) {
    const take = el("button", { type: "button", "data-write": "lease" }, "take a 30-min lease");
    take.addEventListener("click", () => submit("/api/leases", { duration_s: 1800,
                                                                 reason: "from the status page" }));
    const give = el("button", { type: "button", "data-write": "lease" }, "release the lease");
    give.addEventListener("click", () => api("/api/leases/current", { method: "DELETE" })
      .then(() => note("lease released"), e => note(e.message)));
    parts.push(take, give);
  }
  parts.push(el("div", { id: "control-note" }));
  section.hidden = parts.length === 1;
  if (section.hidden) { document.getElementById("control-body").replaceChildren(); return; }
  if (!document.getElementById("request-form") || parts.length !==
      document.getElementById("control-body").childElementCount)
    document.getElementById("control-body").replaceChildren(...parts);
}

function note(text) {
  const n = document.getElementById("control-note");
  if (n) n.textContent = text;
}

function submit(path, body) {
  api(path, { method: "POST", headers: { "Content-Type": "application/json" },
              body: JSON.stringify(body) })
    .then(r => note("queued: " + (r.id !== undefined ? "job " + r.id : "ok")), e => note(e.message));
}

async function drawAudit() {
  const section = document.getElementById("audit-section");
  section.hidden = !state.scopes.includes("read:audit");
  if (section.hidden) return;
  const a = await api("/api/audit?limit=50");
  document.getElementById("audit-state").textContent = a.intact ? "hash chain intact" :
    "TAMPERED: " + a.problem;
  document.querySelector("#audit tbody").replaceChildren(...a.records.reverse().map(r =>
    el("tr", { "data-audit": r.seq }, el("td", {}, r.seq), el("td", {}, r.time_utc),
       el("td", {}, r.who), el("td", {}, r.what), el("td", {}, r.from), el("td", {}, r.outcome))));
}

// -- live updates ---------------------------------------------------------------------------------

function render(update) {
  const s = update.status;
  state.status = s;
  state.updates += 1;
  document.body.dataset.updates = String(state.updates);
  document.getElementById("station").textContent = s.station;
  const summary = document.getElementById("summary");
  if (s.state !== "ready") {
    summary.textContent = "lab " + s.state + (s.startup_error ? ": " + s.startup_error : "");
    drawJobs(update.jobs, s.lease);
    return;
  }
  document.body.dataset.labTime = String(s.lab_time);
  summary.textContent = "lab time " + s.lab_time.toFixed(0) + " s · watchdog " +
    s.watchdog.state + (s.watchdog.veto ? " · " + s.watchdog.veto : "");
  summary.className = s.watchdog.state === "running" ? "" : "bad";
  drawNetwork(s);
  drawCalibration(s);
  drawFridges(s);
  drawJobs(update.jobs, s.lease);
  drawControls(s);
  const now = Date.now();
  if (now - state.lastHistory > 2000) {
    state.lastHistory = now;
    drawHistory().catch(() => {});
    drawAudit().catch(() => {});
  }
}

async function follow() {
  for (;;) {
    try {
      const response = await fetch("/api/events", { headers: headers() });
      if (!response.ok) throw new Error(String(response.status));
      const reader = response.body.getReader(), decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split("\n").filter(l => l.startsWith("data: ")).map(l => l.slice(6)).join("\n");
          if (data) render(JSON.parse(data));
        }
      }
    } catch (e) {
      document.getElementById("summary").textContent = "disconnected (" + e.message + "); retrying";
    }
    await new Promise(r => setTimeout(r, 2000));
  }
}

async function identify() {
  try {
    const me = await api("/api/whoami");
    state.scopes = me.scopes;
    document.getElementById("who").textContent = me.who + " · " + me.role;
    document.body.dataset.role = me.role;
  } catch (e) {
    state.scopes = [];
    document.getElementById("who").textContent = "not signed in (" + e.message + ")";
  }
}

document.getElementById("use-key").addEventListener("click", () => {
  state.key = document.getElementById("key").value.trim();
  sessionStorage.setItem("qnetlab-key", state.key);
  location.reload();
});

if (location.hash.startsWith("#key=")) {  // a key handed in the fragment (never sent to the server)
  state.key = decodeURIComponent(location.hash.slice(5));
  sessionStorage.setItem("qnetlab-key", state.key);
  history.replaceState(null, "", location.pathname);
}
identify().then(follow);
