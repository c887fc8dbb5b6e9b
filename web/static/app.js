// Hydra's live page: one snapshot on connect, then pushed events; never polls.
"use strict";

const jobs = new Map();        // job id → latest status
const traces = new Map();      // π job id → [[samples, estimate, stderr], ...]
let workers = [];
let selectedPi = null, selectedMandel = null;
const readOnly = document.body.dataset.readOnly === "true";

// ---------- formatting ----------
function human(n) {
  if (n === null || n === undefined || !isFinite(n)) return "–";
  const units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [limit, suffix] of units) if (Math.abs(n) >= limit) return (n / limit).toPrecision(3) + suffix;
  return Number(n).toPrecision(3);
}
function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(r).padStart(2, "0");
}
function resultText(job) {
  const r = job.result;
  if (job.state === "failed") return job.error || "failed";
  if (!r) return "";
  if (job.task === "pi") return "π ≈ " + r.pi.toFixed(8) + " ± " + r.stderr.toPrecision(2);
  if (job.task === "mandelbrot") return r.width + "×" + r.height + ", " + human(r.iterations) + " iterations";
  return window.HydraTasks ? HydraTasks.resultText(job) : "";
}
function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

// ---------- jobs ----------
// Rows: queued and running jobs first, then the newest. A job's own view is /jobs/<id>.
const ACTIVE = new Set(["queued", "running"]);
let jobsTotal = 0;
let pinned = document.body.dataset.job || null;   // a job chosen by URL or click stays shown
function rank(job) { return [ACTIVE.has(job.state) ? 0 : 1, -(job.created || 0)]; }
function before(a, b) { return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]); }
function placeRow(body, row, job) {
  const mine = rank(job);
  const next = [...body.children].find(r => r !== row && before(mine, rank(jobs.get(r.dataset.jobId) || {})));
  if (row.nextSibling !== next || row.parentNode !== body) body.insertBefore(row, next || null);
}
function renderJob(job) {
  const body = document.querySelector("#jobs tbody");
  let row = body.querySelector(`tr[data-job-id="${job.job}"]`);
  const moved = !row || row.dataset.state !== job.state;
  if (!row) {
    row = el("tr", {"data-job-id": job.job});
    for (let i = 0; i < 9; i++) row.appendChild(el("td"));
    for (const i of [1, 4, 6, 7]) row.children[i].className = "opt";
    row.children[0].appendChild(el("a", {href: "/jobs/" + job.job}, job.job));
    row.children[3].appendChild(el("div", {class: "bar"})).appendChild(el("span"));
    row.addEventListener("click", ev => { ev.preventDefault(); choose(job.job); });
  }
  if (moved) placeRow(body, row, job);
  row.dataset.state = job.state;
  row.dataset.progress = job.progress.toFixed(4);
  const c = row.children;
  c[1].textContent = job.task;
  c[2].replaceChildren(el("span", {class: "state"}, job.state));
  c[3].firstChild.firstChild.style.width = (100 * job.progress).toFixed(1) + "%";
  c[3].title = human(job.done) + " / " + human(job.total) + " " + job.unit;
  c[4].textContent = job.rate ? human(job.rate) + " " + job.unit + "/s" : "–";
  c[5].textContent = duration(job.eta);
  c[6].textContent = duration(job.elapsed);
  c[7].textContent = resultText(job);
  c[7].classList.add("result");
  c[8].replaceChildren();
  if (!readOnly && ACTIVE.has(job.state)) {
    const button = el("button", {class: "cancel", title: "cancel this job"}, "cancel");
    button.addEventListener("click", ev => { ev.stopPropagation(); cancelJob(job.job); });
    c[8].appendChild(button);
  }
  document.getElementById("no-jobs").hidden = jobs.size > 0;
  document.getElementById("jobs-count").textContent = jobsTotal ? jobsTotal + " in all" : "";
  document.getElementById("older-jobs").hidden = body.children.length >= jobsTotal;
}

function onJob(job, quiet = false) {
  const known = jobs.has(job.job);
  if (!known && !quiet) jobsTotal += 1;
  jobs.set(job.job, job);
  renderJob(job);
  if (job.task === "pi") {
    const points = traces.get(job.job) || [];
    const source = job.result || job.estimate;
    if (source && source.samples && (!points.length || points[points.length - 1][0] < source.samples)) {
      points.push([source.samples, source.pi, source.stderr]);
      traces.set(job.job, points);
    }
  }
  if (!quiet) follow(job);
  if (carbonJob() === job) showJobCo2();
  if (job.task === "pi" && selectedPi === job.job) drawPi();
  if (job.task === "mandelbrot" && selectedMandel === job.job && job.state === "done") showPng(job);
}

