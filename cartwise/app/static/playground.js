// The Cartwise playground: plain JS over the playground's JSON API (cartwise/app/playground.py), which
// speaks the proto3 JSON mapping of cartwise.v1 SearchRequest / SearchResponse.
"use strict";

const $ = (id) => document.getElementById(id);
let lastRequest = null;   // the SearchRequest (proto3 JSON) of the answer on screen
let lastRanks = new Map(); // product_id -> rank of the answer on screen
let lastRequestId = null;  // its request_id, sent back with an event made from it
let offset = 0;            // hits skipped: the page on screen starts at offset + 1

function token() { return sessionStorage.getItem("cartwise-token"); }

async function api(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token()) headers["Authorization"] = "Bearer " + token();
  const response = await fetch(path, body === undefined ? { headers } :
    { method: "POST", headers, body: JSON.stringify(body) });
  const data = await response.json();
  if (response.status === 401) {
    const entered = window.prompt("This playground needs an API token (CARTWISE_API_TOKENS):");
    if (entered) { sessionStorage.setItem("cartwise-token", entered.trim()); return api(path, body); }
  }
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function status(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function number(id) {
  const value = $(id).value.trim();
  return value === "" ? undefined : Number(value);
}

function searchRequest() {
  const request = { query: $("query").value, user_id: $("user").value, limit: number("limit") || 10,
                    retrieval: $("retrieval").value, exclude_purchased: $("exclude-purchased").checked,
                    keep_duplicates: $("keep-duplicates").checked, offset, sort: $("sort").value,
                    facets: $("facets").checked };
  const filter = {};
  const category = $("category").value.split(">").map((s) => s.trim()).filter(Boolean);
  if (category.length) filter.category_prefix = category;
  const brands = $("brands").value.split(",").map((s) => s.trim()).filter(Boolean);
  if (brands.length) filter.brands = brands;
  const price = {};
  if (number("price-min") !== undefined) price.min = number("price-min");
  if (number("price-max") !== undefined) price.max = number("price-max");
  if (Object.keys(price).length) filter.price = price;
  if ($("stock").value !== "STOCK_FILTER_UNSPECIFIED") filter.stock = $("stock").value;
  if (Object.keys(filter).length) request.filter = filter;
  if (number("lexical-weight") !== undefined) request.lexical_weight = number("lexical-weight");
  if (number("personal-weight") !== undefined) request.personalization_weight = number("personal-weight");
  if (number("in-stock-boost") !== undefined) request.in_stock_boost = number("in-stock-boost");
  return request;
}

function bar(kind, value, max) {
  const width = max > 0 ? Math.max(0, Math.min(100, 100 * value / max)) : 0;
  return `<span>${kind}</span><div class="bar ${kind}"><span style="width:${width.toFixed(1)}%"></span></div>` +
         `<span>${value.toFixed(3)}</span>`;
}

function escapeHtml(text) {
  const div = document.createElement("div");
  div.textContent = text;
  return div.innerHTML;
}

function render(list, response, { actions, previous }) {
  list.innerHTML = "";
  const hits = response.hits || [];
  const max = (key) => Math.max(1e-9, ...hits.map((h) => Math.abs(h[key])));
  const maxes = { lexical: max("lexical_score"), semantic: max("semantic_score"), personal: max("personal_score") };
  hits.forEach((hit, rank) => {
    const li = document.createElement("li");
    li.className = "hit";
    li.dataset.productId = hit.product_id;
    let change = "";
    if (previous && previous.size) {
      const before = previous.get(hit.product_id);
      if (before === undefined) { change = "new"; li.classList.add("moved-up"); }
      else if (before > rank) { change = `▲ ${before - rank}`; li.classList.add("moved-up"); }
      else if (before < rank) { change = `▼ ${rank - before}`; li.classList.add("moved-down"); }
    }
    const price = hit.price ? `$${Number(hit.price).toFixed(2)}` : "";
    li.innerHTML = `<div><span class="title">${escapeHtml(hit.title)}</span>` +
      `<span class="change">${change}</span></div>` +
      `<div class="meta">${escapeHtml((hit.category_path || []).join(" > "))} · ${escapeHtml(hit.brand || "no brand")}` +
      ` · ${price} · ${hit.in_stock ? "in stock" : "out of stock"} · score ${Number(hit.score).toFixed(3)}</div>` +
      `<div class="bars">${bar("lexical", hit.lexical_score, maxes.lexical)}` +
      `${bar("semantic", hit.semantic_score, maxes.semantic)}${bar("personal", hit.personal_score, maxes.personal)}</div>`;
    if (actions) {
      const div = document.createElement("div");
      div.className = "actions";
      for (const [kind, label] of [["cart", "add to cart"], ["purchase", "purchase"]]) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = kind;
        button.textContent = label;
        button.addEventListener("click", () => sendEvent(kind, hit.product_id));
        div.appendChild(button);
      }
      li.appendChild(div);
    }
    list.appendChild(li);
  });
}

