// jacobian-service playground: plain DOM and canvas, no dependencies, only the public API.
"use strict";

const KEY_STORAGE = "jacobian-service.api-key";
const SPY_COLOR = "#1f3b73";
const HIGHLIGHT = "rgba(255, 153, 0, 0.45)";
const SPY_TARGET_PX = 360; // the spy canvas' longer side, at most
const SPY_MAX_CELL_PX = 24;

// ---- talking to the API -------------------------------------------------------------------

class ProblemError extends Error {
  constructor(problem) {
    super(problem.detail || problem.title || "request failed");
    this.problem = problem;
  }
}

function headers(accept) {
  const result = { "content-type": "application/json", accept };
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) result["x-api-key"] = key;
  return result;
}

// POST a JSON body; resolve to the Response, or reject with the problem+json the server sent.
async function post(path, body, { accept = "application/json", signal } = {}) {
  const response = await fetch(path, {
    method: "POST",
    headers: headers(accept),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) {
    let problem;
    try {
      problem = await response.json();
    } catch {
      problem = { status: response.status, title: response.statusText, detail: "" };
    }
    throw new ProblemError(problem);
  }
  return response;
}

async function postJson(path, body) {
  return (await post(path, body)).json();
}

// ---- errors next to their fields ----------------------------------------------------------

function clearErrors(form) {
  for (const slot of form.querySelectorAll(".field-error, .panel-error")) slot.textContent = "";
  for (const field of form.querySelectorAll("[aria-invalid]")) field.removeAttribute("aria-invalid");
}

// The control whose data-pointer is the longest prefix of the problem's JSON pointer.
function fieldFor(form, pointer) {
  let best = null;
  for (const field of form.querySelectorAll("[data-pointer]")) {
    if (field.closest("[hidden]")) continue; // the other form's field with the same pointer
    const own = field.dataset.pointer;
    const matches = pointer === own || pointer.startsWith(own + "/");
    if (matches && (!best || own.length > best.dataset.pointer.length)) best = field;
  }
  return best;
}

function fieldError(field, message) {
  field.setAttribute("aria-invalid", "true");
  const slot = document.getElementById(field.id + "-error");
  if (slot) slot.textContent = slot.textContent ? slot.textContent + " " + message : message;
  return Boolean(slot);
}

function showError(form, panelSlot, error) {
  if (error.name === "AbortError") return;
  if (!(error instanceof ProblemError)) {
    panelSlot.textContent = String(error.message || error);
    return;
  }
  const problem = error.problem;
  const unplaced = [];
  for (const item of problem.errors || []) {
    const field = fieldFor(form, item.pointer || "");
    if (!field || !fieldError(field, item.detail)) unplaced.push(`${item.pointer}: ${item.detail}`);
  }
  const summary = `${problem.status} ${problem.title}: ${problem.detail || ""}`;
  panelSlot.textContent = [summary, ...unplaced].join(" — ");
}

// Read a JSON textarea; a syntax error is shown at the field itself, without a request.
function readJson(field) {
  try {
    return JSON.parse(field.value);
  } catch (error) {
    fieldError(field, `not valid JSON: ${error.message}`);
    return undefined;
  }
}

// ---- small numeric helpers ----------------------------------------------------------------

// A seeded generator (mulberry32), so "random" images and kernels repeat across runs.
function generator(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function grid(height, width, value) {
  return Array.from({ length: height }, (_, i) => Array.from({ length: width }, (_, j) => value(i, j)));
}

function format(value) {
  if (!Number.isFinite(value)) return String(value);
  if (value !== 0 && (Math.abs(value) >= 1e5 || Math.abs(value) < 1e-3)) return value.toExponential(3);
  return String(Number(value.toPrecision(4)));
}

function intValue(id) {
  return Number.parseInt(document.getElementById(id).value, 10);
}

// ---- spy plots on canvas ------------------------------------------------------------------

// Draw a COO matrix on a white canvas whose longer side is at most SPY_TARGET_PX: one square of
// `cell` pixels per stored entry, or, for a larger matrix, one pixel per block of `block` x `block`
// entries, darker the more of them are stored (a density raster, as the service's PNG draws).
function drawSpy(canvas, jacobian) {
  const [rows, cols] = jacobian.shape;
  const longer = Math.max(rows, cols, 1);
  const block = Math.ceil(longer / SPY_TARGET_PX);
  const cell = block > 1 ? 1 : Math.min(SPY_MAX_CELL_PX, Math.floor(SPY_TARGET_PX / longer));
  const height = Math.ceil(rows / block);
  const width = Math.ceil(cols / block);
  canvas.width = width * cell;
  canvas.height = height * cell;
  canvas.dataset.cell = String(cell);
  canvas.dataset.block = String(block);
  const context = canvas.getContext("2d");
  context.fillStyle = "#ffffff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  if (block === 1) {
    context.fillStyle = SPY_COLOR;
    for (let n = 0; n < jacobian.row.length; n++) {
      context.fillRect(jacobian.col[n] * cell, jacobian.row[n] * cell, cell, cell);
    }
    return { cell, block };
  }
  const counts = new Uint32Array(width * height);
  for (let n = 0; n < jacobian.row.length; n++) {
    counts[Math.floor(jacobian.row[n] / block) * width + Math.floor(jacobian.col[n] / block)] += 1;
  }
  const peak = counts.reduce((a, b) => Math.max(a, b), 0);
  const image = context.getImageData(0, 0, width, height);
  const [r, g, b] = [0x1f, 0x3b, 0x73];
  counts.forEach((count, k) => {
    if (!count) return;
    // From a light tint (one entry in the densest block's scale) to SPY_COLOR (the densest).
    const t = 0.25 + 0.75 * (count / peak);
    image.data.set([255 - t * (255 - r), 255 - t * (255 - g), 255 - t * (255 - b), 255], 4 * k);
  });
  context.putImageData(image, 0, 0);
  return { cell, block };
}

function spyCaption(name, jacobian) {
  const [rows, cols] = jacobian.shape;
  return `${name}: ${rows} × ${cols}, nnz ${jacobian.nnz}; rows: input flat index (order ` +
    `${jacobian.order} over ${JSON.stringify(jacobian.in_shape)}), columns: output flat index ` +
    `(over ${JSON.stringify(jacobian.out_shape)}), layout ${jacobian.layout}`;
}

// ---- heat tables --------------------------------------------------------------------------

function fillHeatTable(table, values, label) {
  const flat = values.flat();
  const low = Math.min(...flat);
  const high = Math.max(...flat);
  table.replaceChildren();
  values.forEach((row, i) => {
    const tr = table.insertRow();
    row.forEach((value, j) => {
      const td = tr.insertCell();
      const t = high > low ? (value - low) / (high - low) : 0.5;
      td.style.backgroundColor = `hsl(220, 55%, ${Math.round(96 - 62 * t)}%)`;
      td.style.color = t > 0.55 ? "#ffffff" : "#111111";
      td.textContent = format(value);
      td.dataset.i = String(i);
      td.dataset.j = String(j);
      td.setAttribute("aria-label", `${label}[${i}, ${j}] = ${format(value)}`);
    });
  });
}

// ---- cross-correlation panel --------------------------------------------------------------

const KERNELS = {
  worked: [[1, 2]],
  identity: [[0, 0, 0], [0, 1, 0], [0, 0, 0]],
  "sobel-x": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
  "sobel-y": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
  laplacian: [[0, 1, 0], [1, -4, 1], [0, 1, 0]],
  box: grid(3, 3, () => 1 / 9),
  gauss: [[1, 2, 1], [2, 4, 2], [1, 2, 1]].map((row) => row.map((v) => v / 16)),
};

const drawing = { height: 8, width: 8, on: new Set(["2,2", "3,3", "4,4", "5,5", "2,5", "5,2"]), cursor: [0, 0] };
const xcorrState = { columnRows: null, inIndex: null, outFlat: null, jacobian: null, cell: 1, block: 1 };

function imageData() {
  const choice = document.getElementById("xc-image").value;
  if (choice === "worked") return [[[1, 2, 3], [4, 5, 6]]];
  const height = intValue("xc-height");
  const width = intValue("xc-width");
  if (choice === "random") {
    const random = generator(20261201);
    return [grid(height, width, () => Math.round((random() * 2 - 1) * 100) / 100)];
  }
  return [grid(drawing.height, drawing.width, (i, j) => (drawing.on.has(`${i},${j}`) ? 1 : 0))];
}

function kernelData() {
  const choice = document.getElementById("xc-kernel").value;
  if (choice === "random") {
    const random = generator(7);
    return [grid(3, 3, () => Math.round((random() * 2 - 1) * 100) / 100)];
  }
  return [KERNELS[choice]];
}

function drawEditor() {
  const canvas = document.getElementById("xc-draw");
  const size = 18;
  drawing.height = Math.max(1, Math.min(32, intValue("xc-height") || 8));
  drawing.width = Math.max(1, Math.min(32, intValue("xc-width") || 8));
  canvas.width = drawing.width * size;
  canvas.height = drawing.height * size;
  const context = canvas.getContext("2d");
  for (let i = 0; i < drawing.height; i++) {
    for (let j = 0; j < drawing.width; j++) {
      context.fillStyle = drawing.on.has(`${i},${j}`) ? "#111111" : "#ffffff";
      context.fillRect(j * size, i * size, size, size);
      context.strokeStyle = "#cccccc";
      context.strokeRect(j * size + 0.5, i * size + 0.5, size - 1, size - 1);
    }
  }
  const [ci, cj] = drawing.cursor;
  context.strokeStyle = "#ff9900";
  context.lineWidth = 2;
  context.strokeRect(cj * size + 1, ci * size + 1, size - 2, size - 2);
  context.lineWidth = 1;
  canvas.setAttribute("aria-label", `drawn image editor, ${drawing.on.size} pixels on, cursor at row ${ci}, column ${cj}`);
}

function toggle(i, j) {
  const key = `${i},${j}`;
  if (drawing.on.has(key)) drawing.on.delete(key);
  else drawing.on.add(key);
  drawEditor();
}

function setUpEditor() {
  const canvas = document.getElementById("xc-draw");
  canvas.addEventListener("click", (event) => {
    const bounds = canvas.getBoundingClientRect();
    const j = Math.floor(((event.clientX - bounds.left) / bounds.width) * drawing.width);
    const i = Math.floor(((event.clientY - bounds.top) / bounds.height) * drawing.height);
    drawing.cursor = [i, j];
    toggle(i, j);
  });
  canvas.addEventListener("keydown", (event) => {
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    if (event.key in moves) {
      const [di, dj] = moves[event.key];
      drawing.cursor = [
        Math.max(0, Math.min(drawing.height - 1, drawing.cursor[0] + di)),
        Math.max(0, Math.min(drawing.width - 1, drawing.cursor[1] + dj)),
      ];
      drawEditor();
      event.preventDefault();
    } else if (event.key === " " || event.key === "Enter") {
      toggle(...drawing.cursor);
      event.preventDefault();
    }
  });
  const show = () => {
    document.getElementById("xc-draw-box").hidden = document.getElementById("xc-image").value !== "drawn";
    drawEditor();
  };
  for (const id of ["xc-image", "xc-height", "xc-width"]) {
    document.getElementById(id).addEventListener("change", show);
  }
  show();
}

// The stored rows of every column of a COO matrix (its "reads" in the in_out layout).
function rowsByColumn(jacobian) {
  const columns = Array.from({ length: jacobian.shape[1] }, () => []);
  for (let n = 0; n < jacobian.row.length; n++) columns[jacobian.col[n]].push([jacobian.row[n], jacobian.data[n]]);
  return columns;
}

function highlight(i, j) {
  const state = xcorrState;
  if (!state.jacobian) return;
  const column = state.outFlat[i][j];
  const overlay = document.getElementById("xc-spy-overlay");
  const context = overlay.getContext("2d");
  context.clearRect(0, 0, overlay.width, overlay.height);
  context.fillStyle = HIGHLIGHT;
  context.fillRect(Math.floor(column / state.block) * state.cell, 0, state.cell, overlay.height);
  const inputTable = document.getElementById("xc-input");
  for (const cell of inputTable.querySelectorAll(".read")) cell.classList.remove("read");
  const reads = state.columnRows[column].map(([row, weight]) => {
    const [, h, w] = state.inIndex[row];
    inputTable.rows[h].cells[w].classList.add("read");
    return `x[0, ${h}, ${w}] × ${format(weight)}`;
  });
  for (const cell of document.querySelectorAll("#xc-output .selected")) cell.classList.remove("selected");
  document.getElementById("xc-output").rows[i].cells[j].classList.add("selected");
  document.getElementById("xc-selection").textContent =
    `output[${i}, ${j}] is column ${column} of J: it reads ${reads.join(" + ") || "nothing"}.`;
}

function setUpOutputNavigation(table) {
  const cells = () => table.querySelectorAll("td");
  cells().forEach((cell, n) => {
    cell.tabIndex = n === 0 ? 0 : -1;
    const select = () => highlight(Number(cell.dataset.i), Number(cell.dataset.j));
    cell.addEventListener("mouseenter", select);
    cell.addEventListener("focus", select);
  });
  table.onkeydown = (event) => {
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    const current = event.target.closest("td");
    if (!current || !(event.key in moves)) return;
    const [di, dj] = moves[event.key];
    const row = table.rows[Number(current.dataset.i) + di];
    const next = row && row.cells[Number(current.dataset.j) + dj];
    if (next) {
      current.tabIndex = -1;
      next.tabIndex = 0;
      next.focus();
    }
    event.preventDefault();
  };
}

async function runCorrelation(event) {
  event.preventDefault();
  const form = document.getElementById("xcorr-form");
  const errorSlot = document.getElementById("xcorr-error");
  clearErrors(form);
  const body = {
    x: { data: imageData() },
    kernel: { data: kernelData() },
    stride: [intValue("xc-stride-h"), intValue("xc-stride-w")],
    padding: document.getElementById("xc-padding").value,
    dilation: [intValue("xc-dilation-h"), intValue("xc-dilation-w")],
    jacobian: "coo",
  };
  try {
    const answer = await postJson("/v1/cross-correlation", body);
    const jacobian = answer.jacobian_x;
    const [outH, outW] = jacobian.out_shape;
    // Index bookkeeping by the API itself: which input each row is, which column each output is.
    const rowsIndex = Array.from({ length: jacobian.shape[0] }, (_, n) => n);
    const outCells = grid(outH, outW, (i, j) => [i, j]).flat();
    const [unflat, flat] = await Promise.all([
      postJson("/v1/unflat", { flat: rowsIndex, dims: jacobian.in_shape, order: jacobian.order }),
      postJson("/v1/flat", { index: outCells, dims: jacobian.out_shape, order: jacobian.order }),
    ]);
    Object.assign(xcorrState, {
      jacobian,
      inIndex: unflat.index,
      outFlat: grid(outH, outW, (i, j) => flat.flat[i * outW + j]),
      columnRows: rowsByColumn(jacobian),
    });
    document.getElementById("xc-results").hidden = false;
    fillHeatTable(document.getElementById("xc-input"), body.x.data[0], "x");
    const outputTable = document.getElementById("xc-output");
    fillHeatTable(outputTable, answer.output.data, "output");
    setUpOutputNavigation(outputTable);
    const spy = document.getElementById("xc-spy");
    Object.assign(xcorrState, drawSpy(spy, jacobian));
    const overlay = document.getElementById("xc-spy-overlay");
    overlay.width = spy.width;
    overlay.height = spy.height;
    document.getElementById("xc-spy-caption").textContent = spyCaption("∂output/∂x", jacobian);
    document.getElementById("xc-selection").textContent = "";
  } catch (error) {
    showError(form, errorSlot, error);
  }
}

// ---- function panel -----------------------------------------------------------------------

function isExpression() {
  return document.getElementById("fn-form").value === "expression";
}

function functionBody() {
  const check = document.getElementById("fn-check").checked;
  if (!isExpression()) {
    const x = readJson(document.getElementById("fn-x"));
    const ops = readJson(document.getElementById("fn-ops"));
    if (x === undefined || ops === undefined) return undefined;
    return { x: { data: x }, function: ops, format: "coo", check };
  }
  const inputs = readJson(document.getElementById("fn-inputs"));
  if (inputs === undefined) return undefined;
  const body = {
    inputs: Object.fromEntries(Object.entries(inputs).map(([name, data]) => [name, { data }])),
    function: document.getElementById("fn-expression").value,
    format: "coo",
    check,
  };
  const wrt = document.getElementById("fn-wrt").value.split(",").map((name) => name.trim()).filter(Boolean);
  if (wrt.length) body.wrt = wrt;
  return body;
}

// One spy plot per Jacobian: the op-list answer's `jacobian` (of x), or a program's `jacobians`.
function drawFunctionSpies(answer) {
  const jacobians = answer.jacobians || { x: answer.jacobian };
  const container = document.getElementById("fn-spies");
  container.replaceChildren();
  for (const [name, jacobian] of Object.entries(jacobians)) {
    const figure = document.createElement("figure");
    const caption = document.createElement("figcaption");
    caption.id = `fn-spy-${name}-caption`;
    caption.textContent = spyCaption(`∂h/∂${name}`, jacobian) + ` (strategy ${answer.strategy})`;
    const box = document.createElement("div");
    box.className = "spy";
    const canvas = document.createElement("canvas");
    canvas.id = `fn-spy-${name}`;
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-labelledby", caption.id);
    box.append(canvas);
    figure.append(caption, box);
    container.append(figure);
    drawSpy(canvas, jacobian);
  }
}

function checkText(check) {
  if (!check) return "No finite-difference check asked for.";
  return `Finite-difference check ${check.passed ? "passed" : "FAILED"}: max abs error ` +
    `${format(check.max_abs_error)}, max rel error ${format(check.max_rel_error)} over ` +
    `${check.directions} directions (${check.checked.join(", ")}).`;
}

async function runFunction(event) {
  event.preventDefault();
  const form = document.getElementById("function-form");
  clearErrors(form);
  const body = functionBody();
  if (body === undefined) return;
  try {
    const answer = await postJson("/v1/jacobian", body);
    document.getElementById("fn-results").hidden = false;
    document.getElementById("fn-value").textContent = JSON.stringify(answer.value.data);
    drawFunctionSpies(answer);
    document.getElementById("fn-check-result").textContent = checkText(answer.check);
  } catch (error) {
    showError(form, document.getElementById("function-error"), error);
  }
}

// Show the chosen form's fields only.
function setUpFunctionPanel() {
  const select = document.getElementById("fn-form");
  const show = () => {
    const expression = isExpression();
    document.getElementById("fn-ops-fields").hidden = expression;
    document.getElementById("fn-expression-fields").hidden = !expression;
  };
  select.addEventListener("change", show);
  show();
}

// ---- descent panel ------------------------------------------------------------------------

const BLUR = KERNELS.gauss;

function loss(choice) {
  if (choice === "quadratic") {
    const random = generator(11);
    const c = Array.from({ length: 16 }, () => Math.round((random() * 4 - 2) * 100) / 100);
    return {
      function: [{ op: "add", constant: { data: c.map((v) => -v) } }, { op: "squared_norm" }, { op: "scale", factor: 0.5 }],
      x0: { data: Array(16).fill(0) },
    };
  }
  if (choice === "ill") {
    const roots = Array.from({ length: 16 }, (_, i) => Math.sqrt(1 + (99 * i) / 15));
    return {
      function: [{ op: "multiply", constant: { data: roots } }, { op: "squared_norm" }, { op: "scale", factor: 0.5 }],
      x0: { data: Array(16).fill(1) },
    };
  }
  const size = 64;
  const target = grid(size, size, (i, j) => (Math.abs(i - 32) < 12 && Math.abs(j - 32) < 12 ? 1 : 0));
  return {
    function: [{ op: "xcorr2d", kernel: { data: [BLUR] }, padding: "same" }, { op: "mse", target: { data: target } }],
    x0: { data: [grid(size, size, () => 0)] },
  };
}

function methodOptions(method) {
  if (method === "momentum") return { momentum: 0.9 };
  if (method === "nesterov") return { momentum: 0.9, nesterov: true };
  if (method === "backtracking") return { line_search: "backtracking" };
  return {};
}

function drawChart(canvas, steps, values, color) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  const pad = { left: 70, right: 12, top: 12, bottom: 28 };
  context.fillStyle = "#ffffff";
  context.fillRect(0, 0, width, height);
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return;
  const log = finite.every((v) => v > 0);
  const y = log ? finite.map(Math.log10) : finite;
  let low = Math.min(...y);
  let high = Math.max(...y);
  if (high === low) { low -= 1; high += 1; }
  const lastStep = Math.max(steps[steps.length - 1], 1);
  const px = (step) => pad.left + (step / lastStep) * (width - pad.left - pad.right);
  const py = (v) => pad.top + (1 - ((log ? Math.log10(v) : v) - low) / (high - low)) * (height - pad.top - pad.bottom);
  context.strokeStyle = "#999999";
  context.strokeRect(pad.left, pad.top, width - pad.left - pad.right, height - pad.top - pad.bottom);
  context.fillStyle = "#333333";
  context.font = "11px sans-serif";
  const top = log ? 10 ** high : high;
  const bottom = log ? 10 ** low : low;
  context.fillText(format(top), 4, pad.top + 10);
  context.fillText(format(bottom), 4, height - pad.bottom);
  context.fillText(log ? "log scale" : "linear", 4, height / 2);
  context.fillText("0", pad.left, height - 8);
  context.fillText(`step ${steps[steps.length - 1]}`, width - pad.right - 70, height - 8);
  context.strokeStyle = color;
  context.lineWidth = 2;
  context.beginPath();
  let started = false;
  steps.forEach((step, n) => {
    if (!Number.isFinite(values[n])) return;
    if (started) context.lineTo(px(step), py(values[n]));
    else { context.moveTo(px(step), py(values[n])); started = true; }
  });
  context.stroke();
}

