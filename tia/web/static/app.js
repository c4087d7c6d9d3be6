// TiA monitor: a scrolling multi-channel plot fed by /stream (Server-Sent Events) and a status
// panel polled from /status. Plain JavaScript and a canvas, no build step, no dependency.
"use strict";

(() => {
  const MAX_WINDOW = 30;          // seconds of data kept per channel (the largest window)
  const LABEL_WIDTH = 96;         // CSS pixels left of the plot for channel names and ranges
  const AXIS_HEIGHT = 20;         // CSS pixels below the plot for the time axis
  const MIN_DRAW_INTERVAL = 30;   // ms: at most ~33 redraws a second
  const BACKGROUND = "#0f141a";
  const COLORS = {
    eeg: "#5ec8f2", eog: "#f2b45e", emg: "#b99bf5", ecg: "#f27a7a", hr: "#f59ec8", bp: "#ef6f6f",
    sensor: "#8ee69e", nirs: "#e6dc6e", event: "#ffffff", button: "#ffd27a", axis: "#9fe0d6",
  };
  const PALETTE = ["#7fd1b9", "#c3a6ff", "#ffb3a7", "#a7d8ff", "#e0e68a", "#ffa6d9"];

  const $ = (id) => document.getElementById(id);
  const canvas = $("plot");
  const ctx = canvas.getContext("2d");

  // Everything the page knows; exposed as window.tiaMonitor for tests and curious users.
  const state = {
    meta: null,
    signals: [],        // periodic signals: {i, type, labels, dt, times: [], values: [[]], gains, lo, hi}
    markers: [],        // {t, type, text}
    groups: new Map(),  // signal type -> visible
    windowSeconds: 10,
    gain: 1,
    autoscale: true,
    paused: false,
    pausedRight: 0,
    offset: null,       // server stream seconds minus local seconds, for smooth scrolling
    delay: 0.12,        // seconds behind the newest data, so a frame always arrives in time
    frames: 0,
    draws: 0,
    pointsDrawn: 0,
  };
  window.tiaMonitor = state;

  const localSeconds = () => performance.now() / 1000;
  const colorOf = (type, index) => COLORS[type] || PALETTE[index % PALETTE.length];

  // ------------------------------------------------------------------ stream

  function setLink(text, kind) {
    const badge = $("link");
    badge.textContent = text;
    badge.className = "badge" + (kind ? " " + kind : "");
  }

  function setup(meta) {
    state.meta = meta;
    state.signals = [];
    state.markers = [];
    state.offset = null;
    state.delay = Math.max(0.12, 1.5 / meta.packet_rate + 1.5 / meta.frame_rate);
    const types = [];
    meta.signals.forEach((signal, index) => {
      types.push(signal.type);
      if (!state.groups.has(signal.type)) state.groups.set(signal.type, true);
      if (signal.aperiodic) return;
      const channels = signal.labels.length;
      state.signals[signal.i] = {
        i: signal.i, type: signal.type, labels: signal.labels, color: colorOf(signal.type, index),
        dt: signal.factor > 1 ? signal.factor / (2 * signal.rate) : 1 / signal.rate,
        times: [], values: Array.from({ length: channels }, () => []),
        gains: new Array(channels).fill(1), lo: new Array(channels).fill(null), hi: new Array(channels).fill(null),
      };
    });
    buildGroupButtons(types);
  }

  function ingest(frame) {
    const offset = frame.now - localSeconds();
    // the earliest arrival is the truest offset; later ones drift back slowly (clock drift)
    state.offset = state.offset === null || offset > state.offset ? offset : state.offset + (offset - state.offset) * 0.02;
    for (const segment of frame.s) {
      const signal = state.signals[segment.i];
      if (!signal) continue;
      const count = segment.y[0].length;
      for (let k = 0; k < count; k++) signal.times.push(segment.t0 + k * segment.dt);
      segment.y.forEach((row, c) => {
        const q = segment.q[c];
        const values = signal.values[c];
        for (let k = 0; k < count; k++) values.push(row[k] * q);
      });
      trim(signal, frame.now - MAX_WINDOW - 1);
    }
    for (const marker of frame.m) state.markers.push(marker);
    while (state.markers.length && state.markers[0].t < frame.now - MAX_WINDOW - 1) state.markers.shift();
    state.frames++;
  }

  function trim(signal, oldest) {
    const cut = lowerBound(signal.times, oldest);
    if (cut > 0 && cut * 2 > signal.times.length) {  // amortized: drop in big chunks
      signal.times.splice(0, cut);
      for (const values of signal.values) values.splice(0, cut);
    }
  }

  function connect() {
    const source = new EventSource("stream");
    source.addEventListener("meta", (event) => setup(JSON.parse(event.data)));
    source.onmessage = (event) => ingest(JSON.parse(event.data));
    source.onopen = () => setLink("live", "ok");
    source.onerror = () => {
      if (source.readyState === EventSource.CLOSED) {  // refused (503) or gone: try again later
        setLink("disconnected", "bad");
        setTimeout(connect, 5000);
      } else {
        setLink("reconnecting…", "bad");
      }
    };
  }

  // ------------------------------------------------------------------ drawing

  function lowerBound(array, value) {
    let low = 0, high = array.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (array[middle] < value) low = middle + 1; else high = middle;
    }
    return low;
  }

  function visibleChannels() {
    const channels = [];
    for (const signal of state.signals) {
      if (!signal || !state.groups.get(signal.type)) continue;
      signal.labels.forEach((label, c) => channels.push({ signal, c, label }));
    }
    return channels;
  }

  function niceStep(seconds, pixels) {
    for (const step of [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10]) if (pixels * step / seconds >= 70) return step;
    return 10;
  }

  function formatTime(t, step) {
    const minutes = Math.floor(t / 60);
    const seconds = t - minutes * 60;
    const text = step < 1 ? seconds.toFixed(step < 0.1 ? 2 : 1) : String(Math.round(seconds));
    return minutes + ":" + (seconds < 10 ? "0" : "") + text;
  }

  function formatRange(value) {
    const magnitude = Math.abs(value);
    if (magnitude >= 1000) return value.toFixed(0);
    if (magnitude >= 10) return value.toFixed(1);
    return value.toPrecision(2);
  }

  function fitCanvas() {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    return [width, height];
  }

  let lastDraw = 0;

  function draw(now) {
    requestAnimationFrame(draw);
    if (now - lastDraw < MIN_DRAW_INTERVAL) return;
    lastDraw = now;
    const [width, height] = fitCanvas();
    ctx.fillStyle = BACKGROUND;
    ctx.fillRect(0, 0, width, height);
    ctx.font = "12px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    if (!state.meta || state.offset === null) {
      ctx.fillStyle = "#8a98a8";
      ctx.fillText("waiting for data…", LABEL_WIDTH, height / 2);
      return;
    }
    const right = state.paused ? state.pausedRight : localSeconds() + state.offset - state.delay;
    const left = right - state.windowSeconds;
    const x0 = LABEL_WIDTH, x1 = width - 6, y0 = 2, y1 = height - AXIS_HEIGHT;
    const xScale = (x1 - x0) / state.windowSeconds;
    const channels = visibleChannels();

    // time grid
    const step = niceStep(state.windowSeconds, x1 - x0);
    ctx.strokeStyle = "#1f2a35";
    ctx.fillStyle = "#8a98a8";
    ctx.textAlign = "center";
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (let t = Math.ceil(left / step) * step; t <= right; t += step) {
      const x = Math.round(x0 + (t - left) * xScale) + 0.5;
      ctx.moveTo(x, y0);
      ctx.lineTo(x, y1);
      if (t >= 0) ctx.fillText(formatTime(t, step), x, y1 + AXIS_HEIGHT / 2);
    }
    ctx.stroke();

    // channels, each in its own lane
    let points = 0;
    const laneHeight = channels.length ? (y1 - y0) / channels.length : 0;
    channels.forEach(({ signal, c, label }, lane) => {
      const top = y0 + lane * laneHeight;
      const middle = top + laneHeight / 2;
      const times = signal.times, values = signal.values[c];
      const first = Math.max(0, lowerBound(times, left) - 1);
      const last = Math.min(times.length, lowerBound(times, right) + 1);
      let low = Infinity, high = -Infinity;
      for (let k = first; k < last; k++) {
        const v = values[k];
        if (v < low) low = v;
        if (v > high) high = v;
      }
      if (low <= high && (state.autoscale || signal.lo[c] === null)) {
        // grow at once, shrink gently: the trace neither clips nor breathes
        signal.lo[c] = signal.lo[c] === null || low < signal.lo[c] ? low : signal.lo[c] + (low - signal.lo[c]) * 0.05;
        signal.hi[c] = signal.hi[c] === null || high > signal.hi[c] ? high : signal.hi[c] + (high - signal.hi[c]) * 0.05;
      }
      const lo = signal.lo[c] ?? 0, hi = signal.hi[c] ?? 0;
      const center = (lo + hi) / 2;
      const half = Math.max((hi - lo) / 2, Math.abs(center) * 1e-3, 1e-9);
      const gain = signal.gains[c] * state.gain;
      const yScale = (laneHeight / 2) * 0.85 * gain / half;

      if (lane > 0) {
        ctx.strokeStyle = "#1b242e";
        ctx.beginPath();
        ctx.moveTo(0, Math.round(top) + 0.5);
        ctx.lineTo(x1, Math.round(top) + 0.5);
        ctx.stroke();
      }
      ctx.save();
      ctx.beginPath();
      ctx.rect(x0, top, x1 - x0, laneHeight);
      ctx.clip();
      ctx.strokeStyle = signal.color;
      ctx.lineWidth = 1.2;
      ctx.beginPath();
      const gap = signal.dt * 3;
      let previous = -Infinity;
      for (let k = first; k < last; k++) {
        const t = times[k];
        const x = x0 + (t - left) * xScale;
        const y = middle - (values[k] - center) * yScale;
        if (t - previous > gap) ctx.moveTo(x, y); else ctx.lineTo(x, y);
        previous = t;
      }
      ctx.stroke();
      ctx.restore();
      points += last - first;

      ctx.textAlign = "left";
      ctx.fillStyle = signal.color;
      const showRange = laneHeight >= 26;
      ctx.fillText(label, 6, showRange ? middle - 6 : middle);
      if (showRange) {
        ctx.fillStyle = "#8a98a8";
        ctx.font = "10px system-ui, sans-serif";
        // no scale to show before the channel's first samples (not a made-up ±1e-9 around 0)
        const range = signal.lo[c] === null ? "no data yet" : "±" + formatRange(half / gain) + " @" + formatRange(center);
        ctx.fillText(range, 6, middle + 7);
        ctx.font = "12px system-ui, sans-serif";
      }
    });

    // event markers
    ctx.textAlign = "left";
    for (const marker of state.markers) {
      if (marker.t < left || marker.t > right || state.groups.get(marker.type) === false) continue;
      const x = Math.round(x0 + (marker.t - left) * xScale) + 0.5;
      ctx.strokeStyle = "rgba(255, 255, 255, 0.75)";
      ctx.setLineDash([4, 3]);
      ctx.beginPath();
      ctx.moveTo(x, y0);
      ctx.lineTo(x, y1);
      ctx.stroke();
      ctx.setLineDash([]);
      const text = marker.type === "event" ? marker.text : marker.type + " " + marker.text;
      const textWidth = ctx.measureText(text).width;
      ctx.fillStyle = "#f2f2f2";
      ctx.fillRect(x + 2, y0 + 2, textWidth + 8, 16);
      ctx.fillStyle = "#10151c";
      ctx.fillText(text, x + 6, y0 + 10);
    }

    if (state.paused) {
      ctx.textAlign = "right";
      ctx.fillStyle = "#f0c674";
      ctx.fillText("PAUSED", x1 - 4, y0 + 10);
    }
    state.pointsDrawn = points;
    state.draws++;
  }

  // ------------------------------------------------------------------ controls

  function buildGroupButtons(types) {
    const box = $("groups");
    box.textContent = "";
    const label = document.createElement("span");
    label.className = "group-label";
    label.textContent = "Show";
    box.append(label);
    types.forEach((type, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "group";
      button.dataset.group = type;
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colorOf(type, index);
      button.append(swatch, type);
      const sync = () => button.setAttribute("aria-pressed", String(state.groups.get(type)));
      button.addEventListener("click", () => { state.groups.set(type, !state.groups.get(type)); sync(); });
      sync();
      box.append(button);
    });
  }

  function channelAt(event) {
    const channels = visibleChannels();
    const rect = canvas.getBoundingClientRect();
    const laneHeight = (rect.height - AXIS_HEIGHT - 2) / channels.length;
    const lane = Math.floor((event.clientY - rect.top - 2) / laneHeight);
    return channels[lane];
  }

  canvas.addEventListener("wheel", (event) => {
    const channel = channelAt(event);
    if (!channel) return;
    event.preventDefault();
    channel.signal.gains[channel.c] *= event.deltaY < 0 ? 1.25 : 0.8;
  }, { passive: false });

  canvas.addEventListener("dblclick", (event) => {
    const channel = channelAt(event);
    if (channel) {
      channel.signal.gains[channel.c] = 1;
      channel.signal.lo[channel.c] = channel.signal.hi[channel.c] = null;
    }
  });

  $("window").addEventListener("change", (event) => { state.windowSeconds = Number(event.target.value); });
  $("gain-up").addEventListener("click", () => { state.gain *= 1.5; });
  $("gain-down").addEventListener("click", () => { state.gain /= 1.5; });
  $("autoscale").addEventListener("click", (event) => {
    state.autoscale = !state.autoscale;
    event.currentTarget.setAttribute("aria-pressed", String(state.autoscale));
  });
  $("pause").addEventListener("click", (event) => {
    state.paused = !state.paused;
    if (state.paused && state.offset !== null) state.pausedRight = localSeconds() + state.offset - state.delay;
    event.currentTarget.setAttribute("aria-pressed", String(state.paused));
    event.currentTarget.textContent = state.paused ? "Resume" : "Pause";
  });

  // ------------------------------------------------------------------ status

  function formatDuration(seconds) {
    const s = Math.floor(seconds);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + r + "s";
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.append(td);
    return td;
  }

  function renderStatus(status) {
    const server = $("server");
    server.textContent = "";
    const rows = [
      ["Uptime", formatDuration(status.uptime_seconds)],
      ["Packet rate", status.packet_rate.toFixed(status.packet_rate % 1 ? 2 : 0) + " /s"],
      ["Packets", String(status.ticks_sent)],
      ["Late ticks", String(status.late_ticks)],
      ["Control", status.control.replaceAll(":", ":\u200b")],  // may wrap after a colon
      ["UDP", status.udp.mode + (status.udp.send_errors ? ", " + status.udp.send_errors + " send errors" : "")],
      ["Live views", String(status.web.browsers)],
      ["Version", status.version],
    ];
    for (const [name, value] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      if (name === "Late ticks" && status.late_ticks > 0) dd.className = "warn";
      server.append(dt, dd);
    }

    const clients = $("clients").tBodies[0];
    clients.textContent = "";
    if (!status.clients.length) cell(clients.insertRow(), "no client connected", "empty").colSpan = 5;
    for (const client of status.clients) {
      const row = clients.insertRow();
      row.dataset.peer = client.peer;
      cell(row, client.peer);
      cell(row, client.transport || "none yet");
      cell(row, client.streaming ? "streaming" : "stopped");
      cell(row, String(client.packets), "num");
      cell(row, client.dropped === null ? "–" : String(client.dropped), client.dropped ? "num warn" : "num");
    }

    const signals = $("signals").tBodies[0];
    signals.textContent = "";
    for (const signal of status.signals) {
      const row = signals.insertRow();
      cell(row, signal.type);
      cell(row, signal.aperiodic ? "events" : signal.sampling_rate + " Hz", "num");
      cell(row, signal.aperiodic ? "–" : String(signal.block_size), "num");
      cell(row, signal.channels + ": " + signal.labels.join(", "), "labels");
    }
  }

  async function poll() {
    try {
      const response = await fetch("status", { cache: "no-store" });
      if (response.ok) renderStatus(await response.json());
    } catch (error) {
      setLink("server unreachable", "bad");
    }
    setTimeout(poll, 1000);
  }

  connect();
  poll();
  requestAnimationFrame(draw);
})();
