// The "Timesteps" dashboard: one ES module, loaded by TensorBoard in the
// plugin's iframe. It asks the plugin's JSON routes (plugin.py) for data and
// draws with the vendored Apache ECharts; nothing is fetched from elsewhere.
//
// Three views: Profile (a quantity against the timestep at one training
// step, every run and layer overlaid), Heatmap (one run/layer/quantity over
// timesteps and training steps) and Gates (per gate: the mean and the
// saturated fraction per timestep over training, and one probe sequence's
// activations unit by unit). `window.timestepsDashboard` exposes what each
// chart last drew, for tests and scripts.

import * as echarts from './echarts.esm.min.mjs';

const LABELS = {
  inputs: '||dL/dx_t||',
  hidden: '||dL/dh_t||',
  cell: '||dL/dc_t||',
  kernel: "||dL/dW_t|| (kernel's contribution)",
  recurrent_kernel: "||dL/dU_t|| (recurrent kernel's contribution)",
  bias: "||dL/db_t|| (bias' contribution)",
  retention: 'prod_{j>t} f_j, mean',
  retention_q50: 'prod_{j>t} f_j, median unit',
  retention_q90: 'prod_{j>t} f_j, 90th percentile unit',
  retention_max: 'prod_{j>t} f_j, max unit',
  jacobian_hidden: '||dh_T/dh_t||_F',
  jacobian_hidden_spectral: '||dh_T/dh_t||_2',
  jacobian_cell: '||dc_T/dc_t||_F',
  jacobian_cell_spectral: '||dc_T/dc_t||_2',
};

const STYLE = `
  body { font-family: Roboto, sans-serif; font-size: 13px; margin: 12px;
         color: #212121; }
  .bar { display: flex; flex-wrap: wrap; gap: 12px; align-items: center;
         margin-bottom: 10px; }
  .bar label { display: flex; gap: 6px; align-items: center; }
  .views button { border: 1px solid #bdbdbd; background: #fff;
                  padding: 4px 12px; cursor: pointer; }
  .views button.active { background: #f57c00; color: #fff;
                         border-color: #f57c00; }
  .chart { width: 100%; height: 420px; }
  .small { width: 100%; height: 230px; }
  .gates { display: grid; gap: 8px;
           grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); }
  .card { border: 1px solid #e0e0e0; padding: 6px; }
  .card h3 { margin: 2px 0 4px; font-size: 14px; }
  .note { color: #616161; margin: 4px 0; }
  input[type=range] { width: 320px; }
`;

// Times (ms since the epoch) of the module's start and first full drawing.
const state = {runs: [], renders: {}, charts: {}, firstChartAt: null,
  moduleAt: performance.timeOrigin + performance.now()};
window.timestepsDashboard = state;

function route(name, params = {}) {
  const url = new URL(name, import.meta.url);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) url.searchParams.set(key, value);
  }
  return fetch(url).then((response) => {
    if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
    return response.json();
  });
}

function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.appendChild(child);
  return node;
}

function select(id, options, value) {
  const node = element('select', {id});
  for (const option of options) {
    node.appendChild(element('option', {value: option, text: option}));
  }
  if (options.includes(value)) node.value = value;
  return node;
}

function labelled(text, control) {
  return element('label', {}, [element('span', {text}), control]);
}

function format(value) {
  if (value === null || value === undefined) return 'not shown';
  return Math.abs(value) >= 1e-3 && Math.abs(value) < 1e4 ?
      value.toPrecision(7) : value.toExponential(6);
}

// Short axis labels: 0.25, 1e-7.
function tick(value) {
  if (value === 0) return '0';
  return Math.abs(value) >= 1e-3 && Math.abs(value) < 1e4 ?
      String(Number(value.toPrecision(3))) : value.toExponential(0);
}

