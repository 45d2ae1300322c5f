// KafClaw dashboard. Plain script, no framework, no build step, nothing evaluated.
// The token lives in sessionStorage and is sent only as `Authorization: Bearer`; the DOM is
// built with createElement/textContent only (the CSP forbids inline script and style).
"use strict";

(function () {
  const TOKEN_KEY = "kafclaw.token";
  const POLL_MS = 2000;
  const SVG = "http://www.w3.org/2000/svg";

  let session = null; // {token, scope, local}
  let timer = null;
  let lastOk = null;
  const seen = new Map(); // section -> last rendered JSON

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else if (key === "disabled") node.disabled = Boolean(value);
      else if (key === "hidden") node.hidden = Boolean(value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, String(value));
    }
    return node;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, options) {
    const headers = { Accept: "application/json" };
    if (session && session.token) headers.Authorization = "Bearer " + session.token;
    const init = { method: "GET", headers, cache: "no-store", credentials: "omit" };
    if (options && options.body !== undefined) {
      init.method = "POST";
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    } else if (options && options.method) {
      init.method = options.method;
    }
    const res = await fetch(path, init);
    let body = null;
    try {
      body = await res.json();
    } catch (_) {
      body = null;
    }
    if (!res.ok) {
      const message = body && body.error ? body.error : "HTTP " + res.status;
      throw new ApiError(res.status, message);
    }
    return body;
  }

  const isAdmin = () => session !== null && session.scope === "admin";

  // ---- sign in / out -------------------------------------------------------------------

  async function signIn(token) {
    session = { token, scope: null, local: false };
    let verify;
    try {
      verify = await api("/api/v1/auth/verify");
    } catch (e) {
      session = null;
      throw e;
    }
    if (!verify || verify.valid !== true) {
      session = null;
      throw new ApiError(401, "unauthorized");
    }
    session.scope = verify.auth_required === false ? "admin" : verify.scope;
    session.local = verify.auth_required === false;
    if (session.scope !== "read" && session.scope !== "admin") {
      const scope = session.scope;
      session = null;
      throw new ApiError(403, "a " + scope + " token cannot read the dashboard");
    }
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    showDashboard();
  }

  function showDashboard() {
    $("login").hidden = true;
    $("login-error").hidden = true;
    $("dashboard").hidden = false;
    $("sign-out").hidden = false;
    const scope = $("scope");
    scope.hidden = false;
    scope.textContent = session.local ? "local mode" : "scope: " + session.scope;
    $("read-only").hidden = isAdmin();
    $("verify-button").disabled = !isAdmin();
    updateLockdownButton();
    seen.clear();
    refresh();
    clearInterval(timer);
    timer = setInterval(refresh, POLL_MS);
  }

  function signOut(message) {
    clearInterval(timer);
    timer = null;
    session = null;
    sessionStorage.removeItem(TOKEN_KEY);
    seen.clear();
    for (const id of ["channels-body", "approvals-body", "lockouts-body", "supervisor-body",
      "incidents-list", "usage-chart"]) {
      $(id).replaceChildren();
    }
    $("dashboard").hidden = true;
    $("sign-out").hidden = true;
    $("scope").hidden = true;
    $("offline").hidden = true;
    $("login").hidden = false;
    setConnection("unknown", "not signed in");
    if (message) showLoginError(message);
  }

  function showLoginError(message) {
    const node = $("login-error");
    node.textContent = message;
    node.hidden = false;
  }

  // ---- polling -----------------------------------------------------------------------------

  function setConnection(kind, text) {
    const node = $("connection");
    node.className = "badge " + kind;
    node.textContent = text;
  }

  const SOURCES = {
    status: "/api/v1/status",
    health: "/healthz",
    channels: "/api/v1/channels",
    incidents: "/api/v1/incidents",
    approvals: "/api/v1/approvals",
    tools: "/api/v1/tools",
    lockouts: "/api/v1/lockouts",
    head: "/api/v1/audit/head",
    verify: "/api/v1/audit/verify",
    usage: "/api/v1/usage",
    supervisor: "/api/v1/supervisor",
  };

  async function fetchHealth() {
    // 503 carries the failing children: a body, not an error, for the page.
    const res = await fetch("/healthz", { cache: "no-store", credentials: "omit" });
    return res.json();
  }

  async function refresh() {
    if (!session) return;
    const names = Object.keys(SOURCES);
    const results = await Promise.allSettled(
      names.map((name) => (name === "health" ? fetchHealth() : api(SOURCES[name]))));
    if (!session) return;
    const data = {};
    let failure = null;
    results.forEach((result, i) => {
      if (result.status === "fulfilled") data[names[i]] = result.value;
      else if (!failure) failure = result.reason;
    });
    if (failure instanceof ApiError && failure.status === 401) {
      signOut("The token is no longer accepted (401): sign in again.");
      return;
    }
    if (failure && !(failure instanceof ApiError)) {
      showOffline();
      return;
    }
    lastOk = new Date();
    $("offline").hidden = true;
    setConnection("ok", "connected");
    render(data);
  }

  function showOffline() {
    setConnection("down", "gateway not answering");
    const since = lastOk ? "Last answer at " + lastOk.toISOString() + "." : "";
    $("offline-detail").textContent = since + " The data below may be stale.";
    $("offline").hidden = false;
  }

  function changed(section, value) {
    const text = JSON.stringify(value === undefined ? null : value);
    if (seen.get(section) === text) return false;
    seen.set(section, text);
    return true;
  }

  function render(data) {
    if (data.status) renderHealth(data.status, data.health);
    if (data.channels && changed("channels", data.channels)) renderChannels(data.channels);
    if (data.incidents && changed("incidents", data.incidents)) renderIncidents(data.incidents);
    if (data.approvals && changed("approvals", data.approvals)) renderApprovals(data.approvals);
    if (data.tools && changed("tools", data.tools)) renderTools(data.tools);
    if (data.lockouts && changed("lockouts", data.lockouts)) renderLockouts(data.lockouts);
    if ((data.head || data.verify) && changed("audit", [data.head, data.verify])) {
      renderAudit(data.head, data.verify);
    }
    if (data.usage && changed("usage", data.usage)) renderUsage(data.usage);
    if (data.supervisor && changed("supervisor", data.supervisor)) {
      renderSupervisor(data.supervisor);
    }
    $("health-updated").textContent = new Date().toISOString();
  }

  function duration(seconds) {
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + (s % 60) + "s";
  }

  function renderHealth(status, health) {
    const ok = health ? health.ok === true : status.ok === true;
    const node = $("health-ok");
    node.textContent = ok ? "healthy"
      : "unhealthy" + (health && health.failing ? ": " + health.failing.join(", ") : "");
    node.className = ok ? "good" : "bad";
    $("health-version").textContent = status.version;
    $("health-uptime").textContent = duration(status.uptime_seconds);
    $("health-mode").textContent = status.mode || "";
  }

  function actionButton(label, action, extra) {
    return el("button", Object.assign({
      type: "button", "data-action": action, text: label, disabled: !isAdmin(),
    }, extra || {}));
  }

  function renderChannels(channels) {
    const rows = channels.map((c) => el("tr", { "data-name": c.name, "data-state": c.state },
      el("td", { text: c.name }),
      el("td", { text: c.kind }),
      el("td", { className: "state " + c.state, text: c.state }),
      el("td", { text: c.since || "" }),
      el("td", { text: c.reason || "" }),
      el("td", { text: c.inbound_total }),
      el("td", { text: c.unknown_senders_total }),
      el("td", { text: c.restarts }),
      el("td", { className: "actions" },
        actionButton("Quarantine", "quarantine", { "data-channel": c.name }),
        actionButton("Observe", "observe", { "data-channel": c.name }),
        actionButton("Full release", "full", { "data-channel": c.name }),
        actionButton("Disable", "disable", { "data-channel": c.name }))));
    $("channels-body").replaceChildren(...rows);
  }

  function renderIncidents(incidents) {
    const open = incidents.filter((i) => i.state !== "resolved");
    $("incidents-empty").hidden = open.length > 0;
    const cards = open.map((i) => el("article", { className: "incident", "data-id": i.id,
      "data-kind": i.kind, "data-state": i.state },
    el("h3", { text: i.kind + " — " + i.subject }),
    el("p", { text: "State: " + i.state + ", opened " + i.opened_at }),
    el("details", {}, el("summary", { text: "Evidence" }),
      el("pre", { text: JSON.stringify(i.evidence, null, 2) })),
    el("p", { text: "Actions: " + (i.actions || []).join("; ") }),
    el("div", { className: "actions" },
      actionButton("Acknowledge", "acknowledge", { "data-incident": i.id,
        disabled: !isAdmin() || i.state !== "open" }),
      actionButton("Resolve", "resolve", { "data-incident": i.id }))));
    $("incidents-list").replaceChildren(...cards);
  }

  function asked(approval) {
    const a = approval.asked || {};
    if (Array.isArray(a.argv)) {
      return el("code", { text: JSON.stringify(a.argv) + (a.working_dir ? " in " + a.working_dir : "") });
    }
    if (a.path) return el("code", { text: a.path });
    if (a.refused) return el("span", { text: "cannot run: " + a.refused });
    return el("code", { text: JSON.stringify(approval.arguments) });
  }

  function renderApprovals(approvals) {
    const pending = approvals.filter((a) => a.state === "pending");
    $("approvals-empty").hidden = pending.length > 0;
    const rows = pending.map((a) => el("tr", { "data-id": a.id },
      el("td", { text: a.id }),
      el("td", { text: a.tool + " (tier " + a.tier + ")" }),
      el("td", {}, asked(a)),
      el("td", { text: a.sender_id }),
      el("td", { text: a.channel }),
      el("td", { text: a.expires_at }),
      el("td", { className: "actions" },
        actionButton("Approve", "approve", { "data-approval": a.id }),
        actionButton("Deny", "deny", { "data-approval": a.id }))));
    $("approvals-body").replaceChildren(...rows);
  }

  function renderTools(tools) {
    const r = tools.restriction;
    const parts = [];
    if (r.max_tier !== null && r.max_tier !== undefined) parts.push("max tier " + r.max_tier);
    if (r.deny && r.deny.length) parts.push("denied: " + r.deny.join(", "));
    const node = $("tools-restriction");
    node.textContent = tools.restricted ? "restricted (" + parts.join("; ") + ")" : "none";
    node.className = tools.restricted ? "bad" : "good";
    const c = tools.configured || {};
    $("tools-configured").textContent = "owner up to tier " + c.max_tier_owner +
      ", external up to tier " + c.max_tier_external +
      ", approvals time out after " + c.approval_timeout_seconds + " s";
    $("tools-blocked").textContent = tools.blocked_senders.length
      ? tools.blocked_senders.map((b) => b.channel + "/" + b.sender).join(", ") : "none";
  }

  function renderLockouts(body) {
    $("lockouts-empty").hidden = body.count > 0;
    const rows = body.lockouts.map((l) => el("tr", {},
      el("td", { text: l.client }), el("td", { text: l.until }),
      el("td", { text: l.retry_after_seconds })));
    $("lockouts-body").replaceChildren(...rows);
  }

  function renderAudit(head, verify) {
    if (head) $("audit-head").textContent = "#" + head.seq + " " + head.hash;
    const node = $("audit-verify");
    const last = verify ? verify.last : null;
    if (!last) {
      node.textContent = "never verified";
      node.className = "muted";
    } else if (last.ok) {
      node.textContent = "ok: " + last.records + " records up to #" + last.head_seq +
        " (" + last.verified_at + ", by " + last.by + ")";
      node.className = "good";
    } else {
      node.textContent = "FAILED: " + last.error + " (" + last.verified_at + ", by " + last.by + ")";
      node.className = "bad";
    }
  }

  function renderUsage(usage) {
    $("usage-total").textContent = usage.total.total + " tokens in " + usage.total.calls +
      " model calls on " + usage.day;
    const channels = usage.channels;
    const max = Math.max(1, ...channels.map((c) => c.total));
    const rowHeight = 26;
    const width = 480;
    const labelWidth = 120;
    const chart = svg("svg", { width, height: Math.max(1, channels.length) * rowHeight + 4,
      viewBox: "0 0 " + width + " " + (Math.max(1, channels.length) * rowHeight + 4),
      role: "img", "aria-label": "token usage per channel today" });
    channels.forEach((c, i) => {
      const y = i * rowHeight + 2;
      const barWidth = Math.round(((width - labelWidth - 80) * c.total) / max);
      chart.append(svg("text", { x: 0, y: y + 17, class: "label", text: c.channel }));
      chart.append(svg("rect", { x: labelWidth, y: y + 3, width: Math.max(1, barWidth),
        height: rowHeight - 8, class: "bar", "data-channel": c.channel }));
      chart.append(svg("text", { x: labelWidth + barWidth + 6, y: y + 17, class: "value",
        text: String(c.total) }));
    });
    $("usage-chart").replaceChildren(chart);
  }

  function flatten(nodes, depth, out) {
    for (const node of nodes || []) {
      out.push([node, depth]);
      flatten(node.children, depth + 1, out);
    }
    return out;
  }

  function renderSupervisor(tree) {
    const rows = flatten(tree, 0, []).map(([c, depth]) => el("tr", { "data-name": c.name },
      el("td", { className: "depth-" + Math.min(depth, 3), text: c.name }),
      el("td", { className: "state " + c.state, text: c.state }),
      el("td", { text: c.restarts }),
      el("td", { text: c.last_failure || "" })));
    $("supervisor-body").replaceChildren(...rows);
  }

  // ---- actions -----------------------------------------------------------------------------

  function status(message, kind) {
    const node = $("action-status");
    node.textContent = message;
    node.className = "banner " + kind;
    node.hidden = false;
  }

  async function act(label, request) {
    if (!isAdmin()) return;
    try {
      await request();
      status(label + ": done", "info");
    } catch (e) {
      status(label + " failed: " + e.message, "danger");
      if (e instanceof ApiError && e.status === 401) signOut("The token is no longer accepted (401).");
    }
    seen.clear();
    refresh();
  }

  const control = (body) => api("/api/v1/admin/control", { body });

  function onClick(event) {
    const button = event.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    const action = button.dataset.action;
    const channel = button.dataset.channel;
    const incident = button.dataset.incident;
    const approval = button.dataset.approval;
    const reason = $("action-reason").value.trim() || "quarantined from the dashboard";
    const actions = {
      quarantine: () => control({ type: "quarantine_channel", channel, reason }),
      observe: () => control({ type: "release_channel", channel, stage: "observe" }),
      full: () => control({ type: "release_channel", channel, stage: "full" }),
      disable: () => control({ type: "disable_channel", channel }),
      acknowledge: () => control({ type: "acknowledge_incident", id: incident }),
      resolve: () => control({ type: "resolve_incident", id: incident }),
      approve: () => api("/api/v1/approvals/" + encodeURIComponent(approval), { body: { approved: true } }),
      deny: () => api("/api/v1/approvals/" + encodeURIComponent(approval), { body: { approved: false } }),
    };
    if (actions[action]) act(button.textContent + " " + (channel || incident || approval), actions[action]);
  }

  function updateLockdownButton() {
    const confirmed = $("lockdown-confirm").value.trim() === "LOCKDOWN";
    const reason = $("lockdown-reason").value.trim() !== "";
    $("lockdown-button").disabled = !(isAdmin() && confirmed && reason);
  }

  function onLockdown(event) {
    event.preventDefault();
    updateLockdownButton();
    if ($("lockdown-button").disabled) return;
    const reason = $("lockdown-reason").value.trim();
    act("Lockdown", async () => {
      await control({ type: "lockdown", reason });
      $("lockdown-confirm").value = "";
      updateLockdownButton();
    });
  }

  function onVerify() {
    act("Verify", () => api("/api/v1/audit/verify", { method: "POST" }));
  }

  async function onLogin(event) {
    event.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    if (!token) {
      showLoginError("Enter a token.");
      return;
    }
    try {
      await signIn(token);
    } catch (e) {
      const why = e instanceof ApiError ? e.message + " (" + e.status + ")" : "the gateway is not answering";
      showLoginError("Sign-in failed: " + why + ".");
    }
  }

  async function start() {
    document.addEventListener("click", onClick);
    $("login-form").addEventListener("submit", onLogin);
    $("lockdown-form").addEventListener("submit", onLockdown);
    $("lockdown-confirm").addEventListener("input", updateLockdownButton);
    $("lockdown-reason").addEventListener("input", updateLockdownButton);
    $("verify-button").addEventListener("click", onVerify);
    $("sign-out").addEventListener("click", () => signOut());
    const stored = sessionStorage.getItem(TOKEN_KEY);
    try {
      // A stored token, or local single-user mode (no token configured, loopback).
      await signIn(stored || "");
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      if (stored) showLoginError("Sign-in failed: " + e.message + ".");
    }
  }

  start();
})();
