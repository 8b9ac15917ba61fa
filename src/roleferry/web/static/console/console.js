// The console's behaviour beyond htmx: drag and drop, job and draft progress over SSE,
// charts, faults.
"use strict";

function setupDropzone() {
  const zone = document.getElementById("dropzone");
  const input = document.getElementById("file");
  if (!zone || !input) return;
  const chosen = document.getElementById("chosen");
  const show = () => { chosen.textContent = input.files.length ? `Chosen: ${input.files[0].name}` : ""; };
  input.addEventListener("change", show);
  ["dragenter", "dragover"].forEach((name) => zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("over"); }));
  ["dragleave", "drop"].forEach((name) => zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.remove("over"); }));
  zone.addEventListener("drop", (e) => {
    if (!e.dataTransfer || !e.dataTransfer.files.length) return;
    input.files = e.dataTransfer.files;
    show();
  });
  document.body.addEventListener("htmx:xhr:progress", (e) => {
    const bar = document.getElementById("upload-progress");
    if (bar && e.detail.lengthComputable) bar.value = Math.round((e.detail.loaded / e.detail.total) * 100);
  });
}

function setupJobProgress() {
  const box = document.getElementById("progress");
  if (!box || !window.EventSource) return;
  const status = document.getElementById("job-status");
  if (!["queued", "running"].includes(status.textContent.trim())) return;
  const source = new EventSource(box.dataset.events);
  const set = (id, text) => { document.getElementById(id).textContent = text; };
  const update = (job) => {
    status.textContent = job.status.replace("_", " ");
    status.className = `tag st-${job.status}`;
    set("job-done", job.done);
    set("job-found", job.found);
    set("job-reason", job.reason || "");
    document.getElementById("job-bar").value = job.done;
    if (job.started_at) {
      const seconds = (Date.now() - Date.parse(job.started_at)) / 1000;
      if (seconds > 0) set("job-rate", `${(job.done / seconds).toFixed(1)} contacts/s`);
    }
    set("job-eta", job.estimated_completion ? new Date(job.estimated_completion).toISOString().slice(11, 19) + " UTC" : "–");
    set("job-waiting", job.waiting_for ? job.waiting_for.reason : "–");
    if (!["queued", "running"].includes(job.status)) {
      const cancel = document.getElementById("cancel-form");
      if (cancel) cancel.remove();
    }
  };
  source.addEventListener("progress", (e) => update(JSON.parse(e.data)));
  source.addEventListener("done", (e) => { update(JSON.parse(e.data)); source.close(); });
  source.onerror = () => { set("job-waiting", "connection lost; reload the page to follow the job again"); source.close(); };
}

function setupDraftStreams() {
  // A draft (or its continuation) comes as server-sent events on the POST's own answer, which
  // EventSource cannot make: read the body as it arrives, then show the stored draft.
  document.addEventListener("submit", async (e) => {
    const form = e.target.closest("form[data-stream]");
    const live = document.getElementById("draft-live");
    if (!form || !live || !window.fetch || !window.TextDecoderStream) return;
    e.preventDefault();
    const text = document.getElementById("draft-stream");
    const state = document.getElementById("draft-state");
    const problem = document.getElementById("draft-problem");
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => { b.disabled = true; });
    problem.replaceChildren();
    live.hidden = false;
    live.setAttribute("aria-busy", "true");
    text.textContent = "";
    text.dataset.deltas = "0";
    state.textContent = "Asking the model…";
    let draftId = null;
    const on = {
      start: (d) => { draftId = d.draft_id; state.textContent = d.source === "template" ? "No model answered in time: writing from the template…" : `Writing (${d.model})…`; },
      delta: (d) => { text.textContent += d.text; text.dataset.deltas = String(Number(text.dataset.deltas) + 1); },
      restart: (d) => { text.textContent = ""; state.textContent = `Writing again (${d.reason.replace("_", " ")})…`; },
      done: (d) => { draftId = d.draft_id; state.textContent = "Done: edit it below and save."; },
      incomplete: (d) => { draftId = d.draft_id; state.textContent = `The stream broke (${d.reason.replace("_", " ")}); what was written is kept: “Continue” below goes on from it.`; },
      error: (d) => { state.textContent = `${d.message}.`; },
    };
    try {
      const response = await fetch(form.action, { method: "POST", body: new FormData(form), headers: { Accept: "text/event-stream" }, credentials: "same-origin" });
      if (!(response.headers.get("content-type") || "").startsWith("text/event-stream")) {
        live.hidden = true;
        problem.innerHTML = await response.text();  // the server's own (escaped) alert
        return;
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const name = (block.match(/^event: (.*)$/m) || [])[1];
          const data = (block.match(/^data: (.*)$/m) || [])[1];
          if (name && data && on[name]) on[name](JSON.parse(data));
        }
      }
    } catch (err) {
      state.textContent = `The connection broke (${err}); reload the page: what was written is kept.`;
    } finally {
      live.setAttribute("aria-busy", "false");
      buttons.forEach((b) => { b.disabled = false; });
    }
    if (draftId && window.htmx) htmx.ajax("GET", `/drafts/${draftId}/panel`, { target: "#draft-panel", swap: "innerHTML" });
  });
}

