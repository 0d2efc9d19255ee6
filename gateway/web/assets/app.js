// imagegate's only script. Every page works without it; it enhances
// forms in place: the cookie banner without a reload, the generator with
// progress and copy-link, and it reports a page view to the first-party
// analytics only when the visitor allowed it (no GPC, no Do Not Track).
"use strict";
(function () {
  const doc = document;

  function privacySignal() {
    return navigator.globalPrivacyControl === true || navigator.doNotTrack === "1";
  }

  function countView() {
    if (doc.body.dataset.count !== "on" || privacySignal()) return;
    fetch("/v1/analytics/pageview", {
      method: "POST", credentials: "same-origin", keepalive: true,
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ path: location.pathname }),
    }).catch(function () {});
  }

  async function errorMessage(resp) {
    try {
      const body = await resp.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch (e) { /* not JSON */ }
    return "Something went wrong (" + resp.status + "). Please try again.";
  }

  // Cookie choices: the banner and the preferences page.
  function initConsent(form) {
    form.addEventListener("submit", async function (ev) {
      const choice = ev.submitter ? ev.submitter.value : "save";
      ev.preventDefault();
      const box = function (name) {
        const el = form.elements.namedItem(name);
        return !!(el && el.checked && !el.disabled);
      };
      let prefs = box("preferences"), analytics = box("analytics");
      if (choice === "accept") { prefs = true; analytics = true; }
      if (choice === "reject") { prefs = false; analytics = false; }
      const resp = await fetch("/v1/consent", {
        method: "PUT", credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ preferences: prefs, analytics: analytics, source: form.dataset.consent }),
      });
      if (!resp.ok) { form.submit(); return; }
      const state = await resp.json();
      if (form.dataset.consent === "banner") {
        const banner = doc.getElementById("cookie-banner");
        if (banner) banner.remove();
        doc.getElementById("main").focus();
      } else {
        const p = form.elements.namedItem("preferences"), a = form.elements.namedItem("analytics");
        if (p) p.checked = state.preferences;
        if (a) a.checked = state.analytics;
        const note = doc.getElementById("consent-state");
        if (note) note.textContent = "Saved: preferences " + (state.preferences ? "on" : "off") + ", analytics " + (state.analytics ? "on" : "off") + ".";
      }
      if (state.preferences) doc.body.dataset.prefs = "on";
      else delete doc.body.dataset.prefs;
      if (state.analytics) {
        doc.body.dataset.count = "on";
        countView();
      } else {
        delete doc.body.dataset.count;
      }
    });
  }

  // Copy-link buttons are hidden without script, which could not copy.
  function initCopy(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (btn) {
      btn.hidden = false;
      btn.addEventListener("click", async function () {
        const label = btn.textContent;
        try {
          await navigator.clipboard.writeText(btn.dataset.copy);
          btn.textContent = "Copied";
        } catch (e) {
          btn.textContent = "Copy failed";
        }
        setTimeout(function () { btn.textContent = label; }, 2000);
      });
    });
  }

  function el(tag, attrs, text) {
    const e = doc.createElement(tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    if (text) e.textContent = text;
    return e;
  }

  function showResults(prompt, data) {
    const list = doc.getElementById("results");
    list.replaceChildren();
    const loads = data.map(function (d) {
      const li = el("li", { class: "card" });
      const img = el("img", { src: d.url, alt: "Generated image: " + prompt });
      const actions = el("p", { class: "actions" });
      actions.append(el("a", { class: "btn", href: d.url, download: "" }, "Download"),
        el("button", { class: "btn copy", type: "button", "data-copy": d.url }, "Copy link"),
        el("a", { href: d.url }, "Link"),
        el("span", { class: "hint" }, "seed " + d.seed));
      li.append(img, actions);
      list.append(li);
      return img.decode().catch(function () {});
    });
    initCopy(list);
    return Promise.all(loads);
  }

  // The preferences cookie remembers the generator's model, style and
  // size — only when the visitor allowed preference cookies.
  const prefsCookie = "__Host-imagegate_prefs";

  function loadPrefs(form) {
    if (doc.body.dataset.prefs !== "on") return;
    const c = doc.cookie.split("; ").find(function (kv) { return kv.startsWith(prefsCookie + "="); });
    if (!c) return;
    const p = new URLSearchParams(decodeURIComponent(c.slice(prefsCookie.length + 1)));
    for (const name of ["model", "style", "size"]) {
      const el = form.elements.namedItem(name), v = p.get(name);
      if (el && v !== null && Array.from(el.options).some(function (o) { return o.value === v; })) el.value = v;
    }
  }

  function savePrefs(form) {
    if (doc.body.dataset.prefs !== "on") return;
    const p = new URLSearchParams();
    for (const name of ["model", "style", "size"]) p.set(name, form.elements.namedItem(name).value);
    doc.cookie = prefsCookie + "=" + encodeURIComponent(p.toString()) + "; Path=/; Max-Age=31536000; Secure; SameSite=Lax";
  }

  // readStream reads a generation's server-sent events: progress moves the
  // bar, completed events collect the images, an error event throws.
  async function readStream(resp, bar) {
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    const images = [];
    let buf = "";
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) break;
      buf += dec.decode(chunk.value, { stream: true });
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const line = block.split("\n").find(function (l) { return l.startsWith("data: "); });
        if (!line) continue; // a keep-alive comment
        const ev = JSON.parse(line.slice(6));
        if (ev.type === "imagegate.progress") bar.value = ev.progress;
        else if (ev.type === "image_generation.completed") images[ev.image_index] = { url: ev.url, seed: ev.seed };
        else if (ev.type === "error") throw new Error(ev.error.message);
      }
    }
    return images.filter(Boolean);
  }

  // The generator: the same fields the form posts, sent to the JSON API
  // (streamed, for live progress) or, with a reference image, the
  // multipart edit API.
  function initGenerator(form) {
    const progress = doc.getElementById("progress");
    const bar = doc.getElementById("progress-bar");
    const text = doc.getElementById("progress-text");
    const errorBox = doc.getElementById("gen-error");
    const button = doc.getElementById("generate");
    const result = doc.getElementById("result");
    loadPrefs(form);
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      savePrefs(form);
      const f = form.elements;
      const prompt = f.prompt.value;
      const file = f.image && f.image.files.length ? f.image.files[0] : null;
      let req;
      if (file) {
        const body = new FormData();
        for (const name of ["prompt", "model", "style", "size", "n", "seed", "strength"]) {
          if (f[name].value !== "") body.append(name, f[name].value);
        }
        body.append("image", file);
        req = fetch("/v1/images/edits", { method: "POST", credentials: "same-origin", body: body });
      } else {
        const body = { prompt: prompt, model: f.model.value, size: f.size.value, n: Number(f.n.value || 1), stream: true };
        if (f.style.value) body.style = f.style.value;
        if (f.seed.value !== "") body.seed = Number(f.seed.value);
        req = fetch("/v1/images/generations", {
          method: "POST", credentials: "same-origin",
          headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        });
      }
      const started = performance.now();
      const tick = function () {
        text.textContent = "Generating… " + ((performance.now() - started) / 1000).toFixed(1) + " s";
      };
      errorBox.hidden = true;
      button.disabled = true;
      form.setAttribute("aria-busy", "true");
      tick();
      bar.removeAttribute("value"); // indeterminate until the first progress
      progress.hidden = false;
      const timer = setInterval(tick, 100);
      try {
        const resp = await req;
        if (!resp.ok) throw new Error(await errorMessage(resp));
        const streamed = (resp.headers.get("Content-Type") || "").startsWith("text/event-stream");
        const data = streamed ? await readStream(resp, bar) : ((await resp.json()).data || []);
        text.textContent = "Loading the image…";
        await showResults(prompt, data);
        result.hidden = false;
        result.querySelector("h2").focus && result.scrollIntoView({ block: "nearest" });
      } catch (e) {
        errorBox.textContent = e.message || "The request failed; check your connection.";
        errorBox.hidden = false;
      } finally {
        clearInterval(timer);
        progress.hidden = true;
        button.disabled = false;
        form.removeAttribute("aria-busy");
      }
    });
  }

  function init() {
    doc.querySelectorAll("form[data-consent]").forEach(initConsent);
    const gen = doc.getElementById("gen");
    if (gen) initGenerator(gen);
    initCopy(doc);
    countView();
  }

  if (doc.readyState === "loading") doc.addEventListener("DOMContentLoaded", init);
  else init();
})();
