// report.html's app: the filters (facets and their counts), the search, the sort, and
// the address that keeps them (permalinks, hashchange).

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
