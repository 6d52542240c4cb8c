// wearbus console: applies the server's snapshot and delta events (Server-Sent Events) and draws the page.
// Plain DOM and inline SVG; every text from the bus goes in through textContent, never as HTML.
"use strict";

const KINDS = ["glasses", "ring", "earphones", "phone"];
const CLASSES = ["voice", "gesture", "system", "sensor", "cmd", "ack", "state"];
const CLASSES_OFF = new Set(["sensor"]); // a ring floods them; the plots show them anyway
const VITALS = [
  { metric: "hr", label: "Heart rate", unit: "bpm", digits: 0 },
  { metric: "hrv", label: "HRV (RMSSD)", unit: "ms", digits: 0 },
  { metric: "spo2", label: "SpO2", unit: "%", digits: 0 },
  { metric: "temp", label: "Skin temperature", unit: "°C", digits: 1, fallback: "temp_dev" },
];
// Glyphs that common system fonts (DejaVu included) have: no emoji font is needed.
const ICONS = {
  food: "♨", car: "▣", nav: "➤", heart: "♥", battery: "▮", calendar: "▦", info: "ℹ", warning: "⚠", music: "♪",
  check: "✓",
};

const S = {
  users: {},
  link: { connected: false, url: "" },
  agents: {},
  stats: {},
  rejected: [],
  inject: { enabled: false, catalogue: {} },
  limits: { timeline: 300, sensor_timeline: 100, points: 240, lines: 5 },
  user: null,
  live: false,
  chain: null, // the set of ids linked to the clicked timeline row
  filterDevice: "",
  classes: new Set(CLASSES.filter((c) => !CLASSES_OFF.has(c))),
};
const dirty = new Set();
const rows = new Map(); // timeline entry number -> <li>, reused between renders
let scheduled = false;

// ------------------------------------------------------------------------------------------------ helpers

function $(id) {
  return document.getElementById(id);
}

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("data-")) el.setAttribute(k, String(v));
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

function ago(ms) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(ms).toLocaleString();
}

function clock(ms) {
  const d = new Date(ms);
  return d.toTimeString().slice(0, 8);
}

function fmt(v, digits) {
  return v === null || v === undefined ? "—" : Number(v).toFixed(digits);
}

function currentUser() {
  return S.user ? S.users[S.user] : undefined;
}

function empty(text) {
  return h("p", { class: "empty", text });
}

// ------------------------------------------------------------------------------------------------ state

function apply(msg, full) {
  if (full) {
    S.users = {};
    rows.clear();
    for (const k of ["link", "agents", "stats", "rejected", "inject", "limits"]) dirty.add(k);
  }
  for (const k of ["link", "agents", "stats", "rejected", "inject", "limits"]) {
    if (k in msg) {
      S[k] = msg[k];
      dirty.add(k);
    }
  }
  for (const name of msg.removed_users || []) {
    delete S.users[name];
    dirty.add("users");
  }
  for (const [name, part] of Object.entries(msg.users || {})) {
    let u = part.reset ? undefined : S.users[name];
    if (!u) {
      u = S.users[name] = { tl: [], sensor: [], devices: {}, displays: {}, audio: {}, vitals: {}, baselines: {},
        context: {}, tasks: [], alerts: [] };
      dirty.add("users");
    }
    for (const [section, value] of Object.entries(part)) {
      if (section === "reset") continue;
      if (section === "timeline") {
        // A snapshot may already hold entries that the next delta repeats: entry numbers only grow, so skip them.
        const seen = Math.max(u.tl.length ? u.tl[u.tl.length - 1].n : 0, u.sensor.length ? u.sensor[u.sensor.length - 1].n : 0);
        for (const e of value) if (e.n > seen) (e.cls === "sensor" ? u.sensor : u.tl).push(e);
        trim(u.tl, S.limits.timeline);
        trim(u.sensor, S.limits.sensor_timeline);
      } else {
        u[section] = value;
      }
      if (name === S.user || !S.user) dirty.add(section);
    }
  }
  if (!S.user || !S.users[S.user]) {
    const names = Object.keys(S.users);
    S.user = names.length ? names[names.length - 1] : null;
    dirty.add("users");
  }
  schedule();
}

