// Log page: follows a growing log without a reload, by polling the JSON API with a byte offset.
(function () {
  "use strict";
  var page = document.getElementById("log-page");
  if (!page || !page.dataset.api) { return; }
  var view = document.getElementById("log");
  var badge = document.getElementById("log-state");
  var MAX_CHARS = 2000000; // the page keeps the last ~2 MB; the download has everything
  var FAR_BEHIND = 4 * 1024 * 1024; // further behind than this: jump to the end
  var offset = Number(page.dataset.offset);
  var jump = false;
  var failures = 0;
  var pendingReturn = false;
  // scripted requests signed in by cookie must carry the XSRF token (JupyterHub's rule)
  var headers = { "X-XSRFToken": (window.jhdata || {}).xsrf_token || "" };

  // finished lines, and the line being written (a progress bar redraws it after "\r")
  var text = view.textContent;
  var cut = text.lastIndexOf("\n") + 1;
  var lines = document.createTextNode(text.slice(0, cut));
  var current = document.createTextNode(text.slice(cut));
  view.replaceChildren(lines, current);
  view.scrollTop = view.scrollHeight;

  function show(id, visible) { document.getElementById(id).hidden = !visible; }

  function setState(label, style) {
    badge.textContent = label;
    badge.className = "badge " + style;
  }

  function humanSize(n) {
    var units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? n + " bytes" : n.toFixed(1) + " " + units[i];
  }

  function append(more) {
    if (pendingReturn) { more = "\r" + more; pendingReturn = false; }
    if (more.endsWith("\r")) { pendingReturn = true; more = more.slice(0, -1); } // "\r\n" split in two
    more.replace(/\r\n/g, "\n").split("\n").forEach(function (part, i) {
      if (i > 0) { lines.appendData(current.data + "\n"); current.data = ""; }
      var back = part.lastIndexOf("\r");
      current.data = back < 0 ? current.data + part : part.slice(back + 1);
    });
    if (lines.length > MAX_CHARS) {
      var keep = lines.data.indexOf("\n", lines.length - MAX_CHARS * 0.8) + 1;
      lines.deleteData(0, keep);
      show("log-skipped", true);
    }
  }

  function poll() {
    var url = page.dataset.api + (page.dataset.api.indexOf("?") < 0 ? "?" : "&") + (jump ? "" : "offset=" + offset);
    fetch(url, { credentials: "same-origin", headers: headers, cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (answer) {
        var atBottom = view.scrollTop + view.clientHeight >= view.scrollHeight - 8;
        if (answer.reset) {
          lines.data = ""; current.data = ""; pendingReturn = false;
        } else if (answer.start > offset) {
          append("\n[… " + humanSize(answer.start - offset) + " not shown: download the whole log …]\n");
          show("log-skipped", true);
        }
        var moved = answer.offset !== offset || answer.reset;
        append(answer.text);
        offset = answer.offset;
        jump = answer.size - offset > FAR_BEHIND;
        failures = 0;
        if (answer.text) { show("log-empty", false); }
        document.getElementById("log-size").textContent = humanSize(answer.size);
        if (atBottom) { view.scrollTop = view.scrollHeight; }
        if (answer.done && (offset >= answer.size || !moved)) {
          setState("ended", "text-bg-secondary");
          show("log-follow-note", false);
          return;
        }
        setState("following", "text-bg-success");
        var behind = offset < answer.size;
        setTimeout(poll, behind ? 0 : document.hidden ? 5000 : 1000);
      })
      .catch(function () {
        failures += 1;
        setState("reconnecting…", "text-bg-warning");
        setTimeout(poll, Math.min(30000, 1000 * Math.pow(2, failures)));
      });
  }

  if (page.dataset.done !== "true") { setTimeout(poll, 1000); }
})();
