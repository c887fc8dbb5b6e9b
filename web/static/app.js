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
function renderJob(job) {
  const body = document.querySelector("#jobs tbody");
  let row = body.querySelector(`tr[data-job-id="${job.job}"]`);
  if (!row) {
    row = el("tr", {"data-job-id": job.job});
    for (let i = 0; i < 9; i++) row.appendChild(el("td"));
    row.children[3].appendChild(el("div", {class: "bar"})).appendChild(el("span"));
    row.addEventListener("click", () => select(job.job));
    const newer = [...body.children].find(r => (jobs.get(r.dataset.jobId) || {}).created < job.created);
    body.insertBefore(row, newer || null);
  }
  row.dataset.state = job.state;
  row.dataset.progress = job.progress.toFixed(4);
  const c = row.children;
  c[0].textContent = job.job;
  c[1].textContent = job.task;
  c[2].replaceChildren(el("span", {class: "state"}, job.state));
  c[3].firstChild.firstChild.style.width = (100 * job.progress).toFixed(1) + "%";
  c[3].title = human(job.done) + " / " + human(job.total) + " " + job.unit;
  c[4].textContent = human(job.rate) + " " + job.unit + "/s";
  c[5].textContent = duration(job.eta);
  c[6].textContent = duration(job.elapsed);
  c[7].textContent = resultText(job);
  c[7].className = "result";
  c[8].replaceChildren();
  if (!readOnly && (job.state === "queued" || job.state === "running")) {
    const button = el("button", {class: "cancel", title: "cancel this job"}, "cancel");
    button.addEventListener("click", ev => { ev.stopPropagation(); cancelJob(job.job); });
    c[8].appendChild(button);
  }
  document.getElementById("no-jobs").hidden = jobs.size > 0;
}

function onJob(job) {
  jobs.set(job.job, job);
  renderJob(job);
  if (job.task === "pi") {
    const points = traces.get(job.job) || [];
    const source = job.result || job.estimate;
    if (source && source.samples && (!points.length || points[points.length - 1][0] < source.samples)) {
      points.push([source.samples, source.pi, source.stderr]);
      traces.set(job.job, points);
    }
    if (!selectedPi || selectedPi === job.job || job.state === "running" && jobs.get(selectedPi).state !== "running") {
      selectedPi = job.job;
    }
    if (selectedPi === job.job) drawPi();
  }
  if (job.task === "mandelbrot") {
    if (!selectedMandel || job.state === "running") showMandel(job);
    if (job.state === "done" && selectedMandel === job.job) {
      const link = document.getElementById("mandel-download");
      link.href = "/jobs/" + job.job + "/image.png";
      link.hidden = false;
      const img = new Image();
      img.onload = () => { const cv = document.getElementById("mandel-canvas");
        cv.getContext("2d").drawImage(img, 0, 0, cv.width, cv.height); };
      img.src = link.href;
    }
  }
}

function select(id) {
  const job = jobs.get(id);
  document.querySelectorAll("#jobs tr.selected").forEach(r => r.classList.remove("selected"));
  document.querySelector(`#jobs tr[data-job-id="${id}"]`)?.classList.add("selected");
  if (job.task === "pi") { selectedPi = id; drawPi(); }
  if (job.task === "mandelbrot") showMandel(job);
  if (window.HydraTasks) HydraTasks.showJob(job);
}

// ---------- π chart ----------
let piPlot = null;
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
      series: [{label: "samples", value: (u, v) => human(v)},
               {label: "estimate", stroke: "#3f6fd8", width: 2, value: (u, v) => v === null ? "–" : v.toFixed(7)},
               {label: "−2σ", stroke: "#9db4ea"}, {label: "+2σ", stroke: "#9db4ea"},
               {label: "π", stroke: "#2e9d62", dash: [4, 4]}],
      bands: [{series: [3, 2], fill: "rgba(63,111,216,0.15)"}],
      axes: [{values: (u, vals) => vals.map(human)}, {size: 70}],
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
  const cv = document.getElementById("mandel-canvas");
  const p = job.params, step = Math.ceil(p.width / 1024);
  cv.width = Math.ceil(p.width / step);
  cv.height = Math.ceil(p.height / step);
  const ctx = cv.getContext("2d");
  ctx.fillStyle = "#111";
  ctx.fillRect(0, 0, cv.width, cv.height);
  document.getElementById("mandel-download").hidden = true;
  if (job.state === "done") onJob(job);
}

function onTile(tile) {
  if (tile.job !== selectedMandel) {
    const job = jobs.get(tile.job);
    if (!job) return;
    showMandel(job);
  }
  const img = new Image();
  img.onload = () => document.getElementById("mandel-canvas").getContext("2d").drawImage(img, 0, tile.row0);
  img.src = "data:image/png;base64," + tile.png;
  document.getElementById("mandel-canvas").dataset.tiles = String(Number(document.getElementById("mandel-canvas").dataset.tiles || 0) + 1);
}

// ---------- workers and throughput ----------
function renderWorkers(summary) {
  // The monitor sends a bounded summary ({count, newest, slowest, ...}); show its newest workers.
  const list = Array.isArray(summary) ? summary : (summary.newest || []);
  workers = list;
  const body = document.querySelector("#workers tbody");
  body.replaceChildren(...list.map(w => {
    const row = el("tr", {"data-worker": w.name, "data-worker-state": w.state});
    const rate = Object.entries(w.rates).map(([t, r]) => t + " " + human(r) + "/s").join(", ");
    for (const text of [w.name.slice(0, 24), w.zone || "–", w.device, w.state, w.volunteer || "", rate || "–",
                        String(w.chunks), duration(w.seen_ago) + " ago"]) row.appendChild(el("td", {}, text));
    return row;
  }));
  document.getElementById("no-workers").hidden = list.length > 0;
}

const throughput = {t: [], samples: [], pixels: []};
let throughputPlot = null;
function onCluster(c) {
  throughput.t.push(c.time);
  throughput.samples.push(c.throughput.samples ?? null);
  throughput.pixels.push(c.throughput.pixels ?? null);
  for (const k of Object.keys(throughput)) if (throughput[k].length > 300) throughput[k].shift();
  document.getElementById("cluster-summary").textContent = c.workers + " live workers";
  const data = [throughput.t, throughput.samples, throughput.pixels];
  const box = document.getElementById("throughput-chart");
  if (!throughputPlot) {
    throughputPlot = new uPlot({
      width: box.clientWidth || 900, height: 160,
      series: [{}, {label: "samples/s", stroke: "#3f6fd8", width: 2, scale: "s", value: (u, v) => human(v)},
               {label: "pixels/s", stroke: "#c98a1b", width: 2, scale: "p", value: (u, v) => human(v)}],
      axes: [{}, {scale: "s", values: (u, vals) => vals.map(human), size: 60},
             {scale: "p", side: 1, values: (u, vals) => vals.map(human), size: 60, grid: {show: false}}],
    }, data, box);
  } else {
    throughputPlot.setData(data);
  }
}

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
  for (const [id, points] of Object.entries(snap.traces)) traces.set(id, points);
  for (const job of [...snap.jobs].reverse()) onJob(job);
  renderWorkers(snap.workers);
});
socket.on("job", onJob);
socket.on("tile", onTile);
socket.on("workers", renderWorkers);
socket.on("cluster", onCluster);