const run = { controller: null, steps: [], f: [], grad: [], frame: 0 };

function redraw() {
  run.frame = 0;
  drawChart(document.getElementById("gd-f-chart"), run.steps, run.f, SPY_COLOR);
  drawChart(document.getElementById("gd-g-chart"), run.steps, run.grad, "#b5453a");
  document.getElementById("gd-points").textContent = String(run.steps.length);
  const last = run.steps.length - 1;
  document.getElementById("gd-last-f").textContent = last >= 0 ? format(run.f[last]) : "–";
  document.getElementById("gd-last-grad").textContent = last >= 0 ? format(run.grad[last]) : "–";
}

function scheduleRedraw() {
  if (!run.frame) run.frame = requestAnimationFrame(redraw);
}

function handleLine(line, status) {
  if (typeof line.status === "string") {
    status.textContent = `${line.status}: ${line.reason} (f = ${format(line.f_final)}, ‖∇f‖ = ${format(line.grad_norm_final)})`;
    status.dataset.status = line.status;
  } else if (typeof line.status === "number") {
    status.textContent = `stopped by an error: ${line.title}: ${line.detail}`;
    status.dataset.status = "error";
  } else {
    run.steps.push(line.step);
    run.f.push(line.f);
    run.grad.push(line.grad_norm);
    scheduleRedraw();
  }
}

