// The mentalglm page: plain JS, no build step. Model output is inserted with textContent only, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { health: null, tasks: [], taskByName: {}, jobTimer: null, jobId: null, downloadUrl: null };

function token() {
  return $("token").value.trim();
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token()) h["Authorization"] = "Bearer " + token();
  return h;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({}, options, { headers: headers((options || {}).headers) }));
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try {
      const body = await response.json();
      if (body.error && body.error.message) message = body.error.message;
    } catch (e) { /* not JSON */ }
    if (response.status === 401) $("auth").hidden = false;
    if (response.status === 429) {
      const wait = response.headers.get("Retry-After");
      message = "服务繁忙，请稍后重试 / busy, retry" + (wait ? " in " + wait + " s" : "") + ": " + message;
    }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

// ------------------------------------------------------------------ setup
async function loadHealth() {
  const health = await (await fetch("/healthz")).json();
  state.health = health;
  $("model-line").textContent = "模型 model: " + health.model + " · 每次最多 " + health.limits.max_batch +
    " 条 / up to " + health.limits.max_batch + " posts per request";
  if (health.auth_required) {
    $("auth").hidden = false;
    $("token").value = sessionStorage.getItem("mentalglm-token") || "";
  }
}

async function loadTasks() {
  const body = await (await api("/v1/tasks")).json();
  state.tasks = body.data;
  const box = $("tasks");
  box.replaceChildren();
  const groups = [["c-imhi", "中文任务", "Chinese tasks"], ["imhi", "英文任务", "English tasks (IMHI)"]];
  for (const [family, zh, en] of groups) {
    const tasks = body.data.filter((t) => t.family === family);
    if (!tasks.length) continue;
    // Tasks outside the defaults fold away (the English ones), unless one of them is a default.
    const folded = !tasks.some((t) => body.default.includes(t.name));
    const group = el(folded ? "details" : "fieldset", "task-group");
    const legend = el(folded ? "summary" : "legend", null, zh + " ");
    legend.appendChild(el("span", "en", en));
    group.appendChild(legend);
    for (const task of tasks) {
      state.taskByName[task.name] = task;
      const label = el("label", "inline");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.name = "task";
      box.value = task.name;
      box.checked = body.default.includes(task.name);
      label.appendChild(box);
      label.appendChild(document.createTextNode(" " + task.title + " "));
      if (task.title_en !== task.title) label.appendChild(el("span", "en", task.title_en));
      group.appendChild(label);
    }
    box.appendChild(group);
  }
}

function chosenTasks() {
  return Array.from(document.querySelectorAll("input[name=task]:checked")).map((b) => b.value);
}

// ------------------------------------------------------------------ one post
function renderCard(a) {
  const task = state.taskByName[a.task] || { title: a.task, title_en: "" };
  const card = el("div", "result" + (a.high_risk ? " high" : ""));
  card.dataset.task = a.task;
  card.dataset.post = a.id;
  const head = el("div", "result-head");
  const title = el("span", "task", task.title + " ");
  if (task.title_en !== task.title) title.appendChild(el("small", null, task.title_en));
  head.appendChild(title);
  head.appendChild(el("span", "status status-" + a.parse_status, a.parse_status));
  card.appendChild(head);
  const labels = el("div", "labels");
  if (a.labels.length === 0) labels.appendChild(el("span", "chip none", "无标签 no label"));
  const scores = a.scores || {};
  a.labels.forEach((name, i) => {
    const chip = el("span", "chip" + (a.high_risk ? " danger" : ""), name + " ");
    chip.appendChild(el("small", null, a.label_en[i] || ""));
    if (name in scores) chip.appendChild(el("b", "prob", " " + Math.round(100 * scores[name]) + "%"));
    labels.appendChild(chip);
  });
  if (a.runner_up) {  // unsure: the decision was close, the runner-up beside the label
    const alt = el("span", "runner-up", "把握不大，或 unsure, or " + a.runner_up.label + " ");
    alt.appendChild(el("b", "prob", Math.round(100 * a.runner_up.p) + "%"));
    alt.title = "模型在两个标签之间拿不准 the model was unsure between the two labels";
    labels.appendChild(alt);
  }
  card.appendChild(labels);
  const ranked = Object.entries(scores).sort((x, y) => y[1] - x[1]).slice(0, 4);
  if (ranked.length) {  // label heads: the closed label set with calibrated probabilities
    const bars = el("div", "scores");
    bars.title = "各标签的概率 probability of each label";
    for (const [name, p] of ranked) {
      const row = el("div", "score-row");
      row.appendChild(el("span", "score-name", name));
      const bar = el("span", "score-bar");
      const fill = el("span", "score-fill");
      fill.style.width = Math.round(100 * p) + "%";
      bar.appendChild(fill);
      row.appendChild(bar);
      row.appendChild(el("span", "score-value", (100 * p).toFixed(0) + "%"));
      bars.appendChild(row);
    }
    card.appendChild(bars);
  }
  if (a.explanation) {
    const p = el("p", "explanation");
    p.appendChild(el("span", "muted", "理由 Explanation："));
    p.appendChild(document.createTextNode(a.explanation));
    card.appendChild(p);
    if (a.evidence_ok === true) card.appendChild(el("p", "evidence ok", "✓ 引文均出自原帖 every quote is in the post"));
    if (a.evidence_ok === false) card.appendChild(el("p", "evidence bad",
      "⚠ 理由中的引文未在原帖中找到，或没有引用原文 a quote is not in the post, or nothing is quoted"));
    if (a.quotes_repaired) card.appendChild(el("p", "argues",
      "✎ " + a.quotes_repaired + " 处引文已改为原帖原话 quote(s) repaired to the post's own words"));
    if (a.explanation_consistent === false) card.appendChild(el("p", "argues bad",
      "⚠ 理由读来更支持 the explanation reads as arguing for: " + (a.explanation_labels || []).join("、")));
  }
  for (const note of [a.error, ...a.warnings].filter(Boolean)) card.appendChild(el("p", "warning", note));
  return card;
}