async function drawCharts() {
  const holder = document.getElementById("charts");
  if (!holder || !window.uPlot) return;
  let data;
  try {
    const response = await fetch(holder.dataset.series, { credentials: "same-origin" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    data = await response.json();
  } catch (err) {
    holder.dataset.problem = String(err);
    return;
  }
  holder.querySelectorAll(".chart").forEach((figure) => {
    const series = data[figure.dataset.provider];
    const plot = figure.querySelector(".plot");
    plot.replaceChildren();
    if (!series || !series.t.length) { figure.classList.remove("has-data"); return; }
    figure.classList.add("has-data");
    const now = Date.now() / 1000;
    new uPlot({
      width: Math.max(280, plot.clientWidth || 320), height: 180,
      scales: { x: { time: true, range: [now - 3600, now] }, pct: { range: [0, 100] } },
      series: [{}, { label: "p50 ms", stroke: "#1f4fd1", points: { show: true } },
        { label: "p95 ms", stroke: "#7a3fd1", points: { show: true } },
        { label: "errors %", stroke: "#c0392b", scale: "pct", points: { show: true } }],
      axes: [{}, { label: "ms" }, { side: 1, scale: "pct", label: "%", grid: { show: false } }],
    }, [series.t, series.p50, series.p95, series.errors], plot);
  });
}

function setupFaults() {
  document.querySelectorAll(".fault-form").forEach((form) => {
    const provider = form.dataset.provider;
    const result = form.querySelector(".fault-result");
    const send = async (changes) => {
      result.textContent = "Saving…";
      try {
        const response = await fetch(`/sandbox/_control/${provider}`, {
          method: "PUT", headers: { "content-type": "application/json" }, body: JSON.stringify(changes),
        });
        const body = await response.json();
        result.textContent = response.ok ? "Applied." : `Refused: ${body.error ? body.error.message : response.status}`;
      } catch (err) {
        result.textContent = `Could not reach the sandbox (${err}); try again.`;
      }
      if (window.htmx) htmx.ajax("GET", "/integrations/table", "#integrations");
    };
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      send({
        down: form.elements.down.checked,
        error_rate: Number(form.elements.error_rate.value || 0),
        latency_ms: Number(form.elements.latency_ms.value || 0),
      });
    });
    form.querySelector(".clear-faults").addEventListener("click", () => {
      form.elements.down.checked = false;
      form.elements.error_rate.value = 0;
      form.elements.latency_ms.value = 0;
      send({ down: false, error_rate: 0, latency_ms: 0, fail_next: 0, hang: false, malformed: 0 });
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupDropzone();
  setupJobProgress();
  setupDraftStreams();
  setupFaults();
  drawCharts();
  if (document.getElementById("charts")) setInterval(drawCharts, 15000);
});
