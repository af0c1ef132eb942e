// report.html's app: the lightbox (a job's full record, loaded on demand), the selection
// and the keys.

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
