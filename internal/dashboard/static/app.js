// The dashboard: a hash router over two views, the sessions list (#/) and a
// session (#/session/<id>). Each view owns its timers and streams and gives
// them up in its stop function when the route changes.

import { call, ConnectError, sessionScope, tokens, watch } from "./api.js";
import { age, errorBlock, h, relative } from "./dom.js";
import { Series } from "./plot.js";
import { display, editable, formatNumber, numeric, parseInput, summary } from "./values.js";

const main = document.getElementById("main");
const tokenDialog = document.getElementById("token-dialog");
let stopView = () => {};
let viewCount = 0; // which view is on screen: a token saved for an older one changes nothing
// Cancel is a plain button, so that Enter in the token field saves.
tokenDialog.querySelector("#token-cancel").addEventListener("click", () => tokenDialog.close("cancel"));

// askToken opens the token dialog for a scope and resolves to whether a
// token was saved. The dialog says why it is asked.
function askToken(scope, reason) {
  if (tokenDialog.open) return Promise.resolve(false);
  const input = tokenDialog.querySelector("input");
  tokenDialog.querySelector("#token-what").textContent =
    scope === "operator" ? "the operator token (serve --operator-token), which listing sessions needs"
      : `the token of session ${scope.slice("session:".length)}`;
  tokenDialog.querySelector("#token-why").textContent = reason ?? "";
  input.value = tokens.get(scope);
  return new Promise((resolve) => {
    tokenDialog.addEventListener("close", function onClose() {
      tokenDialog.removeEventListener("close", onClose);
      if (tokenDialog.returnValue === "save") {
        tokens.set(scope, input.value.trim());
        resolve(true);
      } else resolve(false);
    });
    tokenDialog.returnValue = ""; // Escape closes with the last value: make it not "save"
    tokenDialog.showModal();
    input.focus();
  });
}

// tokenNeeded renders the place of a view that a token would open, with a
// button that asks for it, and asks at once the first time.
function tokenNeeded(scope, err, rerender) {
  const ask = async () => {
    if (await askToken(scope, err.message)) rerender();
  };
  queueMicrotask(ask);
  return h("section", { class: "token-needed" }, errorBlock(err),
    h("button", { type: "button", onclick: ask }, scope === "operator" ? "Enter the operator token" : "Enter the session token"));
}

// ---- Sessions list ----------------------------------------------------------

