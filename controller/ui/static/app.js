// kvmss dashboard: plain JavaScript, no library; everything it loads and
// asks comes from this controller (see the Content-Security-Policy).
"use strict";
(function () {
  const POLL_MS = 1000;
  const SYMBOL = { healthy: "\u2713 healthy", unhealthy: "\u2717 unhealthy", reimaging: "\u21bb reimaging",
    waiting: "\u25d4 waiting for health", rolledback: "\u21a9 rolled back", stopped: "\u25a0 stopped",
    unknown: "? unknown" };
  let csrf = null, etag = null, snap = null, byHost = false, timer = null, shown = "";

  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "on") for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f);
      else if (k === "text") e.textContent = v;
      else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }
  const route = () => { const m = location.hash.match(/^#\/set\/(.+)$/); return m ? decodeURIComponent(m[1]) : ""; };
  const imageText = (r) => `${r.publisher}/${r.offer}/${r.sku}:${r.version}`;

  async function call(method, path, body) {
    const headers = { "Content-Type": "application/json" };
    if (csrf) headers["X-CSRF-Token"] = csrf;
    const r = await fetch("/ui/api/" + path, { method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body) });
    const data = r.status === 204 ? null : await r.json().catch(() => null);
    if (!r.ok) throw new Error(data && data.error ? data.error.message : `HTTP ${r.status}`);
    return data;
  }

  function showSignIn() {
    csrf = null; snap = null; clearTimeout(timer);
    $("signin").hidden = false; $("signout").hidden = true; $("view").replaceChildren();
    $("token").focus();
  }
  async function start() {
    try { csrf = (await call("GET", "session")).csrf; } catch (e) { showSignIn(); return; }
    $("signin").hidden = true; $("signout").hidden = false;
    poll();
  }
  $("signin").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      csrf = (await call("POST", "session", { token: $("token").value })).csrf;
      $("token").value = ""; $("signin-error").textContent = ""; start();
    } catch (e) { $("signin-error").textContent = "Sign-in refused: " + e.message; }
  });
  $("signout").addEventListener("click", async () => {
    try { await call("DELETE", "session"); } finally { showSignIn(); }
  });
  window.addEventListener("hashchange", () => { etag = null; poll(); });

  async function poll() {
    clearTimeout(timer);
    const name = route();
    try {
      const headers = etag && name === shown ? { "If-None-Match": etag } : {};
      const r = await fetch("/ui/api/live?set=" + encodeURIComponent(name), { headers, cache: "no-store" });
      if (r.status === 401) { showSignIn(); return; }
      if (r.status === 200) { etag = r.headers.get("ETag"); snap = await r.json(); shown = name; render(); }
      $("status").textContent = "live \u00b7 " + new Date().toLocaleTimeString();
    } catch (e) { $("status").textContent = "controller unreachable, retrying"; }
    timer = setTimeout(poll, POLL_MS);
  }

  function render() {
    // A re-render keeps what the user is doing: focus, typed values, details.
    const keep = document.activeElement && document.activeElement.id;
    const typed = ["batch-percent", "manual-ids", "image-version"].filter((id) => $(id)).map((id) => [id, $(id).value]);
    const said = $("action-result") && [$("action-result").textContent, $("action-result").className];
    const open = $("details"), v = $("view");
    if (snap.set && route()) v.replaceChildren(...setPage(snap.set));
    else v.replaceChildren(...overview());
    if (open && $("details") && snap.set && open.dataset.set === snap.set.name) $("details").replaceWith(open);
    for (const [id, value] of typed) if ($(id)) $(id).value = value;
    if (said && $("action-result")) [$("action-result").textContent, $("action-result").className] = said;
    if (keep && $(keep)) $(keep).focus();
  }

  function overview() {
    const rows = snap.sets.map((s) => el("tr", {},
      el("td", {}, el("a", { href: "#/set/" + encodeURIComponent(s.name), id: "set-" + s.name, text: s.name })),
      el("td", { text: String(s.capacity) }), el("td", { text: imageText(s.image) }),
      el("td", { text: Object.entries(s.health).map(([k, n]) => `${n} ${k}`).join(", ") || "none" }),
      el("td", { text: s.mode }), el("td", { text: s.upgrade ? s.upgrade.code : "none" })));
    const images = snap.images.map((i) => el("tr", {},
      el("td", { text: `${i.publisher}/${i.offer}/${i.sku}` }), el("td", { text: i.versions.join(", ") })));
    return [
      el("section", {}, el("h1", { text: "Scale sets" }), el("table", { id: "sets" },
        el("thead", {}, el("tr", {}, ...["Name", "Capacity", "Image", "Health", "Upgrade mode", "Upgrade"].map((h) => el("th", { text: h })))),
        el("tbody", {}, ...rows))),
      el("section", {}, el("h2", { text: "Image catalog" }), el("table", { id: "images" },
        el("thead", {}, el("tr", {}, el("th", { text: "Image" }), el("th", { text: "Versions (newest first)" }))),
        el("tbody", {}, ...images))),
    ];
  }

  function heatmap(set) {
    const groups = new Map();
    for (const c of set.cells) {
      const key = byHost ? c.host : c.ud;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(c);
    }
    const keys = [...groups.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    return el("div", { id: "heatmap" }, ...keys.map((k) => el("div", { class: "row", "data-group": String(k) },
      el("div", { class: "row-label", text: byHost ? `host ${k}` : `UD ${k}` }),
      el("div", { class: "cells" }, ...groups.get(k).map((c) => el("button", {
        type: "button", class: "cell state-" + c.state, id: "cell-" + c.id, "data-state": c.state,
        "data-ud": String(c.ud), "aria-label": `instance ${c.id}, version ${c.version}, ${SYMBOL[c.state]}`,
        on: { click: () => details(set.name, c.id) } },
        el("span", { class: "id", text: "#" + c.id }), el("small", { text: "v" + c.version }),
        el("small", { text: SYMBOL[c.state] })))))));
  }

  function upgradePanel(up) {
    if (!up) return el("section", { id: "upgrade" }, el("h2", { text: "Upgrade" }), el("p", { text: "No upgrade yet." }));
    const p = up.properties.progress, k = up.kvmss;
    const total = p.successfulInstanceCount + p.failedInstanceCount + p.inProgressInstanceCount + p.pendingInstanceCount;
    const byId = new Map(k.instances.map((i) => [i.instanceId, i.state]));
    return el("section", { id: "upgrade" },
      el("h2", { text: `Upgrade ${k.upgradeId}: ` }, el("span", { id: "upgrade-code", text: up.properties.runningStatus.code })),
      el("p", { text: `to ${imageText(k.targetImageReference)}, started by ${k.startedBy}; ${p.successfulInstanceCount} of ${total} done, ${p.failedInstanceCount} failed` }),
      el("progress", { id: "progress", max: String(Math.max(total, 1)), value: String(p.successfulInstanceCount + p.failedInstanceCount) }),
      el("ol", { id: "batches" }, ...k.batches.map((b, i) => el("li", { class: i === k.currentBatch ? "current" : null,
        text: `batch ${i + 1}${i === k.currentBatch ? " (current)" : ""}: ` + b.map((id) => `#${id} ${byId.get(id) || ""}`).join(", ") }))),
      el("h2", { text: "Decision log" }),
      el("ul", { class: "log", id: "decisions", tabindex: "0" }, ...k.decisions.map((d) => el("li", {
        text: `${d.time} ${d.instanceId ? "#" + d.instanceId + " " : ""}${d.event}: ${d.message}` }))));
  }

  function actions(set) {
    const pct = el("input", { id: "batch-percent", type: "number", min: "5", max: "100", value: String(set.body.policy.rollingUpgradePolicy ? set.body.policy.rollingUpgradePolicy.maxBatchInstancePercent : 20) });
    const ids = el("input", { id: "manual-ids", placeholder: "e.g. 0,3 or UD 1,2" });
    const versions = (snap.images.find((i) => i.publisher === set.body.image.publisher && i.offer === set.body.image.offer && i.sku === set.body.image.sku) || { versions: [] }).versions;
    const ver = el("select", { id: "image-version" }, ...["latest", ...versions].map((v) => el("option", { value: v, text: v, selected: v === set.body.image.version })));
    const act = (label, id, question, fn) => el("button", { type: "button", id, text: label, on: { click: async () => {
      if (!window.confirm(question())) return;
      try { await fn(); $("action-result").textContent = label + ": accepted"; $("action-result").className = ""; }
      catch (e) { $("action-result").textContent = label + ": " + e.message; $("action-result").className = "error"; }
      etag = null; poll();
    } } });
    const parse = () => {
      const t = ids.value.trim(), ud = /^ud\s*/i.test(t);
      const list = t.replace(/^ud\s*/i, "").split(/[\s,]+/).filter(Boolean);
      return ud ? { updateDomains: list.map(Number) } : { instanceIds: list };
    };
    const base = "sets/" + encodeURIComponent(set.name) + "/";
    return el("section", { id: "actions" }, el("h2", { text: "Actions" }),
      el("div", { class: "actions" },
        el("label", { for: "batch-percent" }, "Batch %", pct),
        act("Start rolling upgrade", "start-upgrade", () => `Start a rolling upgrade of ${set.name} in batches of ${pct.value}%?`,
          () => call("POST", base + "upgrade", { maxBatchInstancePercent: Number(pct.value) })),
        act("Cancel upgrade", "cancel-upgrade", () => `Cancel the running upgrade of ${set.name}?`, () => call("POST", base + "cancel")),
        el("label", { for: "manual-ids" }, "Instances or update domains", ids),
        act("Upgrade chosen", "manual-upgrade", () => `Upgrade ${ids.value} of ${set.name} now, all at once?`, () => call("POST", base + "manualUpgrade", parse())),
        el("label", { for: "image-version" }, "Model image version", ver),
        act("Change image version", "change-image", () => `Change the model of ${set.name} to version ${ver.value}?`, () => call("POST", base + "image", { version: ver.value }))),
      el("p", { id: "action-result", role: "status" }));
  }

  function setPage(set) {
    const toggle = el("button", { type: "button", id: "group-toggle", "aria-pressed": String(byHost),
      text: byHost ? "Group by update domain" : "Group by fault domain (host)", on: { click: () => { byHost = !byHost; render(); } } });
    const hist = set.history.map((h) => el("tr", {}, el("td", { text: h.properties.runningStatus.code }),
      el("td", { text: h.properties.runningStatus.startTime }), el("td", { class: "wide", text: h.properties.runningStatus.endTime || "" }),
      el("td", { text: imageText(h.properties.targetImageReference) }), el("td", { text: h.properties.startedBy })));
    return [
      el("h1", { text: `Scale set ${set.name}` }, el("small", { text: ` model image ${imageText(set.body.image)}, mode ${set.body.policy.mode}` })),
      el("section", {}, el("h2", { text: "Instances" }), toggle,
        el("p", { class: "legend" }, ...Object.entries(SYMBOL).map(([s, t]) => el("span", { class: "state-" + s, text: t }))),
        heatmap(set), el("div", { id: "details", role: "region", "aria-label": "instance details" })),
      upgradePanel(set.upgrade), actions(set),
      el("section", {}, el("h2", { text: "Upgrade history" }), el("table", { id: "history" },
        el("thead", {}, el("tr", {}, ...["Status", "Started", "Ended", "Target", "By"].map((h) => el("th", { class: h === "Ended" ? "wide" : null, text: h })))),
        el("tbody", {}, ...hist))),
    ];
  }

  async function details(name, id) {
    let d;
    try { d = await call("GET", `sets/${encodeURIComponent(name)}/instances/${encodeURIComponent(id)}`); }
    catch (e) { $("details").textContent = e.message; return; }
    const row = (k, v) => [el("dt", { text: k }), el("dd", { text: v })];
    const os = d.osDisk ? `generation ${d.osDisk.generation} (image ${d.osDisk.imageVersion})` : "unknown";
    $("details").dataset.set = name;
    $("details").replaceChildren(el("h2", { text: `Instance #${d.instanceId} (${d.name})`, tabindex: "-1", id: "details-title" }),
      el("dl", {}, ...row("Host", d.host), ...row("Address", d.address || "none"), ...row("Update / fault domain", `${d.updateDomain} / ${d.faultDomain}`),
        ...row("Power", d.powerState), ...row("Health", d.health), ...row("Health reasons", d.healthReasons.join("; ") || "none"),
        ...row("OS disk", os),
        ...row("Extensions", d.extensions.map((e) => `${e.name}: ${e.status} (exit ${e.exitCode === null ? "none" : e.exitCode})`).join("; ") || "none")));
    $("details-title").focus();
  }

  start();
})();
