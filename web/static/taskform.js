// The parts of the page generated from the installed tasks' declarations (GET /api/tasks):
// the submit form's task list and one fieldset of inputs per task, and a generic panel for any
// job (progress, rate, the result fields its task's summarize() gives, and a chart of the series
// the task declares, from GET /api/jobs/<id>/series). Nothing here names a task.
// Mount points: <select id="task">, <div id="task-fields">, <section id="task-panel">.
"use strict";
(function () {
  const tasks = new Map();

  function node(tag, attrs = {}, text = "") {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) n.setAttribute(k, v);
    if (text) n.textContent = text;
    return n;
  }

  function label(param) {
    const words = param.name.replace(/_/g, " ");
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  function fieldset(task) {
    const fs = node("fieldset", {"data-task": task.name});
    for (const p of task.params) {
      const l = node("label", {title: p.describe}, label(p) + " ");
      const input = p.kind === "choice" ? node("select", {name: p.name}) : node("input", {name: p.name});
      if (p.kind === "choice") for (const c of p.choices) input.append(node("option", {value: c}, c));
      if (p.default !== null) input.value = p.default;
      else input.placeholder = "default";
      l.append(input);
      fs.append(l);
    }
    return fs;
  }

  async function buildForm() {
    const select = document.getElementById("task");
    const fields = document.getElementById("task-fields");
    if (!select || !fields) return;
    const list = await fetch("/api/tasks").then(r => r.json());
    const chosen = select.value || "pi";
    select.replaceChildren();
    fields.replaceChildren();
    for (const task of list) {
      tasks.set(task.name, task);
      select.append(node("option", {value: task.name, title: task.doc}, task.name + " (v" + task.version + ")"));
      const fs = fieldset(task);
      fs.hidden = true;
      fields.append(fs);
    }
    select.value = tasks.has(chosen) ? chosen : (list[0] || {}).name;
    for (const fs of fields.querySelectorAll("fieldset")) fs.hidden = fs.dataset.task !== select.value;
  }

  function shown(value) {
    if (typeof value === "number") return Number.isInteger(value) ? value.toLocaleString("en") : value.toPrecision(8);
    if (value === null || value === undefined) return "–";
    return Array.isArray(value) ? value.join(", ") : String(value);
  }

  // A one-line result for the jobs table, for any task.
  function resultText(job) {
    const r = job.result;
    if (!r) return "";
    const skip = new Set(["job", "task", "seconds", "workers", "files"]);
    return Object.entries(r).filter(([k]) => !skip.has(k) && !k.endsWith("_per_second")).slice(0, 3)
      .map(([k, v]) => k + " " + shown(v)).join(", ");
  }

  let plot = null;
  async function showJob(job) {
    const panel = document.getElementById("task-panel");
    if (!panel || !job) return;
    const task = tasks.get(job.task) || {series: []};
    panel.replaceChildren(node("h2", {}, job.task + " "), node("p", {class: "muted"},
      (100 * (job.progress || 0)).toFixed(1) + "% of " + shown(job.total) + " " + (job.unit || "") +
      ", " + shown(Math.round(job.rate || 0)) + " " + (job.unit || "") + "/s, " + job.state));
    panel.firstChild.append(node("span", {class: "muted"}, job.job));
    const fields = job.result || job.estimate || {};
    const table = node("table", {class: "task-result"});
    for (const [k, v] of Object.entries(fields)) {
      if (k === "job" || k === "task") continue;
      const row = node("tr");
      row.append(node("th", {}, k), node("td", {}, shown(v)));
      table.append(row);
    }
    panel.append(table);
    if (!task.series.length || typeof uPlot === "undefined") return;
    const data = await fetch("/api/jobs/" + encodeURIComponent(job.job) + "/series").then(r => r.json());
    if (!data.points.length) return;
    const chart = node("div", {class: "chart"});
    panel.append(chart);
    const columns = data.labels.map((_, i) => data.points.map(p => p[i]));
    if (plot) plot.destroy();
    plot = new uPlot({width: Math.max(300, chart.clientWidth || 480), height: 220,
      series: [{label: data.labels[0]}, ...data.labels.slice(1).map(l => ({label: l, stroke: "#2a6fdb"}))]},
      columns, chart);
  }

  window.HydraTasks = {buildForm, resultText, showJob, tasks};
  document.addEventListener("DOMContentLoaded", buildForm);
})();
