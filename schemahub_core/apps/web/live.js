"use strict";
// The Live page: draws the board exactly as the server formats it (schemahub_core live.board_view, the same
// cells, statuses and events as the terminal table of `schemahub live`), pushed over a WebSocket.
(() => {
  const cfg = JSON.parse(document.getElementById("config").textContent) || {};
  const $ = (id) => document.getElementById(id);
  const numeric = new Set(["bid", "ask", "mid", "spread bps", "dev bps", "age ms"]);
  let backoff = 250;
  let updates = 0;
  if (cfg.caption) $("caption").textContent = cfg.caption;

  function draw(view) {
    updates += 1;
    $("error").textContent = view.error || "";
    if (view.title) $("title").textContent = view.title;
    if (view.caption) $("caption").textContent = view.caption;
    const head = $("board").tHead.rows[0];
    if (view.columns && head.cells.length !== view.columns.length) {
      head.replaceChildren(...view.columns.map((c) => {
        const th = document.createElement("th");
        th.textContent = c;
        if (!numeric.has(c)) th.className = "l";
        return th;
      }));
    }
    $("board").tBodies[0].replaceChildren(...view.rows.map((row) => {
      const tr = document.createElement("tr");
      tr.dataset.venue = row.venue;
      tr.dataset.group = row.group;
      tr.dataset.status = row.status;
      tr.dataset.mid = row.mid === null ? "" : String(row.mid);
      tr.dataset.deviation = row.deviation_bps === null ? "" : String(row.deviation_bps);
      tr.className = row.alert ? "alert" : row.stale ? "stale" : "";
      row.cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (!numeric.has(view.columns[i])) td.className = "l";
        tr.append(td);
      });
      return tr;
    }));
    $("events").replaceChildren(...view.events.map((e) => {
      const li = document.createElement("li");
      li.textContent = e.text;
      li.className = e.end === null ? "open" : "";
      li.dataset.exchange = e.exchange;
      return li;
    }));
    $("landing").textContent = view.landing || "";
    const received = view.received || {};
    $("received").textContent = Object.keys(received).length ?
      "quotes received: " + Object.entries(received).map(([k, v]) => `${k} ${v}`).join(", ") : "";
    $("updated").textContent = view.now ? `· updated ${view.now.slice(11, 23)} UTC` : "";
    $("updated").dataset.updates = String(updates);
  }

  function connect() {
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/live`);
    ws.onopen = () => { backoff = 250; $("conn").className = "dot on"; $("conn-text").textContent = "streaming"; };
    ws.onmessage = (msg) => draw(JSON.parse(msg.data));
    ws.onclose = () => {
      $("conn").className = "dot";
      $("conn-text").textContent = "disconnected: reconnecting…";
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 5000);
    };
  }
  connect();
})();
