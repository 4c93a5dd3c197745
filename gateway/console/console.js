// The OMS console: an admin's view of orders, their sagas, stock, schemas and live events.
// Plain DOM, no build step. Everything goes through the gateway's API with the session's tokens
// from POST /auth/login, kept for this tab only: a short-lived access token, renewed with the
// refresh token when it expires. Text from the API is set as text, never as HTML.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = {
  token: sessionStorage.getItem("oms-token"),
  refresh: sessionStorage.getItem("oms-refresh"),
  after: null, open: null, lastSeq: null,
};

function keep(tokens) {
  state.token = tokens.access_token;
  state.refresh = tokens.refresh_token;
  sessionStorage.setItem("oms-token", state.token);
  sessionStorage.setItem("oms-refresh", state.refresh);
}

// Trades the refresh token for the next pair; false once the session is over.
async function renew() {
  if (!state.refresh) return false;
  const response = await fetch("/auth/refresh", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ refresh_token: state.refresh }),
  });
  if (!response.ok) return false;
  keep(await response.json());
  return true;
}

// fetch with the access token, renewed once if it has expired.
async function authorized(path, options = {}) {
  const send = () => fetch(path, { ...options, headers: { ...options.headers, authorization: `Bearer ${state.token}` } });
  let response = await send();
  if (response.status === 401 && await renew()) response = await send();
  if (response.status === 401) forget();
  return response;
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await authorized(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const why = data && (data.detail || data.title || data.message);
    throw new Error(`${response.status} ${why || response.statusText}`);
  }
  return data;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  row.appendChild(td);
  return td;
}

function time(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleTimeString([], {
    hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3, hour12: false,
  });
}

/// A payment event's amount: minor units of its currency.
function money(p) {
  return `${p.amountMinor ?? "?"} ${p.currency ?? ""} (minor units)`;
}

/// What an event says, in a few words.
function what(entry) {
  const p = entry.payload || {};
  switch (entry.eventType) {
    case "OrderPlaced": return `${(p.items || []).length} line(s), total ${p.total ?? ""}`;
    case "OrderStatusChanged": return `${p.oldStatus} → ${p.newStatus}${p.reason ? ` (${p.reason})` : ""}`;
    case "OrderCancelled": return `cancelled: ${p.reason ?? ""}${p.refund ? `, refund ${p.refund}` : ""}`;
    case "StockReserved": return `reserved ${(p.items || []).map((l) => `${l.quantity}×${l.productId}`).join(", ")}`;
    case "StockRejected": return `short: ${(p.lines || []).map((l) => `${l.productId} (${l.available} of ${l.requested})`).join(", ")}`;
    case "StockReleased": return `released ${(p.items || []).map((l) => `${l.quantity}×${l.productId}`).join(", ")}`;
    case "NotificationSent": return `told ${p.kind ?? ""} by ${p.channel ?? ""}`;
    case "PaymentAuthorized": return `${money(p)} authorized on ${p.intentId ?? ""}`;
    case "PaymentDeclined": return `card declined (${p.code ?? ""})`;
    case "PaymentActionRequired": return `the customer must authenticate ${p.intentId ?? ""}`;
    case "ShipmentRequested": return `shipment asked${p.requestedBy ? ` by ${p.requestedBy}` : ""}: capture first`;
    case "PaymentCaptured": return `${money(p)} captured`;
    case "PaymentCaptureFailed": return `capture failed: ${p.reason ?? ""}`;
    case "RefundRequested": return `refund asked${p.requestedBy ? ` by ${p.requestedBy}` : ""}${p.reason ? ` (${p.reason})` : ""}`;
    case "PaymentRefunded": return `${money(p)} refunded (${p.refundId ?? ""})`;
    case "PaymentVoided": return `authorization ${p.intentId ?? ""} released`;
    default: return "";
  }
}

// Logging in and out.

function claims(token) {
  try {
    return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  } catch {
    return {};
  }
}

function showApp() {
  const who = claims(state.token);
  $("#who").textContent = `${who.sub ?? ""} (${who.role ?? ""})`;
  $("#login").hidden = true;
  $("#app").hidden = false;
  $("#logout").hidden = false;
  loadOrders(false);
  watchLive();
}

// Drops the tokens of this tab.
function forget() {
  sessionStorage.removeItem("oms-token");
  sessionStorage.removeItem("oms-refresh");
  state.token = null;
  state.refresh = null;
  location.reload();
}

// Ends the session at the gateway, so that its tokens stop working everywhere.
async function logout() {
  await fetch("/auth/logout", { method: "POST", headers: { authorization: `Bearer ${state.token}` } }).catch(() => null);
  forget();
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const response = await fetch("/auth/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username: form.get("username"), password: form.get("password") }),
  });
  if (!response.ok) {
    $("#login-error").textContent = "Invalid username or password.";
    return;
  }
  keep(await response.json());
  showApp();
});
$("#logout").addEventListener("click", logout);

// Tabs.

document.querySelectorAll("nav button").forEach((button) => {
  button.addEventListener("click", () => {
    document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b === button));
    document.querySelectorAll(".tab").forEach((t) => { t.hidden = t.id !== `tab-${button.dataset.tab}`; });
    if (button.dataset.tab === "stock") loadStock();
    if (button.dataset.tab === "schemas") loadSubjects();
  });
});

// Orders: place, list, filter, open.

