/* glassgpt's circuit view: hover an edge or a node for its numbers, click a head to open it in
   the attention view of the same page. Plain JavaScript, no library, no network; the numbers are
   the SVG's own data- attributes, written by glassgpt/circuits/view.py. */
(function () {
  "use strict";
  function start(root) {
    if (root.getAttribute("data-state")) return;
    var info = root.querySelector(".gg-info"), svg = root.querySelector("svg");
    function describe(e) {
      var t = e.querySelector("title");
      return t ? t.textContent : "";
    }
    function light(node, on) {  // a node's edges, in and out
      var name = node.getAttribute("data-node");
      Array.prototype.forEach.call(svg.querySelectorAll(".gg-edge"), function (e) {
        var dst = (e.getAttribute("data-dst") || "").split(":")[0];
        e.classList.toggle("gg-lit", on && (e.getAttribute("data-src") === name || dst === name));
      });
    }
    function hover(ev) {
      var target = ev.target.closest ? ev.target.closest(".gg-edge, .gg-node") : null;
      if (!target) return;
      info.textContent = describe(target);
      if (target.classList.contains("gg-node")) light(target, true);
    }
    function leave(ev) {
      var target = ev.target.closest ? ev.target.closest(".gg-node") : null;
      if (target) light(target, false);
    }
    function open(node) {
      if (!node || !node.hasAttribute("data-head")) return;
      var layer = +node.getAttribute("data-layer"), head = +node.getAttribute("data-head");
      Array.prototype.forEach.call(svg.querySelectorAll(".gg-node"), function (n) { n.setAttribute("aria-pressed", String(n === node)); });
      root.setAttribute("data-opened", node.getAttribute("data-node"));
      var view = document.querySelector(".gg-view");
      if (view && view.ggView) {
        view.ggView.tab("attention");
        view.ggView.show(layer, head);
        view.scrollIntoView({ block: "start" });
      } else {
        location.hash = "layer=" + layer + "&head=" + head;  // the attention view opens it once it is ready
      }
    }
    svg.addEventListener("mouseover", hover);
    svg.addEventListener("focusin", hover);
    svg.addEventListener("mouseout", leave);
    svg.addEventListener("focusout", leave);
    svg.addEventListener("click", function (ev) { open(ev.target.closest ? ev.target.closest(".gg-node") : null); });
    svg.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" || ev.key === " ") { open(ev.target.closest ? ev.target.closest(".gg-node") : null); ev.preventDefault(); }
    });
    var only = root.querySelector(".gg-only");
    if (only) only.addEventListener("change", function () { root.classList.toggle("gg-circuit-only", only.checked); });
    root.setAttribute("data-state", "ready");
  }
  function startAll() { Array.prototype.forEach.call(document.querySelectorAll(".gg-circuit-view"), start); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", startAll); else startAll();
})();