function trim(list, max) {
  if (list.length > max) list.splice(0, list.length - max);
}

function schedule() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    render();
  });
}

function render() {
  const all = dirty.has("users");
  const want = (...names) => all || names.some((n) => dirty.has(n));
  if (want("link", "agents", "stats")) renderHeader();
  if (all) renderUsers();
  if (want("devices")) renderDevices();
  if (want("displays", "audio")) renderDisplays();
  if (want("vitals", "baselines", "context")) renderVitals();
  if (want("tasks", "alerts", "context")) renderTasks();
  if (want("timeline", "devices")) renderTimeline();
  if (want("inject", "devices")) renderInject();
  if (want("rejected")) renderRejected();
  dirty.clear();
}

// ------------------------------------------------------------------------------------------------ header

function renderHeader() {
  const link = $("link");
  link.textContent = S.live ? "console: live" : "console: reconnecting…";
  link.className = "pill " + (S.live ? "ok" : "bad");
  document.body.classList.toggle("stale", !S.live);
  const broker = $("broker");
  broker.textContent = S.link.connected ? `broker: connected` : "broker: disconnected — retrying";
  broker.title = S.link.url || "";
  broker.className = "pill " + (S.link.connected ? "ok" : "bad");
  broker.dataset.connected = String(Boolean(S.link.connected));
  const agents = Object.entries(S.agents || {});
  const agent = $("agent");
  if (!agents.length) {
    agent.textContent = "agent: not seen";
    agent.className = "pill dim";
  } else {
    const up = agents.filter(([, a]) => a.online).length;
    agent.textContent = `agent: ${up}/${agents.length} online`;
    agent.className = "pill " + (up ? "ok" : "bad");
  }
  const st = S.stats || {};
  $("rate").textContent =
    `${st.rate ?? 0} msg/s · ${st.received ?? 0} seen` + (st.dropped ? ` · ${st.dropped} dropped` : "");
}

function renderUsers() {
  const sel = $("user");
  const names = Object.keys(S.users).sort();
  sel.replaceChildren(...names.map((n) => h("option", { value: n, text: n, selected: n === S.user })));
  for (const k of ["devices", "displays", "audio", "vitals", "tasks", "alerts", "timeline", "inject"]) dirty.add(k);
}

// ------------------------------------------------------------------------------------------------ devices

function deviceList(u) {
  return Object.values(u?.devices || {}).sort(
    (a, b) => KINDS.indexOf(a.kind) - KINDS.indexOf(b.kind) || a.device.localeCompare(b.device),
  );
}

function batteryBar(level, present = true) {
  const bar = h("span", { class: "bar" + (present ? "" : " absent") });
  if (present && level !== null && level !== undefined) {
    bar.classList.add(level < 15 ? "low" : level < 35 ? "mid" : "ok");
    const fill = h("i");
    fill.style.width = `${Math.max(0, Math.min(100, level))}%`; // CSSOM, not a style attribute: the CSP forbids those
    bar.append(fill);
  }
  return bar;
}

function battery(d) {
  const out = h("span", { class: "bat" });
  if (d.cells && d.cells.length) {
    for (const c of d.cells) {
      out.append(
        h("span", {}, `${c.slot[0].toUpperCase()} `, batteryBar(c.level, c.present), c.present ? ` ${fmt(c.level, 0)}%` : " out"),
      );
    }
  } else if (d.buds) {
    out.append(`L ${fmt(d.buds.left, 0)}% · R ${fmt(d.buds.right, 0)}%` + (d.buds.case != null ? ` · case ${fmt(d.buds.case, 0)}%` : ""));
  } else if (d.battery !== null && d.battery !== undefined) {
    out.append(batteryBar(d.battery), ` ${fmt(d.battery, 0)}%`);
  } else {
    out.append("—");
  }
  if (d.charging) out.append(" ⚡");
  return out;
}

