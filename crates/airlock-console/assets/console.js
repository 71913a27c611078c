// airlock console: the little script the pages need. No inline script is
// allowed (Content-Security-Policy), so everything lives here.
"use strict";

// Times: "3m 20s ago" and "time left" count by themselves.
function span(ms) {
  let s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  return (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s";
}
function tick() {
  const now = Date.now();
  for (const t of document.querySelectorAll("time[data-since]")) {
    const at = Date.parse(t.dataset.since);
    if (!isNaN(at)) t.textContent = span(now - at) + " ago";
  }
  for (const t of document.querySelectorAll("time[data-until]")) {
    const at = Date.parse(t.dataset.until);
    if (!isNaN(at)) t.textContent = at > now ? span(at - now) : "expired";
  }
}
setInterval(tick, 1000);

// The live queue: the server says when the held statements change; the
// queue is fetched again, rendered (and escaped) by the server.
function live() {
  const box = document.querySelector("[data-live]");
  if (!box || !window.EventSource) return;
  const events = new EventSource("/console/events");
  // A change announced while the list is being fetched is fetched again
  // after: the fetch in flight may have read the list before it.
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do {
        again = false;
        const r = await fetch(box.dataset.live, { credentials: "same-origin" });
        if (r.status === 401) { window.location.assign("/console/login"); return; }
        if (r.ok) { box.innerHTML = await r.text(); tick(); }
      } while (again);
    } finally {
      busy = false;
    }
  }
  events.addEventListener("approvals", refresh);
}
document.addEventListener("DOMContentLoaded", live);