function sessionsView() {
  const body = h("tbody");
  // Plain text, not a live region: it changes every refresh.
  const status = h("p", { class: "status" }, "Loading sessions…");
  const table = h("table", { id: "sessions" },
    h("caption", {}, "Sessions on this server"),
    h("thead", {}, h("tr", {}, ["Session", "Variables", "Watches", "Revision", "Expires"].map((c) => h("th", { scope: "col" }, c)))),
    body);
  const openForm = h("form", { class: "open-session", onsubmit: (e) => {
    e.preventDefault();
    const id = openForm.elements.id.value.trim();
    if (id) location.hash = "#/session/" + encodeURIComponent(id);
  } },
  h("label", { for: "open-id" }, "Open a session by id"), " ",
  h("input", { id: "open-id", name: "id", required: true, autocomplete: "off" }), " ",
  h("button", { type: "submit" }, "Open"));
  const place = h("div", {}, table);
  main.replaceChildren(h("h1", { tabindex: "-1" }, "Sessions"), status, place, openForm);
  main.querySelector("h1").focus();

  let stopped = false;
  let timer = 0;
  async function refresh() {
    try {
      const resp = await call("ListSessions", {}, "operator");
      if (stopped) return;
      const sessions = resp.sessions ?? [];
      body.replaceChildren(...sessions.map((s) => {
        const exp = s.expiresAt ? Date.parse(s.expiresAt) : NaN;
        return h("tr", { "data-session": s.sessionId },
          h("th", { scope: "row" }, h("a", { href: "#/session/" + encodeURIComponent(s.sessionId) }, s.sessionId)),
          h("td", { class: "num" }, s.variableCount ?? "0"),
          h("td", { class: "num" }, s.watchCount ?? "0"),
          h("td", { class: "num" }, s.revision ?? "0"),
          h("td", { title: s.expiresAt ?? "" }, Number.isNaN(exp) ? "—" : relative(exp)));
      }));
      if (!sessions.length) body.replaceChildren(h("tr", {}, h("td", { colspan: 5 }, "No sessions.")));
      status.textContent = `${sessions.length} session${sessions.length === 1 ? "" : "s"}, refreshed ${new Date().toLocaleTimeString()}`;
      place.replaceChildren(table);
      timer = setTimeout(refresh, 2000);
    } catch (err) {
      if (stopped) return;
      status.textContent = "";
      if (err instanceof ConnectError && err.needsToken) {
        place.replaceChildren(tokenNeeded("operator", err, () => { if (!stopped) refresh(); }));
        return;
      }
      place.replaceChildren(errorBlock(err), table);
      timer = setTimeout(refresh, 5000);
    }
  }
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// ---- One session ------------------------------------------------------------

function sessionView(id) {
  const scope = sessionScope(id);
  const view = viewCount;
  const again = () => {
    if (view === viewCount) route();
  };
  const vars = new Map(); // name -> {type, value, version, source, ts, constraints, row, series}
  const plots = h("div", { class: "plots", id: "plots" });
  const varBody = h("tbody");
  const tensorBody = h("tbody");
  const info = h("dl", { class: "info", id: "session-info" });
  const streamState = h("span", { id: "stream-state" }, "connecting");
  const watchStats = h("dl", { class: "info", id: "stream-stats" });
  const watchCount = h("span", { id: "watch-count" }, "…");
  const watchBody = h("tbody");
  const watchTable = h("table", { id: "watches" },
    h("caption", {}, "Open watches on this session: ", watchCount),
    h("thead", {}, h("tr", {}, ["Watching", "Filter", "Coalesce", "Open since", "Read up to", "Behind by"].map((c) => h("th", { scope: "col" }, c)))),
    watchBody);
  const watchPlace = h("div", {}, watchTable);
  const stats = { updates: 0, heartbeats: 0, revision: 0, lastEventId: "", reconnects: 0 };
  let stopped = false;
  let es = null;
  const timers = [];

  const select = h("select", { id: "set-name", name: "name", required: true });
  const input = h("textarea", { id: "set-value", name: "value", rows: 1, required: true, spellcheck: "false" });
  const hint = h("p", { class: "hint", id: "set-hint" });
  const result = h("div", { id: "set-result", "aria-live": "polite" });
  const form = h("form", { id: "set-form", onsubmit: submit },
    h("div", { class: "field" }, h("label", { for: "set-name" }, "Variable"), select),
    h("div", { class: "field grow" }, h("label", { for: "set-value" }, "New value"), input),
    h("button", { type: "submit" }, "Set"));
  select.addEventListener("change", () => fillForm(true));

  main.replaceChildren(
    h("p", {}, h("a", { href: "#/" }, "← Sessions")),
    h("h1", { tabindex: "-1" }, "Session ", h("code", {}, id)),
    info,
    h("section", { "aria-labelledby": "vars-h" },
      h("h2", { id: "vars-h" }, "Variables"),
      h("table", { id: "variables" },
        h("caption", {}, "Live values (stream: ", streamState, ")"),
        h("thead", {}, h("tr", {}, ["Name", "Type", "Value", "Version", "Source", "Age"].map((c) => h("th", { scope: "col" }, c)))),
        varBody)),
    h("section", { "aria-labelledby": "plots-h" }, h("h2", { id: "plots-h" }, "Numeric variables over time"), plots),
    h("section", { "aria-labelledby": "tensors-h" },
      h("h2", { id: "tensors-h" }, "Embeddings and tensors"),
      h("table", { id: "tensors" },
        h("thead", {}, h("tr", {}, ["Name", "Shape", "DType", "Elements", "L2 norm"].map((c) => h("th", { scope: "col" }, c)))),
        tensorBody)),
    h("section", { "aria-labelledby": "watches-h" }, h("h2", { id: "watches-h" }, "Watches"), watchPlace,
      h("h3", {}, "This page's stream"), watchStats),
    h("section", { "aria-labelledby": "set-h" }, h("h2", { id: "set-h" }, "Set a value"), form, hint, result),
  );
  main.querySelector("h1").focus();

  function dlRows(dl, rows) {
    dl.replaceChildren(...rows.flatMap(([k, v, idAttr]) => [h("dt", {}, k), h("dd", idAttr ? { id: idAttr } : {}, v)]));
  }

  // renderWatches shows this page's own stream; the session's watches
  // (ListWatches) are listed by listWatches.
  function renderWatches() {
    dlRows(watchStats, [
      ["State", streamState.textContent],
      ["Updates received", stats.updates],
      ["Heartbeats", stats.heartbeats],
      ["Revision covered", stats.revision],
      ["Last event id", stats.lastEventId || "—"],
      ["Reconnects", stats.reconnects],
    ]);
  }

  async function listWatches() {
    try {
      const resp = await call("ListWatches", { sessionId: id }, scope);
      const rev = Number(resp.revision ?? 0);
      const ws = resp.watches ?? [];
      watchCount.textContent = String(ws.length);
      watchBody.replaceChildren(...ws.map((w) => {
        const since = w.createdAt ? Date.parse(w.createdAt) : NaN;
        const lag = Number(w.lagRevisions ?? 0);
        return h("tr", {},
          h("td", {}, w.variableIdentifiers?.length ? w.variableIdentifiers.join(", ") : "every variable"),
          h("td", {}, w.where ? h("code", {}, w.where) : "—"),
          h("td", {}, w.coalesce ? "yes" : "no"),
          h("td", { title: w.createdAt ?? "" }, Number.isNaN(since) ? "—" : age(since)),
          h("td", { class: "num" }, w.readRevision ?? "0"),
          // Lag counts every revision since the stream's last read, those of
          // variables it does not watch too: only pending ones are a backlog.
          h("td", { title: `the session is ${lag} revisions past what this stream read` }, w.pending ? `${lag} revisions` : "up to date"));
      }));
      if (!ws.length) watchBody.replaceChildren(h("tr", {}, h("td", { colspan: 6 }, `No open watches at revision ${rev}.`)));
      watchPlace.replaceChildren(watchTable);
    } catch (err) {
      if (!stopped) watchPlace.replaceChildren(errorBlock(err), watchTable);
    }
  }

  async function refreshSession() {
    try {
      const { session: s } = await call("GetSession", { sessionId: id }, scope);
      if (stopped) return;
      const exp = s.expiresAt ? Date.parse(s.expiresAt) : NaN;
      dlRows(info, [
        ["Revision", s.revision ?? "0", "session-revision"],
        ["Variables", s.variableCount ?? "0"],
        ["Expires", Number.isNaN(exp) ? "—" : `${relative(exp)} (${s.expiresAt})`],
        ["Incarnation", s.incarnation ?? ""],
      ]);
      await listWatches();
      if (stopped) return false;
      timers.push(setTimeout(refreshSession, 2000));
      return true;
    } catch (err) {
      if (stopped) return false;
      if (err instanceof ConnectError && err.needsToken) {
        main.replaceChildren(h("p", {}, h("a", { href: "#/" }, "← Sessions")), h("h1", {}, "Session ", h("code", {}, id)),
          tokenNeeded(scope, err, again));
        stop();
        return false;
      }
      info.replaceChildren(h("dt", {}, "Session"), h("dd", {}, errorBlock(err)));
      timers.push(setTimeout(refreshSession, 5000));
      return err.code !== "not_found";
    }
  }

  // Constraints come from ListVariables (the watch does not carry them);
  // values come from the watch alone, so that a stale listing never
  // overwrites a newer update or brings back a deleted variable.
  const constraints = new Map();
  let loading = false;
  let loadAgain = false;
  async function loadConstraints() {
    if (loading) {
      loadAgain = true; // once more when this one is done: it may predate the variable
      return;
    }
    loading = true;
    try {
      const resp = await call("ListVariables", { sessionId: id }, scope);
      for (const v of resp.variables ?? []) {
        constraints.set(v.name, v.constraints ?? {});
        const cur = vars.get(v.name);
        if (cur) cur.constraints = v.constraints ?? {};
      }
      fillForm(false);
    } catch (err) {
      if (!stopped) result.replaceChildren(errorBlock(err));
    } finally {
      loading = false;
      if (loadAgain && !stopped) {
        loadAgain = false;
        loadConstraints();
      }
    }
  }

  function upsert(u, plot) {
    let v = vars.get(u.name);
    if (!v) {
      v = { row: h("tr", { "data-name": u.name }), constraints: constraints.get(u.name) ?? {} };
      if (!constraints.has(u.name)) loadConstraints();
      vars.set(u.name, v);
      const rows = [...vars.keys()].sort();
      varBody.replaceChildren(...rows.map((n) => vars.get(n).row));
      select.replaceChildren(...rows.map((n) => h("option", { value: n }, n)));
    }
    Object.assign(v, { type: u.type, value: u.new, version: u.version, source: u.source ?? "",
      ts: u.timestamp ? Date.parse(u.timestamp) : Date.now() });
    renderRow(u.name, v);
    if (plot && (v.type === "integer" || v.type === "float")) {
      if (!v.series) {
        const card = h("figure", { class: "plot", "data-name": u.name }, h("figcaption", { class: "visually-hidden" }, `${u.name} over time`));
        plots.append(card);
        v.series = new Series(card, u.name);
        v.card = card;
      }
      v.series.push(v.ts / 1000, numeric(v.value));
      v.card.dataset.points = v.series.length;
    }
    renderTensor(u.name, v);
  }

  function remove(name) {
    const v = vars.get(name);
    if (!v) return;
    v.row.remove();
    v.series?.destroy();
    v.card?.remove();
    v.tensorRow?.remove();
    vars.delete(name);
    select.querySelector(`option[value="${CSS.escape(name)}"]`)?.remove();
  }

  function renderRow(name, v) {
    v.row.replaceChildren(
      h("th", { scope: "row" }, name),
      h("td", {}, v.type),
      h("td", { class: "value" }, display(v.type, v.value)),
      h("td", { class: "num" }, v.version),
      h("td", {}, v.source || "—"),
      h("td", { class: "age", "data-ts": v.ts }, age(v.ts)));
  }

  function renderTensor(name, v) {
    let s = null;
    let problem = "";
    try {
      s = summary(v.type, v.value);
    } catch (err) {
      problem = err.message;
    }
    if (!s && !problem) return;
    const cells = s ? [`[${s.shape.join(", ")}]`, s.dtype, s.elements, formatNumber(s.norm)] : ["—", v.value?.dtype ?? "—", "—", problem];
    const row = h("tr", { "data-name": name }, h("th", { scope: "row" }, name), cells.map((c) => h("td", {}, c)));
    if (v.tensorRow) v.tensorRow.replaceWith(row);
    else tensorBody.append(row);
    v.tensorRow = row;
  }

  function fillForm(always) {
    const v = vars.get(select.value);
    if (!v) return;
    if (always || !input.value) input.value = editable(v.type, v.value);
    input.rows = v.type === "embedding" || v.type === "tensor" ? 3 : 1;
    const c = v.constraints ?? {};
    const parts = [`type ${v.type}`];
    if (c.min !== undefined) parts.push(`min ${c.min}`);
    if (c.max !== undefined) parts.push(`max ${c.max}`);
    if (c.minLength !== undefined) parts.push(`min length ${c.minLength}`);
    if (c.maxLength !== undefined) parts.push(`max length ${c.maxLength}`);
    if (c.pattern !== undefined) parts.push(`pattern ${c.pattern}`);
    if (c.choices?.length) parts.push(`one of ${c.choices.join(", ")}`);
    if (c.allowedModules?.length) parts.push(`one of ${c.allowedModules.join(", ")}`);
    if (c.dimensions !== undefined) parts.push(`${c.dimensions} dimensions`);
    if (c.shape?.length) parts.push(`shape [${c.shape.join(", ")}]`);
    if (c.dtype !== undefined) parts.push(`dtype ${c.dtype}`);
    hint.textContent = parts.join("; ");
  }

  async function submit(e) {
    e.preventDefault();
    const name = select.value;
    const v = vars.get(name);
    if (!v) return;
    let value;
    try {
      value = parseInput(v.type, input.value);
    } catch (err) {
      result.replaceChildren(h("div", { class: "error", role: "alert" }, h("p", {}, err.message)));
      return;
    }
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const resp = await call("SetVariable", { sessionId: id, variableIdentifier: name, value, source: "dashboard" }, scope);
      const nv = resp.variable ?? {};
      result.replaceChildren(h("p", { class: "ok", role: "status" },
        resp.changed ? `${name} set: version ${nv.version ?? "?"}, revision ${resp.revision ?? "?"}` : `${name} already had that value`));
    } catch (err) {
      result.replaceChildren(errorBlock(err));
    } finally {
      button.disabled = false;
    }
  }

  function openStream() {
    es = watch(id, {
      onState(state) {
        if (state === "reconnecting" && streamState.textContent === "live") stats.reconnects++;
        streamState.textContent = state === "open" ? "live" : state;
        renderWatches();
      },
      onUpdate(u, lastId) {
        stats.updates++;
        stats.revision = Math.max(stats.revision, Number(u.revision ?? 0));
        if (lastId) stats.lastEventId = lastId;
        if (u.update === "deleted") remove(u.name);
        else upsert(u, true);
        if (!input.value) fillForm(false);
        renderWatches();
      },
      onWatching(w) {
        streamState.textContent = "live";
        if (w.revision !== undefined) stats.revision = Math.max(stats.revision, Number(w.revision));
        renderWatches();
      },
      onHeartbeat(hb, lastId) {
        stats.heartbeats++;
        if (hb.revision !== undefined) stats.revision = Math.max(stats.revision, Number(hb.revision));
        if (lastId) stats.lastEventId = lastId;
        renderWatches();
      },
      onFailure(err) {
        streamState.textContent = "closed";
        renderWatches();
        result.replaceChildren(err.needsToken ? tokenNeeded(scope, err, again) : errorBlock(err));
      },
    });
  }

  function stop() {
    stopped = true;
    es?.close();
    timers.forEach(clearTimeout);
    for (const v of vars.values()) v.series?.destroy();
  }

  // Ages tick once a second.
  const ticker = setInterval(() => {
    for (const td of varBody.querySelectorAll("td.age")) td.textContent = age(Number(td.dataset.ts));
  }, 1000);
  timers.push(ticker);
  renderWatches();
  refreshSession().then((ok) => {
    if (ok && !stopped) {
      openStream();
      loadConstraints();
    }
  });
  return () => {
    clearInterval(ticker);
    stop();
  };
}

// ---- Router -----------------------------------------------------------------

function route() {
  stopView();
  viewCount++;
  const m = location.hash.match(/^#\/session\/(.+)$/);
  if (m) {
    const id = decodeURIComponent(m[1]);
    document.title = `${id} · varbridge`;
    stopView = sessionView(id);
  } else {
    document.title = "Sessions · varbridge";
    stopView = sessionsView();
  }
}

window.addEventListener("hashchange", route);
route();