// A chart per container element, reused across draws while the element is
// on the page; `info` is what the test hook reports once the chart has
// finished drawing.
function draw(container, option, info) {
  let entry = state.charts[container.id];
  if (entry && entry.chart.getDom() !== container) {
    disposeChart(container.id);
    entry = null;
  }
  if (!entry) {
    const chart = echarts.init(container, null, {renderer: 'canvas'});
    const observer = new ResizeObserver(() => chart.resize());
    observer.observe(container);
    entry = {chart, observer};
    state.charts[container.id] = entry;
  }
  const chart = entry.chart;
  chart.off('finished');
  chart.on('finished', () => {
    chart.off('finished');
    const count = (state.renders[container.id]?.count ?? 0) + 1;
    state.renders[container.id] = {count, ...info};
    container.dataset.renders = String(count);
    if (state.firstChartAt === null) {
      state.firstChartAt = performance.timeOrigin + performance.now();
    }
  });
  chart.setOption({animation: false, ...option}, {notMerge: true});
}

function disposeChart(id) {
  const entry = state.charts[id];
  if (!entry) return;
  entry.observer.disconnect();
  entry.chart.dispose();
  delete state.charts[id];
}

function disposeCharts() {
  Object.keys(state.charts).forEach(disposeChart);
}

// Answers can arrive out of order: `newest()` returns a function that, at
// each request, gives a check of whether that request is still the newest.
function newest() {
  let count = 0;
  return () => {
    const mine = ++count;
    return () => mine === count;
  };
}

// A message line under a view's controls, for errors after the first load.
function messageLine() {
  const line = element('p', {class: 'note error'});
  line.show = (error) => {
    line.textContent = error ? `Could not load: ${error.message}` : '';
  };
  return line;
}

// Log axes cannot show zeros or negatives: those points are left out.
function positive(values) {
  return values.map((v) => (v !== null && v > 0 ? v : null));
}

function layersOf(run) {
  return state.runs.find((r) => r.run === run)?.layers ?? [];
}

function allQuantities() {
  const found = new Set();
  for (const run of state.runs) {
    for (const layer of run.layers) layer.quantities.forEach((q) => found.add(q));
  }
  return [...found].sort();
}

// Profile: one quantity against t at one training step, all runs overlaid.
function profileView(root) {
  const quantities = allQuantities();
  const quantity = select('profile-quantity', quantities,
      quantities.includes('inputs') ? 'inputs' : quantities[0]);
  const slider = element('input', {id: 'profile-step', type: 'range',
    min: '0', max: '0', value: '0'});
  const stepLabel = element('span', {id: 'profile-step-label'});
  const logAxis = element('input', {id: 'profile-log', type: 'checkbox'});
  logAxis.checked = true;
  const chart = element('div', {id: 'profile-chart', class: 'chart'});
  const message = messageLine();
  root.append(
      element('div', {class: 'bar'}, [
        labelled('Quantity', quantity),
        labelled('Training step', slider), stepLabel,
        labelled('Log y axis', logAxis),
      ]),
      message,
      chart,
      element('p', {class: 'note', text:
        'Each line: one run and layer at its latest logged step at or ' +
        'before the chosen one (its first, if it has none that early). ' +
        'Click a legend entry to hide or show it; scroll or drag under the ' +
        'chart to zoom into timesteps.'}));
  let steps = [];
  let latest = null;
  const request = newest();
  const load = async (step) => {
    const current = request();
    // The first drawing uses the answer `render` asked for with the runs.
    const first = step === undefined && quantity.value === 'inputs' ?
        state.prefetched : null;
    state.prefetched = null;
    const answer = (await first) ??
        await route('profile', {quantity: quantity.value, step});
    if (!current()) return; // A later choice has been made.
    message.show(null);
    steps = answer.steps;
    slider.max = String(Math.max(steps.length - 1, 0));
    if (step === undefined) slider.value = slider.max;
    stepLabel.textContent = `step ${steps[Number(slider.value)] ?? '-'}`;
    latest = answer;
    plot();
  };
  const plot = () => {
    if (latest === null) return;
    const log = logAxis.checked;
    const series = latest.series.map((s) => {
      const values = log ? positive(s.values) : s.values;
      return {
        name: `${s.run} · ${s.layer}`,
        type: 'line',
        showSymbol: false,
        connectNulls: false,
        data: s.timesteps.map((t, i) => [t, values[i]]),
      };
    });
    draw(chart, {
      title: {text: LABELS[latest.quantity] ?? latest.quantity,
        left: 'center', textStyle: {fontSize: 14}},
      legend: {type: 'scroll', top: 26},
      grid: {left: 70, right: 30, top: 70, bottom: 70},
      tooltip: {trigger: 'axis', valueFormatter: format},
      xAxis: {type: 'value', name: 'timestep t', nameLocation: 'middle',
        nameGap: 25, min: 'dataMin', max: 'dataMax',
        axisPointer: {label: {formatter: ({value}) =>
          `timestep ${Math.round(value)}`}}},
      yAxis: {type: log ? 'log' : 'value', name: 'value',
        axisLabel: {formatter: tick}},
      dataZoom: [{type: 'inside'}, {type: 'slider', bottom: 8}],
      series,
    }, {
      quantity: latest.quantity,
      series: latest.series.map((s) => ({run: s.run, layer: s.layer,
        step: s.step, values: s.values})),
    });
  };
  const reload = (step) => load(step).catch(message.show);
  // New data: follow the latest step if the slider is there.
  state.refresh = () => reload(Number(slider.value) === Number(slider.max) ?
      undefined : steps[Number(slider.value)]);
  quantity.addEventListener('change', () => reload());
  slider.addEventListener('input', () => reload(steps[Number(slider.value)]));
  logAxis.addEventListener('change', plot);
  return load();
}