function liveness(d) {
  if (d.online === null || d.online === undefined) return ["unknown", "unknown"];
  if (!d.online) return ["off", "offline"];
  if (d.heartbeat_s && d.last_seen && Date.now() - d.last_seen > 3000 * d.heartbeat_s) return ["silent", "silent"];
  return ["on", "online"];
}

function settingValue(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "object" && !Array.isArray(v) && "start" in v) return `${v.start}-${v.end}`;
  return typeof v === "string" ? v : JSON.stringify(v);
}

// Desired vs reported settings (the device's shadow) with the pending delta and rejections.
function shadowRows(sh) {
  if (!sh || (!sh.desired && !sh.reported)) return [];
  const want = (sh.desired && sh.desired.settings) || {};
  const have = (sh.reported && sh.reported.settings) || {};
  const pending = Object.keys(sh.pending || {});
  const head = h("div", { class: "row shadow-head" }, h("span", { text: "settings" }),
    h("span", { class: pending.length ? "pending" : "dim",
      text: `desired v${sh.desired ? sh.desired.version : 0} · reported v${sh.reported ? sh.reported.version : 0}` +
        (pending.length ? ` · ${pending.length} pending` : "") }));
  const rows = Object.keys({ ...have, ...want }).sort().map((k) => {
    const rejected = (sh.rejected || {})[k];
    const state = rejected && k in (sh.delta || {}) ? "rejected" : pending.includes(k) ? "pending" : "applied";
    const text = k in want && settingValue(want[k]) !== settingValue(have[k])
      ? `${settingValue(want[k])} ← ${settingValue(have[k])}` : settingValue(have[k] ?? want[k]);
    return h("div", { class: `row shadow ${state}`, "data-setting": k, title: rejected || state },
      h("span", { text: k }), h("span", { text: state === "rejected" ? `${text} (rejected: ${rejected})` : text }));
  });
  if (sh.refused) rows.push(h("div", { class: "row shadow rejected" }, h("span", { text: "refused" }),
    h("span", { text: `v${sh.refused.version}: ${sh.refused.reason}` })));
  return [head, ...rows];
}

function renderDevices() {
  const u = currentUser();
  const box = $("devices");
  const list = deviceList(u);
  if (!list.length) {
    box.replaceChildren(empty("No device has been heard from yet."));
    return;
  }
  box.replaceChildren(
    ...list.map((d) => {
      const [cls, word] = liveness(d);
      const worn = d.worn === null || d.worn === undefined ? "—" : d.worn ? "worn" : "not worn";
      return h(
        "div",
        { class: "device", "data-key": d.key, "data-kind": d.kind, "data-online": String(d.online === true) },
        h("div", { class: "top" }, h("span", {}, h("span", { class: "kind", text: d.kind }), h("span", { class: "name", text: d.device })),
          h("span", { class: `state ${cls}`, text: word })),
        h("div", { class: "row" }, h("span", { text: "worn" }), h("span", { class: "worn", text: worn })),
        h("div", { class: "row" }, h("span", { text: "battery" }), battery(d)),
        h("div", { class: "row" }, h("span", { text: "last seen" }), h("span", { class: "seen", text: ago(d.last_seen) })),
        d.model || d.firmware
          ? h("div", { class: "row" }, h("span", { text: "model" }), h("span", { class: "dim", text: [d.model, d.firmware].filter(Boolean).join(" · ") }))
          : null,
        ...shadowRows(d.shadow),
      );
    }),
  );
}

// ------------------------------------------------------------------------------------------------ display mirror

