// Overview: filters and search over the tiles, and live updates that fetch only what changed.
// The server renders every tile; /overview/delta?v=VERSION answers with the tiles whose HTML
// differs from that version, the new order if it changed, and the summary line.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const region = document.getElementById("overview");
  const status = document.getElementById(region.dataset.status);
  const refreshMs = parseFloat(region.dataset.refresh) * 1000;
  const tiles = () => document.getElementById("tiles");
  const f = { search: "search", state: "f-state", rack: "f-rack", experiment: "f-experiment" };
  for (const k in f) f[k] = document.getElementById(f[k]);

  if (matchMedia("(max-width: 640px)").matches) document.getElementById("legend").open = false;  // phones: tiles first

  const params = new URLSearchParams(location.search);
  for (const k of ["search", "state", "rack", "experiment"]) if (params.get(k)) f[k].value = params.get(k);

  function matches(tile) {
    const q = f.search.value.trim().toLowerCase();
    if (q && !tile.dataset.search.includes(q)) return false;
    if (f.rack.value && tile.dataset.rack !== f.rack.value) return false;
    if (f.experiment.value && tile.dataset.experiment !== f.experiment.value) return false;
    const s = f.state.value;
    if (s === "attention" && tile.dataset.attention !== "1") return false;
    if (s === "high" && !(tile.dataset.attention === "1" || parseInt(tile.dataset.level || "-1", 10) >= 2)) return false;
    if (s === "nodata" && !["stale", "noface", "notscorable", "empty"].includes(tile.dataset.state)) return false;
    return true;
  }

  function applyFilters() {
    const all = tiles().querySelectorAll("[data-box]");
    let shown = 0;
    for (const t of all) { const ok = matches(t); t.hidden = !ok; if (ok) shown++; }
    document.getElementById("shown").textContent = `${shown} of ${all.length} shown`;
    const q = new URLSearchParams();
    for (const k of ["search", "state", "rack", "experiment"]) if (f[k].value) q.set(k, f[k].value);
    history.replaceState(null, "", q.toString() ? "?" + q : location.pathname);
  }
  for (const k in f) f[k].addEventListener("input", applyFilters);
  applyFilters();

  function element(html) {
    const t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content.firstElementChild;
  }

  function patch(body) {
    const box = tiles();
    for (const empty of box.querySelectorAll(".panel")) empty.remove();
    if (body.full) {
      box.replaceChildren(...body.order.map((k) => element(body.tiles[k])));
    } else {
      for (const [key, html] of Object.entries(body.tiles)) {
        const old = box.querySelector(`[data-box="${CSS.escape(key)}"]`);
        const fresh = element(html);
        if (old) old.replaceWith(fresh); else box.appendChild(fresh);
      }
      for (const key of body.removed) {
        const old = box.querySelector(`[data-box="${CSS.escape(key)}"]`);
        if (old) old.remove();
      }
      if (body.order) {
        const byKey = {};
        for (const t of box.querySelectorAll("[data-box]")) byKey[t.dataset.box] = t;
        box.append(...body.order.map((k) => byKey[k]).filter(Boolean));
      }
    }
    document.getElementById("overview-summary").innerHTML = body.summary;
    box.dataset.version = body.version;
    applyFilters();
  }

  async function tick() {
    try {
      const body = await mgs.getJSON(`${region.dataset.delta}?v=${encodeURIComponent(tiles().dataset.version)}`);
      if (!body.unchanged) patch(body);
      status.textContent = "updated " + mgs.clock();
      status.classList.remove("error");
    } catch (err) {
      status.textContent = "not updating: " + err.message;
      status.classList.add("error");
    }
    setTimeout(tick, refreshMs);
  }
  setTimeout(tick, refreshMs);
});