// Which job a panel shows: the pinned one, else the newest running one, else the newest.
function better(candidate, current) {
  if (!current) return true;
  const a = ACTIVE.has(candidate.state), b = ACTIVE.has(current.state);
  return a !== b ? a : (candidate.created || 0) > (current.created || 0);
}
function follow(job) {
  if (pinned && jobs.has(pinned) && jobs.get(pinned).task === job.task && pinned !== job.job) return;
  if (job.task === "pi" && (selectedPi === job.job || better(job, jobs.get(selectedPi)))) {
    selectedPi = job.job; drawPi();
  }
  if (job.task === "mandelbrot" && selectedMandel !== job.job && better(job, jobs.get(selectedMandel))) showMandel(job);
  markSelected();
}
function markSelected() {
  document.querySelectorAll("#jobs tr[data-job-id]").forEach(r =>
    r.classList.toggle("selected", r.dataset.jobId === selectedPi || r.dataset.jobId === selectedMandel));
  showJobCo2();
}
function choose(id, push = true) {
  const job = jobs.get(id);
  if (!job) return;
  pinned = id;
  if (push && location.pathname !== "/jobs/" + id) history.pushState({job: id}, "", "/jobs/" + id);
  if (job.task === "pi") { selectedPi = id; drawPi(); }
  if (job.task === "mandelbrot") showMandel(job);
  markSelected();
  if (window.HydraTasks) HydraTasks.showJob(job);
}
window.addEventListener("popstate", ev => { if (ev.state && ev.state.job) choose(ev.state.job, false); });

async function loadOlderJobs() {
  const shown = document.querySelectorAll("#jobs tbody tr").length;
  const answer = await fetch("/api/jobs?offset=" + shown + "&limit=20").then(r => r.json());
  jobsTotal = answer.total;
  for (const job of answer.jobs) if (!jobs.has(job.job)) onJob(job, true);
  document.getElementById("older-jobs").hidden = document.querySelectorAll("#jobs tbody tr").length >= jobsTotal;
}
document.getElementById("older-jobs").addEventListener("click", loadOlderJobs);

// ---------- π chart ----------
let piPlot = null;
function decimalsFor(vals) {
  // Enough decimals that neighbouring labels differ (3.1414, 3.1416 and not 3.14, 3.14).
  const step = vals.length > 1 ? Math.abs(vals[1] - vals[0]) : 1;
  return Math.min(12, Math.max(0, Math.ceil(-Math.log10(step || 1))));
}
function drawPi() {
  const points = traces.get(selectedPi) || [];
  document.getElementById("pi-job").textContent = selectedPi ? "job " + selectedPi : "";
  const data = [points.map(p => p[0]), points.map(p => p[1]), points.map(p => p[1] - 2 * p[2]),
                points.map(p => p[1] + 2 * p[2]), points.map(() => Math.PI)];
  const box = document.getElementById("pi-chart");
  if (!piPlot) {
    piPlot = new uPlot({
      width: box.clientWidth || 500, height: 260,
      scales: {x: {time: false, distr: 3}},
      series: [{label: "samples", value: (u, v) => v === null ? "–" : human(v)},
               {label: "estimate", stroke: "#3f6fd8", width: 2, value: (u, v) => v === null ? "–" : v.toFixed(7)},
               {label: "−2σ", stroke: "#9db4ea"}, {label: "+2σ", stroke: "#9db4ea"},
               {label: "π", stroke: "#2e9d62", dash: [4, 4]}],
      bands: [{series: [3, 2], fill: "rgba(63,111,216,0.15)"}],
      // On a log axis uPlot passes null for the ticks it leaves unlabelled: an empty label, not a dash.
      axes: [{values: (u, vals) => vals.map(v => v === null ? "" : human(v)), ticks: {show: false}},
             {size: 80, values: (u, vals) => { const d = decimalsFor(vals); return vals.map(v => v.toFixed(d)); }}],
    }, data, box);
  } else {
    piPlot.setData(data);
  }
}

