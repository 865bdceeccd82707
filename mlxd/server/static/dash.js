// mlxd dashboard: the live parts. Short polling of the server's own small endpoints; no
// library, no build step. Everything shown is either server-rendered (autoescaped) HTML or
// set as text (textContent), never parsed from a value.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

function every(ms, fn) {
  let stopped = false;
  async function tick() {
    if (stopped) return;
    try {
      const go = await fn();
      if (go === false) { stopped = true; return; }
    } catch (e) {
      // a server restarting: try again next time
    }
    setTimeout(tick, ms);
  }
  setTimeout(tick, ms);
}

// The queue: the server renders its tables; swap them in every second.
function liveQueue(box) {
  every(Number(box.dataset.every || 1000), async () => {
    const r = await fetch(box.dataset.refresh, {credentials: "same-origin", headers: {"Accept": "text/html"}});
    if (r.status === 401) { window.location = "/login?next=/"; return false; }
    if (!r.ok) return;
    const html = await r.text();
    // Keep the page still while a button is being pressed.
    if (box.contains(document.activeElement) && document.activeElement.tagName === "BUTTON") return;
    box.innerHTML = html;
  });
}

function el(name, attrs) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

// A fine-tune's loss against its step, drawing itself as steps arrive.
function drawLoss(loss) {
  const svg = document.getElementById("loss-chart");
  if (!svg || !loss) return;
  const train = loss.train || [], valid = loss.valid || [];
  const all = train.concat(valid);
  const pts = document.getElementById("loss-points"), vpts = document.getElementById("valid-points");
  const axis = document.getElementById("loss-axis"), line = document.getElementById("loss-line");
  for (const g of [pts, vpts, axis]) g.replaceChildren();
  if (!all.length) { line.setAttribute("points", ""); return; }
  const x0 = 0, x1 = Math.max(...all.map(p => p[0]), 1);
  const ys = all.map(p => p[1]);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const pad = (y1 - y0) * 0.08; y0 -= pad; y1 += pad;
  const L = 48, R = 500, T = 20, B = 212;
  const px = x => L + (x - x0) / (x1 - x0) * (R - L);
  const py = y => B - (y - y0) / (y1 - y0) * (B - T);
  for (let k = 0; k <= 4; k++) {
    const xv = x0 + k * (x1 - x0) / 4, yv = y0 + k * (y1 - y0) / 4;
    const tx = el("text", {x: px(xv), y: B + 14, "text-anchor": "middle", class: "tick"});
    tx.textContent = String(Math.round(xv));
    const ty = el("text", {x: L - 4, y: py(yv) + 3, "text-anchor": "end", class: "tick"});
    ty.textContent = yv.toPrecision(3);
    axis.append(tx, ty);
  }
  line.setAttribute("points", train.map(p => `${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" "));
  for (const [g, series] of [[pts, train], [vpts, valid]]) {
    for (const p of series) {
      const c = el("circle", {cx: px(p[0]).toFixed(1), cy: py(p[1]).toFixed(1), r: 3.5, "data-step": p[0]});
      const t = el("title", {}); t.textContent = `step ${p[0]}: ${p[1].toPrecision(4)}`;
      c.append(t); g.append(c);
    }
  }
}

// One job: status, progress, message, attempts, the log's tail and the loss curve.
function liveJob(box) {
  const log = document.getElementById("log");
  const show = s => {
    box.dataset.status = s.status;
    document.getElementById("job-status").textContent = s.status;
    document.getElementById("job-progress").value = s.progress;
    document.getElementById("job-message").textContent = s.message;
    document.getElementById("job-attempts").textContent = s.attempts;
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    if (log.textContent !== s.log) {
      log.textContent = s.log;
      if (atEnd) log.scrollTop = log.scrollHeight;
    }
    drawLoss(s.loss);
    // A job that ended can no longer be cancelled: its button goes at once.
    if (!["queued", "running"].includes(s.status)) {
      for (const b of box.querySelectorAll("button.cancel")) b.closest("form").hidden = true;
    }
  };
  const wasLive = ["queued", "running"].includes(box.dataset.status);
  let ended = 0;
  every(Number(box.dataset.every || 700), async () => {
    const r = await fetch(box.dataset.state, {credentials: "same-origin"});
    if (r.status === 401) { window.location = "/login?next=" + window.location.pathname; return false; }
    if (!r.ok) return;
    const s = await r.json();
    show(s);
    // Once it ended, two more looks (the last log lines), then its facts (finished, result)
    // and its buttons (retry) as the page now renders them, in place: no reload.
    if (!["queued", "running"].includes(s.status) && ++ended > 2) {
      if (wasLive) await swapInEnded();
      return false;
    }
  });
}

async function swapInEnded() {
  const r = await fetch(window.location.pathname, {credentials: "same-origin"});
  if (!r.ok) return;
  const page = new DOMParser().parseFromString(await r.text(), "text/html");
  for (const id of ["job-facts", "job-actions"]) {
    const now = document.getElementById(id), fresh = page.getElementById(id);
    if (now && fresh) now.replaceWith(document.importNode(fresh, true));
  }
}

function confirmCancel(ev) {
  const b = ev.target.closest("button.cancel");
  if (b && !window.confirm(`Cancel job ${b.dataset.job || ""}?`)) ev.preventDefault();
}

document.addEventListener("DOMContentLoaded", () => {
  const q = document.getElementById("queue");
  if (q) liveQueue(q);
  const j = document.getElementById("job");
  if (j) {
    liveJob(j);
    fetch(j.dataset.state, {credentials: "same-origin"}).then(r => r.ok ? r.json() : null).then(s => s && drawLoss(s.loss)).catch(() => {});
  }
  document.addEventListener("click", confirmCancel);
});
