// TicketMax Jobs dashboard: times in the zone the viewer picked, list refresh on an interval
// (paused while the tab is hidden), auto-submitting filters, and the live run console over
// Server-Sent Events (resumes after a dropped connection from the last event id it saw).
// Plain browser JavaScript, no build step; the pages work without it, minus the live parts.
"use strict";

(function () {
  const store = {
    get(k, d) { try { return localStorage.getItem(k) ?? d; } catch (_) { return d; } },
    set(k, v) { try { localStorage.setItem(k, v); } catch (_) { /* private mode */ } },
  };

  // ---- times --------------------------------------------------------------------------
  function relative(ms) {
    const s = Math.round(ms / 1000), a = Math.abs(s);
    const [n, unit] = a < 60 ? [a, "s"] : a < 3600 ? [Math.round(a / 60), "min"]
      : a < 86400 ? [Math.round(a / 3600), "h"] : [Math.round(a / 86400), "d"];
    return s >= 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`;
  }
  function formatTimes(root) {
    const zone = store.get("tm-zone", "utc");
    root.querySelectorAll("time[datetime]").forEach((el) => {
      const t = new Date(el.getAttribute("datetime"));
      if (isNaN(t)) return;
      let tz = "UTC";
      if (zone === "local") tz = undefined;
      if (zone === "job") tz = el.dataset.tz || "UTC";
      let text;
      try {
        text = t.toLocaleString(undefined, { timeZone: tz, year: "numeric", month: "short",
          day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
          timeZoneName: "short" });
      } catch (_) {
        text = t.toISOString();
      }
      el.textContent = `${text} (${relative(Date.now() - t.getTime())})`;
      el.title = t.toISOString();
    });
  }

  // ---- list refresh -------------------------------------------------------------------
  let timer = null;
  async function refresh() {
    if (document.hidden) return;
    const main = document.getElementById("tm-main");
    try {
      const resp = await fetch(location.href, { headers: { "X-TM-Partial": "1" }, credentials: "same-origin" });
      if (!resp.ok || resp.redirected) return;
      const html = await resp.text();
      // Keep the user's pending selection and focus: skip a refresh while they act.
      if (main.querySelector("input[type=checkbox]:checked") || main.contains(document.activeElement) && document.activeElement.tagName === "SELECT") return;
      main.innerHTML = html;
      wire(main);
    } catch (_) { /* offline for a moment: the next tick tries again */ }
  }
  function startRefresh() {
    const picker = document.getElementById("tm-refresh");
    if (!picker) return;
    picker.value = store.get("tm-refresh", "0");
    const apply = () => {
      clearInterval(timer);
      const secs = Number(picker.value);
      if (secs > 0) timer = setInterval(refresh, secs * 1000);
    };
    picker.addEventListener("change", () => { store.set("tm-refresh", picker.value); apply(); });
    apply();
  }
  document.addEventListener("visibilitychange", () => { if (!document.hidden && timer) refresh(); });

  // ---- wiring of a (re)rendered main --------------------------------------------------
  function wire(root) {
    formatTimes(root);
    root.querySelectorAll("select[data-autosubmit]").forEach((s) => {
      s.addEventListener("change", () => s.form && s.form.submit());
    });
    root.querySelectorAll("button[data-confirm-selected]").forEach((b) => {
      b.addEventListener("click", (ev) => {
        const n = document.querySelectorAll("input[name=run][form=bulk]:checked").length;
        if (n === 0 || !confirm(`Cancel ${n} selected run${n === 1 ? "" : "s"}?`)) ev.preventDefault();
      });
    });
    startRefresh();
  }

  // ---- the live run console -----------------------------------------------------------
  function liveRun() {
    const section = document.getElementById("tm-run");
    if (!section) return;
    const id = section.dataset.run;
    const list = document.getElementById("tm-events");
    const bar = document.getElementById("tm-progress");
    const barText = document.getElementById("tm-progress-text");
    const stateEl = document.getElementById("tm-state");
    const levelPick = document.getElementById("tm-level");
    const levels = { debug: 0, info: 1, warn: 2, error: 3 };
    const seen = new Set();
    let first = null;
    const minLevel = () => levels[levelPick.value] ?? 1;
    levelPick.addEventListener("change", () => {
      list.querySelectorAll("li[data-level]").forEach((li) => {
        li.classList.toggle("hidden", (levels[li.dataset.level] ?? 1) < minLevel());
      });
    });
    function line(ev, text, level) {
      const li = document.createElement("li");
      li.dataset.seq = ev.seq;
      if (level) {
        li.dataset.level = level;
        if ((levels[level] ?? 1) < minLevel()) li.classList.add("hidden");
      }
      const seq = document.createElement("span");
      seq.className = "seq";
      seq.textContent = `#${ev.seq} ${ev.time ? ev.time.slice(11, 23) : ""}`;
      li.append(seq, document.createTextNode(text));
      list.append(li);
      list.scrollTop = list.scrollHeight;
    }
    const es = new EventSource(`/runs/${encodeURIComponent(id)}/events`);
    // How many times the stream (re)opened: the browser reconnects by itself after a drop,
    // sending the last event id it saw.
    es.addEventListener("open", () => { section.dataset.opens = String(Number(section.dataset.opens || 0) + 1); });
    const once = (handler) => (msg) => {
      const ev = JSON.parse(msg.data);
      // The server resumes after Last-Event-ID, so nothing repeats; guard anyway.
      if (seen.has(ev.seq)) return;
      seen.add(ev.seq);
      handler(ev);
    };
    es.addEventListener("state", once((ev) => {
      stateEl.innerHTML = "";
      const badge = document.createElement("span");
      badge.className = `badge s-${ev.state.replace(" ", "-")}`;
      badge.textContent = ev.state;
      stateEl.append(badge);
      section.dataset.state = ev.state;
      line(ev, `state → ${ev.state}${ev.message ? ": " + ev.message : ""} (attempt ${ev.attempt})`, "info");
    }));
    es.addEventListener("progress", once((ev) => {
      const now = Date.parse(ev.time) || Date.now();
      if (!first) first = { at: now, done: ev.done };
      if (ev.total > 0) { bar.max = ev.total; bar.value = ev.done; }
      const secs = (now - first.at) / 1000;
      const rate = secs > 0 ? (ev.done - first.done) / secs : 0;
      let text = ev.total > 0 ? `${ev.done} / ${ev.total}` : `${ev.done}`;
      if (rate > 0) {
        text += ` · ${rate.toFixed(1)}/s`;
        if (ev.total > ev.done) text += ` · about ${Math.ceil((ev.total - ev.done) / rate)} s left`;
      }
      barText.textContent = text;
      line(ev, `progress ${text}${ev.message ? " — " + ev.message : ""}`, "debug");
    }));
    es.addEventListener("log", once((ev) => line(ev, `[${ev.level}] ${ev.message}`, ev.level)));
    // The run has ended: stop reconnecting, and bring the header (finish time, summary, the
    // cancel button) up to date from the server, keeping the console as it is.
    es.addEventListener("end", async () => {
      es.close();
      try {
        const resp = await fetch(location.href, { headers: { "X-TM-Partial": "1" }, credentials: "same-origin" });
        const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
        for (const sel of ["#tm-run dl.settings", "main div.actions"]) {
          const fresh = doc.querySelector(sel), old = document.querySelector(sel);
          if (fresh && old) old.replaceWith(fresh);
        }
        formatTimes(document);
      } catch (_) { /* the header stays as rendered */ }
      section.dataset.live = "ended";
    });
    es.addEventListener("error", (msg) => {
      if (msg.data) { try { line({ seq: "!" }, JSON.parse(msg.data).message, "error"); } catch (_) { /* not ours */ } }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const zone = document.getElementById("tm-zone");
    if (zone) {
      zone.value = store.get("tm-zone", "utc");
      zone.addEventListener("change", () => { store.set("tm-zone", zone.value); formatTimes(document); });
    }
    wire(document);
    liveRun();
    setInterval(() => formatTimes(document), 30000);
  });
})();
