// Remote debug page: what lists.js does not: the snapshot dialog's default name, copying the
// SSH command.
(function () {
  "use strict";
  function slug(text) {
    return (text || "snapshot").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "") || "snapshot";
  }
  document.querySelectorAll(".snapshot-button").forEach(function (button) {
    button.addEventListener("click", function () {
      document.getElementById("snapshot-name").value = slug(button.dataset.name);
    });
  });
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
})();