// A heatmap of a (rows x timesteps) answer of the heatmap/sequence routes.
function heatmapOption(title, rows, rowName, timesteps, values, {log, range}) {
  const data = [];
  let low = Infinity;
  let high = -Infinity;
  values.forEach((row, y) => row.forEach((value, x) => {
    if (value === null || (log && value <= 0)) return;
    const shown = log ? Math.log10(value) : value;
    low = Math.min(low, shown);
    high = Math.max(high, shown);
    data.push([x, y, shown, value]);
  }));
  if (range) [low, high] = range;
  if (!Number.isFinite(low) || !Number.isFinite(high)) [low, high] = [0, 1];
  if (!(high > low)) [low, high] = [low - 1, low + 1];
  return {
    title: {text: title, left: 'center', textStyle: {fontSize: 13}},
    grid: {left: 70, right: 90, top: 34, bottom: 40},
    tooltip: {formatter: (p) => `${rowName} ${rows[p.value[1]]}, ` +
      `timestep ${timesteps[p.value[0]]}<br>${format(p.value[3])}`},
    xAxis: {type: 'category', data: timesteps, name: 'timestep',
      nameLocation: 'middle', nameGap: 24},
    yAxis: {type: 'category', data: rows, name: rowName},
    visualMap: {min: low, max: high, calculable: true, right: 5, top: 'middle',
      dimension: 2, precision: 2, text: [log ? 'log10' : '', ''],
      inRange: {color: ['#440154', '#3b528b', '#21918c', '#5ec962', '#fde725']}},
    series: [{type: 'heatmap', data, progressive: 0}],
  };
}

function runLayerControls(prefix, onChange) {
  const runs = state.runs.map((r) => r.run);
  const run = select(`${prefix}-run`, runs, runs[0]);
  const layer = element('select', {id: `${prefix}-layer`});
  const fillLayers = () => {
    layer.replaceChildren(...layersOf(run.value).map((l) =>
      element('option', {value: l.layer, text: l.layer})));
  };
  fillLayers();
  run.addEventListener('change', () => {
    fillLayers();
    onChange();
  });
  layer.addEventListener('change', onChange);
  const info = () => layersOf(run.value).find((l) => l.layer === layer.value);
  return {run, layer, info};
}