function hud(view) {
  const lines = S.limits.lines || 5;
  const box = h("div", { class: "hud", "data-app": view.app });
  const expired = view.until && Date.now() > view.until;
  if (expired) box.classList.add("expired");
  if (view.reported && view.reported.on === false) box.classList.add("off");
  if (view.ack === "rejected" || view.ack === "expired") box.classList.add("rejected");
  const slots = [];
  (view.lines || []).forEach((text, i) => {
    const line = h("div", { class: "line" + (view.app === "card" && i === 0 ? " title" : "") });
    line.textContent = view.app === "card" && i === 0 ? `${ICONS[view.icon] || ""} ${text}`.trim() : text;
    slots.push(line);
  });
  if (view.app === "card" && view.buttons && view.buttons.length) {
    while (slots.length < lines - 1) slots.push(h("div", { class: "line" }));
    slots.push(h("div", { class: "line buttons" }, view.buttons.map((b) => h("span", { class: "btn", text: b }))));
  }
  while (slots.length < lines) slots.push(h("div", { class: "line" }));
  box.append(...slots.slice(0, lines));
  return box;
}

function renderDisplays() {
  const u = currentUser();
  const box = $("displays");
  const views = Object.entries(u?.displays || {});
  if (!views.length) box.replaceChildren(empty("Nothing shown yet."));
  else {
    box.replaceChildren(
      ...views.map(([key, v]) => {
        const meta = [`${key.split("/")[1]} · ${v.app === "none" ? "dashboard" : v.app}`];
        if (v.page && v.max_page && v.max_page > 1) meta.push(`page ${v.page}/${v.max_page}`);
        if (v.speaker) meta.push(v.speaker);
        if (v.langs) meta.push(v.langs + (v.final === false ? " (partial)" : ""));
        if (v.t) meta.push(ago(v.t));
        if (v.until && Date.now() > v.until) meta.push("expired");
        if (v.ack) meta.push(`ack ${v.ack}` + (v.ack_detail ? `: ${v.ack_detail}` : ""));
        if (v.reported) meta.push(`glasses report ${v.reported.app}${v.reported.on ? "" : " (off)"}`);
        if (v.cut) meta.push("cut to fit");
        return h("div", { class: "mirror", "data-key": key }, hud(v), h("div", { class: "meta", text: meta.join(" · ") }));
      }),
    );
  }
  const audio = $("audio");
  const says = Object.entries(u?.audio || {});
  if (!says.length) audio.replaceChildren(empty("Silent."));
  else {
    audio.replaceChildren(
      ...says.map(([key, a]) =>
        h("div", { class: "speech" + (a.state === "speaking" ? "" : " idle"), "data-key": key },
          h("div", { class: "who", text: `${key} · ${a.state} · ${ago(a.t)}` }),
          h("div", { class: "said", text: a.text ? `“${a.text}”` : a.state === "music" ? "♪ music" : "—" })),
      ),
    );
  }
}

// ------------------------------------------------------------------------------------------------ vitals

