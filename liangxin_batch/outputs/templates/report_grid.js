// report.html's app: the grid and its virtual scroll (only the cards on screen exist).

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