// ---------- Mandelbrot canvas ----------
function showMandel(job) {
  if (selectedMandel === job.job) return;
  selectedMandel = job.job;
  document.getElementById("mandel-job").textContent = "job " + job.job;
  document.getElementById("no-mandel").hidden = true;
  const cv = document.getElementById("mandel-canvas");
  cv.hidden = false;
  const p = job.params, step = Math.ceil(p.width / 1024);
  cv.width = Math.ceil(p.width / step);
  cv.height = Math.ceil(p.height / step);
  const ctx = cv.getContext("2d");
  ctx.fillStyle = "#111";
  ctx.fillRect(0, 0, cv.width, cv.height);
  document.getElementById("mandel-download").hidden = true;
  if (job.state === "done") showPng(job);
}
function showPng(job) {
  const link = document.getElementById("mandel-download");
  link.href = "/jobs/" + job.job + "/image.png";
  link.hidden = false;
  const img = new Image();
  img.onload = () => { const cv = document.getElementById("mandel-canvas");
    cv.getContext("2d").drawImage(img, 0, 0, cv.width, cv.height);
    cv.dataset.tiles = String(Number(cv.dataset.tiles || 0) + 1); };
  img.src = link.href;
}

function onTile(tile) {
  if (tile.job !== selectedMandel) {
    const job = jobs.get(tile.job);
    if (!job || (pinned && pinned !== tile.job && jobs.get(pinned)?.task === "mandelbrot")) return;
    showMandel(job);
  }
  const img = new Image();
  const cv = document.getElementById("mandel-canvas");
  img.onload = () => cv.getContext("2d").drawImage(img, 0, tile.row0);
  img.src = "data:image/png;base64," + tile.png;
  cv.dataset.tiles = String(Number(cv.dataset.tiles || 0) + 1);
}

// ---------- workers ----------
// The `workers` event is a bounded summary {count, by_task, by_device, by_zone, slowest, newest};
// the whole list is read a page at a time from /api/workers. (An old server sends a plain list.)
function workerRow(w) {
  const row = el("tr", {"data-worker": w.name, "data-worker-state": w.state || "alive"});
  const rate = Object.entries(w.rates || {}).map(([t, r]) => t + " " + human(r) + "/s").join(", ");
  const cells = [w.name, w.device || "cpu", w.zone || "–", w.state || "alive", rate || "–", String(w.chunks ?? 0),
                 w.seen_ago === undefined ? "–" : duration(w.seen_ago) + " ago"];
  cells.forEach((text, i) => row.appendChild(el("td", [2, 5, 6].includes(i) ? {class: "opt"} : {}, text)));
  return row;
}
function groups(counts) {
  return Object.entries(counts || {}).map(([k, v]) => k + " " + v).join(", ");
}
let showingAll = false;
function renderWorkers(data) {
  const summary = Array.isArray(data)
    ? {count: data.filter(w => w.state !== "gone").length, newest: data.slice(0, 8), slowest: []}
    : data;
  workers = summary;
  document.getElementById("workers-count").textContent = plural(summary.count, "live worker");
  const parts = [["tasks", summary.by_task], ["devices", summary.by_device], ["zones", summary.by_zone]]
    .filter(([, c]) => c && Object.keys(c).length).map(([name, c]) => name + ": " + groups(c));
  document.getElementById("workers-groups").textContent = parts.join(" · ");
  const newest = document.getElementById("workers-newest"), slowest = document.getElementById("workers-slowest");
  newest.replaceChildren(...(summary.newest || []).map(workerRow));
  const slow = (summary.slowest || []).filter(w => !(summary.newest || []).some(n => n.name === w.name));
  slowest.replaceChildren(...(slow.length ? [el("tr", {class: "group"}, "")] : []), ...slow.map(workerRow));
  if (slow.length) slowest.firstChild.appendChild(el("th", {colspan: "7"}, "slowest"));
  newest.hidden = slowest.hidden = showingAll;
  document.getElementById("workers-show-all").hidden = showingAll || summary.count <= (summary.newest || []).length;
  document.getElementById("no-workers").hidden = summary.count > 0;
  if (summary.carbon) renderCarbon(summary.carbon);
}
async function loadWorkers(offset) {
  const page = await fetch("/api/workers?offset=" + offset + "&limit=50").then(r => r.json());
  const all = document.getElementById("workers-all");
  if (offset === 0) all.replaceChildren();
  all.append(...page.workers.map(workerRow));
  showingAll = true;
  all.hidden = false;
  document.getElementById("workers-newest").hidden = document.getElementById("workers-slowest").hidden = true;
  document.getElementById("workers-show-all").hidden = true;
  document.getElementById("workers-more").hidden = all.children.length >= page.total;
}
document.getElementById("workers-show-all").addEventListener("click", () => loadWorkers(0));
document.getElementById("workers-more").addEventListener("click",
  () => loadWorkers(document.getElementById("workers-all").children.length));
