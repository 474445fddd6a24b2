// Helpers shared by every page: times in the facility's zone, JSON fetches, live regions, time form fields.
"use strict";

const mgs = {
  // Every time on the pages is in the facility's zone ([dashboard] timezone), named on the page.
  zone: (document.querySelector('meta[name="facility-tz"]') || {}).content || "UTC",
  _parts: null,

  // Fetch JSON; a login redirect (expired session) becomes an error the page can show.
  async getJSON(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    const type = r.headers.get("Content-Type") || "";
    if (r.redirected || !type.includes("application/json")) throw new Error("session expired: reload the page to log in again");
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  },

  // Unix seconds -> "YYYY-MM-DD HH:MM:SS" wall-clock time in the facility's zone (no zone name).
  wall(seconds) {
    if (!mgs._parts) {
      mgs._parts = new Intl.DateTimeFormat("en-GB", { timeZone: mgs.zone, hourCycle: "h23", year: "numeric", month: "2-digit",
        day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
    }
    const p = {};
    for (const part of mgs._parts.formatToParts(new Date(seconds * 1000))) p[part.type] = part.value;
    return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
  },

  // "2026-12-02T09:12" typed in the facility's zone -> Unix seconds (offset looked up at that time).
  fromWall(text) {
    const guess = Date.parse(text + "Z") / 1000;
    const offset = (s) => Date.parse(mgs.wall(s).replace(" ", "T") + "Z") / 1000 - s;
    return guess - offset(guess - offset(guess));
  },

  // "updated 09:12:05 Europe/Berlin"
  clock() {
    return mgs.wall(Date.now() / 1000).slice(11) + " " + mgs.zone;
  },
};

// Live regions: <div data-live="URL" data-refresh="5"> is re-fetched as a page fragment and swapped
// in place, so a page stays current without reloading. While someone types a note in a form inside
// the region the swap waits, so a half-written note is never lost.
function startLiveRegions() {
  for (const region of document.querySelectorAll("[data-live]")) {
    const seconds = parseFloat(region.dataset.refresh || "5");
    const status = document.getElementById(region.dataset.status || "");
    const busy = () => region.contains(document.activeElement) && document.activeElement.matches("input, textarea, select")
      || [...region.querySelectorAll("input[name=note], textarea")].some((i) => i.value);
    const tick = async () => {
      try {
        if (!busy()) {
          const r = await fetch(region.dataset.live, { credentials: "same-origin", headers: { Accept: "text/html" } });
          if (r.redirected || !r.ok) throw new Error(r.redirected ? "session expired: reload the page to log in again" : `server answered ${r.status}`);
          const html = await r.text();
          if (html !== region.dataset.last) {
            region.innerHTML = html;
            region.dataset.last = html;
          }
          if (status) { status.textContent = "updated " + mgs.clock(); status.classList.remove("error"); }
        }
      } catch (err) {
        if (status) { status.textContent = "not updating: " + err.message; status.classList.add("error"); }
      }
      setTimeout(tick, seconds * 1000);
    };
    setTimeout(tick, seconds * 1000);
  }
}
document.addEventListener("DOMContentLoaded", startLiveRegions);

// Forms with <input type="datetime-local" data-utc="NAME"> send Unix seconds in the hidden field NAME,
// reading what was typed as the facility's time.
document.addEventListener("submit", (event) => {
  for (const input of event.target.querySelectorAll("input[data-utc]")) {
    const hidden = event.target.querySelector(`input[name="${input.dataset.utc}"]`);
    hidden.value = input.value ? String(mgs.fromWall(input.value)) : "";
  }
});