// Heatmap: one run/layer/quantity over timesteps (x) and training steps (y).
function heatmapView(root) {
  const quantity = element('select', {id: 'heatmap-quantity'});
  const chart = element('div', {id: 'heatmap-chart', class: 'chart'});
  const note = element('p', {class: 'note'});
  const message = messageLine();
  const request = newest();
  const load = async () => {
    const current = request();
    if (!quantity.value) return;
    const tag = `timestep_gradients/${controls.layer.value}/${quantity.value}`;
    const answer = await route('heatmap', {run: controls.run.value, tag});
    if (!current()) return;
    message.show(null);
    const [steps, length] = answer.shape;
    const reduced = answer.values.length < steps ||
        answer.timesteps.length < length;
    note.textContent = `${steps} logged steps x ${length} timesteps` +
      (reduced ? `, shown as block means (${answer.values.length} x ` +
        `${answer.timesteps.length})` : '') + '; hover for values.';
    draw(chart, heatmapOption(
        `${answer.run} · ${controls.layer.value}: ` +
        (LABELS[quantity.value] ?? quantity.value),
        answer.steps, 'step', answer.timesteps, answer.values, {log: true}),
    {run: answer.run, tag: answer.tag, shape: answer.shape,
      rows: answer.values.length});
  };
  const fillQuantities = () => {
    const previous = quantity.value || 'inputs';
    const quantities = controls.info()?.quantities ?? [];
    quantity.replaceChildren(...quantities.map((q) =>
      element('option', {value: q, text: q})));
    if (quantities.includes(previous)) quantity.value = previous;
  };
  const controls = runLayerControls('heatmap', () => {
    fillQuantities();
    load().catch(message.show);
  });
  fillQuantities();
  quantity.addEventListener('change', () => load().catch(message.show));
  state.refresh = () => load().catch(message.show);
  root.append(element('div', {class: 'bar'}, [
    labelled('Run', controls.run), labelled('Layer', controls.layer),
    labelled('Quantity', quantity)]), message, chart, note);
  return load();
}

// One gate's card: mean and saturated fraction per timestep over training,
// and the probe sequence's activations unit by unit.
function gateCard(gate) {
  const charts = ['mean', 'saturation', 'sequence'].map((kind) =>
    element('div', {id: `${kind}-${gate}`, class: 'small'}));
  return element('div', {class: 'card'}, [element('h3', {text: gate}),
    ...charts]);
}

// Gates: per gate, mean and saturation per timestep over training, and the
// probe sequence's activations unit by unit at a chosen step.
function gatesView(root) {
  const grid = element('div', {class: 'gates'});
  const slider = element('input', {id: 'sequence-step', type: 'range',
    min: '0', max: '0', value: '0'});
  const stepLabel = element('span', {id: 'sequence-step-label'});
  const message = messageLine();
  let sequenceSteps = [];
  const layerRequest = newest();
  const sequenceRequest = newest();
  const loadSequence = async (step, layerCurrent) => {
    const current = sequenceRequest();
    if (!controls.info()?.sequences.length) return;
    const answer = await route('sequence', {run: controls.run.value,
      layer: controls.layer.value, step});
    if (!current() || !layerCurrent()) return;
    sequenceSteps = answer.steps;
    slider.max = String(Math.max(sequenceSteps.length - 1, 0));
    if (step === undefined) slider.value = slider.max;
    stepLabel.textContent = `probe sequence at step ${answer.step}`;
    for (const [gate, g] of Object.entries(answer.gates)) {
      draw(document.getElementById(`sequence-${gate}`), heatmapOption(
          `${gate}: sequence 0, unit by unit`, g.units, 'unit', g.timesteps,
          g.values, {log: false}),
      {layer: answer.layer, gate, step: answer.step, shape: g.shape});
    }
  };
  let layerCurrent = () => false;
  const load = async () => {
    layerCurrent = layerRequest();
    const current = layerCurrent;
    const info = controls.info();
    disposeCharts();
    grid.replaceChildren();
    message.show(null);
    if (!info?.gates.length) {
      grid.append(element('p', {text: 'No gate statistics for this layer.'}));
      return;
    }
    const jobs = [];
    for (const gate of info.gates) {
      grid.append(gateCard(gate));
      for (const [kind, tagKind, title] of [
        ['mean', 'gate_mean', 'mean activation'],
        ['saturation', 'gate_saturation_per_timestep', 'saturated fraction']]) {
        const tag = `${tagKind}/${info.layer}/${gate}`;
        jobs.push(route('heatmap', {run: controls.run.value, tag}).then((a) => {
          if (!current()) return;
          draw(document.getElementById(`${kind}-${gate}`), heatmapOption(
              `${title} per timestep`, a.steps, 'step', a.timesteps, a.values,
              {log: false, range: kind === 'saturation' ? [0, 1] : null}),
          {tag, shape: a.shape});
        }));
      }
    }
    jobs.push(loadSequence(undefined, current));
    await Promise.all(jobs);
  };
  const controls = runLayerControls('gates', () => load().catch(message.show));
  state.refresh = () => load().catch(message.show);
  slider.addEventListener('input', () => loadSequence(
      sequenceSteps[Number(slider.value)], layerCurrent).catch(message.show));
  root.append(element('div', {class: 'bar'}, [
    labelled('Run', controls.run), labelled('Layer', controls.layer),
    labelled('Probe sequence step', slider), stepLabel]), message, grid);
  return load();
}

