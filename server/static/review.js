// The review page by keyboard alone: scores by key, eye markers picked, moved, removed and restored
// by key or placed by click; Enter submits, S skips. Without this script the page is a plain form.
"use strict";

function startReview(form) {
  const width = parseFloat(form.dataset.width) || 0;
  const height = parseFloat(form.dataset.height) || 0;
  const field = form.querySelector("input[name=eyes]");
  const crop = document.getElementById("crop");
  const markers = [...form.querySelectorAll(".eye-marker")];
  const state = document.getElementById("eye-state");
  const message = document.getElementById("review-message");
  const notScorable = document.getElementById("not-scorable");
  const start = JSON.parse(field.value || "[]");
  const eyes = [0, 1].map((i) => (start[i] ? { x: start[i].x, y: start[i].y } : null));
  const removed = [null, null];
  let picked = 0;

  const clamp = (v, hi) => Math.max(0, Math.min(hi, v));
  const show = () => {
    markers.forEach((m, i) => {
      const eye = eyes[i];
      m.hidden = !eye || !width;
      m.classList.toggle("picked", i === picked);
      if (eye) {
        m.style.left = (eye.x / width * 100) + "%";
        m.style.top = (eye.y / height * 100) + "%";
      }
    });
    state.textContent = eyes.map((eye, i) => `eye ${i + 1}${i === picked ? " (picked)" : ""}: ` +
      (eye ? `${Math.round(eye.x)}, ${Math.round(eye.y)}` : "not marked")).join(" · ");
    field.value = JSON.stringify(eyes.filter(Boolean).map((e) => ({ x: Math.round(e.x * 10) / 10, y: Math.round(e.y * 10) / 10 })));
  };
  const place = (x, y) => { eyes[picked] = { x: clamp(x, width), y: clamp(y, height) }; show(); };
  const check = (name, value) => { form.querySelector(`input[name=${name}][value="${value}"]`).checked = true; message.textContent = ""; };
  const ready = () => {
    if (notScorable.checked) return true;
    const missing = [];
    if (!form.querySelector("input[name=ot_score]:checked")) missing.push("an orbital tightening score (0-9)");
    if (!form.querySelector("input[name=mgs_score]:checked")) missing.push("an MGS score (Z, X or C)");
    message.textContent = missing.length ? `Give ${missing.join(" and ")}, or mark the sample not scorable (N).` : "";
    return missing.length === 0;
  };

  if (crop) {
    crop.addEventListener("click", (event) => {
      const box = crop.getBoundingClientRect();
      place((event.clientX - box.left) / box.width * width, (event.clientY - box.top) / box.height * height);
    });
  }
  form.addEventListener("submit", (event) => {
    if (event.submitter && event.submitter.id === "skip") return;
    if (!ready()) event.preventDefault();
  });
  const MGS_KEYS = { z: 0, x: 1, c: 2 };
  const MOVES = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (/^[0-9]$/.test(key)) check("ot_score", key);
    else if (key in MGS_KEYS) check("mgs_score", MGS_KEYS[key]);
    else if (key === "n") { notScorable.checked = !notScorable.checked; message.textContent = ""; }
    else if (key === "e") { picked = 1 - picked; show(); }
    else if (key in MOVES && width) {
      const step = event.shiftKey ? 10 : 1;
      const eye = eyes[picked] || { x: width / 2, y: height / 2 };
      place(eye.x + MOVES[key][0] * step, eye.y + MOVES[key][1] * step);
    } else if ((key === "Delete" || key === "Backspace") && width) {
      if (eyes[picked]) { removed[picked] = eyes[picked]; eyes[picked] = null; show(); }
      else { const back = removed[picked] || { x: width / 2, y: height / 2 }; place(back.x, back.y); }
    } else if (key === "Enter") {
      if (document.activeElement && document.activeElement.tagName === "BUTTON") return;
      form.requestSubmit(document.getElementById("submit-rating"));
    } else if (key === "s") form.requestSubmit(document.getElementById("skip"));
    else return;
    event.preventDefault();
  });
  show();
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("review-form");
  if (form) startReview(form);
});