async function runDescent(event) {
  event.preventDefault();
  const form = document.getElementById("descent-form");
  const status = document.getElementById("gd-status");
  clearErrors(form);
  const steps = intValue("gd-steps");
  const gradTol = document.getElementById("gd-grad-tol").value;
  const body = {
    ...loss(document.getElementById("gd-loss").value),
    learning_rate: Number(document.getElementById("gd-lr").value),
    max_steps: Number.isNaN(steps) ? null : steps,
    // About 500 points at most: the chart stays light however long the run.
    record_every: Math.max(1, Math.ceil((steps || 1) / 500)),
    tolerances: gradTol === "" ? {} : { grad_tol: Number(gradTol) },
    ...methodOptions(document.getElementById("gd-method").value),
  };
  Object.assign(run, { controller: new AbortController(), steps: [], f: [], grad: [] });
  redraw();
  const runButton = document.getElementById("gd-run");
  const stopButton = document.getElementById("gd-stop");
  runButton.disabled = false;
  stopButton.disabled = false;
  status.textContent = "running…";
  status.dataset.status = "running";
  try {
    const response = await post("/v1/gradient-descent", body, { accept: "application/x-ndjson", signal: run.controller.signal });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const text = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (text.trim()) handleLine(JSON.parse(text), status);
      }
    }
  } catch (error) {
    if (error.name === "AbortError") {
      const last = run.steps.length ? run.steps[run.steps.length - 1] : 0;
      status.textContent = `stopped by you after step ${last}: closing the stream stopped the server's computation`;
      status.dataset.status = "stopped";
    } else {
      status.textContent = "refused";
      status.dataset.status = "refused";
      showError(form, document.getElementById("descent-error"), error);
    }
  } finally {
    stopButton.disabled = true;
    redraw();
  }
}

// ---- start --------------------------------------------------------------------------------

function setUpKey() {
  const field = document.getElementById("api-key");
  field.value = sessionStorage.getItem(KEY_STORAGE) || "";
  field.addEventListener("input", () => {
    if (field.value) sessionStorage.setItem(KEY_STORAGE, field.value);
    else sessionStorage.removeItem(KEY_STORAGE);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpKey();
  setUpEditor();
  document.getElementById("xcorr-form").addEventListener("submit", runCorrelation);
  document.getElementById("function-form").addEventListener("submit", runFunction);
  document.getElementById("descent-form").addEventListener("submit", runDescent);
  document.getElementById("gd-stop").addEventListener("click", () => run.controller && run.controller.abort());
  setUpFunctionPanel();
  document.body.dataset.ready = "true";
});
