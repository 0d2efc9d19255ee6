/* The imagegate generator inside a partner's page. See package widget. */
(function () {
  "use strict";
  var root = document.getElementById("ig");
  var host = root.dataset.host;
  var results = root.dataset.results === "1";
  var form = document.getElementById("ig-form");
  var prompt = document.getElementById("ig-prompt");
  var size = document.getElementById("ig-size");
  var button = document.getElementById("ig-go");
  var status = document.getElementById("ig-status");
  var out = document.getElementById("ig-out");
  var img = document.getElementById("ig-img");
  var link = document.getElementById("ig-link");

  function tell(msg) {
    if (window.parent !== window) window.parent.postMessage(msg, host);
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    button.disabled = true;
    status.textContent = "Generating…";
    fetch("/v1/images/generations", {
      method: "POST",
      credentials: "omit",
      headers: {
        "Content-Type": "application/json",
        "Imagegate-Key": root.dataset.key,
        "Imagegate-Embed": root.dataset.token
      },
      body: JSON.stringify({ prompt: prompt.value, size: size.value, n: 1 })
    }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw (body && body.error) || { code: "error", message: "Generation failed." };
        return body.data[0];
      });
    }).then(function (d) {
      img.onload = function () {
        status.textContent = "Done.";
        tell(results ? { type: "imagegate:generated", url: d.url, seed: d.seed } : { type: "imagegate:generated" });
      };
      img.alt = "Generated image";
      img.src = d.url;
      link.href = d.url;
      out.hidden = false;
    }).catch(function (e) {
      status.textContent = (e && e.message) || "Something went wrong; try again.";
      tell({ type: "imagegate:error", code: String((e && e.code) || "error") });
    }).then(function () {
      button.disabled = false;
    });
  });

  window.addEventListener("message", function (e) {
    if (e.source !== window.parent || e.origin !== host) return;
    var d = e.data;
    if (d && d.type === "imagegate:set-prompt" && typeof d.prompt === "string") {
      prompt.value = d.prompt.slice(0, 2000);
    }
  });

  new ResizeObserver(function () {
    tell({ type: "imagegate:resize", height: document.documentElement.scrollHeight });
  }).observe(document.body);
  tell({ type: "imagegate:ready" });
})();
