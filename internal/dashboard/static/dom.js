// h builds an element: h("td", {class: "x"}, "text", child, ...). Text is
// always set as text, never parsed as HTML.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// relative says how far a time is from now: "3 s ago", "in 59 min".
export function relative(ms, now = Date.now()) {
  const d = Math.round((ms - now) / 1000);
  if (d === 0) return "now";
  const a = Math.abs(d);
  const s = a < 60 ? `${a} s` : a < 3600 ? `${Math.floor(a / 60)} min` : a < 86400 ? `${Math.floor(a / 3600)} h ${Math.floor((a % 3600) / 60)} min` : `${Math.floor(a / 86400)} d`;
  return d < 0 ? `${s} ago` : `in ${s}`;
}

// errorBlock shows a ConnectError: its code and message, and each detail the
// server rendered (reason and metadata of an ErrorInfo, field violations of a
// BadRequest, quota violations, ...).
export function errorBlock(err) {
  const items = [];
  for (const d of err.details ?? []) {
    const type = String(d.type ?? "").replace(/^type\.googleapis\.com\//, "");
    const dbg = d.debug;
    if (dbg && type === "google.rpc.ErrorInfo") {
      const meta = Object.entries(dbg.metadata ?? {}).map(([k, v]) => `${k}=${v}`).join(", ");
      items.push(h("li", {}, h("strong", {}, dbg.reason ?? type), meta ? `: ${meta}` : ""));
    } else if (dbg && type === "google.rpc.BadRequest") {
      for (const fv of dbg.fieldViolations ?? []) items.push(h("li", {}, h("code", {}, fv.field ?? ""), `: ${fv.description ?? ""}`));
    } else if (dbg && type === "google.rpc.QuotaFailure") {
      for (const v of dbg.violations ?? []) items.push(h("li", {}, `${v.subject ?? ""}: ${v.description ?? ""}`));
    } else {
      items.push(h("li", {}, type, dbg ? `: ${JSON.stringify(dbg)}` : ""));
    }
  }
  return h("div", { class: "error", role: "alert" },
    h("p", {}, h("span", { class: "code" }, err.code ?? "error"), " ", err.message),
    items.length ? h("ul", { class: "details" }, items) : null);
}

// age says how long ago a time was; a time ahead of this browser's clock
// (the server's clock runs a little ahead) is "now".
export function age(ms, now = Date.now()) {
  return relative(Math.min(ms, now), now);
}
