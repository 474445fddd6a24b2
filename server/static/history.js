// History plot: score over time from the REST API; zooming fetches the range again, so the server
// picks raw windows, minute or hour means to keep the plot at a few thousand points. Times are
// drawn as wall-clock times of the facility's zone; alert episodes are shaded, acknowledgements
// marked with who and the note. Windows of imported recordings (points with source "imported") are
// not mixed into the live line: each recording is its own series, named after its video. Changes of
// model are marked with a vertical line. Below 0, grey ticks mark windows or buckets with no face
// visible and amber crosses those that were not scorable (a face seen, the model not confident):
// neither is ever drawn as a score.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const div = document.getElementById("plot");
  const status = document.getElementById("plot-status");
  const threshold = parseFloat(div.dataset.threshold);
  const notScorableHelp = div.dataset.notScorableHelp;
  const refreshMs = parseFloat(div.dataset.refresh) * 1000;
  const episodes = JSON.parse(div.dataset.episodes || "[]");
  const rangeButtons = [...document.querySelectorAll("#ranges button[data-seconds]")];
  let span = parseFloat(div.dataset.history);
  let range = null;        // [startSeconds, endSeconds] while zoomed; null = "last `span` seconds"
  let loading = false;

  const iso = (s) => new Date(s * 1000).toISOString();
  const wall = (s) => mgs.wall(s);
  const bucket = { raw: 0, minute: 60, hour: 3600 };

  function markActive() {
    for (const b of rangeButtons) {
      const on = !range && parseFloat(b.dataset.seconds) === span;
      b.classList.toggle("active", on);
      b.classList.toggle("secondary", !on);
      b.setAttribute("aria-pressed", String(on));
    }
  }

  function traces(body) {
    const half = (bucket[body.resolution] || 0) / 2;
    const pts = body.points.filter((p) => p.source !== "imported");
    const x = pts.map((p) => wall(p.t + half));
    const mean = pts.map((p) => p.mean);
    const partly = (p) => (p.not_scorable_windows ? `<br>${p.not_scorable_windows} of ${p.windows} windows not scorable`
      : p.abstained_eyes ? `<br>${p.abstained_eyes} eye(s) not scored: model not confident` : "");
    const out = [];
    if (body.resolution !== "raw") {
      out.push({ x, y: pts.map((p) => p.max), mode: "lines", line: { width: 0 }, hoverinfo: "skip", showlegend: false, connectgaps: false });
      out.push({ x, y: pts.map((p) => p.min), mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: "rgba(43,95,171,0.15)",
                 name: "min–max", hoverinfo: "skip", connectgaps: false });
    }
    out.push({ x, y: mean, mode: pts.length > 400 ? "lines" : "lines+markers", name: "score (mean)", connectgaps: false,
               line: { color: "#2b5fab", width: 1.5 }, marker: { size: 4 }, text: pts.map(partly),
               hovertemplate: `%{y:.2f}%{text}<extra>%{x} ${mgs.zone}</extra>` });
    for (const rec of body.recordings || []) {
      const own = body.points.filter((p) => p.device === rec.device && p.box === rec.box);
      if (!own.length) continue;
      out.push({ x: own.map((p) => wall(p.t + half)), y: own.map((p) => p.mean), mode: "lines+markers",
                 name: `imported recording: ${rec.video}`, connectgaps: false,
                 line: { color: "#d46b08", width: 1.5, dash: "dot" }, marker: { symbol: "diamond", size: 6, color: "#d46b08" },
                 text: own.map(() => rec.video),
                 hovertemplate: `%{y:.2f}<extra>imported: %{text}<br>%{x} ${mgs.zone}</extra>` });
    }
    const unscored = body.points.filter((p) => p.mean === null);
    const hidden = unscored.filter((p) => !p.not_scorable_windows);
    const unsure = unscored.filter((p) => p.not_scorable_windows);
    out.push({ x: hidden.map((p) => wall(p.t + half)), y: hidden.map(() => -0.4), mode: "markers",
               name: "no face visible", marker: { symbol: "line-ns-open", size: 8, color: "#8a8f98" },
               hovertemplate: "no face visible<extra>%{x}</extra>" });
    out.push({ x: unsure.map((p) => wall(p.t + half)), y: unsure.map(() => -0.4), mode: "markers",
               name: "not scorable: face seen, model not confident", marker: { symbol: "x-thin-open", size: 8, color: "#b7791f", line: { width: 2 } },
               text: unsure.map((p) => (body.resolution === "raw" ? `${p.abstained_eyes} eye(s) abstained on`
                                                               : `${p.not_scorable_windows} of ${p.windows} windows`)),
               hovertemplate: `not scorable (%{text})<br>${notScorableHelp}<extra>%{x}</extra>` });
    const acks = episodes.flatMap((e) => e.acks);
    if (acks.length) {
      out.push({ x: acks.map((a) => wall(a.time)), y: acks.map(() => 8.7), mode: "markers", name: "acknowledged",
                 marker: { symbol: "triangle-down", size: 11, color: "#1f8a4c" },
                 text: acks.map((a) => `${a.user}${a.note ? ": " + a.note : ""}`),
                 hovertemplate: "acknowledged by %{text}<extra>%{x}</extra>" });
    }
    return out;
  }

  function layout(start, end) {
    const now = Date.now() / 1000;
    const shapes = [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: threshold, y1: threshold, line: { color: "#c53030", width: 1.5, dash: "dash" } }];
    for (const e of episodes) {
      shapes.push({ type: "rect", xref: "x", yref: "paper", x0: wall(e.start), x1: wall(e.end === null ? now : e.end), y0: 0, y1: 1,
                    fillcolor: "rgba(197,48,48,0.12)", line: { width: 0 }, layer: "below", name: "episode" });
    }
    return {
      margin: { l: 50, r: 20, t: 10, b: 40 },
      xaxis: { type: "date", range: [wall(start), wall(end)], title: { text: mgs.zone, standoff: 4 } },
      yaxis: { title: { text: "orbital tightening (0–9)" }, range: [-0.8, 9.2], fixedrange: true, zeroline: false },
      shapes,
      annotations: [{ xref: "paper", x: 1, xanchor: "right", y: threshold, yanchor: "bottom", showarrow: false,
                      text: div.dataset.thresholdLabel, font: { color: "#c53030", size: 11 } }],
      legend: { orientation: "h", y: -0.2 },
      uirevision: "keep",
    };
  }

  // A change of model (registry version or file hash) is a dashed vertical line with the new
  // version's name, so a step in the scores can be told apart from a change of model.
  function markModelChanges(lay, changes) {
    const name = (version, sha) => (version || "shipped models") + (sha ? ` (${sha.slice(0, 8)})` : "");
    for (const c of changes) {
      lay.shapes.push({ type: "line", xref: "x", yref: "paper", x0: wall(c.t), x1: wall(c.t), y0: 0, y1: 1,
                        line: { color: "#6b46c1", width: 1.5, dash: "dot" }, name: "model change" });
      lay.annotations.push({ xref: "x", x: wall(c.t), xanchor: "right", yref: "paper", y: 1, yanchor: "top", showarrow: false,
                             bgcolor: "rgba(255,255,255,0.85)",
                             text: `model: ${name(c.version, c.sha256)}`, font: { color: "#6b46c1", size: 10 },
                             hovertext: `from ${name(c.previous_version, c.previous_sha256)}` });
    }
  }

  async function load() {
    if (loading) return;
    loading = true;
    const now = Date.now() / 1000;
    const [start, end] = range || [now - span, now];
    try {
      const body = await mgs.getJSON(`${div.dataset.url}?start=${encodeURIComponent(iso(start))}&end=${encodeURIComponent(iso(end))}&resolution=auto`);
      const lay = layout(start, end);
      markModelChanges(lay, body.model_changes || []);
      div.dataset.modelChanges = String((body.model_changes || []).length);
      if ((body.recordings || []).length) lay.showlegend = true;  // Plotly hides a legend of one series
      if (range) delete lay.xaxis.range;  // keep the user's zoom
      await Plotly.react(div, traces(body), lay, { responsive: true, displaylogo: false });
      div.dataset.points = String(body.points.length);
      div.dataset.resolution = body.resolution;
      status.textContent = `${body.points.length} points (${body.resolution === "raw" ? "every window" : body.resolution + " means"}), updated ${mgs.clock()}`;
      status.classList.remove("error");
    } catch (err) {
      status.textContent = "not updating: " + err.message;
      status.classList.add("error");
    } finally {
      loading = false;
    }
  }

  document.getElementById("ranges").addEventListener("click", (e) => {
    const seconds = e.target.dataset && e.target.dataset.seconds;
    if (!seconds) return;
    span = parseFloat(seconds);
    range = null;
    markActive();
    Plotly.relayout(div, { "xaxis.autorange": false }).then(load);
  });

  markActive();
  load().then(() => {
    div.on("plotly_relayout", (ev) => {
      if (ev["xaxis.range[0]"] !== undefined) {
        const at = (v) => mgs.fromWall(String(v).replace(" ", "T").slice(0, 19));
        range = [at(ev["xaxis.range[0]"]), at(ev["xaxis.range[1]"])];
        markActive();
        load();
      } else if (ev["xaxis.autorange"]) {
        range = null;
        markActive();
        load();
      }
    });
  });
  setInterval(() => { if (!range) load(); }, refreshMs);
});