function plural(n, word) { return n + " " + word + (n === 1 ? "" : "s"); }

// ---------- throughput ----------
// A chunk lands every couple of seconds, so per-second counts jump between 0 and twice the rate:
// the chart shows the average over the last WINDOW seconds, and nothing (a gap) when no job of
// that kind runs.
const WINDOW = 5;
const throughput = {t: [], samples: [], pixels: []};
const recent = [];
let throughputPlot = null;
function running(unit) { return [...jobs.values()].some(j => j.unit === unit && ACTIVE.has(j.state)); }
function clock(t) { return new Date(t * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit"}); }
function onCluster(c) {
  recent.push(c);
  while (recent.length && recent[0].time < c.time - WINDOW) recent.shift();
  const mean = unit => recent.reduce((s, e) => s + (e.throughput[unit] || 0), 0) / recent.length;
  throughput.t.push(c.time);
  throughput.samples.push(running("samples") || c.throughput.samples ? mean("samples") : null);
  throughput.pixels.push(running("pixels") || c.throughput.pixels ? mean("pixels") : null);
  for (const k of Object.keys(throughput)) if (throughput[k].length > 300) throughput[k].shift();
  document.getElementById("cluster-summary").textContent = plural(c.workers, "live worker");
  const data = [throughput.t, throughput.samples, throughput.pixels];
  const box = document.getElementById("throughput-chart");
  if (!throughputPlot) {
    throughputPlot = new uPlot({
      width: box.clientWidth || 900, height: 160,
      series: [{value: (u, v) => v === null ? "–" : clock(v)},
               {label: "samples/s", stroke: "#3f6fd8", width: 2, scale: "s", value: (u, v) => human(v)},
               {label: "pixels/s", stroke: "#c98a1b", width: 2, scale: "p", value: (u, v) => human(v)}],
      axes: [{values: (u, vals) => vals.map(v => v === null ? "" : clock(v)), space: 90},
             {scale: "s", values: (u, vals) => vals.map(human), size: 60},
             {scale: "p", side: 1, values: (u, vals) => vals.map(human), size: 60, grid: {show: false}}],
    }, data, box);
  } else {
    throughputPlot.setData(data);
  }
}

// ---------- CO2 ----------
// Location-based estimates kept by the trusted side: the shown job's CO2 (from its status) and CO2
// per grid zone, a bounded summary {zones: [{zone, grams, kwh, measured, intensity, other?}], grams,
// kwh, measured} that rides on the `workers` event and is read from /api/carbon on load.
let carbon = null;
function mass(g) {
  if (g === null || g === undefined || !isFinite(g)) return "–";
  if (g >= 1000) return (g / 1000).toPrecision(3) + " kg";
  if (g >= 1) return g.toPrecision(3) + " g";
  return g > 0 ? (g * 1000).toPrecision(3) + " mg" : "0 g";
}
function energy(kwh) { return !kwh ? "0 kWh" : kwh >= 1 ? human(kwh) + " kWh" : human(kwh * 1000) + " Wh"; }
function measuredText(share) { return share > 0 ? Math.round(100 * share) + "% measured (RAPL)" : "estimated"; }
// The job whose CO2 is shown: the one chosen (URL or click), else the newest running one of the panels.
function carbonJob() {
  if (pinned && jobs.has(pinned)) return jobs.get(pinned);
  let best = null;
  for (const id of [selectedPi, selectedMandel]) { const j = jobs.get(id); if (j && better(j, best)) best = j; }
  return best;
}
function showJobCo2() {
  const job = carbonJob(), line = document.getElementById("job-co2");
  if (!job || job.co2_grams === undefined) { line.textContent = ""; delete line.dataset.job; return; }
  line.dataset.job = job.job;
  line.dataset.grams = String(job.co2_grams);
  line.textContent = "job " + job.job + ": " + mass(job.co2_grams) + " CO2, " + energy(job.energy_kwh || 0) +
    " (" + measuredText(job.energy_measured || 0) + ") · location-based estimate";
}
const SVG = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs = {}, text = "") {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}
function renderCarbon(summary) {
  if (!summary || !Array.isArray(summary.zones)) return;
  carbon = summary;
  const chart = document.getElementById("carbon-chart");
  const rows = summary.zones, rowHeight = 40, label = 120;
  const width = chart.getBoundingClientRect().width || 800, room = Math.max(40, width - label - 8);
  const most = Math.max(...rows.map(z => z.grams || 0), 0);
  chart.setAttribute("height", String(rows.length * rowHeight));
  chart.replaceChildren(...rows.map((z, i) => {
    const row = svgEl("g", {class: z.other ? "carbon-row other" : "carbon-row", transform: `translate(0,${i * rowHeight})`,
      "data-zone": z.other ? "" : z.zone, "data-grams": String(z.grams), "data-kwh": String(z.kwh)});
    const bar = most > 0 && z.grams > 0 ? Math.max(1, room * z.grams / most) : 0;
    const figures = [mass(z.grams) + " CO2", energy(z.kwh), measuredText(z.measured)];
    if (z.intensity) figures.push(Math.round(z.intensity) + " g/kWh at its last chunk");
    // Zone names come from workers: a long one is cut here (whole in its tooltip) and never escapes the SVG.
    const cut = !z.other && z.zone.length > 14;
    const name = svgEl("text", {class: "zone", x: 0, y: 15}, cut ? z.zone.slice(0, 13) + "…" : z.zone);
    name.appendChild(svgEl("title", {}, z.zone));
    row.append(name, svgEl("rect", {class: "zone-bar", x: label, y: 4, height: 14, width: bar.toFixed(1), rx: 2}),
               svgEl("text", {class: "figures", x: 0, y: 33}, figures.join(" · ")));
    return row;
  }));
  document.getElementById("no-carbon").hidden = rows.length > 0;
  document.getElementById("carbon-total").textContent = rows.length
    ? mass(summary.grams) + " CO2 in all, " + energy(summary.kwh) : "";
}
window.addEventListener("resize", () => renderCarbon(carbon));
fetch("/api/carbon").then(r => r.ok ? r.json() : null).then(c => { if (c && !carbon) renderCarbon(c); })
  .catch(() => {});

// ---------- submit and cancel ----------
const form = document.getElementById("submit-form");
const token = document.getElementById("token");
token.value = localStorage.getItem("hydra-token") || "";
document.getElementById("task").addEventListener("change", ev => {
  for (const fs of form.querySelectorAll("fieldset")) fs.hidden = fs.dataset.task !== ev.target.value;
});
function say(text, kind) {
  const m = document.getElementById("submit-message");
  m.textContent = text;
  m.dataset.kind = kind;
}
async function post(url, body) {
  const response = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json",
    "X-Hydra-Token": token.value}, body: JSON.stringify(body || {})});
  const answer = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}