function showCrisis(highRisk, resources) {
  $("crisis").hidden = !highRisk;
  $("crisis-text").textContent = resources || "";
}

function renderResults(body) {
  const results = $("results");
  results.replaceChildren();
  showCrisis(body.high_risk, body.resources);
  for (const post of body.results) {
    for (const a of post.analyses) results.appendChild(renderCard(a));
  }
}

// The card of one (post, task) while its answer is being written; created on first sight.
function liveCard(id, task) {
  const found = Array.from($("results").children).find((c) => c.dataset.post === id && c.dataset.task === task);
  if (found) return found;
  const card = renderCard({ id: id, task: task, labels: [], label_en: [], parse_status: "…", warnings: [],
                            explanation: "", scores: {} });
  $("results").appendChild(card);
  return card;
}

function replaceCard(a) {
  const old = liveCard(a.id, a.task);
  old.replaceWith(renderCard(a));
}

function appendText(id, task, text) {
  const card = liveCard(id, task);
  let p = card.querySelector(".explanation.writing");
  if (!p) {
    p = el("p", "explanation writing");
    p.appendChild(el("span", "muted", "正在生成 writing："));
    p.appendChild(document.createTextNode(""));
    card.appendChild(p);
  }
  p.lastChild.textContent += text;  // model output as text, never as HTML
}

// Server-sent events from a fetch body (EventSource cannot POST or send the token).
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(kind, JSON.parse(data));
    }
  }
}

async function analyzeOne() {
  showError("");
  const text = $("post").value;
  if (!text.trim()) {
    showError("请先粘贴帖子 / paste a post first");
    return;
  }
  const tasks = chosenTasks();
  if (!tasks.length) {
    showError("请至少选择一个任务 / choose at least one task");
    return;
  }
  $("analyze").disabled = true;
  $("analyze-status").textContent = "分析中… analyzing…";
  $("results").replaceChildren();
  showCrisis(false, "");
  const started = performance.now();
  try {
    const response = await api("/v1/analyze", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text: text, tasks: tasks, explain: $("explain").checked, stream: true }),
    });
    let finished = false;
    await readEvents(response, (kind, data) => {
      if (kind === "decided" || kind === "analysis") replaceCard(data);  // labels first, then the whole row
      else if (kind === "resources") showCrisis(true, data.resources);  // as soon as any row is high risk
      else if (kind === "text") appendText(data.id, data.task, data.text);
      else if (kind === "done") { renderResults(data); finished = true; }  // exactly the unstreamed answer
      else if (kind === "error") throw new Error(data.error.message);
    });
    if (!finished) throw new Error("连接中断 the answer was cut off; try again");
    $("analyze-status").textContent = "完成 done in " + ((performance.now() - started) / 1000).toFixed(1) + " s";
  } catch (e) {
    $("analyze-status").textContent = "";
    showError(e.message);
  } finally {
    $("analyze").disabled = false;
  }
}

// ------------------------------------------------------------------ files
function splitRecord(line, delimiter) {
  // The header record of a CSV/TSV, quotes included ("a,b" stays one field).
  const fields = [];
  let field = "", quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted) {
      if (c === '"' && line[i + 1] === '"') { field += '"'; i++; }
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === delimiter) { fields.push(field); field = ""; }
    else field += c;
  }
  fields.push(field);
  return fields.map((f) => f.trim());
}

