/* glassgpt's offline view: attention, logit lens, per-token loss, per-head scores.
   Plain JavaScript, no library, no network. Each .gg-view root holds its numbers in
   <script type="application/json" class="gg-data">; see glassgpt/analysis/view.py. */
(function () {
  "use strict";
  var LEVELS = 255;

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) if (attrs[k] !== null && attrs[k] !== undefined) e.setAttribute(k, attrs[k]);
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function fmt(w) { return w.toFixed(3); }
  function shown(label) { return label.replace(/\u2423/g, "\u00a0"); }  // a space token: a blank box
  function blue(w) {  // white -> #08306b
    var a = Math.max(0, Math.min(1, w));
    return "rgb(" + Math.round(255 - 247 * a) + "," + Math.round(255 - 207 * a) + "," + Math.round(255 - 148 * a) + ")";
  }
  function red(w) {  // white -> #b2182b
    var a = Math.max(0, Math.min(1, w));
    return "rgb(" + Math.round(255 - 77 * a) + "," + Math.round(255 - 231 * a) + "," + Math.round(255 - 212 * a) + ")";
  }
  function ink(a) { return a > 0.55 ? "#fff" : "#1d2330"; }

  function inflate(b64) {
    if (typeof DecompressionStream === "undefined")
      return Promise.reject(new Error("this browser cannot unpack the attention data (it has no DecompressionStream): open the page in a recent Chromium, Firefox or Safari"));
    var bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Response(stream).arrayBuffer().then(function (b) { return new Uint8Array(b); });
  }

  function hashRequest() {  // report.html#layer=1&head=2 opens that head
    var m = /layer=(-?\d+)/.exec(location.hash || ""), n = /head=(-?\d+)/.exec(location.hash || "");
    return m || n ? { layer: m ? parseInt(m[1], 10) : 0, head: n ? parseInt(n[1], 10) : 0 } : null;
  }

  function View(root, data, bytes) {
    var d = data, T = d.T, L = d.L, H = d.H, N = T * (T + 1) / 2, self = this;
    this.root = root;
    function weight(l, h, q, k) { return k > q ? 0 : bytes[(l * H + h) * N + q * (q + 1) / 2 + k] / LEVELS; }
    this.weight = weight;
    var tok = function (i) { return d.tokens[i]; };
    var vocab = function (id) { var v = d.vocab[String(id)]; return v === undefined ? "#" + id : v; };

    root.textContent = "";
    if (d.title) root.appendChild(el("p", { "class": "gg-note" }, d.title));
    var tabs = el("div", { "class": "gg-tabs", role: "tablist" }), panels = {};
    root.appendChild(tabs);
    var names = [["attention", "Attention"], ["lens", "Logit lens"], ["loss", "Per-token loss"], ["scores", "Per-head scores"]];
    names.forEach(function (n) {
      var b = el("button", { type: "button", role: "tab", "data-tab": n[0], "aria-selected": "false" }, n[1]);
      b.addEventListener("click", function () { self.tab(n[0]); });
      tabs.appendChild(b);
      panels[n[0]] = el("div", { "class": n[0] === "attention" ? "gg-panel gg-attention" : "gg-panel gg-panel-" + n[0], role: "tabpanel", hidden: "" });
      root.appendChild(panels[n[0]]);
    });
    this.tab = function (name) {
      names.forEach(function (n) {
        tabs.querySelector("[data-tab=" + n[0] + "]").setAttribute("aria-selected", String(n[0] === name));
        if (n[0] === name) panels[n[0]].removeAttribute("hidden"); else panels[n[0]].setAttribute("hidden", "");
      });
      root.setAttribute("data-tab", name);
    };

    // ------------------------------------------------------------ attention
    var A = panels.attention, state = { layer: 0, head: 0, mode: "from", sel: -1, pinned: false, zoom: 0 };
    var controls = el("div", { "class": "gg-controls" });
    var layerSel = el("select", { "aria-label": "layer", "class": "gg-layer" }), headSel = el("select", { "aria-label": "head", "class": "gg-head" });
    for (var l = 0; l < L; l++) layerSel.appendChild(el("option", { value: l }, "layer " + l));
    for (var h = 0; h < H; h++) headSel.appendChild(el("option", { value: h }, "head " + h));
    var modes = el("span");
    [["from", "where the token looks"], ["to", "what looks at the token"]].forEach(function (m) {
      var lab = el("label"), r = el("input", { type: "radio", name: "gg-mode-" + Math.random().toString(36).slice(2), value: m[0], "class": "gg-mode" });
      if (m[0] === "from") r.checked = true;
      r.addEventListener("change", function () { state.mode = m[0]; A.setAttribute("data-mode", m[0]); paint(); });
      lab.appendChild(r); lab.appendChild(document.createTextNode(" " + m[1])); modes.appendChild(lab); modes.appendChild(document.createTextNode("  "));
    });
    controls.appendChild(layerSel); controls.appendChild(headSel); controls.appendChild(modes);
    A.appendChild(controls);
    var msg = el("p", { "class": "gg-msg", role: "status" });
    A.appendChild(msg);
    var described = {};  // "layer/head" -> the head's entry of d.heads
    (d.heads || []).forEach(function (e) { described[e.layer + "/" + e.head] = e; });
    var about = el("p", { "class": "gg-about", "aria-live": "polite" });
    A.appendChild(about);
    A.appendChild(el("p", { "class": "gg-note" }, "Hover or focus a token (Tab, arrow keys) to see where it looks; click to pin it. " +
      "Shade grows with the weight (square root, so small weights show); hover a shaded token for its weight, shown to 3 decimals and within \u00b1" + d.precision.toFixed(4) + " of the model's (8 bits)."));
    var strip = el("div", { "class": "gg-strip", role: "group", "aria-label": "tokens" }), spans = [];
    for (var i = 0; i < T; i++) {
      var s = el("span", { "class": "gg-tok", "data-pos": i, tabindex: "0" }, shown(tok(i)));
      spans.push(s); strip.appendChild(s);
      if (tok(i).indexOf("\u23ce") >= 0) strip.appendChild(el("br"));
    }
    A.appendChild(strip);
    var info = el("p", { "class": "gg-info", "aria-live": "polite" });
    A.appendChild(info);
    var gridTitle = el("h4"), grid = el("div", { "class": "gg-grid" }), thumbs = [];
    A.appendChild(gridTitle); A.appendChild(grid);
    var mapTitle = el("h4"), zoom = el("span", { "class": "gg-zoom" });
    var zoomOut = el("button", { type: "button", "aria-label": "zoom out" }, "\u2212"), zoomIn = el("button", { type: "button", "aria-label": "zoom in" }, "+");
    var zoomText = el("span", null, "");
    zoom.appendChild(document.createTextNode(" zoom ")); zoom.appendChild(zoomOut); zoom.appendChild(zoomIn); zoom.appendChild(zoomText);
    var mapHead = el("div", { "class": "gg-controls" }); mapHead.appendChild(mapTitle); mapHead.appendChild(zoom);
    var mapWrap = el("div", { "class": "gg-mapwrap" }), map = el("canvas", { "class": "gg-map", "aria-label": "attention map: queries down, keys across" });
    mapWrap.appendChild(map);
    var mapInfo = el("p", { "class": "gg-mapinfo" });
    A.appendChild(mapHead); A.appendChild(mapWrap); A.appendChild(mapInfo);

    var LUT = [];
    for (var v = 0; v <= LEVELS; v++) {
      var a = v / LEVELS;
      LUT.push([Math.round(255 - 247 * a), Math.round(255 - 207 * a), Math.round(255 - 148 * a)]);
    }
    var cached = {};
    function image(l, h) {  // a T x T picture of one head, one pixel per weight (the last few kept)
      var key = l + "/" + h;
      if (cached[key]) return cached[key];
      if (Object.keys(cached).length > 2 * H) cached = {};
      var c = cached[key] = el("canvas"); c.width = T; c.height = T;
      var ctx = c.getContext("2d"), img = ctx.createImageData(T, T), px = img.data, base = (l * H + h) * N;
      for (var q = 0; q < T; q++) for (var k = 0; k < T; k++) {
        var o = (q * T + k) * 4, col = k <= q ? LUT[bytes[base + q * (q + 1) / 2 + k]] : [244, 245, 248];
        px[o] = col[0]; px[o + 1] = col[1]; px[o + 2] = col[2]; px[o + 3] = 255;
      }
      ctx.putImageData(img, 0, 0);
      return c;
    }
    function fitZoom() { return Math.max(1, Math.min(24, Math.floor(900 / T))); }
    var mapMargin = 0, mapCell = 1;
    function drawMap() {
      var z = state.zoom || fitZoom(), labels = z >= 8;
      mapCell = z; mapMargin = labels ? Math.min(90, 12 + 7 * Math.max.apply(null, d.tokens.map(function (t) { return Math.min(t.length, 10); }))) : 0;
      var size = mapMargin + T * z, dpr = window.devicePixelRatio || 1;
      map.width = size * dpr; map.height = size * dpr; map.style.width = size + "px"; map.style.height = size + "px";
      var ctx = map.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, size, size);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(image(state.layer, state.head), mapMargin, mapMargin, T * z, T * z);
      if (labels) {
        ctx.fillStyle = "#1d2330"; ctx.font = Math.min(13, z - 1) + "px ui-monospace, monospace"; ctx.textBaseline = "middle";
        for (var i = 0; i < T; i++) {
          var t = tok(i).length > 10 ? tok(i).slice(0, 9) + "\u2026" : tok(i);
          ctx.textAlign = "right"; ctx.fillText(t, mapMargin - 4, mapMargin + (i + 0.5) * z);
          ctx.save(); ctx.translate(mapMargin + (i + 0.5) * z, mapMargin - 4); ctx.rotate(-Math.PI / 2);
          ctx.textAlign = "left"; ctx.fillText(t, 0, 0); ctx.restore();
        }
      }
      if (state.sel >= 0) {
        ctx.strokeStyle = "#e4572e"; ctx.lineWidth = 2;
        if (state.mode === "from") ctx.strokeRect(mapMargin, mapMargin + state.sel * z, (state.sel + 1) * z, z);
        else ctx.strokeRect(mapMargin + state.sel * z, mapMargin + state.sel * z, z, (T - state.sel) * z);
      }
      zoomText.textContent = " " + z + " px per token";
    }
    function drawThumbs() {
      grid.textContent = ""; thumbs = [];
      gridTitle.textContent = "All heads of layer " + state.layer + " (click one to open it below)";
      var px = Math.max(64, Math.min(160, Math.floor(1000 / H) - 16));
      for (var h = 0; h < H; h++) {
        var b = el("button", { type: "button", "class": "gg-thumb", "data-head": h, "aria-pressed": String(h === state.head) });
        var c = el("canvas"); c.width = T; c.height = T; c.style.width = px + "px"; c.style.height = px + "px";
        c.getContext("2d").drawImage(image(state.layer, h), 0, 0);
        b.appendChild(c); b.appendChild(el("div", null, "head " + h));
        (function (h) { b.addEventListener("click", function () { self.show(state.layer, h); }); })(h);
        grid.appendChild(b); thumbs.push(b);
      }
    }
    function paint() {  // shade the strip for the selected token
      var q = state.sel;
      for (var j = 0; j < T; j++) {
        var s = spans[j], w = null;
        s.classList.toggle("gg-sel", j === q); s.classList.toggle("gg-pinned", j === q && state.pinned);
        if (q >= 0) w = state.mode === "from" ? (j <= q ? weight(state.layer, state.head, q, j) : null)
                                             : (j >= q ? weight(state.layer, state.head, j, q) : null);
        if (w === null) {
          s.removeAttribute("data-weight"); s.style.background = ""; s.style.color = "";
          s.title = q >= 0 ? (state.mode === "from" ? "after the selected token: it cannot look here" : "before the selected token: it cannot look at it") : "";
        } else {
          var a = Math.sqrt(w);
          s.setAttribute("data-weight", fmt(w)); s.style.background = blue(a); s.style.color = ink(a);
          s.title = state.mode === "from" ? "'" + tok(j) + "' (" + j + ") gets " + fmt(w) + " of the attention of '" + tok(q) + "' (" + q + ")"
                                          : "'" + tok(j) + "' (" + j + ") gives " + fmt(w) + " of its attention to '" + tok(q) + "' (" + q + ")";
        }
      }
      A.setAttribute("data-selected", q >= 0 ? String(q) : "");
      if (q < 0) { info.textContent = "No token selected."; return; }
      var pairs = [];
      for (var j = 0; j < T; j++) if (spans[j].hasAttribute("data-weight")) pairs.push([j, parseFloat(spans[j].getAttribute("data-weight"))]);
      pairs.sort(function (a, b) { return b[1] - a[1] || a[0] - b[0]; });
      info.textContent = (state.mode === "from" ? "'" + tok(q) + "' (" + q + ") looks most at: " : "looking most at '" + tok(q) + "' (" + q + "): ") +
        pairs.slice(0, 5).map(function (p) { return "'" + tok(p[0]) + "' (" + p[0] + ") " + fmt(p[1]); }).join(", ") +
        (state.pinned ? "  [pinned: click it again or press Esc to unpin]" : "");
      drawMap();
    }
    this.select = function (q, pin) {
      state.sel = q; if (pin !== undefined) state.pinned = pin; paint();
    };
    this.show = function (layer, head) {
      layer = Number(layer); head = Number(head);
      if (!(layer >= 0 && layer < L && head >= 0 && head < H && layer % 1 === 0 && head % 1 === 0)) {
        msg.textContent = "There is no layer " + layer + ", head " + head + " in this model: layers are 0.." + (L - 1) + " and heads 0.." + (H - 1) + "; showing layer " + state.layer + ", head " + state.head + ".";
        return false;
      }
      msg.textContent = "";
      var newLayer = layer !== state.layer || !thumbs.length;
      state.layer = layer; state.head = head;
      layerSel.value = String(layer); headSel.value = String(head);
      A.setAttribute("data-layer", layer); A.setAttribute("data-head", head);
      if (newLayer) drawThumbs();
      thumbs.forEach(function (b, h) { b.setAttribute("aria-pressed", String(h === head)); });
      mapTitle.textContent = "Layer " + layer + ", head " + head + ": queries down, keys across";
      var e = described[layer + "/" + head];
      about.textContent = e ? "Layer " + layer + ", head " + head + (e.kind ? " (" + e.kind + ")" : "") + ": " + e.description : "";
      paint(); drawMap();
      return true;
    };
    layerSel.addEventListener("change", function () { self.show(layerSel.value, state.head); });
    headSel.addEventListener("change", function () { self.show(state.layer, headSel.value); });
    zoomIn.addEventListener("click", function () { state.zoom = Math.min(40, (state.zoom || fitZoom()) * 2); drawMap(); });
    zoomOut.addEventListener("click", function () { state.zoom = Math.max(1, Math.floor((state.zoom || fitZoom()) / 2)); drawMap(); });
    strip.addEventListener("mouseover", function (e) {
      var p = e.target.getAttribute && e.target.getAttribute("data-pos");
      if (p === null || p === undefined) return;
      if (!state.pinned) self.select(+p);
      else if (e.target.hasAttribute("data-weight")) info.textContent = e.target.title;
    });
    strip.addEventListener("focusin", function (e) {
      var p = e.target.getAttribute("data-pos");
      if (p !== null) self.select(+p, false);
    });
    strip.addEventListener("click", function (e) {
      var p = e.target.getAttribute("data-pos");
      if (p === null) return;
      self.select(+p, !(state.pinned && state.sel === +p));
    });
    strip.addEventListener("keydown", function (e) {
      var p = e.target.getAttribute("data-pos");
      if (p === null) return;
      var next = e.key === "ArrowRight" ? +p + 1 : e.key === "ArrowLeft" ? +p - 1 : null;
      if (e.key === "Escape") self.select(state.sel, false);
      if (next !== null && next >= 0 && next < T) { spans[next].focus(); e.preventDefault(); }
    });
    map.addEventListener("mousemove", function (e) {
      var r = map.getBoundingClientRect(), q = Math.floor((e.clientY - r.top - mapMargin) / mapCell), k = Math.floor((e.clientX - r.left - mapMargin) / mapCell);
      if (q < 0 || k < 0 || q >= T || k >= T) { mapInfo.textContent = ""; return; }
      mapInfo.textContent = k > q ? "query '" + tok(q) + "' (" + q + ") cannot see key '" + tok(k) + "' (" + k + ")"
        : "query '" + tok(q) + "' (" + q + ") \u2192 key '" + tok(k) + "' (" + k + "): " + fmt(weight(state.layer, state.head, q, k));
    });

    // ------------------------------------------------------------ logit lens
    var LN = panels.lens, lens = d.lens, P = lens.positions.length, K = lens.k, pts = lens.labels.length;
    LN.appendChild(el("p", { "class": "gg-note" }, "The residual stream after the embedding and after each block, decoded through the final LayerNorm and the unembedding. " +
      "Each cell: the top prediction for the next token and its probability (shade); bold and outlined when it is the true next token. Hover or focus a position for the top " + K + " and the true token's rank." +
      (P < T ? " (" + P + " of the " + T + " positions, evenly spaced, to bound the cost.)" : "")));
    var lensWrap = el("div", { "class": "gg-lenswrap" }), table = el("table", { "class": "gg-lens" }), head = el("tr");
    head.appendChild(el("th", { "class": "gg-row" }, "next \u2192"));
    lens.positions.forEach(function (pos) {
      head.appendChild(el("th", { "data-pos": pos, tabindex: "0", title: "position " + pos + ": '" + tok(pos) + "'" }, shown(tok(pos))));
    });
    table.appendChild(head);
    for (var pt = pts - 1; pt >= 0; pt--) {
      var tr = el("tr");
      tr.appendChild(el("th", { "class": "gg-row" }, lens.labels[pt]));
      for (var pi = 0; pi < P; pi++) {
        var at = pt * P + pi, top = lens.top_ids[at * K], p = lens.top_p[at * K], pos = lens.positions[pi];
        var td = el("td", { "data-lens-pos": pos, "data-point": pt, "data-rank": lens.rank[at] || null }, shown(vocab(top)));
        td.style.background = blue(p * 0.85); td.style.color = ink(p * 0.85);
        if (pos + 1 < T && d.ids[pos + 1] === top) td.className = "gg-hit";
        td.title = lens.labels[pt] + ", position " + pos + ": '" + vocab(top) + "' " + fmt(p) + (pos + 1 < T ? "; true next '" + tok(pos + 1) + "' rank " + lens.rank[at] : "");
        tr.appendChild(td);
      }
      table.appendChild(tr);
    }
    lensWrap.appendChild(table); LN.appendChild(lensWrap);
    var detail = el("div", { "class": "gg-lensdetail", "aria-live": "polite" }, "Hover or focus a position.");
    LN.appendChild(detail);
    function lensDetail(pos) {
      var pi = lens.positions.indexOf(pos);
      if (pi < 0) return;
      detail.textContent = "";
      detail.appendChild(el("p", null, "Position " + pos + " '" + tok(pos) + "'" + (pos + 1 < T ? ", true next token '" + tok(pos + 1) + "':" : " (the last: no true next token):")));
      var t = el("table", { "class": "gg-detail" }), hr = el("tr");
      hr.appendChild(el("th", null, "after"));
      for (var k = 0; k < K; k++) hr.appendChild(el("th", null, "#" + (k + 1)));
      if (pos + 1 < T) hr.appendChild(el("th", null, "true next: rank, p"));
      t.appendChild(hr);
      for (var pt = 0; pt < pts; pt++) {
        var r = el("tr"), at = pt * P + pi;
        r.appendChild(el("th", null, lens.labels[pt]));
        for (var k = 0; k < K; k++) r.appendChild(el("td", null, "'" + vocab(lens.top_ids[at * K + k]) + "' " + fmt(lens.top_p[at * K + k])));
        if (pos + 1 < T) r.appendChild(el("td", { "data-rank": lens.rank[at] }, lens.rank[at] + ", " + fmt(lens.p_true[at])));
        t.appendChild(r);
      }
      detail.appendChild(t);
    }
    table.addEventListener("mouseover", function (e) {
      var p = e.target.getAttribute && (e.target.getAttribute("data-pos") || e.target.getAttribute("data-lens-pos"));
      if (p !== null && p !== undefined) lensDetail(+p);
    });
    table.addEventListener("focusin", function (e) { var p = e.target.getAttribute("data-pos"); if (p !== null) lensDetail(+p); });

    // ------------------------------------------------------------ per-token loss
    var LO = panels.loss, maxLoss = d.uniform_loss, total = 0, count = 0, worst = [];
    d.loss.forEach(function (x, i) { if (x !== null) { total += x; count++; worst.push([x, i]); maxLoss = Math.max(maxLoss, x); } });
    worst.sort(function (a, b) { return b[0] - a[0] || a[1] - b[1]; });
    LO.appendChild(el("p", { "class": "gg-note" }, "Each token coloured by the model's loss on it (\u2212ln p of that token given the ones before), from white (0) to red (" + maxLoss.toFixed(2) +
      " nats; uniform guessing is " + d.uniform_loss.toFixed(2) + "). Mean " + (count ? (total / count).toFixed(3) : "n/a") + " nats over " + count + " predicted tokens; hardest: " +
      worst.slice(0, 5).map(function (w) { return "'" + tok(w[1]) + "' (" + w[1] + ") " + w[0].toFixed(2); }).join(", ") + "."));
    var lossStrip = el("div", { "class": "gg-strip", role: "group", "aria-label": "tokens coloured by loss" }), lossInfo = el("p", { "class": "gg-info", "aria-live": "polite" });
    for (var i = 0; i < T; i++) {
      var x = d.loss[i], s = el("span", { "class": "gg-tok", "data-pos": i, tabindex: "0", "data-loss": x === null ? null : x.toFixed(3) }, shown(tok(i)));
      if (x === null) { s.style.background = "#eceff4"; s.title = "the first token: nothing before it to predict it from"; }
      else { var a = x / maxLoss; s.style.background = red(a); s.style.color = ink(a); s.title = "'" + tok(i) + "' (" + i + "): loss " + x.toFixed(3) + " nats, p = " + Math.exp(-x).toFixed(3); }
      lossStrip.appendChild(s);
      if (tok(i).indexOf("\u23ce") >= 0) lossStrip.appendChild(el("br"));
    }
    function lossHover(e) { if (e.target.getAttribute && e.target.getAttribute("data-pos") !== null) lossInfo.textContent = e.target.title; }
    lossStrip.addEventListener("mouseover", lossHover); lossStrip.addEventListener("focusin", lossHover);
    LO.appendChild(el("span", { "class": "gg-legend gg-red" })); LO.appendChild(document.createTextNode(" 0 \u2192 " + maxLoss.toFixed(2) + " nats"));
    LO.appendChild(lossStrip); LO.appendChild(lossInfo);

    // ------------------------------------------------------------ per-head scores
    var SC = panels.scores;
    SC.appendChild(el("p", { "class": "gg-note" }, (d.notes.scores || "Measured on this text.") + " Hover a cell for its value; click a head to open it in the attention view."));
    var boxes = el("div", { "class": "gg-scores" }), scoreInfo = el("p", { "class": "gg-info", "aria-live": "polite" });
    d.scores.forEach(function (sc) {
      var box = el("div", { "class": "gg-score", "data-score": sc.key }), t = el("table", { "class": "gg-heat" }), hr = el("tr");
      box.appendChild(el("h5", null, sc.title)); box.appendChild(el("p", null, sc.what));
      var flat = [].concat.apply([], sc.values).filter(function (x) { return x !== null; });
      var lo = Math.min.apply(null, flat.concat([0])), hi = Math.max.apply(null, flat.concat([sc.scale === "share" ? 1 : 1e-9]));
      var span = Math.max(Math.abs(lo), Math.abs(hi), 1e-9);
      hr.appendChild(el("th", null, "")); for (var h = 0; h < H; h++) hr.appendChild(el("th", null, "h" + h));
      t.appendChild(hr);
      sc.values.forEach(function (row, l) {
        var tr = el("tr"); tr.appendChild(el("th", null, "L" + l));
        row.forEach(function (x, h) {
          var se = sc.se ? sc.se[l][h] : null;
          var b = el("button", { type: "button", "class": "gg-cell", "data-layer": l, "data-head": h, "data-value": x === null ? "nan" : x.toFixed(4),
                                 "data-se": se === null ? null : se.toFixed(4) },
                     x === null ? "\u2013" : Math.abs(x) >= 10 ? x.toFixed(0) : x.toFixed(2));
          var a = x === null ? 0 : sc.scale === "share" ? x : sc.scale === "signed" ? Math.abs(x) / span : (x - lo) / Math.max(hi - lo, 1e-9);
          b.style.background = sc.scale === "signed" && x < 0 ? red(a) : blue(a); b.style.color = ink(a);
          b.title = sc.title + ", layer " + l + ", head " + h + ": " + (x === null ? "not measured" : x.toFixed(4) + (se === null ? "" : " \u00b1 " + se.toFixed(4) + " (one standard error)"));
          var td = el("td"); td.appendChild(b); tr.appendChild(td);
        });
        t.appendChild(tr);
      });
      box.appendChild(t); boxes.appendChild(box);
    });
    SC.appendChild(boxes); SC.appendChild(scoreInfo);
    if (d.heads && d.heads.length) {  // one sentence per head
      var ht = el("table", { "class": "gg-heads" }), hh = el("tr");
      ["head", "kind", "what it does"].forEach(function (c) { hh.appendChild(el("th", null, c)); });
      ht.appendChild(hh);
      d.heads.forEach(function (e) {
        var tr = el("tr", { "data-layer": e.layer, "data-head": e.head });
        tr.appendChild(el("td", null, "L" + e.layer + " h" + e.head)); tr.appendChild(el("td", null, e.kind || "")); tr.appendChild(el("td", null, e.description));
        ht.appendChild(tr);
      });
      SC.appendChild(el("h4", null, "Every head, in one sentence")); SC.appendChild(ht);
    }
    function scoreHover(e) { if (e.target.classList && e.target.classList.contains("gg-cell")) scoreInfo.textContent = e.target.title; }
    boxes.addEventListener("mouseover", scoreHover); boxes.addEventListener("focusin", scoreHover);
    boxes.addEventListener("click", function (e) {
      if (!(e.target.classList && e.target.classList.contains("gg-cell"))) return;
      self.tab("attention"); self.show(+e.target.getAttribute("data-layer"), +e.target.getAttribute("data-head"));
      A.scrollIntoView({ block: "start" });
    });

    // ------------------------------------------------------------ start
    this.tab("attention");
    this.show(0, 0);
    var want = { layer: +(root.getAttribute("data-initial-layer") || 0), head: +(root.getAttribute("data-initial-head") || 0) };
    var asked = root === document.querySelector(".gg-view") ? hashRequest() : null;
    this.show(want.layer, want.head);
    if (asked) this.show(asked.layer, asked.head);
    this.select(T - 1, false);
  }

  function fail(root, text) {
    root.textContent = "";
    root.appendChild(el("p", { "class": "gg-error", role: "alert" }, text));
    root.setAttribute("data-state", "error");
  }

  function start(root) {
    if (root.getAttribute("data-state")) return;
    var script = root.querySelector("script.gg-data");
    if (!script) return;
    root.setAttribute("data-state", "loading");
    var data;
    try { data = JSON.parse(script.textContent); } catch (e) { fail(root, "The view's data could not be read: " + e.message + "."); return; }
    Promise.resolve().then(function () { return inflate(data.patterns); }).then(function (bytes) {
      if (bytes.length !== data.L * data.H * data.T * (data.T + 1) / 2) throw new Error("the attention data holds " + bytes.length + " weights, not the " + data.L * data.H * data.T * (data.T + 1) / 2 + " its header promises");
      root.ggView = new View(root, data, bytes);
      root.setAttribute("data-state", "ready");
    }).catch(function (e) { fail(root, "The view could not be drawn: " + (e && e.message ? e.message : e) + "."); });
  }

  function startAll() { Array.prototype.forEach.call(document.querySelectorAll(".gg-view"), start); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", startAll); else startAll();
  window.addEventListener("hashchange", function () {
    var root = document.querySelector(".gg-view"), asked = hashRequest();
    if (root && root.ggView && asked) { root.ggView.tab("attention"); root.ggView.show(asked.layer, asked.head); }
  });
})();
