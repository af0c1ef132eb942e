// report.html's app: the data loader (meta, index, rows and long-prompt files) and the
// ingest of each segment's index into the shared typed arrays.

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