form.addEventListener("submit", async ev => {
  ev.preventDefault();
  const task = document.getElementById("task").value;
  const params = {};
  for (const input of form.querySelectorAll(`fieldset[data-task="${task}"] input`)) params[input.name] = input.value;
  try {
    const answer = await post("/api/jobs", {task, params});
    localStorage.setItem("hydra-token", token.value);
    say("submitted job " + answer.job, "ok");
  } catch (err) {
    say(err.message, "error");
  }
});
async function cancelJob(id) {
  try { await post("/api/jobs/" + id + "/cancel"); say("cancelled job " + id, "ok"); }
  catch (err) { say(err.message, "error"); }
}

// ---------- the connection ----------
const socket = io({transports: ["websocket", "polling"], reconnectionDelayMax: 3000});
const status = document.getElementById("connection");
socket.on("connect", () => { status.dataset.state = "live"; status.textContent = "live"; });
socket.on("disconnect", () => { status.dataset.state = "down"; status.textContent = "reconnecting…"; });
socket.on("snapshot", snap => {
  jobsTotal = snap.jobs_total ?? snap.jobs.length;
  for (const [id, points] of Object.entries(snap.traces)) traces.set(id, points);
  for (const job of snap.jobs) onJob(job, true);
  for (const job of snap.jobs) follow(job);
  if (pinned && jobs.has(pinned)) choose(pinned, false);
  else if (pinned) fetch("/api/jobs/" + pinned).then(r => r.ok ? r.json() : null)
    .then(job => { if (job) { onJob(job, true); choose(job.job, false); } });
  renderWorkers(snap.workers);
  showJobCo2();
});
socket.on("job", job => onJob(job));
socket.on("tile", onTile);
socket.on("workers", renderWorkers);
socket.on("cluster", onCluster);
