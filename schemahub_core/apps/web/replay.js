"use strict";
// The Replay page. Every number shown comes from the payload, the replay frame model exported per trade event
// (schemahub_core serve.replay_payload): the state at an instant is the row of the last event at or before it,
// found by binary search, exactly as Replay.state_at finds it. Nothing here recomputes a price or a spread.
(() => {
  const cfg = JSON.parse(document.getElementById("config").textContent) || {};
  const $ = (id) => document.getElementById(id);
  let R = null; // the payload of the loaded window
  let t = 0; // the current instant, epoch microseconds
  let playing = false;
  let lastFrame = null;
  let cursorQueued = false;

  const fmtPrice = (p) => {
    if (p === null || p === undefined || !isFinite(p)) return "—";
    const digits = p >= 100 ? 2 : p >= 1 ? 4 : 8;
    return p.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  };
  const bps = (x, signed) => (x === null || x === undefined ? "—" : (signed && x >= 0 ? "+" : "") + x.toFixed(2));
  const clock = (us) => new Date(Math.floor(us / 1000)).toISOString().slice(11, 23);
  const upper = (arr, x) => { // the first index whose value is > x
    let lo = 0, hi = arr.length;
    while (lo < hi) { const m = (lo + hi) >> 1; if (arr[m] <= x) lo = m + 1; else hi = m; }
    return lo;
  };
  const cell = (text, cls, value) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    if (value !== undefined) td.dataset.value = value === null ? "" : String(value);
    return td;
  };

  // ------------------------------------------------------------------------------------------- state at t
  function stateAt(tu) {
    const k = upper(R.events.t, tu) - 1; // payload row of the last event at or before tu; -1: none yet
    const venues = R.per_venue.map((v) => {
      let bid = null, ask = null, spread = null;
      if (v.quotes) {
        const i = upper(v.quotes.t, tu) - 1;
        if (i >= 0) { bid = v.quotes.bid[i]; ask = v.quotes.ask[i]; spread = v.quotes.spread_bps[i]; }
      } else if (k >= 0) {
        spread = v.trade_spread_bps[k];
      }
      const lastTrade = k >= 0 ? v.last_trade_us[k] : null;
      return {
        venue: v.venue, price: k >= 0 ? v.last[k] : null, dev: k >= 0 ? v.deviation_bps[k] : null, bid, ask,
        spread, source: v.spread_source, trades: k >= 0 ? v.trades_so_far[k] : 0,
        age: lastTrade === null ? null : (tu - lastTrade) / 1000,
      };
    });
    return {
      k, venues, disagreement: k >= 0 ? R.disagreement_bps[k] : null, peak: k >= 0 ? R.peak_bps[k] : null,
      peakAt: k >= 0 ? R.peak_at_us[k] : null,
    };
  }

  // ------------------------------------------------------------------------------------------------ view
  function show() {
    const s = stateAt(t);
    const offset = t - R.start_us;
    $("slider").value = String(offset);
    const ticks = R.events.t.length - R.first_window_row;
    const tick = Math.max(s.k - R.first_window_row + 1, 0);
    $("clock").textContent = `${clock(t)}  +${Math.floor(offset / 1000).toLocaleString("en-US")} ms  ` +
      `tick ${tick}/${ticks}`;
    $("clock").dataset.tUs = String(t);
    $("clock").dataset.tick = String(tick);
    $("venues-at").textContent = clock(t);
    let newest = -1, bestAge = Infinity;
    s.venues.forEach((v, j) => { if (v.age !== null && v.age < bestAge) { bestAge = v.age; newest = j; } });
    const body = $("venue-table").tBodies[0];
    body.replaceChildren(...s.venues.map((v, j) => {
      const tr = document.createElement("tr");
      tr.dataset.venue = v.venue;
      if (j === newest) tr.className = "newest";
      const dev = v.dev;
      const devCell = cell(bps(dev, true), "dev", dev);
      if (dev !== null && Math.abs(dev) >= 10) devCell.style.color = "var(--red)";
      else if (dev !== null && Math.abs(dev) >= 3) devCell.style.color = "var(--yellow)";
      tr.append(cell(v.venue, "l venue"), cell(R.markets[v.venue], "l"), cell(fmtPrice(v.price), "price", v.price),
        devCell, cell(v.bid === null ? "" : fmtPrice(v.bid), "bid", v.bid),
        cell(v.ask === null ? "" : fmtPrice(v.ask), "ask", v.ask), cell(bps(v.spread), "spread", v.spread),
        cell(v.source === "quotes" ? "quotes" : "trades (last buy vs sell)", "l src"),
        cell(String(v.trades), "trades", v.trades),
        cell(v.age === null ? "—" : `${Math.round(v.age).toLocaleString("en-US")} ms ago`, "age", v.age));
      return tr;
    }));
    $("disagreement").textContent = `${bps(s.disagreement)} bps`;
    $("disagreement").dataset.value = s.disagreement === null ? "" : String(s.disagreement);
    $("peak").textContent = `${bps(s.peak)} bps`;
    $("peak").dataset.value = s.peak === null ? "" : String(s.peak);
    $("peak-at").textContent = s.peakAt === null ? "" : `at ${clock(s.peakAt)}`;
    $("peak-at").dataset.value = s.peakAt === null ? "" : String(s.peakAt);
    const rows = [];
    for (let i = s.k; i >= 0 && rows.length < R.tape_rows; i--) {
      if (R.events.t[i] < R.start_us) break;
      const tr = document.createElement("tr");
      const side = R.events.side[i];
      tr.append(cell(clock(R.events.t[i]), "l"), cell(R.venues[R.events.venue[i]], "l"),
        cell(side, "l " + (side === "BUY" ? "buy" : side === "SELL" ? "sell" : "")),
        cell(fmtPrice(R.events.price[i]), "", R.events.price[i]), cell(String(R.events.qty[i])));
      rows.push(tr);
    }
    $("tape").tBodies[0].replaceChildren(...rows);
    queueCursor();
  }

  // The cursor is a plain div over the chart, moved with plotly's own axis mapping: redrawing a plotly shape
  // on every animation frame would keep the page busy.
  function queueCursor() {
    if (cursorQueued) return;
    cursorQueued = true;
    requestAnimationFrame(() => {
      cursorQueued = false;
      const gd = $("chart"), line = $("cursor");
      const xa = gd._fullLayout && gd._fullLayout.xaxis;
      if (!xa || !line) return;
      const size = gd._fullLayout._size;
      const x = xa._offset + xa.l2p(t / 1000);
      line.hidden = x < xa._offset || x > xa._offset + xa._length;
      line.style.left = `${x}px`;
      line.style.top = `${size.t}px`;
      line.style.height = `${size.h}px`;
    });
  }

  // ----------------------------------------------------------------------------------------------- chart
  function drawChart() {
    const ms = (us) => us / 1000;
    const E = R.events;
    const first = R.first_window_row;
    const traces = [];
    R.per_venue.forEach((v, j) => {
      const x = [], y = [];
      if (first > 0 && v.last[0] !== null) { x.push(ms(R.start_us)); y.push(v.last[0]); } // the lead-in price
      for (let i = first; i < E.t.length; i++) if (E.venue[i] === j) { x.push(ms(E.t[i])); y.push(E.price[i]); }
      traces.push({ x, y, name: `${v.venue} ${R.markets[v.venue]}`, legendgroup: v.venue, mode: "lines+markers",
        type: "scatter", line: { shape: "hv", width: 1.6 }, marker: { size: 3 }, xaxis: "x", yaxis: "y" });
    });
    R.per_venue.forEach((v) => {
      const x = [], y = [];
      if (v.quotes) {
        v.quotes.t.forEach((qt, i) => { if (qt >= R.start_us && qt < R.end_us) { x.push(ms(qt)); y.push(v.quotes.spread_bps[i]); } });
      } else {
        for (let i = 0; i < E.t.length; i++) { x.push(ms(Math.max(E.t[i], R.start_us))); y.push(v.trade_spread_bps[i]); }
      }
      traces.push({ x, y, name: `${v.venue} spread (${v.quotes ? "quotes" : "from trades"})`, legendgroup: v.venue,
        mode: "lines", type: "scatter", line: { shape: "hv", width: 1.2, dash: v.quotes ? "solid" : "dot" },
        xaxis: "x", yaxis: "y2", connectgaps: false });
    });
    const dx = [], dy = [];
    for (let i = 0; i < E.t.length; i++) { dx.push(ms(Math.max(E.t[i], R.start_us))); dy.push(R.disagreement_bps[i]); }
    traces.push({ x: dx, y: dy, name: "disagreement bps (max–min)/median", mode: "lines", type: "scatter",
      line: { shape: "hv", color: "#e8590c" }, fill: "tozeroy", fillcolor: "rgba(232,89,12,0.15)", xaxis: "x",
      yaxis: "y3" });
    const peak = R.summary.disagreement;
    const annotations = [];
    if (peak.peak_at) {
      annotations.push({ x: Date.parse(peak.peak_at), y: peak.peak_bps, xref: "x", yref: "y3", showarrow: true,
        arrowhead: 2, ax: 30, ay: -18, text: `peak ${peak.peak_bps.toFixed(2)} bps`, font: { size: 11 } });
    }
    const layout = {
      margin: { l: 70, r: 16, t: 14, b: 40 }, template: "plotly_white", hovermode: "x unified", showlegend: true,
      legend: { orientation: "h", y: -0.07, x: 0, font: { size: 11 } },
      xaxis: { type: "date", anchor: "y3", tickformat: "%H:%M:%S.%L UTC", range: [ms(R.start_us), ms(R.end_us)] },
      yaxis: { domain: [0.46, 1], title: { text: "last trade price" }, tickformat: ",.2f" },
      yaxis2: { domain: [0.25, 0.42], title: { text: "spread bps" }, rangemode: "tozero" },
      yaxis3: { domain: [0, 0.21], title: { text: "disagr. bps" }, rangemode: "tozero" },
      annotations,
    };
    if (typeof Plotly === "undefined") { $("chart").textContent = "chart unavailable (plotly.js did not load)"; return; }
    Plotly.newPlot("chart", traces, layout, { displaylogo: false, responsive: true }).then(() => {
      const stale = $("cursor");
      if (stale) stale.remove();
      const line = document.createElement("div");
      line.id = "cursor";
      $("chart").append(line);
      $("chart").on("plotly_relayout", queueCursor); // zoom, pan, resize
      queueCursor();
    });
  }

  function drawSide() {
    const ll = R.lead_lag;
    $("leadlag").replaceChildren(...(ll.headlines.length ? ll.headlines : ["one venue only: no lead–lag"]).map((h, i) => {
      const li = document.createElement("li");
      li.textContent = h;
      const e = ll.lags[i];
      if (e && !e.reliable) li.className = "unreliable";
      li.dataset.reliable = e && e.reliable ? "true" : "false";
      return li;
    }));
    const reliable = ll.lags.some((e) => e.reliable); // without one, there is no leader to name
    $("leadlag-note").textContent = (reliable && ll.leader ? `leader: ${ll.leader}; ` : "") +
      `lags searched within ±${ll.max_lag_ms} ms; a lag is reported only from ≥ ${ll.min_reliable_ticks} ticks, off the search ` +
      "boundary, with a 90% interval that excludes zero";
    const d = R.summary.disagreement;
    $("window-peak").textContent = d.peak_bps === null ? "" :
      `window peak ${d.peak_bps.toFixed(2)} bps at ${d.peak_at.slice(11, 23)}; mean ${d.mean_bps.toFixed(2)} bps`;
    const snap = R.snapshot;
    const facts = [["symbol", `${R.symbol} (${Object.entries(R.markets).map(([v, m]) => `${v} ${m}`).join(", ")})`],
      ["window", `${R.summary.window.start} → ${R.summary.window.end}`],
      ["snapshot", `${snap.id}${snap.as_of ? ` (as of ${snap.as_of})` : " (current)"}`],
      ["committed", snap.committed_at || "—"], ["trades", String(R.trades)], ["data files", String(R.files_scanned)]];
    $("facts").replaceChildren(...facts.flatMap(([k, v]) => {
      const a = document.createElement("div"); a.textContent = k;
      const b = document.createElement("div"); b.textContent = v;
      return [a, b];
    }));
    $("snapshot-note").textContent = `snapshot ${snap.id}${snap.as_of ? " · time travel" : ""}`;
  }

  // ------------------------------------------------------------------------------------------- playback
  function setPlaying(on) {
    playing = on;
    $("play").textContent = on ? "Pause" : "Play";
    $("play").dataset.playing = on ? "true" : "false";
    if (on) {
      if (t >= R.end_us - 1) t = R.start_us;
      lastFrame = null;
      requestAnimationFrame(frame);
    }
  }

  function frame(now) {
    if (!playing) return;
    if (lastFrame !== null) {
      const speed = parseFloat($("speed").value);
      t = Math.min(Math.round(t + (now - lastFrame) * 1000 * speed), R.end_us - 1);
    }
    lastFrame = now;
    show();
    if (t >= R.end_us - 1) setPlaying(false); else requestAnimationFrame(frame);
  }

  function step(direction) {
    setPlaying(false);
    const E = R.events.t;
    if (direction > 0) {
      const i = upper(E, t);
      if (i < E.length) t = Math.min(E[i], R.end_us - 1);
    } else {
      let i = upper(E, t) - 1; // the current event; go to the one before it
      while (i >= 0 && E[i] >= t) i--;
      const prev = i >= 0 ? E[i] : R.start_us;
      t = Math.max(prev, R.start_us);
    }
    show();
  }

  function load(payload) {
    R = payload;
    R.first_window_row = upper(R.events.t, R.start_us - 1); // rows before it are the lead-in state
    t = R.start_us;
    $("slider").max = String(R.end_us - R.start_us - 1);
    $("player").hidden = false;
    $("body").hidden = false;
    drawSide();
    drawChart();
    show();
  }

  // ---------------------------------------------------------------------------------------------- wiring
  $("play").addEventListener("click", () => setPlaying(!playing));
  $("prev").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  $("slider").addEventListener("input", () => { setPlaying(false); t = R.start_us + Number($("slider").value); show(); });
  window.addEventListener("resize", () => { if (R) queueCursor(); });
  document.addEventListener("keydown", (ev) => {
    if (!R || ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT") return;
    if (ev.key === " ") { ev.preventDefault(); setPlaying(!playing); }
    if (ev.key === "ArrowRight") step(1);
    if (ev.key === "ArrowLeft") step(-1);
  });

  const fields = ["symbol", "at", "window", "as_of", "venues"];
  if (cfg.mode === "static") {
    const w = cfg.payload.window;
    $("symbol").value = cfg.payload.symbol; $("at").value = w.at; $("window").value = w.window;
    $("venues").value = w.venues;
    const opt = document.createElement("option");
    opt.value = cfg.payload.snapshot.id; opt.textContent = String(cfg.payload.snapshot.id);
    $("as_of").replaceChildren(opt);
    fields.forEach((f) => { $(f).disabled = true; });
    $("replay-button").hidden = true;
    $("nav").hidden = true;
    $("load-status").textContent = "saved replay: the data is embedded in this file (opens offline)";
    load(cfg.payload);
  } else {
    const d = cfg.defaults || {};
    ["symbol", "at", "window", "venues"].forEach((f) => { if (d[f]) $(f).value = d[f]; });
    fetch("/api/snapshots").then((r) => r.json()).then((snaps) => {
      for (const s of snaps) {
        const opt = document.createElement("option");
        opt.value = s.id; opt.textContent = `${s.id} · ${s.committed_at}${s.operation ? " · " + s.operation : ""}`;
        $("as_of").append(opt);
      }
      if (d.as_of) $("as_of").value = d.as_of;
    }).catch(() => {});
    $("pick").addEventListener("submit", (ev) => {
      ev.preventDefault();
      setPlaying(false);
      const params = new URLSearchParams();
      fields.forEach((f) => params.set(f, $(f).value));
      $("error").textContent = "";
      $("load-status").textContent = "loading…";
      $("replay-button").disabled = true;
      fetch("/api/replay?" + params.toString())
        .then((r) => r.json())
        .then((body) => {
          if (body.error) { $("error").textContent = body.error; $("load-status").textContent = ""; return; }
          load(body);
          $("load-status").textContent = `${body.trades} trades from ${body.files_scanned} data file(s)`;
          setPlaying(true);
        })
        .catch((err) => { $("error").textContent = `could not load the replay: ${err}`; })
        .finally(() => { $("replay-button").disabled = false; });
    });
  }
})();
