// report.html's app: the compare view (rows by prompt or a column, a column per model).

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