const REFRESH_SECONDS = 30;

const VIEWS = {Profile: profileView, Heatmap: heatmapView, Gates: gatesView};

function showError(root, error) {
  root.replaceChildren(element('p', {class: 'note', id: 'error',
    text: `Could not load: ${error.message}`}));
}

export async function render() {
  document.head.appendChild(element('style', {text: STYLE}));
  const views = element('div', {class: 'bar views'});
  const root = element('div', {id: 'view'});
  document.body.append(views, root);
  // The default chart's data, asked for while the runs are listed.
  state.prefetched = route('profile', {quantity: 'inputs'}).catch(() => null);
  try {
    state.runs = (await route('runs')).runs;
  } catch (error) {
    showError(root, error);
    return;
  }
  if (!state.runs.length) {
    root.append(element('p', {class: 'note', text:
      'No keras_gated data: log a run with keras_gated.TimestepGradientLogger.'}));
    return;
  }
  let opened = 0;
  const open = (name) => {
    state.refresh = null;
    for (const button of views.children) {
      button.classList.toggle('active', button.textContent === name);
    }
    disposeCharts();
    root.replaceChildren();
    state.view = name;
    const current = ++opened;
    VIEWS[name](root).catch((error) => {
      if (current === opened) showError(root, error);
    });
  };
  for (const name of Object.keys(VIEWS)) {
    const button = element('button', {id: `view-${name.toLowerCase()}`,
      text: name});
    button.addEventListener('click', () => open(name));
    views.appendChild(button);
  }
  views.appendChild(refreshControls(open));
  open('Profile');
}

// What the menus list: the runs and their layers' names, not their steps.
function menus(runs) {
  return JSON.stringify(runs.map((run) => [run.run, run.layers]));
}

// New steps arrive while a model trains: look for them now and then (and on
// the Refresh button), and redraw the view with the choices kept; new runs
// or layers rebuild it, so that its menus list them.
function refreshControls(open) {
  const button = element('button', {id: 'refresh', text: 'Refresh'});
  const auto = element('input', {id: 'auto-refresh', type: 'checkbox'});
  auto.checked = true;
  state.checkForNewData = async () => {
    const runs = (await route('runs')).runs;
    if (JSON.stringify(runs) === JSON.stringify(state.runs)) return false;
    const rebuild = menus(runs) !== menus(state.runs);
    state.runs = runs;
    if (rebuild) open(state.view);
    else await state.refresh?.();
    return true;
  };
  button.addEventListener('click', () => state.checkForNewData());
  setInterval(() => {
    if (auto.checked && !document.hidden) {
      state.checkForNewData().catch(() => null);
    }
  }, REFRESH_SECONDS * 1000);
  return element('span', {class: 'bar'}, [button,
    labelled(`every ${REFRESH_SECONDS} s`, auto)]);
}
