// Helpers shared by every page: local times, JSON fetches, live regions, local-time form fields.
"use strict";

const mgs = {
  // Fetch JSON; a login redirect (expired session) becomes an error the page can show.
  async getJSON(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    const type = r.headers.get("Content-Type") || "";
    if (r.redirected || !type.includes("application/json")) throw new Error("session expired: reload the page to log in again");
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  },

  localTime(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    return new Date(seconds * 1000).toLocaleString([], { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  },
};

// Server-rendered times are UTC; show them in the browser's time zone.
function localizeTimes(root) {
  for (const t of (root || document).querySelectorAll("time[data-ts]")) {
    t.textContent = mgs.localTime(parseFloat(t.dataset.ts));
    t.title = t.getAttribute("datetime");
  }
}
document.addEventListener("DOMContentLoaded", () => localizeTimes());

// Live regions: <div data-live="URL" data-refresh="5"> is re-fetched as a page fragment and swapped
// in place, so a page stays current without reloading (and without losing a half-filled form).
function startLiveRegions() {
  for (const region of document.querySelectorAll("[data-live]")) {
    const seconds = parseFloat(region.dataset.refresh || "5");
    const status = document.getElementById(region.dataset.status || "");
    const tick = async () => {
      try {
        const r = await fetch(region.dataset.live, { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (r.redirected || !r.ok) throw new Error(r.redirected ? "session expired: reload the page to log in again" : `server answered ${r.status}`);
        const html = await r.text();
        if (html !== region.dataset.last) {
          region.innerHTML = html;
          region.dataset.last = html;
          localizeTimes(region);
        }
        if (status) { status.textContent = "updated " + new Date().toLocaleTimeString(); status.classList.remove("error"); }
      } catch (err) {
        if (status) { status.textContent = "not updating: " + err.message; status.classList.add("error"); }
      }
      setTimeout(tick, seconds * 1000);
    };
    setTimeout(tick, seconds * 1000);
  }
}
document.addEventListener("DOMContentLoaded", startLiveRegions);

// Forms with <input type="datetime-local" data-utc="NAME"> send Unix seconds in the hidden field NAME.
document.addEventListener("submit", (event) => {
  for (const input of event.target.querySelectorAll("input[data-utc]")) {
    const hidden = event.target.querySelector(`input[name="${input.dataset.utc}"]`);
    hidden.value = input.value ? String(new Date(input.value).getTime() / 1000) : "";
  }
});
