/* aelab explore: the page's whole logic. No libraries; it talks only to the server it came from (relative URLs).
   One decode request in flight at a time: while it is out, only the newest request waits (the latest pointer
   position wins), so a slow answer never piles requests up and the page stays responsive. */
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const SIZE = 560; // the plane's viewBox is SIZE x SIZE
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                   "#bcbd22", "#17becf"];
  const colour = (k) => (k < PALETTE.length ? PALETTE[k] : `hsl(${(k * 137.5) % 360}, 60%, 45%)`);
  const fmt = (v) => {
    if (v === null || v === undefined) return "–";
    const a = Math.abs(v);
    if (a >= 1e7 || (a !== 0 && a < 1e-3)) return v.toExponential(3);
    return v.toFixed(a >= 1000 ? 0 : a >= 100 ? 1 : 3);
  };

  const state = {
    info: null, plane: null, proj: null, pointsPx: [],
    code: null, // the current code: what the sliders edit, and what the plane keeps off the plane
    shown: null, // the last decode shown (its code and, on the plane, where it is)
    example: null, // the example the current code came from, until it is edited
    ends: [], // clicked examples: the interpolation's from and to
    y: null, // the class to decode with (runs that decode by class); "all": every class
    down: null, dragging: false, decodes: 0,
  };
  window.aelabExplore = state; // the page's state, for the curious and for the browser test

  // ---- talking to the server -------------------------------------------------------------------
  async function api(path, body) {
    const init = body === undefined ? {} : {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
    const reply = await fetch(path, init);
    let data;
    try { data = await reply.json(); } catch (e) { data = {error: `${reply.status} ${reply.statusText}`}; }
    if (!reply.ok) throw new Error(data.error || `HTTP ${reply.status}`);
    return data;
  }

  class Latest { // at most one request in flight; the newest waiting one replaces any older waiting one
    constructor(path, onReply) { Object.assign(this, {path, onReply, busy: false, next: null}); }
    send(body, meta) {
      if (this.busy) { this.next = {body, meta}; return; }
      this.fire(body, meta);
    }
    fire(body, meta) {
      this.busy = true;
      const started = performance.now();
      api(this.path, body)
        .then((reply) => this.onReply(reply, meta, performance.now() - started), showError)
        .finally(() => {
          this.busy = false;
          const next = this.next;
          this.next = null;
          if (next) this.fire(next.body, next.meta);
        });
    }
  }
  const decoder = new Latest("api/decode", onDecoded);
  const interpolator = new Latest("api/interpolate", onInterpolated);
  Object.assign(state, {decoder, interpolator});

  function status(text) { $("status").textContent = text; $("status").className = ""; }
  function showError(error) { $("status").textContent = `error: ${error.message}`; $("status").className = "error"; }

  // ---- pictures and rows ---------------------------------------------------------------------------
  function bytesOf(payload) {
    const text = atob(payload.data);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return bytes;
  }

  function paint(canvas, payload, bytes, i) { // image i of a (n, h, w, c) payload onto a canvas of its size
    const [, h, w, c] = payload.shape;
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const ctx = canvas.getContext("2d");
    const image = ctx.createImageData(w, h);
    const first = i * h * w * c;
    for (let p = 0; p < h * w; p++) {
      const s = first + p * c, d = 4 * p;
      image.data[d] = bytes[s];
      image.data[d + 1] = bytes[s + (c > 1 ? 1 : 0)];
      image.data[d + 2] = bytes[s + (c > 2 ? 2 : 0)];
      image.data[d + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
    return canvas;
  }

  function canvasesOf(payload, className) {
    const bytes = bytesOf(payload);
    return Array.from({length: payload.shape[0]}, (_, i) => {
      const canvas = paint(document.createElement("canvas"), payload, bytes, i);
      if (className) canvas.className = className;
      return canvas;
    });
  }

  function className(k) { return state.info.classes && k !== null && k !== undefined ? state.info.classes[k] : null; }

  // ---- the plane -----------------------------------------------------------------------------------
  const svg = $("plane");
  function toPx(u, v) {
    const [[x0, x1], [y0, y1]] = state.plane.bounds;
    return [(u - x0) / (x1 - x0) * SIZE, SIZE - (v - y0) / (y1 - y0) * SIZE];
  }
  function fromPx(x, y) {
    const [[x0, x1], [y0, y1]] = state.plane.bounds;
    const cx = Math.min(SIZE, Math.max(0, x)), cy = Math.min(SIZE, Math.max(0, y));
    return [x0 + cx / SIZE * (x1 - x0), y0 + (SIZE - cy) / SIZE * (y1 - y0)];
  }
  function pointerPx(event) {
    const box = svg.getBoundingClientRect();
    return [(event.clientX - box.left) / box.width * SIZE, (event.clientY - box.top) / box.height * SIZE];
  }
  const circle = (x, y, r, extra) => `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="${r}"${extra || ""}></circle>`;

  function drawPlane() {
    const plane = state.plane;
    $("prior").innerHTML = (plane.prior || []).filter(([u, v]) => u !== null && v !== null)
      .map(([u, v]) => circle(...toPx(u, v), 1.6)).join("");
    const n = plane.points.length;
    const r = n > 3000 ? 1.6 : n > 800 ? 2.4 : 3.5;
    state.pointsPx = plane.points.map(([u, v]) => (u === null || v === null ? [NaN, NaN] : toPx(u, v)));
    $("codes").innerHTML = state.pointsPx.map(([x, y], i) => (Number.isNaN(x) ? "" : circle(x, y, r,
      ` fill="${plane.labels ? colour(plane.labels[i]) : PALETTE[0]}" data-i="${i}"`))).join("");
    $("axis-x").textContent = plane.axes[0];
    $("axis-y").textContent = plane.axes[1];
    $("x-low").textContent = fmt(plane.bounds[0][0]);
    $("x-high").textContent = fmt(plane.bounds[0][1]);
    $("y-low").textContent = fmt(plane.bounds[1][0]);
    $("y-high").textContent = fmt(plane.bounds[1][1]);
    drawLegend();
    drawEnds();
    $("path").setAttribute("points", "");
  }

  function drawLegend() {
    const legend = $("legend");
    legend.innerHTML = "";
    const labels = state.plane.labels;
    if (!labels) return;
    const counts = {};
    labels.forEach((k) => { counts[k] = (counts[k] || 0) + 1; });
    Object.keys(counts).map(Number).sort((a, b) => a - b).forEach((k) => {
      const item = document.createElement("span");
      item.textContent = `${className(k)} (${counts[k]})`;
      item.style.setProperty("--swatch", colour(k));
      legend.append(item);
    });
    if (state.plane.prior) {
      const item = document.createElement("span");
      item.textContent = `draws of ${state.info.prior}`;
      item.style.setProperty("--swatch", "#bbb");
      legend.append(item);
    }
  }

  function drawEnds() {
    $("ends").innerHTML = state.ends.map((i, k) => {
      const [x, y] = state.pointsPx[i];
      return `${circle(x, y, 8)}<text x="${(x + 10).toFixed(1)}" y="${(y - 8).toFixed(1)}">${"AB"[k]}</text>`;
    }).join("");
  }

  function place(id, px) {
    const g = $(id);
    g.setAttribute("transform", `translate(${px[0].toFixed(1)} ${px[1].toFixed(1)})`);
    g.style.display = "inline";
  }

  function nearest([px, py], within) {
    let best = -1, bestD = within * within;
    state.pointsPx.forEach(([x, y], i) => {
      const d = (x - px) ** 2 + (y - py) ** 2;
      if (d <= bestD) { bestD = d; best = i; }
    });
    return best;
  }

  function yParam() { return state.info.by_class ? state.y : null; }

  function decodeAt(px, commit) {
    if (!state.code) return;
    decoder.send({code: state.code, plane: fromPx(...px), proj: state.proj, y: yParam()},
                 {commit, source: "plane"});
  }

  function decodeCurrent(source) {
    if (state.code) decoder.send({code: state.code, proj: state.proj, y: yParam()}, {commit: true, source});
  }

  function pickExample(i) {
    if (state.info.by_class === "label" && state.y !== "all" && state.plane.labels) {
      state.y = state.plane.labels[i]; // decode an example with its own class: its reconstruction
      $("class").value = String(state.y);
    }
    decoder.send({index: i, proj: state.proj, y: yParam()}, {commit: true, source: "example"});
    state.ends = state.ends.length >= 2 ? [i] : [...state.ends, i];
    drawEnds();
    if (state.ends.length === 2) interpolate(); else {
      $("path").setAttribute("points", "");
      $("strip").innerHTML = "";
      $("ends-what").textContent = `A: #${i}; click another example for B`;
    }
  }

  svg.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || !state.plane) return;
    svg.setPointerCapture(event.pointerId);
    state.down = pointerPx(event);
    state.dragging = false;
  });
  svg.addEventListener("pointermove", (event) => {
    if (!state.plane) return;
    const at = pointerPx(event);
    place("cursor", at);
    if (state.down) {
      if (!state.dragging && Math.hypot(at[0] - state.down[0], at[1] - state.down[1]) > 4) state.dragging = true;
      if (state.dragging) decodeAt(at, true);
    } else if ($("hover").checked) {
      decodeAt(at, false);
    }
  });
  svg.addEventListener("pointerup", (event) => {
    if (!state.down) return;
    const at = pointerPx(event);
    if (!state.dragging) {
      const i = nearest(at, 8);
      if (i >= 0) pickExample(i); else decodeAt(at, true);
    }
    state.down = null;
    state.dragging = false;
  });
  svg.addEventListener("pointerleave", () => {
    $("cursor").style.display = "none";
    if (!state.down && $("hover").checked) decodeCurrent("restore"); // show the current code again
  });

  // ---- what a decode shows ---------------------------------------------------------------------
  function onDecoded(reply, meta, ms) {
    if (meta.commit) {
      state.code = reply.code;
      if (reply.example) state.example = reply.example;
      else if (meta.source === "plane" || meta.source === "slider") state.example = null;
      if (reply.plane) place("marker", toPx(...reply.plane));
    }
    state.shown = reply; // what the page shows now
    const current = meta.commit || meta.source === "restore";
    showDecoded(reply.decoded, current ? state.example : null, meta.commit ? "the current code" : "under the pointer");
    if (meta.source !== "slider") setSliders(reply.code);
    state.decodes += 1;
    document.body.dataset.decodes = String(state.decodes);
    status(`decode ${ms.toFixed(1)} ms round trip (server ${reply.ms} ms) · code [${reply.code.slice(0, 4).map(fmt).join(", ")}` +
           `${reply.code.length > 4 ? ", …" : ""}]`);
  }

  function showDecoded(payload, example, what) {
    const info = state.info;
    const every = state.y === "all" && info.by_class;
    $("decoded-what").textContent = every ? `${what}, as every class` : what;
    if (payload.kind === "image") {
      $("decoded-table").hidden = true;
      $("decoded-images").hidden = !!every;
      $("by-class").hidden = !every;
      if (every) {
        $("by-class").innerHTML = "";
        canvasesOf(payload).forEach((canvas, k) => {
          const figure = document.createElement("figure");
          const caption = document.createElement("figcaption");
          caption.textContent = className(k);
          figure.append(canvas, caption);
          $("by-class").append(figure);
        });
      } else {
        paint($("decoded"), payload, bytesOf(payload), 0);
      }
      $("example").hidden = !example;
      if (example) {
        paint($("example-input"), example.input, bytesOf(example.input), 0);
        const label = className(example.label);
        $("example-what").textContent = `input: example #${example.index}${label !== null ? ` (${label})` : ""}`;
      }
    } else {
      $("decoded-images").hidden = true;
      $("by-class").hidden = true;
      $("example").hidden = true;
      showRows(payload, example, every);
    }
  }

  function showRows(payload, example, every) {
    const table = $("decoded-table");
    table.hidden = false;
    const head = ["column", ...(every ? payload.rows.map((_, k) => className(k)) : [`decoded (${state.info.units})`])];
    if (example) head.push(`example #${example.index}`);
    table.tHead.innerHTML = "";
    const headRow = table.tHead.insertRow();
    head.forEach((text) => { const th = document.createElement("th"); th.textContent = text; headRow.append(th); });
    const body = table.tBodies[0];
    body.innerHTML = "";
    state.info.columns.forEach((name, c) => {
      const row = body.insertRow();
      row.insertCell().textContent = name;
      payload.rows.forEach((values) => { row.insertCell().textContent = fmt(values[c]); });
      if (example) row.insertCell().textContent = fmt(example.input.rows[0][c]);
    });
  }

  // ---- sliders: the current code, a live traversal ------------------------------------------------
  function buildSliders() {
    const box = $("sliders");
    box.innerHTML = "";
    state.sliders = {};
    for (const dim of state.info.dims) {
      const input = document.createElement("input");
      Object.assign(input, {type: "range", id: `z${dim.dim}`, min: dim.low, max: dim.high,
                            step: (dim.high - dim.low) / 200});
      const label = document.createElement("label");
      label.htmlFor = input.id;
      label.textContent = `z${dim.dim}` + (dim.kl !== null ? `  KL ${dim.kl.toFixed(2)}` : "");
      const out = document.createElement("output");
      input.addEventListener("input", () => {
        if (!state.code) return;
        const code = state.code.slice();
        code[dim.dim] = parseFloat(input.value);
        state.code = code; // at once: the next slider step builds on this one, answered or not
        state.example = null;
        out.textContent = fmt(code[dim.dim]);
        decoder.send({code, proj: state.proj, y: yParam()}, {commit: true, source: "slider"});
      });
      box.append(label, input, out);
      state.sliders[dim.dim] = [input, out];
    }
    $("order").textContent = state.info.order === "KL" ? "(dimensions by KL, most informative first)" : "";
  }

  function setSliders(code) {
    code.forEach((v, d) => {
      const [input, out] = state.sliders[d];
      input.value = v;
      out.textContent = fmt(v);
    });
  }

  // ---- interpolation ---------------------------------------------------------------------------
  function interpolate() {
    if (state.ends.length !== 2) return;
    const info = state.info;
    const steps = Math.min(info.max_steps, Math.max(2, parseInt($("steps").value, 10) || info.steps));
    $("steps").value = steps;
    interpolator.send({from: state.ends[0], to: state.ends[1], method: $("method").value, steps,
                       y: info.by_class === "label" ? state.y : null, proj: state.proj}, {});
  }

  function onInterpolated(reply) {
    const strip = $("strip");
    strip.innerHTML = "";
    if (reply.frames.kind === "image") {
      const [a, b] = canvasesOf(reply.inputs, "end");
      a.title = `A: #${reply.from}`;
      b.title = `B: #${reply.to}`;
      strip.append(a, ...canvasesOf(reply.frames, "frame"), b);
    } else {
      const table = document.createElement("table");
      const columns = state.info.columns.slice(0, 8);
      const head = table.createTHead().insertRow();
      ["t", ...columns].forEach((text) => { const th = document.createElement("th"); th.textContent = text; head.append(th); });
      const body = table.createTBody();
      reply.frames.rows.forEach((values, s) => {
        const row = body.insertRow();
        row.className = "frame";
        row.insertCell().textContent = (s / (reply.steps - 1)).toFixed(2);
        columns.forEach((_, c) => { row.insertCell().textContent = fmt(values[c]); });
      });
      strip.append(table);
    }
    if (reply.path) {
      $("path").setAttribute("points", reply.path.map(([u, v]) => toPx(u, v).map((p) => p.toFixed(1)).join(","))
        .join(" "));
    }
    const [la, lb] = reply.labels.map(className);
    $("ends-what").textContent = `A: #${reply.from}${la !== null ? ` (${la})` : ""} → B: #${reply.to}` +
      `${lb !== null ? ` (${lb})` : ""}, ${reply.method}` + (reply.y !== null && state.info.by_class === "label"
        ? `, decoded as ${className(reply.y)}` : "");
  }

  // ---- controls --------------------------------------------------------------------------------
  function projKey() {
    if (state.info.latent_dim <= 2) return state.info.proj;
    return $("proj").value === "pca" ? "pca" : `${$("dim-x").value},${$("dim-y").value}`;
  }

  async function loadPlane() {
    const key = projKey();
    const pca = key === "pca";
    $("dims-x-label").hidden = pca;
    $("dims-y-label").hidden = pca;
    if (state.info.latent_dim > 2 && !pca && $("dim-x").value === $("dim-y").value) {
      showError(new Error("pick two different dimensions"));
      return;
    }
    try {
      state.plane = await api(`api/plane?proj=${encodeURIComponent(key)}`);
    } catch (error) { showError(error); return; }
    state.proj = state.plane.proj;
    drawPlane();
    if (state.code) decodeCurrent("restore"); // the marker's place on the new plane
    else decoder.send({index: 0, proj: state.proj, y: yParam()}, {commit: true, source: "example"});
    if (state.ends.length === 2) interpolate();
  }

  function setup() {
    const info = state.info;
    $("run").textContent = `${info.run} · ${info.family} · ${info.latent_dim}-D codes · ${info.points} ` +
      `${info.split} examples of ${info.data}` + (info.prior ? ` · grey: draws of ${info.prior}` : "");
    if (info.latent_dim > 2) {
      $("projection").hidden = false;
      for (const id of ["dim-x", "dim-y"]) {
        for (const dim of info.dims) {
          const option = document.createElement("option");
          option.value = dim.dim;
          option.textContent = `z${dim.dim}` + (dim.kl !== null ? ` (KL ${dim.kl.toFixed(2)})` : "");
          $(id).append(option);
        }
      }
      $("dim-x").value = info.dims[0].dim; // the two most informative dimensions (by KL where known)
      $("dim-y").value = info.dims[1].dim;
      for (const id of ["proj", "dim-x", "dim-y"]) $(id).addEventListener("change", loadPlane);
    }
    if (info.by_class) {
      $("class-controls").hidden = false;
      const options = info.by_class === "shift" ? [["", "as encoded"]] : [];
      for (let k = 0; k < info.num_classes; k++) options.push([String(k), info.classes[k]]);
      options.push(["all", "every class"]);
      for (const [value, text] of options) {
        const option = document.createElement("option");
        Object.assign(option, {value, textContent: text});
        $("class").append(option);
      }
      state.y = info.by_class === "label" ? 0 : null;
      $("class").value = state.y === null ? "" : String(state.y);
      $("class").addEventListener("change", () => {
        const v = $("class").value;
        state.y = v === "" ? null : v === "all" ? "all" : parseInt(v, 10);
        decodeCurrent("restore");
        interpolate();
      });
    }
    for (const method of info.methods) {
      const option = document.createElement("option");
      Object.assign(option, {value: method, textContent: method});
      $("method").append(option);
    }
    $("method").value = info.method;
    $("steps").value = info.steps;
    $("steps").max = info.max_steps;
    $("method").addEventListener("change", interpolate);
    $("steps").addEventListener("change", interpolate);
    buildSliders();
  }

  (async function start() {
    try {
      state.info = await api("api/info");
    } catch (error) { showError(error); return; }
    setup();
    await loadPlane();
    document.body.dataset.ready = "1";
  })();
})();
