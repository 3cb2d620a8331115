// High-speed cache pages: progress bars and states follow the copy live (no reload).
(function () {
  "use strict";
  var page = document.getElementById("caches-page");
  if (!page) { return; }
  var bars = document.querySelectorAll(".cache-progress");
  var moving = function () {
    return Array.prototype.some.call(document.querySelectorAll(".cache-progress"), function (el) {
      return el.dataset.state === "queued" || el.dataset.state === "copying";
    });
  };
  if (!bars.length || !moving()) { return; }
  // scripted requests signed in by cookie must carry the XSRF token (JupyterHub's rule)
  var headers = { "X-XSRFToken": (window.jhdata || {}).xsrf_token || "" };
  var colours = { ready: "success", copying: "primary", queued: "secondary", failed: "danger", cancelled: "dark" };

  function size(n) {
    var units = ["Bytes", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function show(cache) {
    var p = cache.progress;
    document.querySelectorAll('.cache-progress[data-cache="' + cache.id + '"]').forEach(function (el) {
      el.dataset.state = cache.state;
      el.querySelector(".progress-bar").style.width = p.percent + "%";
      el.querySelector(".progress").setAttribute("aria-valuenow", p.percent);
      el.querySelector(".percent").textContent = p.percent + "%";
      el.querySelector(".bytes").textContent = size(p.bytes_done) + " of " + size(p.bytes_total);
      el.querySelector(".files").textContent = p.files_done + " of " + p.files_total + " files";
      el.querySelector(".rate").textContent = cache.state === "copying" && p.rate_bps ? " · " + size(p.rate_bps) + "/s" : "";
      el.querySelector(".eta").textContent = p.seconds_left !== null ? " · " + p.seconds_left + " s left" : "";
      if (cache.error && !el.querySelector(".cache-error")) {
        var err = document.createElement("div");
        err.className = "small text-danger cache-error";
        err.textContent = cache.error;
        el.appendChild(err);
      }
    });
    document.querySelectorAll('[data-item="' + cache.id + '"] .cache-state').forEach(function (badge) {
      badge.textContent = cache.state;
      badge.className = "badge text-bg-" + colours[cache.state] + " cache-state";
    });
  }

  var timer = setInterval(function () {
    var ids = Array.prototype.map.call(document.querySelectorAll(".cache-progress"), function (el) {
      return el.dataset.cache;
    });
    Promise.all(ids.filter(function (id, i) { return ids.indexOf(id) === i; }).map(function (id) {
      return fetch(page.dataset.api + "caches/" + id, { credentials: "same-origin", headers: headers })
        .then(function (r) { return r.ok ? r.json() : null; });
    })).then(function (caches) {
      caches.forEach(function (c) { if (c) { show(c); } });
      if (!moving()) { clearInterval(timer); }
    }).catch(function () { /* keep trying; the next poll may succeed */ });
  }, 1000);
})();
