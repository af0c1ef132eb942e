// report.html's app: loads report/data/*.js (each calls LX.meta / LX.index / LX.rows /
// LX.long), keeps every job's index in typed arrays, and renders only what is on
// screen. User text goes into the page with textContent only, never as markup.
(function () {
  "use strict";
  var DATA = "report/data/";
  var CARD_W = 240, GAP = 14, CARD_H = 340, OVERSCAN = 2, CMP_H = 270, CMP_W = 220;
  var doc = document, win = window;
  var $ = function (id) { return doc.getElementById(id); };
  var META = null, N = 0;
  var segs = [];            // per segment: its decoded index
  var segOf = null;         // job position -> segment number in `segs`
  var model, status, reason, st, gsec, cred, pkey, shownCount = 0;
  var loaded = null;        // 1 once the job's segment is in
  var facetCodes = [];      // per facet: Int16Array of value codes
  var groupCodes = {};      // compare column -> Int32Array of group codes
  var promptKeys = new Map(), promptKeyText = [];
  var sel = { model: null, status: null, reason: null, facets: [] };
  var query = "", sortKey = "", desc = false, viewMode = "grid", groupBy = "";
  var view = new Int32Array(0), order = [];
  var selected = -1, lightboxAt = -1, wantedJob = null;
  var rowsCache = new Map(), longLoaded = new Map();
  var pending = new Map();
  var timings = { start: performance.now(), firstPaint: null, allLoaded: null, lastFilter: null };
  win.__lx = timings;

  function el(tag, cls, text) {
    var e = doc.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function own(e) { e.dir = "auto"; return e; }  // user text reads in its own direction
  function href(path) {
    return path.split("/").map(encodeURIComponent).join("/");
  }
  function load(name) {
    return new Promise(function (resolve, reject) {
      var s = doc.createElement("script");
      s.src = DATA + name;
      s.charset = "utf-8";
      s.onload = function () { s.remove(); resolve(); };
      s.onerror = function () { s.remove(); reject(new Error("could not load " + name)); refreshed(); };
      doc.head.appendChild(s);
    });
  }
  // A data file that will not load was swept by a later run (its name carries the
  // version it held): only a reload, which reads the new meta file, can find its data.
  var REFRESHED = "this report was refreshed since the page was opened: reload the page";
  function staleNote(box) {
    box = box || el("div", "stale");
    box.textContent = REFRESHED;
    var b = el("button", "reload", "reload");
    b.addEventListener("click", function () { location.reload(); });
    box.appendChild(b);
    return box;
  }
  function refreshed() {
    var banner = $("stale");
    if (banner.hidden) { staleNote(banner); banner.hidden = false; }
  }
  function duration(sec) {
    if (sec < 0) { return ""; }
    if (sec < 60) { return sec.toFixed(1) + " s"; }
    var m = Math.floor(sec / 60), s = Math.round(sec % 60);
    if (m >= 60) { return Math.floor(m / 60) + "h " + String(m % 60).padStart(2, "0") + "m"; }
    return m + "m " + String(s).padStart(2, "0") + "s";
  }
  function label(s) { return s.replace(/_/g, " "); }

  // -- loading ------------------------------------------------------------------------

  var LX = win.LX = {};
  LX.meta = function (m) {
    META = m;
    N = 0;
    m.segs.forEach(function (s) { s.base = N; N += s.n; });
    segOf = new Uint16Array(N);
    // One array type for every code (monomorphic reads in the filter's loop).
    model = new Int32Array(N); status = new Int32Array(N); reason = new Int32Array(N);
    st = new Float64Array(N); gsec = new Int32Array(N); cred = new Int32Array(N);
    pkey = new Int32Array(N); loaded = new Uint8Array(N);
    m.facets.forEach(function () { facetCodes.push(new Int32Array(N).fill(-1)); sel.facets.push(null); });
    m.segs.forEach(function (s, i) { segOf.fill(i, s.base, s.base + s.n); });
    setup();
    loadIndexes();
  };
  LX.index = function (segNo, d) {
    var i = META.segs.findIndex(function (s) { return s.seg === segNo; });
    if (i < 0) { return; }
    ingest(i, d);
  };
  LX.rows = function (segNo, sub, rows) {
    rowsCache.set(segNo + ":" + sub, rows);
  };
  LX.long = function (segNo, texts) {
    longLoaded.set(segNo, texts);
  };

  function ingest(i, d) {
    var s = META.segs[i], base = s.base, n = d.n;
    var mmap = d.models.map(function (x) { return META.models.indexOf(x); });
    var rmap = d.reasons.map(function (x) { return META.reasons.indexOf(x); });
    var pmap = d.PK.map(function (k, j) {
      var code = promptKeys.get(k);
      if (code === undefined) { code = promptKeyText.length; promptKeys.set(k, code); promptKeyText.push({ seg: i, p: j }); }
      return code;
    });
    for (var j = 0; j < n; j++) {
      var at = base + j;
      model[at] = mmap[d.m[j]];
      status[at] = d.s[j];
      reason[at] = d.r[j] < 0 ? -1 : rmap[d.r[j]];
      st[at] = d.st[j] < 0 ? -1 : d.t0 + d.st[j];
      gsec[at] = d.g[j];
      cred[at] = d.c[j];
      pkey[at] = pmap[d.p[j]];
      loaded[at] = 1;
    }
    META.facets.forEach(function (f, k) {
      var g = d.G[f.name];
      if (!g) { return; }
      var vmap = g.v.map(function (v) { return f.values.indexOf(v); });
      var codes = facetCodes[k];
      for (var j = 0; j < n; j++) { codes[base + j] = g.c[j] < 0 ? -1 : vmap[g.c[j]]; }
    });
    d.lower = null;
    d.plong = new Set(d.PL);
    segs[i] = d;
    groupCodes = {};
    if (wantedJob !== null) {
      var j = d.id.indexOf(wantedJob);
      if (j >= 0) { var pos = base + j; wantedJob = null; openJob(pos); }
    }
  }

  function loadIndexes() {
    var list = META.segs.map(function (s, i) { return i; });
    var next = 0, active = 0, done = 0;
    $("loading").textContent = list.length ? "(loading…)" : "";
    if (!list.length) { refilter(); finished(); return; }
    function pump() {
      while (active < 4 && next < list.length && (next === 0 || done > 0)) {
        var i = list[next++];
        active++;
        load(META.segs[i].index).then(arrived, arrived);
      }
    }
    var scheduled = false;
    function arrived() {
      active--; done++;
      if (done === 1) { refilter(); }
      else if (!scheduled) {
        scheduled = true;
        setTimeout(function () { scheduled = false; refilter(); }, done === list.length ? 0 : 250);
      }
      if (done === list.length) { finished(); }
      pump();
    }
    pump();
  }
  function finished() {
    timings.allLoaded = performance.now();
    $("loading").textContent = "";
    missingJob();
    refilter();
    if (timings.firstPaint === null) { doc.body.setAttribute("data-ready", "1"); }
    doc.body.setAttribute("data-loaded", "1");
  }

  function missingJob() {
    // Called once every index is in: a job still wanted is not in this report.
    var notice = $("notice");
    notice.hidden = wantedJob === null;
    if (wantedJob !== null) { notice.textContent = "no job with id " + wantedJob + " in this report"; wantedJob = null; }
  }

  // -- the filters ----------------------------------------------------------------------

  function dims() {
    // Each filter dimension: its codes per job and the selected set (null: all).
    var out = [
      { name: "model", codes: model, on: sel.model, values: META.models },
      { name: "status", codes: status, on: sel.status, values: META.statuses },
      { name: "reason", codes: reason, on: sel.reason, values: META.reasons }
    ];
    META.facets.forEach(function (f, k) {
      out.push({ name: "f." + f.name, codes: facetCodes[k], on: sel.facets[k], values: f.values });
    });
    return out;
  }

  function searchMask() {
    // Per segment, which of its distinct prompts match the query (null: no query).
    if (!query) { return null; }
    var q = query.toLowerCase();
    return segs.map(function (d, i) {
      if (!d) { return null; }
      if (!d.lower) { d.lower = d.P.map(function (p) { return p.toLowerCase(); }); }
      var longs = longLoaded.get(META.segs[i].seg);
      var hit = new Uint8Array(d.P.length);
      for (var p = 0; p < d.P.length; p++) {
        var text = d.lower[p];
        if (longs && d.plong.has(p)) {
          if (!d.lowerLong) { d.lowerLong = {}; }
          if (d.lowerLong[p] === undefined) { d.lowerLong[p] = String(longs[p]).toLowerCase(); }
          text = d.lowerLong[p];
        }
        hit[p] = text.indexOf(q) >= 0 ? 1 : 0;
      }
      return { hit: hit, q: q };
    });
  }

  function refilter() {
    var t0 = performance.now();
    var ds = dims(), nd = ds.length;
    var sets = ds.map(function (d) {
      if (!d.on) { return null; }
      var m = new Uint8Array(d.values.length + 1);
      d.on.forEach(function (v) { var x = d.values.indexOf(v); if (x >= 0) { m[x] = 1; } });
      return m;
    });
    var counts = ds.map(function (d) { return new Int32Array(d.values.length); });
    var mask = searchMask();
    var out = new Int32Array(N), n = 0;
    var codes = ds.map(function (d) { return d.codes; });
    for (var at = 0; at < N; at++) {
      if (!loaded[at]) { continue; }
      if (mask) {
        var si = segOf[at], d = segs[si], local = at - META.segs[si].base, mk = mask[si];
        if (!mk.hit[d.p[local]] && d.id[local].toLowerCase().indexOf(mk.q) < 0) { continue; }
      }
      var fails = 0, failed = -1;
      for (var k = 0; k < nd; k++) {
        var c = codes[k][at];
        if (sets[k] !== null && (c < 0 || !sets[k][c])) { fails++; failed = k; if (fails > 1) { break; } }
      }
      if (fails === 0) {
        out[n++] = at;
        for (k = 0; k < nd; k++) { c = codes[k][at]; if (c >= 0) { counts[k][c]++; } }
      } else if (fails === 1) {
        c = codes[failed][at];
        if (c >= 0) { counts[failed][c]++; }
      }
    }
    view = out.subarray(0, n);
    sortView();
    shownCount = n;
    $("shown").textContent = n.toLocaleString("en");
    drawFacets(ds, counts);
    $("clear").hidden = !query && !ds.some(function (d) { return d.on; });
    order = [];
    if (viewMode === "compare") { buildGroups(); }
    layout();
    timings.lastFilter = performance.now() - t0;
    timings.query = query;
  }

  function sortView() {
    if (!sortKey) { return; }
    var key = sortKey === "submitted" ? st : sortKey === "seconds" ? gsec : cred;
    var sign = desc ? -1 : 1;
    view.sort(function (a, b) {
      var x = key[a], y = key[b];
      if (x < 0 || y < 0) { return x < 0 && y < 0 ? a - b : x < 0 ? 1 : -1; }  // unknown last
      return x === y ? a - b : (x - y) * sign;
    });
  }

  function drawFacets(ds, counts) {
    var box = $("facets");
    box.textContent = "";
    ds.forEach(function (d, k) {
      if (!d.values.length && !d.on) { return; }
      var f = el("div", "facet");
      f.setAttribute("data-facet", d.name);
      f.appendChild(el("span", "name", d.name === "reason" ? "failure" : d.name.replace(/^f\./, "")));
      d.values.forEach(function (v, x) {
        var on = d.on && d.on.indexOf(v) >= 0;
        if (d.name === "status" && !META.counts.statuses[v] && !on) { return; }
        var chip = el("span", "chip");
        if (on) { chip.classList.add("on"); }
        if (!counts[k][x] && !on) { chip.classList.add("zero"); }
        chip.setAttribute("data-value", v);
        chip.setAttribute("role", "button");
        chip.title = v;
        var text = d.name === "status" ? label(v) : v;
        if (d.name === "status") { var p = el("span", "pill s-" + v, text); chip.appendChild(p); }
        else { chip.appendChild(own(el("span", "v", text === "" ? "(empty)" : text))); }
        chip.appendChild(el("span", "n", counts[k][x].toLocaleString("en")));
        chip.addEventListener("click", function () { toggle(d.name, k, v); });
        f.appendChild(chip);
      });
      // Values the address asks for that this report lacks: shown, active, removable.
      (d.on || []).forEach(function (v) {
        if (d.values.indexOf(v) >= 0) { return; }
        var chip = el("span", "chip on unknown");
        chip.setAttribute("data-value", v);
        chip.setAttribute("role", "button");
        chip.title = "not in this report: click to remove";
        chip.appendChild(own(el("span", "v", v === "" ? "(empty)" : v)));
        chip.appendChild(el("span", "n", "0"));
        chip.addEventListener("click", function () { toggle(d.name, k, v); });
        f.appendChild(chip);
      });
      if (f.children.length > 1) { box.appendChild(f); }
    });
  }

  function toggle(name, k, v) {
    var cur = name === "model" ? sel.model : name === "status" ? sel.status :
      name === "reason" ? sel.reason : sel.facets[k - 3];
    var next = cur ? cur.slice() : [];
    var x = next.indexOf(v);
    if (x >= 0) { next.splice(x, 1); } else { next.push(v); }
    if (!next.length) { next = null; }
    if (name === "model") { sel.model = next; } else if (name === "status") { sel.status = next; }
    else if (name === "reason") { sel.reason = next; } else { sel.facets[k - 3] = next; }
    changed();
  }

  // -- the address ------------------------------------------------------------------------

  function remember() {
    var h = new URLSearchParams();
    if (sel.model) { h.set("model", sel.model.join(",")); }
    if (sel.status) { h.set("status", sel.status.join(",")); }
    if (sel.reason) { h.set("reason", sel.reason.join("\n")); }
    META.facets.forEach(function (f, k) { if (sel.facets[k]) { h.set("f." + f.name, sel.facets[k].join("\n")); } });
    if (query) { h.set("q", query); }
    if (sortKey) { h.set("sort", sortKey); }
    if (desc) { h.set("desc", "1"); }
    if (viewMode !== "grid") { h.set("view", viewMode); }
    if (groupBy && viewMode === "compare") { h.set("by", groupBy); }  // rows only group there
    if (lightboxAt >= 0) { h.set("job", jobId(lightboxAt)); }
    var text = h.toString();
    history.replaceState(null, "", text ? "#" + text : location.pathname + location.search);
  }
  function restore() {
    var h = new URLSearchParams(location.hash.slice(1));
    function list(key, sep) { return h.has(key) && h.get(key) !== "" ? h.get(key).split(sep) : null; }
    sel.model = list("model", ",");
    sel.status = list("status", ",");
    sel.reason = list("reason", "\n");
    META.facets.forEach(function (f, k) { sel.facets[k] = list("f." + f.name, "\n"); });
    query = h.get("q") || "";
    sortKey = h.get("sort") || "";
    desc = h.get("desc") === "1";
    viewMode = h.get("view") === "compare" ? "compare" : "grid";
    groupBy = h.get("by") || "";
    wantedJob = h.get("job");
    $("q").value = query;
    $("sort").value = sortKey;
    $("dir").textContent = desc ? "↑" : "↓";
    $("by").value = groupBy;
    showMode();
  }
  function changed() { refilter(); remember(); }
  function clearFilters() {
    sel.model = sel.status = sel.reason = null;
    sel.facets = sel.facets.map(function () { return null; });
    query = "";
    $("q").value = "";
    changed();
  }
  function findJob(id) {
    for (var i = 0; i < segs.length; i++) {
      var j = segs[i] ? segs[i].id.indexOf(id) : -1;
      if (j >= 0) { return META.segs[i].base + j; }
    }
    return -1;
  }
  function applyAddress() {
    // Another address pasted into the open tab (replaceState, ours, fires no hashchange).
    restore();
    var want = wantedJob;
    if (want === null) { closeLightbox(); $("notice").hidden = true; }
    if (query) { search(query); } else { changed(); }
    if (want === null) { return; }
    var at = findJob(want);
    if (at >= 0) { wantedJob = null; $("notice").hidden = true; select(at); openJob(at); }
    else if (timings.allLoaded !== null) { closeLightbox(); missingJob(); }
  }

  // -- the grid ---------------------------------------------------------------------------

  var pool = new Map(), free = [];
  function jobId(at) { var i = segOf[at]; return segs[i].id[at - META.segs[i].base]; }

  function thumbOf(at) {
    var i = segOf[at], d = segs[i], j = at - META.segs[i].base;
    var dir = d.td[j];
    if (dir < 0) { return ""; }
    var x = d.tx[j];
    var name = typeof x === "number" ? d.id[j] + d.TS[x] : x;
    var folder = d.TD[dir];
    return folder ? folder + "/" + name : name;
  }

  function media(at, box) {
    var i = segOf[at], d = segs[i], j = at - META.segs[i].base;
    var kind = d.k[j] & 3, files = d.k[j] >> 2, thumb = thumbOf(at);
    if (thumb) {
      var img = el("img");
      img.loading = "lazy";
      img.decoding = "async";
      img.alt = d.id[j];
      if (d.a[j] > 0) { img.style.aspectRatio = String(d.a[j] / 100); }
      img.src = href(thumb);
      box.appendChild(img);
    } else {
      var s = META.statuses[status[at]];
      var text = kind === 2 ? "▶ video" : kind === 3 ? "file" : kind === 1 ? "no preview" :
        (s === "downloading" || s === "pending" || s === "submitting" || s === "submitted") ? "no files yet" : "no output";
      box.appendChild(el("div", "none", text));
    }
    if (files > 1) { box.appendChild(el("span", "badge", files + " files")); }
  }

  function fillCard(card, at) {
    var i = segOf[at], d = segs[i], j = at - META.segs[i].base;
    var s = META.statuses[status[at]];
    card.textContent = "";
    card.setAttribute("data-pos", String(at));
    card.setAttribute("data-id", d.id[j]);
    card.setAttribute("data-status", s);
    var box = el("div", "media");
    media(at, box);
    card.appendChild(box);
    var body = el("div", "body");
    var row = el("div", "row");
    var id = el("span", "id", d.id[j]);
    id.title = d.id[j];
    row.appendChild(id);
    row.appendChild(el("span", "pill s-" + s, label(s)));
    body.appendChild(row);
    body.appendChild(el("div", "model", META.models[model[at]]));
    var prompt = d.P[d.p[j]];
    if (prompt) { body.appendChild(own(el("p", "prompt", prompt + (d.plong.has(d.p[j]) ? "…" : "")))); }
    var meta = el("div", "meta");
    if (gsec[at] >= 0) { meta.appendChild(el("span", "sec", duration(gsec[at] / 10))); }
    if (cred[at] >= 0) { var c = cred[at] / 1000; meta.appendChild(el("span", "cr", c + (c === 1 ? " credit" : " credits"))); }
    body.appendChild(meta);
    card.appendChild(body);
  }

  function geometry() {
    var vp = $("viewport");
    var width = vp.clientWidth || 1000;
    var cols = Math.max(1, Math.floor((width + GAP) / (CARD_W + GAP)));
    var w = Math.floor((width - GAP * (cols - 1)) / cols);
    var top = vp.getBoundingClientRect().top + win.scrollY;
    return { cols: cols, w: w, top: top };
  }

  function layout() {
    var vp = $("viewport");
    $("empty").hidden = !(META && shownCount === 0 && timings.allLoaded !== null);
    if (viewMode === "compare") { vp.style.height = (order.length * (CMP_H + GAP)) + "px"; }
    else { var g = geometry(); vp.style.height = (Math.ceil(view.length / g.cols) * (CARD_H + GAP)) + "px"; }
    // The grid keeps the cards that still show the same job (no flicker while the
    // index files arrive); the compare view's rows are made again.
    draw(viewMode === "compare" || pool.size && !(pool.values().next().value.classList.contains("card")));
  }

  function release(key) {
    var e = pool.get(key);
    pool.delete(key);
    e.remove();
    if (e.className.indexOf("card") === 0) { free.push(e); }
  }

  function draw(all) {
    if (!META) { return; }
    if (all) { Array.from(pool.keys()).forEach(release); }
    if (viewMode === "compare") { drawCompare(); } else { drawGrid(); }
    if (timings.firstPaint === null && pool.size) {
      timings.firstPaint = -1;
      // Two frames on: the cards have been painted (ms since the navigation started).
      requestAnimationFrame(function () {
        requestAnimationFrame(function () {
          timings.firstPaint = performance.now();
          doc.body.setAttribute("data-ready", "1");
        });
      });
    }
  }

  function drawGrid() {
    var g = geometry(), vp = $("viewport");
    var y0 = win.scrollY - g.top, y1 = y0 + win.innerHeight;
    var r0 = Math.max(0, Math.floor(y0 / (CARD_H + GAP)) - OVERSCAN);
    var r1 = Math.min(Math.ceil(view.length / g.cols), Math.ceil(y1 / (CARD_H + GAP)) + OVERSCAN);
    var lo = r0 * g.cols, hi = Math.min(view.length, r1 * g.cols);
    pool.forEach(function (e, key) { if (key < lo || key >= hi) { release(key); } });
    for (var x = lo; x < hi; x++) {
      var card = pool.get(x);
      if (!card) {
        card = free.pop() || el("article", "card");
        fillCard(card, view[x]);
        card.setAttribute("data-index", String(x));
        pool.set(x, card);
        vp.appendChild(card);
      } else if (Number(card.getAttribute("data-pos")) !== view[x]) {
        fillCard(card, view[x]);  // another job at this place now (a filter, a sort)
      }
      card.style.width = g.w + "px";
      card.style.height = CARD_H + "px";
      card.style.transform = "translate(" + ((x % g.cols) * (g.w + GAP)) + "px," + (Math.floor(x / g.cols) * (CARD_H + GAP)) + "px)";
      card.classList.toggle("sel", x === selected);
    }
  }

  // -- the compare view ----------------------------------------------------------------

  function codesFor(col) {
    if (groupCodes[col]) { return groupCodes[col]; }
    var out = new Int32Array(N).fill(-1), values = new Map();
    segs.forEach(function (d, i) {
      if (!d || !d.G[col]) { return; }
      var g = d.G[col], base = META.segs[i].base;
      var vmap = g.v.map(function (v) {
        var c = values.get(v);
        if (c === undefined) { c = values.size; values.set(v, c); }
        return c;
      });
      for (var j = 0; j < d.n; j++) { out[base + j] = g.c[j] < 0 ? -1 : vmap[g.c[j]]; }
    });
    out.values = Array.from(values.keys());
    groupCodes[col] = out;
    return out;
  }

  function buildGroups() {
    var key = groupBy ? codesFor(groupBy) : pkey;
    var at = new Map();
    order = [];
    for (var x = 0; x < view.length; x++) {
      var k = key[view[x]];
      if (k < 0) { continue; }
      var g = at.get(k);
      if (!g) { g = { key: k, jobs: [] }; at.set(k, g); order.push(g); }
      g.jobs.push(view[x]);
    }
    var models = new Set();
    var aligned = true;
    order.forEach(function (g) {
      g.jobs.sort(function (a, b) { return model[a] - model[b] || a - b; });
      for (var j = 0; j < g.jobs.length; j++) {
        models.add(model[g.jobs[j]]);
        if (j && model[g.jobs[j]] === model[g.jobs[j - 1]]) { aligned = false; }
      }
    });
    var cols = Array.from(models).sort(function (a, b) { return a - b; });
    compareCols = aligned ? cols : null;
    var head = $("cmp-cols");
    head.textContent = "";
    head.hidden = !aligned || !cols.length;
    if (aligned) { cols.forEach(function (m) { var s = el("span", null, META.models[m]); s.title = META.models[m]; head.appendChild(s); }); }
    $("shown").textContent = shownCount.toLocaleString("en") + " in " + order.length.toLocaleString("en") + " groups";
  }
  var compareCols = null;

  function groupLabel(g) {
    if (groupBy) { return [groupBy, codesFor(groupBy).values[g.key]]; }
    var first = g.jobs[0], i = segOf[first], d = segs[i], j = first - META.segs[i].base;
    return ["prompt", d.P[d.p[j]] + (d.plong.has(d.p[j]) ? "…" : "")];
  }

  function cell(at) {
    var c = el("div", "cmp-cell");
    c.setAttribute("data-pos", String(at));
    c.setAttribute("data-id", jobId(at));
    var box = el("div", "media");
    media(at, box);
    c.appendChild(box);
    var cap = el("div", "cap");
    var s = META.statuses[status[at]];
    cap.appendChild(el("span", "model", META.models[model[at]]));
    cap.appendChild(el("span", "pill s-" + s, label(s)));
    c.appendChild(cap);
    var meta = el("div", "cap meta");
    if (gsec[at] >= 0) { meta.appendChild(el("span", "sec", duration(gsec[at] / 10))); }
    if (cred[at] >= 0) { var cr = cred[at] / 1000; meta.appendChild(el("span", "cr", cr + (cr === 1 ? " credit" : " credits"))); }
    meta.appendChild(el("span", "id", jobId(at)));
    c.appendChild(meta);
    if (lightboxAt === at || (selected >= 0 && view[selected] === at)) { c.classList.add("sel"); }
    return c;
  }

  function drawCompare() {
    var g = geometry(), vp = $("viewport");
    var y0 = win.scrollY - g.top, y1 = y0 + win.innerHeight;
    var r0 = Math.max(0, Math.floor(y0 / (CMP_H + GAP)) - OVERSCAN);
    var r1 = Math.min(order.length, Math.ceil(y1 / (CMP_H + GAP)) + OVERSCAN);
    pool.forEach(function (e, key) { if (key < r0 || key >= r1) { release(key); } });
    for (var r = r0; r < r1; r++) {
      if (pool.has(r)) { continue; }
      var grp = order[r], row = el("div", "cmp-row");
      row.setAttribute("data-group", String(r));
      row.style.top = (r * (CMP_H + GAP)) + "px";
      row.style.height = CMP_H + "px";
      var head = el("div", "cmp-head"), lab = groupLabel(grp);
      head.appendChild(el("div", "k", lab[0] + " · " + grp.jobs.length + (grp.jobs.length === 1 ? " job" : " jobs")));
      head.appendChild(own(el("div", "t", lab[1])));
      row.appendChild(head);
      var cells = el("div", "cmp-cells");
      if (compareCols) {
        var byModel = new Map();
        grp.jobs.forEach(function (at) { byModel.set(model[at], at); });
        compareCols.forEach(function (m) {
          if (byModel.has(m)) { cells.appendChild(cell(byModel.get(m))); }
          else { cells.appendChild(el("div", "cmp-cell empty", "—")); }
        });
      } else {
        grp.jobs.forEach(function (at) { cells.appendChild(cell(at)); });
      }
      row.appendChild(cells);
      pool.set(r, row);
      vp.appendChild(row);
    }
  }

  // -- the lightbox ------------------------------------------------------------------------

  function navOrder() {
    if (viewMode !== "compare") { return view; }
    var all = [];
    order.forEach(function (g) { all.push.apply(all, g.jobs); });
    return all;
  }

  function heavy(at) {
    var i = segOf[at], s = META.segs[i], j = at - s.base, sub = Math.floor(j / META.sub);
    var key = s.seg + ":" + sub;
    if (rowsCache.has(key)) { return Promise.resolve(rowsCache.get(key)[j % META.sub]); }
    if (!pending.has(key)) { pending.set(key, load(s.rows[sub])); }
    return pending.get(key).then(function () {
      pending.delete(key);
      var rows = rowsCache.get(key);
      return rows ? rows[j % META.sub] : null;
    }, function (err) { pending.delete(key); throw err; });
  }

  function openJob(at) {
    lightboxAt = at;
    var lb = $("lightbox");
    lb.classList.add("open");
    var stage = $("lb-stage"), info = $("lb-info");
    stage.textContent = "";
    info.textContent = "";
    var id = jobId(at);
    info.setAttribute("data-id", id);
    info.appendChild(el("h2", null, id));
    info.appendChild(el("span", "pill s-" + META.statuses[status[at]], label(META.statuses[status[at]])));
    info.appendChild(el("div", "model", META.models[model[at]]));
    var thumb = thumbOf(at);
    if (thumb) { var img = el("img"); img.src = href(thumb); img.alt = id; stage.appendChild(img); }
    remember();
    var want = at;
    heavy(at).then(function (row) {
      if (lightboxAt !== want || !row) { return; }
      fillLightbox(row, stage, info);
    }, function () { if (lightboxAt === want) { info.appendChild(staleNote()); } });
    drawSelection();
  }

  function fillLightbox(row, stage, info) {
    var files = row.files || [];
    stage.textContent = "";
    if (files.length) {
      var f = files[0], path = f[0] || "", ext = path.toLowerCase().split(".").pop();
      var m;
      if (["mp4", "mov", "webm", "mkv"].indexOf(ext) >= 0) {
        m = el("video"); m.controls = true; m.muted = true; m.preload = "metadata"; m.src = href(path);
      } else if (["png", "jpg", "jpeg", "webp", "gif", "avif", "bmp"].indexOf(ext) >= 0) {
        m = el("img"); m.alt = row.id; m.src = href(path);
      } else {
        m = el("a", "none", "open " + path); m.href = href(path);
      }
      stage.appendChild(m);
    } else {
      var shownAs = META.statuses[status[lightboxAt]];
      stage.appendChild(el("div", "none", shownAs === "downloading" ? "no files yet" : "no output"));
    }
    info.appendChild(el("div", "k", "prompt"));
    info.appendChild(own(el("div", "full prompt-full", row.prompt)));
    if (row.error) { info.appendChild(el("div", "error", row.error)); }
    var dl = el("dl");
    function item(k, v, cls) {
      if (v === null || v === undefined || v === "") { return; }
      dl.appendChild(el("dt", null, k));
      var dd = el("dd", cls, v);
      dd.setAttribute("data-k", k);
      dl.appendChild(dd);
    }
    item("task id", row.task, "mono");
    item("attempts", row.sends);
    item("credits", row.credits !== null && row.credits !== undefined ? row.credits : row.estimated !== undefined ? row.estimated + " (estimated)" : null);
    item("generation", row.seconds !== null && row.seconds !== undefined ? duration(row.seconds) : null);
    item("submitted", row.submitted ? new Date(row.submitted * 1000).toISOString().replace(".000", "") : null);
    item("completed", row.completed ? new Date(row.completed * 1000).toISOString().replace(".000", "") : null);
    Object.keys(row.params || {}).forEach(function (k) {
      var v = row.params[k];
      item(k, typeof v === "string" ? v : JSON.stringify(v));
    });
    files.forEach(function (f, n) {
      item("file " + (n + 1), f[0], "mono");
      item("sha256", f[1], "mono");
      item("size", f[2] !== null ? f[2].toLocaleString("en") + " bytes" + (f[3] ? " · " + f[3] + "×" + f[4] : "") : null);
    });
    Object.keys(row.columns || {}).forEach(function (k) {
      var v = row.columns[k];
      item("column " + k, typeof v === "string" ? v : JSON.stringify(v));
    });
    info.appendChild(dl);
    if (row.inputs && row.inputs.length) {
      var box = el("div", "inputs");
      box.appendChild(el("div", "k", row.inputs.length === 1 ? "input" : "inputs"));
      row.inputs.forEach(function (x) {
        if (x[1]) { var i = el("img", "input"); i.src = href(x[1]); i.alt = x[0]; i.title = x[0]; box.appendChild(i); }
        box.appendChild(el("span", "path", x[0]));
      });
      info.appendChild(box);
    }
    doc.body.setAttribute("data-lightbox", row.id);
  }

  function closeLightbox() {
    if (lightboxAt < 0) { return; }
    lightboxAt = -1;
    $("lightbox").classList.remove("open");
    $("lb-stage").textContent = "";
    doc.body.removeAttribute("data-lightbox");
    remember();
  }

  function step(delta) {
    var list = navOrder();
    if (!list.length) { return; }
    if (lightboxAt >= 0) {
      var x = Array.prototype.indexOf.call(list, lightboxAt);
      x = x < 0 ? 0 : Math.max(0, Math.min(list.length - 1, x + delta));
      select(list[x]);
      openJob(list[x]);
      return;
    }
    var cur = selected >= 0 ? (viewMode === "compare" ? Array.prototype.indexOf.call(list, view[selected]) : selected) : -1;
    var nx = cur < 0 ? 0 : Math.max(0, Math.min(list.length - 1, cur + delta));
    select(list[nx]);
  }

  function select(at) {
    selected = Array.prototype.indexOf.call(view, at);
    if (viewMode === "grid" && selected >= 0) {
      var g = geometry(), y = g.top + Math.floor(selected / g.cols) * (CARD_H + GAP);
      if (y < win.scrollY + 60 || y + CARD_H > win.scrollY + win.innerHeight) { win.scrollTo(0, y - 80); }
    } else if (viewMode === "compare") {
      var r = order.findIndex(function (gr) { return gr.jobs.indexOf(at) >= 0; });
      var gg = geometry(), yy = gg.top + r * (CMP_H + GAP);
      if (r >= 0 && (yy < win.scrollY + 60 || yy + CMP_H > win.scrollY + win.innerHeight)) { win.scrollTo(0, yy - 80); }
    }
    draw(false);
    drawSelection();
  }
  function drawSelection() {
    var at = selected >= 0 ? view[selected] : -1;
    pool.forEach(function (e) {
      if (e.classList.contains("card")) { e.classList.toggle("sel", Number(e.getAttribute("data-pos")) === at); }
      else { e.querySelectorAll(".cmp-cell").forEach(function (c) { c.classList.toggle("sel", Number(c.getAttribute("data-pos")) === at); }); }
    });
    doc.body.setAttribute("data-selected", at >= 0 ? jobId(at) : "");
  }

  // -- wiring ------------------------------------------------------------------------------

  function showMode() {
    $("view-grid").classList.toggle("on", viewMode === "grid");
    $("view-compare").classList.toggle("on", viewMode === "compare");
    $("by-box").hidden = viewMode !== "compare";
    $("cmp-cols").hidden = viewMode !== "compare";
  }

  function setup() {
    var by = $("by");
    META.groupable.forEach(function (c) { var o = el("option", null, c); o.value = c; by.appendChild(o); });
    restore();
    var timer = null;
    $("q").addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { search($("q").value.trim()); }, 120);
    });
    $("sort").addEventListener("change", function () { sortKey = $("sort").value; changed(); });
    $("dir").addEventListener("click", function () { desc = !desc; $("dir").textContent = desc ? "↑" : "↓"; changed(); });
    $("view-grid").addEventListener("click", function () { viewMode = "grid"; showMode(); changed(); });
    $("view-compare").addEventListener("click", function () { viewMode = "compare"; showMode(); changed(); });
    by.addEventListener("change", function () { groupBy = by.value; changed(); });
    $("viewport").addEventListener("click", function (e) {
      var t = e.target.closest("[data-pos]");
      if (!t) { return; }
      var at = Number(t.getAttribute("data-pos"));
      select(at);
      openJob(at);
    });
    $("lb-close").addEventListener("click", closeLightbox);
    $("lightbox").addEventListener("click", function (e) { if (e.target.id === "lightbox" || e.target.id === "lb-stage") { closeLightbox(); } });
    var ticking = false;
    win.addEventListener("scroll", function () {
      if (ticking) { return; }
      ticking = true;
      requestAnimationFrame(function () { ticking = false; draw(false); });
    }, { passive: true });
    win.addEventListener("resize", function () { layout(); });
    doc.addEventListener("keydown", keys);
    win.addEventListener("hashchange", applyAddress);
    $("clear").addEventListener("click", clearFilters);
    if (query) { search(query); }
  }

  function search(text) {
    query = text;
    if (!query) { changed(); return; }
    changed();
    // Long prompts are searched in full once their files are in (loaded on demand).
    var wanted = META.segs.filter(function (s) { return s.long && !longLoaded.has(s.seg); });
    if (!wanted.length) { timings.longSearched = text; return; }
    Promise.all(wanted.map(function (s) { return load(s.long).catch(function () {}); })).then(function () {
      segs.forEach(function (d) { if (d) { d.lowerLong = null; } });
      if (query === text) { changed(); timings.longSearched = text; }
    });
  }

  function keys(e) {
    var t = e.target, typing = t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA");
    if (e.key === "Escape") {
      if (lightboxAt >= 0) { closeLightbox(); e.preventDefault(); }
      else if (typing) { t.blur(); }
      return;
    }
    if (typing || e.ctrlKey || e.metaKey || e.altKey) { return; }
    var cols = viewMode === "grid" ? geometry().cols : 1;
    if (e.key === "/") { e.preventDefault(); $("q").focus(); $("q").select(); }
    else if (e.key === "ArrowRight" || e.key === "j") { e.preventDefault(); step(1); }
    else if (e.key === "ArrowLeft" || e.key === "k") { e.preventDefault(); step(-1); }
    else if (e.key === "ArrowDown") { e.preventDefault(); step(lightboxAt >= 0 ? 1 : cols); }
    else if (e.key === "ArrowUp") { e.preventDefault(); step(lightboxAt >= 0 ? -1 : -cols); }
    else if (e.key === "Enter" && lightboxAt < 0) {
      var list = navOrder();
      var at = selected >= 0 ? view[selected] : list.length ? list[0] : -1;
      if (at >= 0) { e.preventDefault(); select(at); openJob(at); }
    }
  }
})();
