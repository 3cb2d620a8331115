// Lists of workloads (remote debug, training jobs): confirmation dialogs, batch selection,
// and live states. The page root carries data-api (the service's API URL), data-poll
// ("path:key ..." lists to watch) and data-pending (states that are still changing).
(function () {
  "use strict";
  var page = document.querySelector("[data-live-list]");
  if (!page) { return; }

  // A button that opens a confirmation dialog tells it which form action and ID to use.
  document.querySelectorAll("[data-bs-toggle=modal][data-action]").forEach(function (button) {
    button.addEventListener("click", function () {
      var dialog = document.querySelector(button.dataset.bsTarget);
      var form = dialog.querySelector("form");
      if (form) { form.action = button.dataset.action; }
      dialog.querySelectorAll(".item-id").forEach(function (el) { el.textContent = button.dataset.id; });
    });
  });

  // Multi-select for batch delete.
  var boxes = document.querySelectorAll(".select-item");
  var deleteButton = document.getElementById("delete-selected");
  function updateSelection() {
    if (deleteButton) {
      deleteButton.disabled = !Array.prototype.some.call(boxes, function (b) { return b.checked; });
    }
  }
  boxes.forEach(function (b) { b.addEventListener("change", updateSelection); });
  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      boxes.forEach(function (b) { b.checked = all.checked; });
      updateSelection();
    });
  }

  // While something is still changing, follow it and show the new state.
  var pendingStates = (page.dataset.pending || "").split(",");
  function shown() {
    var seen = {};
    document.querySelectorAll("[data-item][data-state]").forEach(function (row) {
      seen[row.dataset.item] = row.dataset.state + "|" + (row.dataset.position || "");
    });
    return seen;
  }
  var before = shown();
  var pending = Object.keys(before).some(function (k) {
    return pendingStates.indexOf(before[k].split("|")[0]) >= 0;
  });
  if (!pending) { return; }
  // scripted requests signed in by cookie must carry the XSRF token (JupyterHub's rule)
  var headers = { "X-XSRFToken": (window.jhdata || {}).xsrf_token || "" };
  var watched = (page.dataset.poll || "").split(" ").filter(Boolean).map(function (spec) {
    return spec.split(":");
  });
  var timer = setInterval(function () {
    Promise.all(watched.map(function (w) {
      return fetch(page.dataset.api + w[0], { credentials: "same-origin", headers: headers })
        .then(function (r) { return r.json(); })
        .then(function (body) { return body[w[1]]; });
    })).then(function (lists) {
      var changed = lists.some(function (items) {
        return items.some(function (item) {
          var key = String(item.id);
          return key in before && before[key] !== item.state + "|" + (item.position || "");
        });
      });
      if (changed) { clearInterval(timer); window.location.reload(); }
    }).catch(function () { /* keep trying; the next poll may succeed */ });
  }, 2000);
})();
