/*
 * builder-api browser snippet: forwards console.* and window.onerror from a page under
 * development into the builder API's event stream (POST /log), where agents read them with
 * GET /events?type=browser or live over /ws.
 *
 * Use (served by the daemon itself):
 *   <script src="http://localhost:6666/browser.js"
 *           data-endpoint="http://localhost:6666/log"
 *           data-key="PASSWORD-IF-THE-DAEMON-HAS-ONE"></script>
 *
 * Only for pages under development: the key, when given, is visible in the page source.
 * Entries are batched (at most every 250 ms, 50 per request); the original console keeps working.
 */
(function () {
  "use strict";
  if (window.__builderApiLog) { return; }

  var script = document.currentScript;
  var endpoint = (script && script.getAttribute("data-endpoint")) ||
    (script && script.src ? script.src.replace(/browser\.js(\?.*)?$/, "log") : "http://localhost:6666/log");
  var key = script && script.getAttribute("data-key");
  if (key) { endpoint += (endpoint.indexOf("?") < 0 ? "?" : "&") + "key=" + encodeURIComponent(key); }

  var LEVELS = ["log", "info", "warn", "error", "debug", "trace"];
  var MAX_BATCH = 50;       // entries per request (the daemon accepts up to 100)
  var MAX_QUEUE = 500;      // entries kept while the daemon is unreachable; oldest dropped
  var MAX_TEXT = 8000;      // characters per message (the daemon keeps 8192)
  var FLUSH_MS = 250;
  var queue = [];
  var timer = null;
  var sending = false;

  function text(value) {
    if (typeof value === "string") { return value; }
    if (value instanceof Error) { return value.stack || String(value); }
    try { return JSON.stringify(value); } catch (e) { return String(value); }
  }

  function enqueue(entry) {
    entry.url = String(location.href);
    if (entry.message && entry.message.length > MAX_TEXT) { entry.message = entry.message.slice(0, MAX_TEXT); }
    queue.push(entry);
    if (queue.length > MAX_QUEUE) { queue.splice(0, queue.length - MAX_QUEUE); }
    if (!timer) { timer = setTimeout(flush, FLUSH_MS); }
  }

  function flush() {
    timer = null;
    if (sending || !queue.length) { return; }
    var batch = queue.splice(0, MAX_BATCH);
    sending = true;
    // text/plain keeps this a "simple" CORS request (no preflight); the daemon parses JSON anyway.
    fetch(endpoint, {
      method: "POST", mode: "cors", keepalive: true,
      headers: { "Content-Type": "text/plain" },
      body: JSON.stringify({ entries: batch })
    }).catch(function () { /* the daemon is down: drop this batch, never recurse into console */ })
      .then(function () {
        sending = false;
        if (queue.length && !timer) { timer = setTimeout(flush, FLUSH_MS); }
      });
  }

  LEVELS.forEach(function (level) {
    var original = console[level];
    if (typeof original !== "function") { return; }
    console[level] = function () {
      try {
        var parts = [];
        for (var i = 0; i < arguments.length; i++) { parts.push(text(arguments[i])); }
        enqueue({ level: level, message: parts.join(" ") });
      } catch (e) { /* never break the page's own logging */ }
      return original.apply(console, arguments);
    };
  });

  var previous = window.onerror;
  window.onerror = function (message, source, line, column, error) {
    enqueue({ level: "error", message: text(message), source: source ? String(source) : undefined,
      line: line, column: column, stack: error && error.stack ? String(error.stack) : undefined });
    return typeof previous === "function" ? previous.apply(this, arguments) : false;
  };
  window.addEventListener("unhandledrejection", function (event) {
    enqueue({ level: "error", message: "unhandled rejection: " + text(event.reason) });
  });
  window.addEventListener("pagehide", flush);
  window.__builderApiLog = { flush: flush, endpoint: endpoint.replace(/key=[^&]*/, "key=***") };
})();
