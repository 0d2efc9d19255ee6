/* imagegate embed widget. Usage:
   <div id="imagegate"></div>
   <script src="https://GATEWAY/embed.js" data-key="pk_…" data-target="imagegate" async></script>
   Optional: data-results="1" to receive {url, seed} with imagegate:generated. */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || !script.dataset.key) return;
  var base = new URL(script.src).origin;
  var results = script.dataset.results === "1";
  var frame = document.createElement("iframe");
  var query = "key=" + encodeURIComponent(script.dataset.key) +
    "&origin=" + encodeURIComponent(window.location.origin) + (results ? "&results=1" : "");
  frame.src = base + "/embed/frame?" + query;
  frame.title = script.dataset.title || "Image generator";
  frame.style.cssText = "display:block;width:100%;max-width:100%;height:420px;border:0;";
  var target = script.dataset.target ? document.getElementById(script.dataset.target) : null;
  if (target) target.appendChild(frame);
  else script.parentNode.insertBefore(frame, script);

  // What each event may carry to the host page; anything else is dropped.
  function detail(d) {
    switch (d.type) {
      case "imagegate:ready": return {};
      case "imagegate:resize": return { height: Number(d.height) || 0 };
      case "imagegate:error": return { code: String(d.code || "error") };
      case "imagegate:generated":
        return results && typeof d.url === "string" ? { url: d.url, seed: Number(d.seed) } : {};
    }
    return null;
  }

  window.addEventListener("message", function (e) {
    if (e.origin !== base || e.source !== frame.contentWindow) return;
    var d = e.data;
    if (!d || typeof d !== "object" || typeof d.type !== "string") return;
    var out = detail(d);
    if (!out) return;
    if (d.type === "imagegate:resize" && out.height > 0) {
      frame.style.height = Math.min(Math.ceil(out.height), 4000) + "px";
    }
    frame.dispatchEvent(new CustomEvent(d.type, { bubbles: true, detail: out }));
  });
})();
