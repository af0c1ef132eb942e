// report.html's app, part 1 of 6 (the parts are inlined in order inside one function,
// outputs/_gallery.py APP_PARTS; they share its variables): the page's state, small
// helpers, and the wiring of the controls. It loads report/data/*.js (each calls
// LX.meta / LX.index / LX.rows / LX.long), keeps every job's index in typed arrays, and
// renders only what is on screen. User text goes into the page with textContent only,
// never as markup.

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