async function fileColumns(file) {
  const head = (await file.slice(0, 65536).text()).replace(/^\uFEFF/, "");
  const name = file.name.toLowerCase();
  if (name.endsWith(".jsonl") || name.endsWith(".ndjson")) {
    const first = head.split(/\r?\n/).find((l) => l.trim());
    try { return Object.keys(JSON.parse(first)); } catch (e) { return []; }
  }
  if (name.endsWith(".txt")) return [];
  const firstLine = head.split(/\r?\n/)[0] || "";
  return splitRecord(firstLine, name.endsWith(".tsv") ? "\t" : ",").filter(Boolean);
}

async function onFileChosen() {
  showError("");
  const file = $("file").files[0];
  $("upload").disabled = !file;
  if (!file) return;
  const columns = await fileColumns(file);
  $("column-row").hidden = columns.length === 0;
  const textSelect = $("text-column"), idSelect = $("id-column");
  textSelect.replaceChildren();
  idSelect.replaceChildren(el("option", null, "（行号 line number）"));
  idSelect.firstChild.value = "";
  for (const c of columns) {
    textSelect.appendChild(Object.assign(el("option", null, c), { value: c }));
    idSelect.appendChild(Object.assign(el("option", null, c), { value: c }));
  }
  const guess = (state.health.text_columns || []).find((c) => columns.includes(c));
  if (guess) textSelect.value = guess;
  if (columns.includes("id")) idSelect.value = "id";
}

function setProgress(job) {
  $("job").hidden = false;
  $("job-progress").value = job.progress;
  const pct = Math.round(job.progress * 100);
  const names = { queued: "排队中 queued", running: "运行中 running", done: "完成 done", failed: "失败 failed",
                  cancelled: "已取消 cancelled" };
  $("job-text").textContent = (names[job.status] || job.status) + " · " + job.done + " / " + job.total +
    " (" + pct + "%)" + (job.errors ? " · 错误 errors: " + job.errors : "") + (job.error ? " · " + job.error : "");
  $("job-risk").hidden = !job.high_risk;
  $("job-risk").textContent = "⚠ " + job.high_risk + " 条结果为高风险 / high-risk results — 请优先人工复核 review these first";
}

async function prepareDownload(job) {
  const response = await api(job.results_url);
  const blob = await response.blob();
  if (state.downloadUrl) URL.revokeObjectURL(state.downloadUrl);
  state.downloadUrl = URL.createObjectURL(blob);
  const link = $("download");
  link.href = state.downloadUrl;
  link.download = job.filename.replace(/\.[^.]+$/, "") + ".mentalglm.jsonl";
  link.hidden = false;
}

async function poll() {
  try {
    const job = await (await api("/v1/jobs/" + state.jobId)).json();
    setProgress(job);
    if (job.status === "queued" || job.status === "running") {
      state.jobTimer = setTimeout(poll, 500);
      return;
    }
    $("cancel").hidden = true;
    $("upload").disabled = false;
    if (job.done > 0) await prepareDownload(job);
  } catch (e) {
    showError(e.message);
    $("upload").disabled = false;
  }
}

async function upload() {
  showError("");
  const file = $("file").files[0];
  const tasks = chosenTasks();
  if (!file || !tasks.length) {
    showError("请选择文件和至少一个任务 / choose a file and at least one task");
    return;
  }
  const form = new FormData();
  form.append("file", file);
  if (!$("column-row").hidden) {
    form.append("text_column", $("text-column").value);
    if ($("id-column").value) form.append("id_column", $("id-column").value);
  }
  form.append("tasks", tasks.join(","));
  form.append("explain", $("explain").checked ? "true" : "false");
  $("upload").disabled = true;
  $("download").hidden = true;
  try {
    const job = await (await api("/v1/jobs", { method: "POST", body: form })).json();
    state.jobId = job.id;
    setProgress(job);
    $("cancel").hidden = false;
    poll();
  } catch (e) {
    showError(e.message);
    $("upload").disabled = false;
  }
}

async function cancelJob() {
  if (!state.jobId) return;
  try { await api("/v1/jobs/" + state.jobId + "/cancel", { method: "POST" }); } catch (e) { showError(e.message); }
}

// ------------------------------------------------------------------ start
document.addEventListener("DOMContentLoaded", async () => {
  $("analyze").addEventListener("click", analyzeOne);
  $("file").addEventListener("change", onFileChosen);
  $("upload").addEventListener("click", upload);
  $("cancel").addEventListener("click", cancelJob);
  $("token").addEventListener("change", async () => {
    sessionStorage.setItem("mentalglm-token", token());
    try { await loadTasks(); showError(""); } catch (e) { showError(e.message); }
  });
  try {
    await loadHealth();
    await loadTasks();
    document.body.dataset.ready = "true";
  } catch (e) {
    showError(e.message);
    document.body.dataset.ready = "true";
  }
});
