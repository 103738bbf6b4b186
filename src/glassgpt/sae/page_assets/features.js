// The SAE feature page (glassgpt.sae.page): draws the features from the page's data, a hundred at a
// time, and finds them by number or by token. Offline: no request leaves the page. Text from the data
// goes into the page as text nodes only.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("data").textContent);
  var vocab = data.vocab, features = data.features;
  var byNumber = new Map(features.map(function (f) { return [f.i, f]; }));
  var list = document.getElementById("features"), more = document.getElementById("more");
  var search = document.getElementById("search"), order = document.getElementById("order");
  var status = document.getElementById("shown");
  var CHUNK = 100, SVG = "http://www.w3.org/2000/svg";
  var current = [], drawn = 0;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A histogram of the activations: x the activation (log scale, its smallest to its largest,
  // marked under the axis), bar height the number of tokens (the tallest bar's count on the left).
  function histogram(h) {
    var lo = h[0], hi = h[1], counts = h[2], top = Math.max.apply(null, counts) || 1, left = 34;
    var box = svg("svg", {"class": "hist", width: left + counts.length * 6 + 4, height: 50, role: "img",
      "aria-label": "histogram of the activations, 10^" + lo.toFixed(1) + " to 10^" + hi.toFixed(1)});
    counts.forEach(function (c, i) {
      var height = 28 * c / top;
      var bar = svg("rect", {x: left + i * 6, y: 32 - height, width: 5, height: height, fill: "#c55"});
      bar.appendChild(svg("title", {}, c + " tokens"));
      box.appendChild(bar);
    });
    box.appendChild(svg("line", {x1: left, x2: left + counts.length * 6, y1: 32.5, y2: 32.5, stroke: "#999"}));
    var tallest = svg("text", {x: 0, y: 10, "font-size": 9, fill: "#666"}, String(top));
    tallest.appendChild(svg("title", {}, "tokens in the tallest bar"));
    box.appendChild(tallest);
    box.appendChild(svg("text", {x: left, y: 44, "font-size": 9, fill: "#666"}, "10^" + lo.toFixed(1)));
    box.appendChild(svg("text", {x: left + counts.length * 6, y: 44, "font-size": 9, "text-anchor": "end",
      fill: "#666"}, "10^" + hi.toFixed(1)));
    return box;
  }

  function context(f, c) {
    var at = c[0], value = c[1], ids = c[2], shades = c[3];
    var line = el("div", {"class": "ctx"});
    ids.forEach(function (id, k) {
      var span = el("span", {title: "\u2248 " + (shades[k] / 100 * f.m).toFixed(3)}, vocab[id]);
      span.style.background = "rgba(230,80,40," + (shades[k] / 100).toFixed(2) + ")";
      if (k === at) span.className = "peak";
      line.appendChild(span);
    });
    line.appendChild(el("span", {"class": "value"}, value.toFixed(3)));
    return line;
  }

  function labels(ids) { return ids.map(function (id) { return vocab[id]; }).join(" "); }

  function feature(f) {
    var box = el("section", {"class": "feature", id: "f" + f.i, "data-feature": f.i});
    var head = el("header");
    head.appendChild(el("h3", {}, "feature " + f.i));
    head.appendChild(el("span", {"class": "meta"}, "density " + (100 * f.d).toFixed(2) + "%" +
      (f.d > data.dense ? " \u00b7 dense" : "") + " \u00b7 max " + f.m.toFixed(3)));
    if (f.h) head.appendChild(histogram(f.h));
    box.appendChild(head);
    if (f.p) box.appendChild(el("div", {"class": "meta logits"}, "promotes " + labels(f.p) +
      " \u00b7 suppresses " + labels(f.s)));
    f.c.forEach(function (c) { box.appendChild(context(f, c)); });
    return box;
  }

  function norm(label) { return label.replace(/\u2423/g, " ").trim().toLowerCase(); }

  function ordered() {
    var out = features.slice();
    if (order.value === "strongest") out.sort(function (a, b) { return b.m - a.m; });
    if (order.value === "number") out.sort(function (a, b) { return a.i - b.i; });
    return out;
  }

  // The features a query asks for: a number finds that feature; a token, the features whose top
  // contexts peak on it (the most such contexts first), then those whose direction promotes it.
  function find(query) {
    var q = query.trim();
    if (!q) return {found: ordered(), what: "live features"};
    var number = q.replace(/^(#|f|feature\s*)/i, "");
    if (/^\d+$/.test(number)) {
      var f = byNumber.get(Number(number));
      return {found: f ? [f] : [], what: "feature " + number, missing: Number(number) < data.width ?
        "feature " + number + " never fired on the tokens read: it is dead here" :
        "there is no feature " + number + ": the SAE has " + data.width + " (0 to " + (data.width - 1) + ")"};
    }
    var want = norm(q), scored = [];
    ordered().forEach(function (f) {
      var peaks = f.c.filter(function (c) { return norm(vocab[c[2][c[0]]]) === want; }).length;
      var promotes = (f.p || []).some(function (id) { return norm(vocab[id]) === want; });
      if (peaks || promotes) scored.push([2 * peaks + (promotes ? 1 : 0), f]);
    });
    var what = "features peaking on or promoting \u201c" + q + "\u201d";
    if (!scored.length) {  // no such token (a word, for a model of characters): peaks inside the text
      ordered().forEach(function (f) {
        var inside = f.c.filter(function (c) { return peaksInside(c, want); }).length;
        if (inside) scored.push([inside, f]);
      });
      what = "features peaking inside \u201c" + q + "\u201d";
    }
    scored.sort(function (a, b) { return b[0] - a[0]; });
    return {found: scored.map(function (s) { return s[1]; }), what: what,
      missing: "no live feature peaks on, inside or promotes \u201c" + q + "\u201d"};
  }

  // Whether the context's text holds `want` (lower case) over the token where the feature peaks.
  function peaksInside(c, want) {
    var texts = c[2].map(function (id) { return vocab[id].replace(/\u2423/g, " ").toLowerCase(); });
    var start = texts.slice(0, c[0]).join("").length, end = start + texts[c[0]].length;
    var text = texts.join(""), at = text.indexOf(want);
    while (at >= 0) {
      if (at < end && at + want.length > start) return true;
      at = text.indexOf(want, at + 1);
    }
    return false;
  }

  function drawMore() {
    var end = Math.min(current.length, drawn + CHUNK), part = document.createDocumentFragment();
    for (; drawn < end; drawn++) part.appendChild(feature(current[drawn]));
    list.appendChild(part);
    more.hidden = drawn >= current.length;
    more.textContent = "Show more (" + (current.length - drawn) + " left)";
    status.textContent = "showing " + drawn + " of " + current.length + " " + result.what;
  }

  var result = {found: [], what: ""};
  function update() {
    result = find(search.value);
    current = result.found;
    drawn = 0;
    list.textContent = "";
    if (!current.length) list.appendChild(el("p", {"class": "empty"}, result.missing || "nothing to show"));
    drawMore();
  }

  function drawText() {
    var box = document.getElementById("text-tokens");
    if (!box || !data.text) return;
    data.text.forEach(function (entry) {
      var fired = entry[1];
      var link = el("a", {title: fired.map(function (p) { return "feature " + p[0] + ": " + p[1].toFixed(3); })
        .join(", ") || "no feature", "data-features": JSON.stringify(fired)}, vocab[entry[0]]);
      if (fired.length) {
        link.className = "fires";
        link.addEventListener("click", function () { search.value = String(fired[0][0]); update(); list.scrollIntoView(); });
      }
      box.appendChild(link);
    });
  }

  search.addEventListener("input", update);
  order.addEventListener("change", update);
  more.addEventListener("click", drawMore);
  var hash = /^#f(\d+)$/.exec(window.location.hash);
  if (hash) search.value = hash[1];
  drawText();
  update();
  document.body.setAttribute("data-state", "ready");
})();
