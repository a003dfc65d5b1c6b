
"use strict";
// The link hub's live dashboard. Snapshots arrive over Server-Sent Events
// from <page>/events; rates are computed here from the counters of
// successive snapshots. Every text from the bus (kinds, statuses, topics) is
// set with textContent, never parsed as HTML.
(() => {
  const $ = (id) => document.getElementById(id);
  const HISTORY_MS = 5 * 60 * 1000; // the chart's span
  const RATE_MS = 5000; // the KPIs' and tables' rate window
  const LATENCY_MS = 10000; // the latency window

  const token = new URLSearchParams(location.search).get("token");
  const base = location.pathname.replace(/\/+$/, "");
  const feedUrl = base + "/events" + (token ? "?token=" + encodeURIComponent(token) : "");
  $("host").textContent = location.host;

  // Snapshots kept for rates and the chart: {t, s}.
  let history = [];
  let startedAt = null;
  let latest = null;

  // ----- formatting ---------------------------------------------------------

  const num = (n) => {
    if (n === null || n === undefined || !isFinite(n)) return "–";
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G";
    if (a >= 1e6) return (n / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e4) return (n / 1e3).toFixed(a >= 1e5 ? 0 : 1) + "k";
    return String(Math.round(n));
  };
  const rate = (n) => {
    if (n === null || n === undefined || !isFinite(n)) return "–";
    if (n > 0 && n < 10) return n.toFixed(1);
    return num(n);
  };
  const secs = (s) => {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    if (s < 0.001) return Math.round(s * 1e6) + " µs";
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms";
    return s.toFixed(2) + " s";
  };
  const bytes = (n) => {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
    if (n < 1024 * 1024 * 1024) return (n / 1048576).toFixed(1) + " MiB";
    return (n / 1073741824).toFixed(2) + " GiB";
  };
  const span = (ms) => {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + "s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m " + (s % 60) + "s";
    const h = Math.floor(m / 60);
    if (h < 48) return h + "h " + (m % 60) + "m";
    return Math.floor(h / 24) + "d " + (h % 24) + "h";
  };
  const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });

  // ----- counters and rates -------------------------------------------------

  const sum = (xs, f) => xs.reduce((a, x) => a + f(x), 0);
  const framesIn = (s) => sum(s.frames, (f) => f.in);
  const framesOut = (s) => sum(s.frames, (f) => f.out);
  const frame = (s, type, dir) => {
    const f = s.frames.find((x) => x.type === type);
    return f ? f[dir] : 0;
  };
  const drops = (s) => Object.values(s.dropped).reduce((a, n) => a + n, 0);

  // The snapshot `windowMs` before the latest (the oldest one inside the
  // window), or null when there is not a second of history yet.
  function reference(windowMs) {
    if (history.length < 2) return null;
    const last = history[history.length - 1];
    for (const h of history) {
      if (h.t >= last.t - windowMs && h !== last) {
        return last.t - h.t >= 900 ? h : null;
      }
    }
    return null;
  }

  // Per second over the rate window; `get` reads a counter (0 if missing).
  function perSecond(get, windowMs = RATE_MS) {
    const ref = reference(windowMs);
    if (!ref) return null;
    const last = history[history.length - 1];
    return Math.max(0, get(last.s) - get(ref.s)) / ((last.t - ref.t) / 1000);
  }

  // How much a counter grew over the window (from the oldest snapshot in
  // it); null without a second of history.
  function delta(get, windowMs) {
    const ref = reference(windowMs);
    if (!ref) return null;
    return Math.max(0, get(history[history.length - 1].s) - get(ref.s));
  }

  // Prometheus' histogram_quantile over bucket counts (not cumulative; the
  // last is +Inf), linear within the bucket holding the rank.
  function quantile(bounds, buckets, q) {
    const count = buckets.reduce((a, n) => a + n, 0);
    if (count === 0) return null;
    const rank = q * count;
    let below = 0;
    for (let i = 0; i < buckets.length; i++) {
      const n = buckets[i];
      if (n > 0 && below + n >= rank) {
        if (i >= bounds.length) return bounds[bounds.length - 1];
        const lower = i === 0 ? 0 : bounds[i - 1];
        return lower + (bounds[i] - lower) * Math.min(1, Math.max(0, (rank - below) / n));
      }
      below += n;
    }
    return bounds[bounds.length - 1];
  }

  // p50/p99 over the latency window from bucket deltas; all time when there
  // was no call in the window. `pick` finds the histogram in a snapshot.
  function latency(pick) {
    const last = history[history.length - 1];
    const now = pick(last.s);
    if (!now) return { p50: null, p99: null, windowed: false };
    const ref = reference(LATENCY_MS);
    const before = ref && pick(ref.s);
    if (before) {
      const delta = now.buckets.map((n, i) => n - (before.buckets[i] || 0));
      if (delta.some((n) => n > 0)) {
        const bounds = last.s.rpc.bounds;
        return { p50: quantile(bounds, delta, 0.5), p99: quantile(bounds, delta, 0.99), windowed: true };
      }
    }
    return { p50: now.p50, p99: now.p99, windowed: false };
  }

  // ----- rendering ----------------------------------------------------------

  function cell(text, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  function sub(text) {
    const el = document.createElement("span");
    el.className = "sub";
    el.textContent = text;
    return el;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }

  function show(id, empty) {
    $(id).classList.toggle("hidden", !empty);
  }

  function renderPeers(s) {
    const rows = s.peers.map((p) => {
      const connected = cell(span(s.now - p.connectedAt), "nowrap");
      connected.append(sub("since " + clock(p.connectedAt)));
      const status = document.createElement("td");
      status.className = "status-cell";
      if (p.status !== null) {
        const code = document.createElement("code");
        code.className = "status";
        code.textContent = p.status;
        code.title = p.status;
        status.append(code, sub("updated " + span(s.now - p.statusAt) + " ago"));
      } else {
        status.classList.add("muted");
        status.textContent = "—";
      }
      const tr = row([cell(p.kind, "kind mono"), cell(p.remote || "in-process", "mono muted"), connected, status]);
      tr.dataset.kind = p.kind;
      return tr;
    });
    $("peers").replaceChildren(...rows);
    show("peers-empty", rows.length === 0);
    const more = s.peerCount - s.peers.length;
    $("peers-count").textContent = s.peerCount + " connected" + (more > 0 ? " (" + more + " not listed)" : "");
  }

  function renderTopics(s) {
    const rows = s.topics.map((t) => {
      const pick = (x) => (x.topics.find((y) => y.topic === t.topic) || { published: 0, delivered: 0 });
      const tr = row([
        cell(t.topic, "mono"),
        cell(num(t.subscribers), "num"),
        cell(rate(perSecond((x) => pick(x).published)), "num"),
        cell(rate(perSecond((x) => pick(x).delivered)), "num"),
        cell(num(t.published), "num muted"),
      ]);
      tr.dataset.topic = t.topic;
      return tr;
    });
    $("topics").replaceChildren(...rows);
    show("topics-empty", rows.length === 0);
    const more = s.topicCount - s.topics.length;
    $("topics-count").textContent = s.topicCount + (s.topicCount === 1 ? " topic" : " topics") + (more > 0 ? " (" + more + " not listed)" : "");
  }

  function renderRpc(s) {
    const relayed = latency((x) => x.rpc.relayed);
    const relayedRate = perSecond((x) => frame(x, "rpc.request", "in") - sum(x.rpc.server, (h) => h.count));
    const rows = [
      row([
        cell("relayed: peer to peer", "mono"),
        cell(rate(relayedRate), "num"),
        cell(num(frame(s, "rpc.request", "in") - sum(s.rpc.server, (h) => h.count)), "num muted"),
        cell(secs(relayed.p50), "num"),
        cell(secs(relayed.p99), "num"),
      ]),
    ];
    for (const h of s.rpc.server) {
      const pick = (x) => x.rpc.server.find((y) => y.rpcType === h.rpcType);
      const l = latency(pick);
      const tr = row([
        cell("server: " + h.rpcType, "mono"),
        cell(rate(perSecond((x) => (pick(x) || { count: 0 }).count)), "num"),
        cell(num(h.count), "num muted"),
        cell(secs(l.p50), "num"),
        cell(secs(l.p99), "num"),
      ]);
      rows.push(tr);
    }
    $("rpc").replaceChildren(...rows);
    $("sample-every").textContent = String(s.rpc.sampleEvery);
    $("rpc-note").textContent = s.hub.serverRpcInFlight + s.hub.relayedRpcInFlight > 0
      ? "in flight: " + s.hub.serverRpcInFlight + " server, " + s.hub.relayedRpcInFlight + " relayed (sampled)"
      : "";
    return relayed;
  }

  function renderFrames(s) {
    const rows = s.frames
      .filter((f) => f.in + f.out > 0)
      .map((f) => row([
        cell(f.type, "mono"),
        cell(rate(perSecond((x) => frame(x, f.type, "in"))), "num"),
        cell(rate(perSecond((x) => frame(x, f.type, "out"))), "num"),
        cell(num(f.in), "num muted"),
        cell(num(f.out), "num muted"),
      ]));
    $("frames").replaceChildren(...rows);
    $("bytes").textContent = bytes(s.bytesIn) + " in · " + bytes(s.bytesOut) + " out";
  }

  function renderErrors(s) {
    const rows = s.errors.map((e) => {
      const reason = document.createElement("td");
      const badge = document.createElement("span");
      badge.className = "reason";
      badge.textContent = e.reason;
      reason.append(badge);
      return row([
        cell(clock(e.at), "mono muted"),
        reason,
        cell(e.kind || "—", "mono"),
        cell(e.type || "—", "mono"),
        cell(e.detail || "—", "mono muted"),
        cell(e.remote || "—", "mono muted"),
      ]);
    });
    $("errors").replaceChildren(...rows);
    show("errors-empty", rows.length === 0);
    const total = drops(s);
    $("errors-count").textContent = total > 0 ? num(total) + " dropped since start; the last " + s.errors.length + " listed" : "";
  }

  function renderKpis(s, relayed) {
    $("k-peers").textContent = num(s.hub.peers);
    $("k-peers-hint").textContent = s.hub.pendingSockets > 0
      ? s.hub.pendingSockets + " awaiting hello"
      : num(s.hub.sockets) + (s.hub.sockets === 1 ? " socket" : " sockets");
    $("k-topics").textContent = num(s.hub.topics);
    $("k-topics-hint").textContent = num(sum(s.topics, (t) => t.subscribers)) + " subscriptions";
    $("k-in").textContent = rate(perSecond(framesIn));
    $("k-in-hint").textContent = num(framesIn(s)) + " since start";
    $("k-out").textContent = rate(perSecond(framesOut));
    $("k-out-hint").textContent = num(framesOut(s)) + " since start";
    $("k-rpc").textContent = rate(perSecond((x) => frame(x, "rpc.request", "in")));
    $("k-rpc-hint").textContent = num(frame(s, "rpc.request", "in")) + " since start";
    $("k-p99").textContent = secs(relayed.p99);
    $("k-p99-hint").textContent = relayed.p50 === null
      ? "relayed · no call yet"
      : "p50 " + secs(relayed.p50) + (relayed.windowed ? "" : " · all time");
    $("k-outbox").textContent = bytes(s.hub.outboxBytes);
    $("k-outbox-hint").textContent = s.hub.outboxOverflow > 0
      ? num(s.hub.outboxOverflow) + " overflowed"
      : s.hub.queuedSockets + " sockets queued";
    const lastMinute = delta(drops, 60000);
    $("k-drops").textContent = num(drops(s));
    $("k-drops-hint").textContent = lastMinute === null ? "since start" : num(lastMinute) + " last minute";
  }

  // ----- the chart ----------------------------------------------------------

  const canvas = $("chart");

  // Rates per snapshot, against the snapshot about a second before it.
  function series() {
    const points = [];
    let j = 0;
    for (let i = 1; i < history.length; i++) {
      const h = history[i];
      while (j < i - 1 && history[j + 1].t <= h.t - 900) j++;
      const ref = history[j];
      const dt = (h.t - ref.t) / 1000;
      if (dt < 0.9) continue;
      points.push({
        t: h.t,
        in: Math.max(0, framesIn(h.s) - framesIn(ref.s)) / dt,
        out: Math.max(0, framesOut(h.s) - framesOut(ref.s)) / dt,
      });
    }
    return points;
  }

  // 1, 2 or 5 times a power of ten, at least `v`.
  function niceCeil(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function drawChart() {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const colour = (name) => css.getPropertyValue(name).trim();
    const left = 48, right = 12, top = 10, bottom = 22;
    const pw = w - left - right, ph = h - top - bottom;
    const points = series();
    const end = latest ? latest.now : Date.now();
    // The span grows with the history, one minute at a time, up to five.
    const kept = history.length ? end - history[0].t : 0;
    const minutes = Math.min(HISTORY_MS / 60000, Math.max(1, Math.ceil(kept / 60000)));
    const spanMs = minutes * 60000;
    const start = end - spanMs;
    $("chart-span").textContent = "messages per second, last " + (minutes === 1 ? "minute" : minutes + " minutes");
    const max = niceCeil(Math.max(1, ...points.map((p) => Math.max(p.in, p.out))));
    const x = (t) => left + ((t - start) / spanMs) * pw;
    const y = (v) => top + ph - (v / max) * ph;

    ctx.font = "11px system-ui, sans-serif";
    ctx.lineWidth = 1;
    ctx.strokeStyle = colour("--line");
    ctx.fillStyle = colour("--muted");
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = (max / 4) * i;
      const yy = Math.round(y(v)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(left, yy);
      ctx.lineTo(w - right, yy);
      ctx.stroke();
      ctx.fillText(rate(v), left - 8, yy);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const step = minutes === 1 ? 10000 : 60000;
    for (let t = 0; t <= spanMs; t += step) {
      const xx = x(end - t);
      const label = t === 0 ? "now" : step < 60000 ? "−" + t / 1000 + " s" : "−" + t / 60000 + " min";
      ctx.fillText(label, Math.min(Math.max(xx, left + 16), w - right - 14), top + ph + 6);
    }
    const line = (key, stroke, fill) => {
      const pts = points.filter((p) => p.t >= start);
      if (pts.length < 2) return;
      ctx.beginPath();
      pts.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p[key])) : ctx.moveTo(x(p.t), y(p[key]))));
      if (fill) {
        ctx.save();
        ctx.lineTo(x(pts[pts.length - 1].t), y(0));
        ctx.lineTo(x(pts[0].t), y(0));
        ctx.closePath();
        ctx.fillStyle = fill;
        ctx.fill();
        ctx.restore();
        ctx.beginPath();
        pts.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p[key])) : ctx.moveTo(x(p.t), y(p[key]))));
      }
      ctx.strokeStyle = stroke;
      ctx.lineWidth = 2;
      ctx.lineJoin = "round";
      ctx.stroke();
    };
    line("in", colour("--in"), "rgba(37, 99, 235, 0.08)");
    line("out", colour("--out"), null);
    if (points.length < 2) {
      ctx.fillStyle = colour("--muted");
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText("collecting…", left + pw / 2, top + ph / 2);
    }
  }

  // ----- the feed -----------------------------------------------------------

  function render(s) {
    if (startedAt !== s.startedAt) {
      // Another hub (or a restart): its counters start over.
      startedAt = s.startedAt;
      history = [];
    }
    latest = s;
    history.push({ t: s.now, s });
    while (history.length > 2 && history[0].t < s.now - HISTORY_MS - 2000) history.shift();
    renderPeers(s);
    renderTopics(s);
    const relayed = renderRpc(s);
    renderFrames(s);
    renderErrors(s);
    renderKpis(s, relayed);
    drawChart();
    $("uptime").textContent = "up " + span(s.now - s.startedAt);
    $("updated").textContent = "updated " + clock(s.now);
  }

  function state(name, text) {
    document.body.dataset.feed = name;
    $("feed").textContent = text;
  }

  let source = null;
  function connect() {
    source = new EventSource(feedUrl);
    source.onmessage = (m) => {
      let s;
      try {
        s = JSON.parse(m.data);
      } catch (e) {
        return;
      }
      render(s);
      state("live", "live");
    };
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) {
        state("connecting", "reconnecting…");
        return;
      }
      // The feed answered with an error status: ask which, retry later.
      source = null;
      fetch(feedUrl, { method: "HEAD", cache: "no-store" })
        .then((r) => {
          const why = r.status === 401 ? "unauthorized: open /ui?token=…"
            : r.status === 403 ? "forbidden"
            : r.status === 503 ? "too many dashboards open"
            : "feed unavailable (" + r.status + ")";
          state("down", why);
        })
        .catch(() => state("down", "hub unreachable"))
        .finally(() => setTimeout(connect, 3000));
    };
  }

  window.addEventListener("resize", drawChart);
  drawChart();
  connect();
})();