function plot(spec, u) {
  let metric = spec.metric;
  let unit = spec.unit;
  let points = u?.vitals?.[metric] || [];
  if (!points.length && spec.fallback && (u?.vitals?.[spec.fallback] || []).length) {
    metric = spec.fallback;
    points = u.vitals[metric];
    unit = "°C vs baseline";
  }
  const base = u?.baselines?.[metric];
  const W = 300, H = 64, P = 4;
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  const path = svg("path", { class: "series", id: `plot-${spec.metric}`, "data-points": points.length, d: "" });
  if (points.length) {
    const ts = points.map((p) => p[0]);
    const vs = points.map((p) => p[1]);
    let lo = Math.min(...vs, base ?? Infinity);
    let hi = Math.max(...vs, base ?? -Infinity);
    if (hi - lo < 1e-6) { lo -= 1; hi += 1; }
    const pad = (hi - lo) * 0.12;
    lo -= pad; hi += pad;
    const t0 = ts[0], t1 = ts[ts.length - 1];
    const x = (t) => (t1 === t0 ? W - P : P + ((t - t0) / (t1 - t0)) * (W - 2 * P));
    const y = (v) => H - P - ((v - lo) / (hi - lo)) * (H - 2 * P);
    path.setAttribute("d", points.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)} ${y(p[1]).toFixed(1)}`).join(" "));
    if (base !== null && base !== undefined) {
      chart.append(svg("line", { class: "baseline", x1: 0, x2: W, y1: y(base).toFixed(1), y2: y(base).toFixed(1) }));
    }
    chart.append(path);
    const last = points[points.length - 1];
    chart.append(svg("circle", { cx: x(last[0]).toFixed(1), cy: y(last[1]).toFixed(1), r: 2.5 }));
  } else {
    chart.append(path);
  }
  const last = points.length ? points[points.length - 1] : null;
  const value = h("span", { class: "value" }, last ? fmt(last[1], metric === "temp_dev" ? 2 : spec.digits) : "—", h("small", { text: unit }));
  return h("div", { class: "plot", "data-metric": spec.metric },
    h("div", { class: "head" }, h("span", { text: spec.label }), value),
    chart,
    h("div", { class: "foot" },
      h("span", { text: points.length ? `${points.length} pts · ${ago(last[0])}` : "no data" }),
      h("span", { text: base !== null && base !== undefined ? `baseline ${fmt(base, spec.digits)}` : "no baseline" })));
}

function renderVitals() {
  const u = currentUser();
  $("vitals").replaceChildren(...VITALS.map((spec) => plot(spec, u)));
  const health = Object.entries(u?.context?.health || {}).filter(([, v]) => v !== null && v !== undefined);
  $("health").replaceChildren(...health.flatMap(([k, v]) => [h("span", { text: k }), h("span", { text: fmt(v, Math.abs(v) < 10 ? 2 : 0) })]));
}

// ------------------------------------------------------------------------------------------------ tasks, alerts, context

function renderTasks() {
  const u = currentUser();
  const tasks = [...(u?.tasks || [])].sort((a, b) => (b.active - a.active) || (b.updated - a.updated));
  $("tasks").replaceChildren(
    ...(tasks.length ? tasks.map((t) =>
      h("div", { class: "task" + (t.active ? "" : " done"), "data-task": t.task_id },
        h("div", { class: "top" }, h("span", { class: "skill", text: `${t.skill || "task"} ` }, h("span", { class: "dim", text: t.task_id })),
          h("span", { class: "badge", text: t.state || t.status || "?" })),
        h("div", { class: "sub", text: [
          t.rounds !== null && t.rounds !== undefined ? `${t.rounds} round${t.rounds === 1 ? "" : "s"}` : null,
          t.status && t.status !== t.state ? `phone: ${t.status}` : null,
          t.eta_s ? `ETA ${Math.round(t.eta_s / 60)} min` : null,
          t.summary, t.driver, t.price, t.confirm,
        ].filter(Boolean).join(" · ") }),
        t.history && t.history.length ? h("div", { class: "chips" }, t.history.map((s) => h("span", { class: "chip", text: s }))) : null,
      )) : [empty("No task.")]),
  );
  const alerts = [...(u?.alerts || [])].reverse();
  $("alerts").replaceChildren(
    ...(alerts.length ? alerts.map((a) =>
      h("div", { class: "alert" + (a.dismissed ? " dismissed" : ""), "data-rule": a.rule },
        h("div", { class: "top" }, h("strong", { text: a.title || a.rule }), h("span", { class: "rule", text: a.rule })),
        a.body ? h("div", { text: a.body }) : null,
        h("div", { class: "sub", text: `${ago(a.t)} · via ${a.via.join(", ")}${a.dismissed ? " · dismissed" : ""}` }),
      )) : [empty("No alert raised.")]),
  );
  const c = u?.context || {};
  const items = [
    ["activity", c.activity], ["place", c.place],
    ["flags", [c.quiet && "quiet", c.asleep && "asleep", c.moving && "moving"].filter(Boolean).join(", ") || (c.t ? "—" : null)],
    ["pending", c.pending], ["display", c.display], ["speaking", c.speaking], ["updated", c.t ? ago(c.t) : null],
  ].filter(([, v]) => v !== null && v !== undefined && v !== "");
  $("context").replaceChildren(...(items.length ? items.flatMap(([k, v]) => [h("span", { text: k }), h("span", { text: v })]) : [empty("No context from the agent yet.")]));
}

// ------------------------------------------------------------------------------------------------ timeline

function entries(u) {
  const all = [...(u?.tl || []), ...(u?.sensor || [])];
  all.sort((a, b) => b.n - a.n);
  return all;
}

function linked(u, entry) {
  // The chain: the event, the actions it caused (corr = its id), their acks (action_id = an action's id), and so on.
  const ids = new Set([entry.id, entry.corr, entry.action_id].filter(Boolean));
  const all = entries(u);
  for (let round = 0; round < 4; round++) {
    const before = ids.size;
    for (const e of all) {
      if (ids.has(e.id) || (e.corr && ids.has(e.corr)) || (e.action_id && ids.has(e.action_id))) {
        ids.add(e.id);
        if (e.corr) ids.add(e.corr);
        if (e.action_id) ids.add(e.action_id);
      }
    }
    if (ids.size === before) break;
  }
  return ids;
}

function inChain(e) {
  return S.chain && (S.chain.has(e.id) || (e.corr && S.chain.has(e.corr)) || (e.action_id && S.chain.has(e.action_id)));
}

function row(e) {
  let li = rows.get(e.n);
  if (li) return li;
  const dev = e.kind ? `${e.kind}/${e.device}` : "agent";
  const arrow = { in: "IN", out: "OUT", ack: "ACK", state: "ST" }[e.dir] || e.dir;
  const text = h("span", { class: "text" + (e.status ? ` st-${e.status}` : ""), text: e.text });
  if (e.dir === "out" && e.corr) text.append(h("span", { class: "corr", text: `← ${e.corr}` }));
  if (e.dir === "ack" && e.action_id) text.append(h("span", { class: "corr", text: `← ${e.action_id}` }));
  li = h("li", { "data-n": e.n, "data-cls": e.cls, title: `id ${e.id}${e.corr ? `\ncorr ${e.corr}` : ""}` },
    h("span", { class: "t", text: clock(e.t) }),
    h("span", { class: `dir ${e.dir}`, text: arrow }),
    h("span", { class: "dev", "data-kind": e.kind || "agent", text: dev }),
    h("span", { class: "type", text: e.type }),
    text);
  li.addEventListener("click", () => {
    const u = currentUser();
    S.chain = S.chain && inChain(e) ? null : linked(u, e);
    renderTimeline();
  });
  rows.set(e.n, li);
  return li;
}

function renderTimeline() {
  const u = currentUser();
  const sel = $("f-device");
  const keys = deviceList(u).map((d) => d.key);
  const have = [...sel.options].map((o) => o.value).slice(1);
  if (keys.join() !== have.join()) {
    sel.replaceChildren(h("option", { value: "", text: "all" }), ...keys.map((k) => h("option", { value: k, text: k, selected: k === S.filterDevice })));
  }
  const shown = entries(u).filter((e) =>
    S.classes.has(e.cls) && (!S.filterDevice || `${e.kind}/${e.device}` === S.filterDevice));
  const keep = new Set(shown.map((e) => e.n));
  for (const n of rows.keys()) if (!keep.has(n)) rows.delete(n);
  const list = shown.map(row);
  for (const e of shown) rows.get(e.n).classList.toggle("hl", Boolean(inChain(e)));
  $("timeline").replaceChildren(...list);
  const n = S.chain ? shown.filter(inChain).length : 0;
  $("chain").textContent = S.chain ? `following a correlation chain: ${n} linked (click again to clear)` : "";
}

function renderFilters() {
  $("f-classes").replaceChildren(
    ...CLASSES.map((c) => {
      const box = h("input", { type: "checkbox", value: c, checked: S.classes.has(c) });
      box.addEventListener("change", () => {
        if (box.checked) S.classes.add(c);
        else S.classes.delete(c);
        renderTimeline();
      });
      return h("label", {}, box, ` ${c}`);
    }),
  );
  $("f-device").addEventListener("change", (ev) => {
    S.filterDevice = ev.target.value;
    renderTimeline();
  });
}

// ------------------------------------------------------------------------------------------------ inject

function renderInject() {
  const panel = $("inject");
  panel.hidden = !S.inject.enabled;
  if (!S.inject.enabled) return;
  const u = currentUser();
  const sel = $("i-device");
  const keys = deviceList(u).filter((d) => S.inject.catalogue[d.kind]).map((d) => d.key);
  const have = [...sel.options].map((o) => o.value);
  if (keys.join() !== have.join()) {
    const keep = sel.value;
    sel.replaceChildren(...keys.map((k) => h("option", { value: k, text: k, selected: k === keep })));
    fillEvents();
  }
}

function fillEvents() {
  const key = $("i-device").value;
  const kind = key.split("/")[0];
  const events = S.inject.catalogue[kind] || [];
  const sel = $("i-event");
  const keep = sel.value;
  sel.replaceChildren(...events.map((e) => h("option", { value: e.event, text: e.event, selected: e.event === keep })));
  fillTemplate();
}

function fillTemplate() {
  const key = $("i-device").value;
  const ev = (S.inject.catalogue[key.split("/")[0]] || []).find((e) => e.event === $("i-event").value);
  $("i-body").value = JSON.stringify(ev ? ev.template : {});
}

async function inject(ev) {
  ev.preventDefault();
  const out = $("i-result");
  const key = $("i-device").value;
  if (!S.user || !key) {
    out.className = "result bad";
    out.textContent = "choose a device first";
    return;
  }
  let data;
  try {
    data = JSON.parse($("i-body").value || "{}");
  } catch (err) {
    out.className = "result bad";
    out.textContent = `the body is not valid JSON: ${err.message}`;
    return;
  }
  const [kind, device] = key.split("/");
  const topic = `wb/v1/${S.user}/${kind}/${device}/evt/${$("i-event").value}`;
  out.className = "result";
  out.textContent = "publishing…";
  try {
    const res = await fetch("/api/inject", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ topic, data }),
    });
    const answer = await res.json();
    out.className = "result " + (answer.ok ? "ok" : "bad");
    out.textContent = answer.ok ? `published ${answer.type} (${answer.id})` : answer.error;
  } catch (err) {
    out.className = "result bad";
    out.textContent = `the console did not answer: ${err.message}`;
  }
}

// ------------------------------------------------------------------------------------------------ rejected

function renderRejected() {
  const list = [...(S.rejected || [])].reverse();
  $("rejected").replaceChildren(
    ...(list.length ? list.map((r) =>
      h("div", { class: "reject" },
        h("span", { class: "reason", text: r.reason }), h("span", { text: r.error }),
        h("div", { class: "topic", text: `${r.topic}${r.field ? ` · ${r.field}` : ""} · ${ago(r.t)} · seen by ${r.seen_by}` }),
      )) : [empty("None.")]),
  );
}

// ------------------------------------------------------------------------------------------------ the stream

function connect() {
  const source = new EventSource("/events");
  source.addEventListener("open", () => {
    S.live = true;
    dirty.add("link");
    schedule();
  });
  source.addEventListener("snapshot", (ev) => {
    S.live = true;
    apply(JSON.parse(ev.data), true);
  });
  source.addEventListener("delta", (ev) => apply(JSON.parse(ev.data), false));
  source.addEventListener("error", () => {
    // EventSource reconnects by itself (the server asks for retry: 1000 ms); a snapshot follows when it does.
    S.live = false;
    dirty.add("link");
    schedule();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  renderFilters();
  $("user").addEventListener("change", (ev) => {
    S.user = ev.target.value;
    S.chain = null;
    rows.clear();
    dirty.add("users");
    schedule();
  });
  $("i-device").addEventListener("change", fillEvents);
  $("i-event").addEventListener("change", fillTemplate);
  $("inject-form").addEventListener("submit", inject);
  // "3 s ago" texts and card expiry move on without messages.
  setInterval(() => {
    for (const k of ["devices", "displays"]) dirty.add(k);
    schedule();
  }, 1000);
  renderHeader();
  connect();
});
