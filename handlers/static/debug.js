// Remote debug page: dialogs, batch selection, copying the SSH command, live states.
(function () {
  "use strict";
  var page = document.getElementById("debug-page");
  if (!page) { return; }
  var prefix = page.dataset.api.replace(/api\/$/, "");

  function slug(text) {
    return (text || "snapshot").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "") || "snapshot";
  }

  document.querySelectorAll(".snapshot-button").forEach(function (button) {
    button.addEventListener("click", function () {
      var form = document.getElementById("snapshot-form");
      form.action = prefix + "debug/" + button.dataset.session + "/snapshot";
      form.querySelector(".session-id").textContent = button.dataset.session;
      form.querySelector("#snapshot-name").value = slug(button.dataset.name);
    });
  });
  document.querySelectorAll(".terminate-button").forEach(function (button) {
    button.addEventListener("click", function () {
      var form = document.getElementById("terminate-form");
      form.action = prefix + "debug/" + button.dataset.session + "/terminate";
      form.querySelector(".session-id").textContent = button.dataset.session;
    });
  });

  var boxes = document.querySelectorAll(".select-session");
  var deleteButton = document.getElementById("delete-selected");
  function updateSelection() {
    deleteButton.disabled = !Array.prototype.some.call(boxes, function (b) { return b.checked; });
  }
  boxes.forEach(function (b) { b.addEventListener("change", updateSelection); });
  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      boxes.forEach(function (b) { b.checked = all.checked; });
      updateSelection();
    });
  }

  document.querySelectorAll(".copy-ssh").forEach(function (button) {
    button.addEventListener("click", function () {
      var command = button.parentElement.querySelector(".ssh-command");
      var done = function () { button.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(command.textContent).then(done);
        return;
      }
      // plain http: select the text and copy it the old way
      var range = document.createRange();
      range.selectNodeContents(command);
      window.getSelection().removeAllRanges();
      window.getSelection().addRange(range);
      if (document.execCommand("copy")) { done(); }
    });
  });

  // While something is starting or being saved, follow it and show the new state.
  function states() {
    var seen = {};
    document.querySelectorAll("[data-session][data-state]").forEach(function (row) {
      seen["s:" + row.dataset.session] = row.dataset.state;
    });
    document.querySelectorAll("[data-image][data-state]").forEach(function (row) {
      seen["i:" + row.dataset.image] = row.dataset.state;
    });
    return seen;
  }
  var shown = states();
  var pending = Object.keys(shown).some(function (k) {
    return shown[k] === "starting" || shown[k] === "saving";
  });
  if (!pending) { return; }
  // scripted requests signed in by cookie must carry the XSRF token (JupyterHub's rule)
  var headers = { "X-XSRFToken": (window.jhdata || {}).xsrf_token || "" };
  function get(path) {
    return fetch(page.dataset.api + path, { credentials: "same-origin", headers: headers })
      .then(function (r) { return r.json(); });
  }
  var timer = setInterval(function () {
    Promise.all([get("debug"), get("images")]).then(function (answers) {
      var changed = answers[0].sessions.some(function (s) {
        return ("s:" + s.id) in shown && shown["s:" + s.id] !== s.state;
      }) || answers[1].images.some(function (i) {
        return ("i:" + i.id) in shown && shown["i:" + i.id] !== i.state;
      });
      if (changed) { clearInterval(timer); window.location.reload(); }
    }).catch(function () { /* keep trying; the next poll may succeed */ });
  }, 2000);
})();
