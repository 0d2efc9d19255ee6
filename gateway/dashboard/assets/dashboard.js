/* imagegate dashboard: copy buttons for the embed snippets. */
(function () {
  "use strict";
  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    b.hidden = false;
    b.addEventListener("click", function () {
      var field = document.getElementById(b.dataset.copy);
      field.select();
      var done = function () { b.textContent = "Copied"; };
      if (navigator.clipboard) navigator.clipboard.writeText(field.value).then(done, function () {});
      else if (document.execCommand("copy")) done();
    });
  });
})();
