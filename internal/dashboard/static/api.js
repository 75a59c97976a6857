// The server's HTTP face, as the page uses it: the BridgeService's unary
// calls in the Connect protocol (POST, protobuf JSON bodies), the SSE watch
// endpoint, and the tokens the user gave, kept in sessionStorage so that they
// last as long as the tab and no longer.

const SERVICE = "/varbridge.v1.BridgeService/";

// ConnectError is a call's failure as the server described it: a Connect code
// ("invalid_argument", ...), its message, and the details (each with a type
// and, when the server could render it, a JSON "debug" form).
export class ConnectError extends Error {
  constructor(code, message, details = [], status = 0) {
    super(message);
    this.name = "ConnectError";
    this.code = code;
    this.details = details;
    this.status = status;
  }

  // needsToken is true when a (different) token would change the answer.
  get needsToken() {
    return this.code === "unauthenticated" || this.code === "permission_denied";
  }
}

// Tokens are scoped: "operator" lists sessions; "session:<id>" opens one.
export const tokens = {
  get(scope) {
    return sessionStorage.getItem("varbridge.token." + scope) ?? "";
  },
  set(scope, token) {
    if (token) sessionStorage.setItem("varbridge.token." + scope, token);
    else sessionStorage.removeItem("varbridge.token." + scope);
  },
};

export const sessionScope = (id) => "session:" + id;

// HTTP statuses to Connect codes, for answers that carry no Connect error
// (a proxy's page, a server without the HTTP API).
function codeOfStatus(status) {
  return { 400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied",
    404: "unimplemented", 408: "deadline_exceeded", 429: "unavailable", 503: "unavailable" }[status] ?? "unknown";
}

// call invokes a BridgeService method with a JSON request, sending the
// scope's token as a bearer token. It resolves to the response message as
// JSON and rejects with a ConnectError.
export async function call(method, request, scope) {
  const headers = { "Content-Type": "application/json", "Connect-Protocol-Version": "1" };
  const token = scope ? tokens.get(scope) : "";
  if (token) headers.Authorization = "Bearer " + token;
  let resp;
  try {
    resp = await fetch(SERVICE + method, { method: "POST", headers, body: JSON.stringify(request ?? {}) });
  } catch (err) {
    throw new ConnectError("unavailable", "the server could not be reached: " + err.message);
  }
  const text = await resp.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = null;
  }
  if (!resp.ok) {
    if (body && typeof body.code === "string") {
      throw new ConnectError(body.code, body.message ?? "", body.details ?? [], resp.status);
    }
    throw new ConnectError(codeOfStatus(resp.status), `HTTP ${resp.status} ${resp.statusText}`.trim(), [], resp.status);
  }
  if (body === null) throw new ConnectError("internal", "the server's answer is not JSON");
  return body;
}

// watch opens the SSE stream of every variable of a session (current values
// first) and calls the handlers: onUpdate(update) for each update in the
// shape of `varbridge watch -o json`, onWatching(data) when the server has
// registered the watch ({revision, incarnation}), onHeartbeat(data) with the
// revision covered, onState(state) with
// "open" or "reconnecting", and onFailure(ConnectError) when the server ends
// the stream with an error event, after which the stream stays closed. The
// browser reconnects by itself after a broken connection, sending the last
// event id so that the server resumes where the stream stopped.
export function watch(session, { onUpdate, onWatching, onHeartbeat, onState, onFailure }) {
  const query = new URLSearchParams({ initial: "true" });
  const token = tokens.get(sessionScope(session));
  if (token) query.set("token", token);
  const es = new EventSource(`/v1/sessions/${encodeURIComponent(session)}/watch?${query}`);
  const parse = (e) => {
    try {
      return JSON.parse(e.data);
    } catch {
      return null;
    }
  };
  es.addEventListener("open", () => onState("open"));
  es.addEventListener("message", (e) => {
    const u = parse(e);
    if (u) onUpdate(u, e.lastEventId);
  });
  es.addEventListener("watching", (e) => onWatching(parse(e) ?? {}));
  es.addEventListener("heartbeat", (e) => onHeartbeat(parse(e) ?? {}, e.lastEventId));
  es.addEventListener("error", (e) => {
    if (typeof e.data === "string") {
      // The server's own error event: final, as a failed call is.
      es.close();
      const body = parse(e) ?? {};
      onFailure(new ConnectError(body.code ?? "unknown", body.message ?? e.data, body.details ?? []));
      return;
    }
    if (es.readyState === EventSource.CLOSED) {
      onFailure(new ConnectError("unavailable", "the watch stream was refused by the server"));
    } else {
      onState("reconnecting");
    }
  });
  return es;
}
