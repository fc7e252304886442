// Metatron console: its only script, a progressive enhancement; every page works without
// it. On the audit page it tails the live audit stream and adds new entries at the top of
// the table; on the deals board it lets a deal card be dragged onto another stage's column. fetch() rather than EventSource: the stream names each event by its action,
// and EventSource cannot listen to event names it does not know in advance.
(function () {
  "use strict";
  var body = document.querySelector("tbody[data-live]");
  if (!body || !window.fetch || !window.TextDecoder || !window.ReadableStream) return;
  var url = body.getAttribute("data-live");
  var last = null;
  var ends = ["dropped", "expired", "revoked", "error"];

  function cell(row, text, asCode) {
    var td = document.createElement("td");
    var inner = td;
    if (asCode) {
      inner = document.createElement("code");
      td.appendChild(inner);
    }
    inner.textContent = text;
    row.appendChild(td);
  }

  function add(entry) {
    var row = document.createElement("tr");
    row.className = "live";
    cell(row, String(entry.occurred_at || "").replace("T", " ").slice(0, 16));
    row.firstChild.className = "when";
    var who = document.createElement("td");
    who.textContent = ((entry.actor && entry.actor.name) || "") + " ";
    var badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = entry.actor ? entry.actor.role : "";
    who.appendChild(badge);
    row.appendChild(who);
    cell(row, entry.action || "", true);
    cell(row, entry.target || "");
    cell(row, (entry.changed || []).join(", "));
    cell(row, entry.ip || "");
    body.insertBefore(row, body.firstChild);
  }

  function handle(block) {
    var event = "message", data = [];
    block.split("\n").forEach(function (line) {
      if (line.indexOf("event:") === 0) event = line.slice(6).trim();
      else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
      else if (line.indexOf("id:") === 0) last = line.slice(3).trim();
    });
    if (!data.length || ends.indexOf(event) >= 0) return;
    try { add(JSON.parse(data.join("\n"))); } catch (e) { /* not an entry */ }
  }

  function connect(delay) {
    setTimeout(function () {
      var headers = last ? { "Last-Event-ID": last } : {};
      fetch(url, { headers: headers, credentials: "same-origin" }).then(function (res) {
        var type = res.headers.get("content-type") || "";
        // A login page or an error instead of the stream: the session ended; stop.
        if (!res.ok || type.indexOf("text/event-stream") !== 0 || !res.body) return;
        // From here on every new entry arrives (styles and tests can tell the tail is live).
        body.setAttribute("data-connected", "");
        var reader = res.body.getReader(), decoder = new TextDecoder(), buffer = "";
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) { body.removeAttribute("data-connected"); connect(1000); return; }
            buffer += decoder.decode(chunk.value, { stream: true });
            var blocks = buffer.split("\n\n");
            buffer = blocks.pop();
            blocks.forEach(handle);
            return pump();
          });
        }
        return pump();
      }).catch(function () { connect(5000); });
    }, delay);
  }

  connect(0);
})();

// Deals board: drag a card onto another column. The drop fills in the card's own "Move to"
// form (the one used without JavaScript) and submits it, so the server has one way to move a
// deal, CSRF token and version check included.
(function () {
  "use strict";
  var columns = document.querySelectorAll(".board section.column[data-stage]");
  if (!columns.length || !("draggable" in document.createElement("span"))) return;
  var dragged = null;

  Array.prototype.forEach.call(document.querySelectorAll(".board article.deal"), function (card) {
    var form = card.querySelector("form");
    var choice = form && form.querySelector("select[name=stage_id]");
    if (!choice) return;
    card.setAttribute("draggable", "true");
    card.classList.add("draggable");
    card.addEventListener("dragstart", function (e) {
      dragged = card;
      card.classList.add("dragging");
      e.dataTransfer.effectAllowed = "move";
      // Firefox starts a drag only with some data set.
      e.dataTransfer.setData("text/plain", card.querySelector("h3") ? card.querySelector("h3").textContent : "");
    });
    card.addEventListener("dragend", function () {
      card.classList.remove("dragging");
      dragged = null;
      Array.prototype.forEach.call(columns, function (c) { c.classList.remove("drop-target"); });
    });
  });

  Array.prototype.forEach.call(columns, function (column) {
    var stage = column.getAttribute("data-stage");
    function accepts() {
      if (!dragged) return false;
      var choice = dragged.querySelector("select[name=stage_id]");
      return choice && choice.value !== stage;
    }
    column.addEventListener("dragover", function (e) {
      if (!accepts()) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = "move";
      column.classList.add("drop-target");
    });
    column.addEventListener("dragleave", function (e) {
      if (!column.contains(e.relatedTarget)) column.classList.remove("drop-target");
    });
    column.addEventListener("drop", function (e) {
      if (!accepts()) return;
      e.preventDefault();
      var form = dragged.querySelector("form");
      var choice = form.querySelector("select[name=stage_id]");
      choice.value = stage;
      if (choice.value !== stage) return; // no such option: leave it to the form
      column.appendChild(dragged);
      dragged.classList.add("moving");
      form.submit();
    });
  });
})();