function describe(response) {
  const parts = [`model ${response.model_version}`, response.retrieval.replace("RETRIEVAL_", "").toLowerCase()];
  if (response.retrieval === "RETRIEVAL_HYBRID") parts.push(`w=${Number(response.lexical_weight).toFixed(2)}`);
  parts.push(`α=${Number(response.personalization_weight).toFixed(2)}`, `${response.user_interactions} interactions`);
  return "(" + parts.join(", ") + ")";
}

function facetList(list, entries, refine) {
  list.innerHTML = "";
  for (const { label, count, value } of entries) {
    const li = document.createElement("li");
    const link = document.createElement("a");
    link.href = "#";
    link.textContent = label;
    link.addEventListener("click", (event) => { event.preventDefault(); refine(value); offset = 0; runSearch(); });
    const counted = document.createElement("span");
    counted.className = "facet-count";
    counted.textContent = count;
    li.append(link, counted);
    list.appendChild(li);
  }
}

// Clicking a facet value narrows the filter: a category one level down, a brand, a price band.
function showFacets(facets) {
  $("facets-column").hidden = !facets;
  if (!facets) return;
  $("facets-meta").textContent = `(${facets.candidates} candidates)`;
  const prefix = () => $("category").value.split(">").map((s) => s.trim()).filter(Boolean);
  facetList($("facet-categories"), facets.categories.map((c) => ({ label: c.value, count: c.count, value: c.value })),
            (value) => { $("category").value = [...prefix(), value].join(" > "); });
  facetList($("facet-brands"), facets.brands.map((b) => ({ label: b.value, count: b.count, value: b.value })),
            (value) => { $("brands").value = value; });
  facetList($("facet-prices"), facets.price_bands.map((b) => ({
    label: b.max === undefined ? `$${b.min}+` : `$${b.min}–${b.max}`, count: b.count, value: b })),
            (band) => { $("price-min").value = band.min; $("price-max").value = band.max === undefined ? "" : band.max; });
}

function show(response, previous) {
  const list = $("results");
  render(list, response, { actions: true, previous });
  list.start = offset + 1;
  $("cartwise-meta").textContent = describe(response);
  lastRanks = new Map((response.hits || []).map((h, rank) => [h.product_id, rank]));
  lastRequestId = response.request_id;
  const shown = (response.hits || []).length;
  $("page-info").textContent = shown ? `${offset + 1}–${offset + shown}` : "no more hits";
  $("prev").disabled = offset === 0;
  $("next").disabled = shown < (lastRequest ? lastRequest.limit : 10);
  showFacets(response.facets);
}

async function search(event) {
  if (event) event.preventDefault();
  offset = 0;
  await runSearch();
}

async function turnPage(step) {
  offset = Math.max(0, offset + step * (number("limit") || 10));
  await runSearch();
}

async function runSearch() {
  const request = searchRequest();
  status("searching…");
  try {
    const started = performance.now();
    const response = await api("/api/search", request);
    lastRequest = request;
    show(response, null);
    $("bm25-column").hidden = !$("compare").checked;
    if ($("compare").checked) {
      const lexical = { ...request, user_id: "", retrieval: "RETRIEVAL_LEXICAL", facets: false };
      delete lexical.lexical_weight;
      delete lexical.personalization_weight;
      render($("bm25-results"), await api("/api/search", lexical), { actions: false });
    }
    status(`${(response.hits || []).length} hits in ${(performance.now() - started).toFixed(0)} ms`);
  } catch (err) {
    status(err.message, true);
  }
}

function ensureUser() {
  if ($("user").value) return $("user").value;
  const id = "playground-" + Math.random().toString(36).slice(2, 10);
  const option = new Option(id + " (new)", id, true, true);
  $("user").add(option);
  if (lastRequest) lastRequest.user_id = id;
  return id;
}

async function sendEvent(kind, productId) {
  const userId = ensureUser();
  const watch = { ...(lastRequest || searchRequest()), user_id: userId };
  status(`sending a ${kind} event for ${productId}…`);
  try {
    const answer = await api("/api/events", { event_type: kind, user_id: userId, product_id: productId,
                                              query: watch.query, request_id: lastRequestId, watch });
    lastRequest = watch;
    show(answer.response, lastRanks);
    status(answer.visible
      ? `${kind} event → visible in the answer after ${answer.elapsed_ms.toFixed(0)} ms`
      : `${kind} event sent; not visible after ${answer.elapsed_ms.toFixed(0)} ms`, !answer.visible);
  } catch (err) {
    status(err.message, true);
  }
}

async function init() {
  $("search-form").addEventListener("submit", search);
  $("prev").addEventListener("click", () => turnPage(-1));
  $("next").addEventListener("click", () => turnPage(1));
  try {
    const info = await api("/api/info");
    for (const user of info.users) $("user").add(new Option(user, user));
    status(`${info.users.length} users with a history to pick from`);
  } catch (err) {
    status(err.message, true);
  }
}

init();