$("#place-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  $("#place-error").textContent = "";
  try {
    // The server prices the order from the catalog; the customer is the caller's own unless an
    // admin names one.
    const body = {
      items: [{ productId: form.get("productId"), quantity: Number(form.get("quantity")) }],
      paymentMethod: form.get("paymentMethod"),
    };
    if (form.get("customerId")) body.customerId = form.get("customerId");
    const order = await api("POST", "/api/orders", body);
    await loadOrders(false);
    openOrder(order.id);
  } catch (error) {
    $("#place-error").textContent = error.message;
  }
});

$("#filter-form").addEventListener("submit", (event) => {
  event.preventDefault();
  loadOrders(false);
});
$("#more").addEventListener("click", () => loadOrders(true));

async function loadOrders(more) {
  const form = new FormData($("#filter-form"));
  const query = new URLSearchParams({ limit: "25" });
  if (form.get("status")) query.set("status", form.get("status"));
  if (form.get("customerId")) query.set("customerId", form.get("customerId"));
  if (more && state.after) query.set("after", state.after);
  const tbody = $("#orders tbody");
  try {
    const page = await api("GET", `/api/orders?${query}`);
    if (!more) tbody.replaceChildren();
    for (const order of page.items) {
      const row = document.createElement("tr");
      row.className = "link";
      row.dataset.id = order.id;
      cell(row, order.id);
      cell(row, order.customerId);
      cell(row, order.status);
      cell(row, order.total);
      cell(row, new Date(order.createdAt).toLocaleString());
      row.addEventListener("click", () => openOrder(order.id));
      tbody.appendChild(row);
    }
    state.after = page.nextAfter ?? null;
    $("#more").hidden = !state.after;
  } catch (error) {
    $("#place-error").textContent = error.message;
  }
}

async function openOrder(id) {
  state.open = id;
  $("#order").hidden = false;
  $("#order-id").textContent = id;
  const [order, timeline] = await Promise.all([
    api("GET", `/api/orders/${id}`),
    api("GET", `/api/orders/${id}/timeline`),
  ]);
  if (state.open !== id) return;
  $("#order-status").textContent = order.status;
  $("#order-summary").textContent =
    `${order.items.map((l) => `${l.quantity}×${l.productId} at ${l.unitPrice}`).join(", ")}; total ${order.total} ${order.currency}` +
    (order.statusReason ? `; ${order.statusReason}` : "") +
    (order.paymentIssue ? `; payment: ${order.paymentIssue}` : "");
  const names = new Map(timeline.map((e) => [e.eventId, e.eventType]));
  const tbody = $("#timeline tbody");
  tbody.replaceChildren();
  for (const entry of timeline) {
    const row = document.createElement("tr");
    if (entry.compensation) row.className = "compensation";
    cell(row, time(entry.occurredAt));
    cell(row, entry.eventType);
    cell(row, what(entry));
    cell(row, entry.producer);
    cell(row, entry.causationId ? names.get(entry.causationId) ?? entry.causationId : "");
    cell(row, entry.traceId ?? "");
    tbody.appendChild(row);
  }
}

// Stock and schemas.

async function loadStock() {
  const tbody = $("#stock tbody");
  tbody.replaceChildren();
  for (const stock of await api("GET", "/api/inventory")) {
    const row = document.createElement("tr");
    cell(row, stock.productId);
    cell(row, stock.available);
    cell(row, stock.reserved);
    cell(row, stock.sold);
    tbody.appendChild(row);
  }
}

async function loadSubjects() {
  const list = $("#subjects");
  list.replaceChildren();
  try {
    for (const subject of await api("GET", "/api/schemas/subjects")) {
      const item = document.createElement("li");
      item.textContent = subject;
      item.addEventListener("click", async () => {
        const version = await api("GET", `/api/schemas/subjects/${encodeURIComponent(subject)}/versions/latest`);
        const schema = JSON.parse(version.schema);
        $("#schema").textContent = `${subject} v${version.version} (id ${version.id})\n\n${JSON.stringify(schema, null, 2)}`;
      });
      list.appendChild(item);
    }
  } catch (error) {
    $("#schema").textContent = `The schema registry is not reachable through this gateway: ${error.message}`;
  }
}

// Live events: the API's server-sent events, read with fetch so the token can go along; on any
// end, reconnect after the last event seen, so that none is missed.

async function watchLive() {
  for (;;) {
    try {
      const headers = {};
      if (state.lastSeq !== null) headers["last-event-id"] = String(state.lastSeq);
      const response = await authorized("/api/orders/events", { headers });
      if (!response.ok) throw new Error(`${response.status}`);
      $("#live-state").textContent = "live";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const id = frame.match(/^id:\s?(.*)$/m);
          const data = frame.match(/^data:\s?(.*)$/m);
          if (id && data) onEvent(Number(id[1]), JSON.parse(data[1]));
        }
      }
    } catch (error) {
      $("#live-state").textContent = `reconnecting (${error.message})`;
    }
    if (!state.token) return;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function onEvent(seq, entry) {
  state.lastSeq = seq;
  $("#live-count").textContent = String(Number($("#live-count").textContent) + 1);
  const row = document.createElement("tr");
  if (entry.compensation) row.className = "compensation";
  cell(row, seq);
  cell(row, time(entry.occurredAt));
  cell(row, entry.orderId);
  cell(row, entry.eventType);
  cell(row, what(entry));
  cell(row, entry.producer);
  const tbody = $("#live tbody");
  tbody.prepend(row);
  while (tbody.rows.length > 200) tbody.deleteRow(-1);
  if (entry.eventType === "OrderStatusChanged") {
    const listed = document.querySelector(`#orders tbody tr[data-id="${CSS.escape(entry.orderId)}"]`);
    if (listed) listed.cells[2].textContent = entry.payload.newStatus;
  }
  if (entry.orderId === state.open) openOrder(state.open);
}

if (state.token) showApp();
