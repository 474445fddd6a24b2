// History plot: score over time from the REST API; zooming fetches the range again, so the server
// picks raw windows, minute or hour means to keep the plot at a few thousand points.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const div = document.getElementById("plot");
  const status = document.getElementById("plot-status");
  const threshold = parseFloat(div.dataset.threshold);
  const refreshMs = parseFloat(div.dataset.refresh) * 1000;
  let span = parseFloat(div.dataset.history);
  let range = null;        // [startSeconds, endSeconds] while zoomed; null = "last `span` seconds"
  let loading = false;

  const iso = (s) => new Date(s * 1000).toISOString();
  const bucket = { raw: 0, minute: 60, hour: 3600 };

  function traces(body) {
    const half = (bucket[body.resolution] || 0) / 2;
    const pts = body.points;
    const x = pts.map((p) => new Date((p.t + half) * 1000));
    const mean = pts.map((p) => p.mean);
    const out = [];
    if (body.resolution !== "raw") {
      out.push({ x, y: pts.map((p) => p.max), mode: "lines", line: { width: 0 }, hoverinfo: "skip", showlegend: false, connectgaps: false });
      out.push({ x, y: pts.map((p) => p.min), mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: "rgba(43,95,171,0.15)",
                 name: "min–max", hoverinfo: "skip", connectgaps: false });
    }
    out.push({ x, y: mean, mode: pts.length > 400 ? "lines" : "lines+markers", name: "score (mean)", connectgaps: false,
               line: { color: "#2b5fab", width: 1.5 }, marker: { size: 4 },
               hovertemplate: "%{y:.2f}<extra>%{x}</extra>" });
    const hidden = pts.filter((p) => p.mean === null);
    out.push({ x: hidden.map((p) => new Date((p.t + half) * 1000)), y: hidden.map(() => -0.4), mode: "markers",
               name: "no face visible", marker: { symbol: "line-ns-open", size: 8, color: "#8a8f98" },
               hovertemplate: "no face visible<extra>%{x}</extra>" });
    return out;
  }

  function layout(start, end) {
    return {
      margin: { l: 50, r: 20, t: 10, b: 40 },
      xaxis: { type: "date", range: [new Date(start * 1000), new Date(end * 1000)] },
      yaxis: { title: { text: "orbital tightening (0–9)" }, range: [-0.8, 9.2], fixedrange: true, zeroline: false },
      shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: threshold, y1: threshold, line: { color: "#c53030", width: 1.5, dash: "dash" } }],
      annotations: [{ xref: "paper", x: 1, xanchor: "right", y: threshold, yanchor: "bottom", showarrow: false,
                      text: div.dataset.thresholdLabel, font: { color: "#c53030", size: 11 } }],
      legend: { orientation: "h", y: -0.15 },
      uirevision: "keep",
    };
  }

  async function load() {
    if (loading) return;
    loading = true;
    const now = Date.now() / 1000;
    const [start, end] = range || [now - span, now];
    try {
      const body = await mgs.getJSON(`${div.dataset.url}?start=${encodeURIComponent(iso(start))}&end=${encodeURIComponent(iso(end))}&resolution=auto`);
      const lay = layout(start, end);
      if (range) delete lay.xaxis.range;  // keep the user's zoom
      await Plotly.react(div, traces(body), lay, { responsive: true, displaylogo: false });
      div.dataset.points = String(body.points.length);
      div.dataset.resolution = body.resolution;
      status.textContent = `${body.points.length} points (${body.resolution === "raw" ? "every window" : body.resolution + " means"}), updated ${new Date().toLocaleTimeString()}`;
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
    Plotly.relayout(div, { "xaxis.autorange": false }).then(load);
  });

  load().then(() => {
    div.on("plotly_relayout", (ev) => {
      if (ev["xaxis.range[0]"] !== undefined) {
        range = [new Date(ev["xaxis.range[0]"]).getTime() / 1000, new Date(ev["xaxis.range[1]"]).getTime() / 1000];
        load();
      } else if (ev["xaxis.autorange"]) {
        range = null;
        load();
      }
    });
  });
  setInterval(() => { if (!range) load(); }, refreshMs);
});
