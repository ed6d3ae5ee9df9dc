// The visualizer page: builds its controls from what the server says the network declares, and asks for a
// frame whenever one changes. One request is in flight at a time; changes made meanwhile are sent together
// when it returns, and the server drops a request that a newer one has overtaken.
'use strict';

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(window.location.search).get('token');
const client = Math.random().toString(36).slice(2) + Date.now().toString(36);
const state = { network: null, info: null, seq: 0, shownSeq: 0, inflight: false, pending: false, blob: null };
window.vizState = state; // for tests and the console

function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers['X-Viz-Token'] = token;
  return fetch(path, Object.assign({}, options, { headers }));
}

async function errorText(response) {
  try { return (await response.json()).error || response.statusText; } catch (e) { return response.statusText; }
}

function showError(message) {
  const box = $('error');
  box.textContent = message || '';
  box.hidden = !message;
}

function setBusy() {
  document.body.dataset.state = state.inflight || state.pending ? 'busy' : (state.info ? 'idle' : 'loading');
}

// ------------------------------------------------------------------------------------------------
// Networks.

async function loadNetworks() {
  const response = await api('api/networks');
  if (!response.ok) { showError(await errorText(response)); return; }
  const { networks } = await response.json();
  const select = $('network');
  const previous = select.value;
  select.textContent = '';
  for (const item of networks) {
    if (item.kind === 'run') {
      const group = document.createElement('optgroup');
      group.label = item.label;
      for (const snapshot of item.snapshots) group.append(new Option(snapshot.label, snapshot.id));
      if (!item.snapshots.length) group.append(Object.assign(new Option('(no snapshots yet)', ''), { disabled: true }));
      select.append(group);
    } else {
      select.append(new Option(item.label, item.id));
    }
  }
  const ids = [...select.options].filter((o) => !o.disabled).map((o) => o.value);
  if (ids.includes(previous)) select.value = previous;
  else if (ids.length) select.value = ids[ids.length - 1];
  if (select.value && select.value !== state.network) await chooseNetwork(select.value);
}

async function chooseNetwork(id) {
  state.network = id;
  state.info = null;
  setBusy();
  $('network-info').textContent = 'Loading…';
  const response = await api('api/network?id=' + encodeURIComponent(id));
  if (!response.ok) { $('network-info').textContent = ''; showError(await errorText(response)); return; }
  const info = await response.json();
  if (state.network !== id) return; // another choice came first
  state.info = info;
  showError('');
  buildControls(info);
  schedule();
}

function buildControls(info) {
  const c = info.controls;
  $('network-info').textContent = `${info.name}: ${info.img_resolution}², z ${info.z_dim}, ` +
    (info.label_kind === 'none' ? 'unconditional' : info.label_kind === 'class' ? `${info.c_dim} classes` : 'camera label');
  const has = {
    class: c.class > 0, noise_mode: c.noise_mode, camera: !!c.camera, transform: c.transform, view: c.view,
    scale: c.scale, image_modes: c.image_modes.length > 1, nrr: c.nrr !== null, sample_mult: c.sample_mult,
    resolution: c.resolution !== null,
  };
  for (const element of document.querySelectorAll('[data-needs]')) {
    element.hidden = !element.dataset.needs.split(' ').some((name) => has[name]);
  }
  $('class').max = Math.max(0, c.class - 1);
  if (c.camera) {
    $('radius').value = round(c.camera.radius);
    $('fov').value = round(c.camera.fov);
  }
  const modes = $('image_mode');
  modes.textContent = '';
  for (const mode of c.image_modes) modes.append(new Option(mode, mode));
  if (c.nrr !== null) $('nrr').value = c.nrr;
  if (c.resolution !== null) $('resolution').value = c.resolution;
  // The server's bounds, so that the inputs offer nothing it refuses.
  $('resolution').max = info.limits.max_side;
  $('nrr').max = info.limits.max_nrr;
  $('sample_mult').max = info.limits.max_sample_mult;
  const layers = $('layer');
  layers.textContent = '';
  $('layer-controls').hidden = true;
  layers.append(new Option('(output image)', ''));
  for (const layer of info.layers) layers.append(new Option(`${layer.name}  ${layer.shape.join('×')}`, layer.name));
}

function round(x) { return Math.round(x * 1000) / 1000; }

// ------------------------------------------------------------------------------------------------
// Settings -> frames.

function number(id) {
  const text = $(id).value;
  return text === '' ? null : Number(text);
}

function settings() {
  const c = state.info ? state.info.controls : {};
  const s = {
    network: state.network, client, seed: number('seed-value'), seed2: number('seed2'), blend: number('blend'),
    psi: number('psi'), cutoff: number('cutoff'),
  };
  if (c.class > 0) s.class = number('class');
  if (c.noise_mode) s.noise_mode = $('noise_mode').value;
  if (c.camera) s.camera = { yaw: number('yaw'), pitch: number('pitch'), radius: number('radius'), fov: number('fov') };
  if (c.transform || c.view) {
    const t = [number('tx'), number('ty')];
    if (t[0] || t[1]) s.translate = t;
  }
  if (c.transform && number('rotate')) s.rotate = number('rotate');
  if (c.scale && number('scale') !== 1) s.scale = number('scale');
  if (c.view && number('zoom') !== 1) s.zoom = number('zoom');
  if (c.image_modes && c.image_modes.length > 1) s.image_mode = $('image_mode').value;
  if (c.sample_mult && number('sample_mult') !== 1) s.sample_mult = number('sample_mult');
  if (c.nrr !== null && c.nrr !== undefined && number('nrr') !== c.nrr) s.nrr = number('nrr');
  if (c.resolution !== null && c.resolution !== undefined && number('resolution') !== c.resolution) s.resolution = number('resolution');
  if ($('layer').value) {
    Object.assign(s, { layer: $('layer').value, channels: number('channels'), channel: number('channel'),
      normalize: $('normalize').checked, gain_db: number('gain_db') });
  }
  return s;
}
state.settings = settings;

function schedule() {
  if (!state.info) return;
  state.pending = true;
  setBusy();
  if (!state.inflight) send();
}

async function send() {
  state.pending = false;
  state.inflight = true;
  setBusy();
  const seq = ++state.seq;
  const body = Object.assign(settings(), { seq });
  try {
    const response = await api('api/render', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    });
    if (response.status === 409) return; // overtaken by a newer request
    if (!response.ok) { showError(await errorText(response)); return; }
    const blob = await response.blob();
    if (seq < state.shownSeq) return;
    const frame = $('frame');
    if (frame.src) URL.revokeObjectURL(frame.src);
    await new Promise((resolve) => { frame.onload = resolve; frame.onerror = resolve; frame.src = URL.createObjectURL(blob); });
    state.blob = blob;
    state.shownSeq = seq;
    state.shownSettings = body;
    document.body.dataset.frameSeq = String(seq);
    $('render-ms').textContent = response.headers.get('X-Render-Ms') || '?';
    showStats(response.headers.get('X-Layer-Stats'));
    showError('');
  } catch (error) {
    showError('The visualizer server did not answer: ' + error);
  } finally {
    state.inflight = false;
    if (state.pending) send(); else setBusy();
  }
}

function showStats(header) {
  const box = $('layer-stats');
  if (!header) { box.textContent = ''; return; }
  const st = JSON.parse(header);
  const f = (x) => Number(x).toPrecision(3);
  box.textContent = `channels ${st.channels[0]}–${st.channels[1] - 1} of ${st.of}: mean ${f(st.shown.mean)}, ` +
    `std ${f(st.shown.std)}, max ${f(st.shown.max)} (all: ${f(st.all.mean)}, ${f(st.all.std)}, ${f(st.all.max)})`;
}

function savePNG() {
  if (!state.blob) return;
  const s = state.shownSettings || {};
  const link = document.createElement('a');
  link.href = URL.createObjectURL(state.blob);
  link.download = `viz-${String(s.network || 'net').replace(/[^\w.-]+/g, '_')}-seed${s.seed}.png`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

// ------------------------------------------------------------------------------------------------

function wire() {
  const mirrored = [['seed', 'seed-value'], ['blend', 'blend-value'], ['psi', 'psi-value'], ['yaw', 'yaw-value'],
    ['pitch', 'pitch-value'], ['tx', 'tx-value'], ['ty', 'ty-value'], ['rotate', 'rotate-value'],
    ['gain_db', 'gain_db-value']];
  for (const [slider, shown] of mirrored) {
    $(slider).addEventListener('input', () => { $(shown).value = $(slider).value; schedule(); });
  }
  $('seed-value').addEventListener('input', () => {
    if (Number($('seed-value').value) <= Number($('seed').max)) $('seed').value = $('seed-value').value;
    schedule();
  });
  for (const id of ['seed2', 'cutoff', 'class', 'noise_mode', 'radius', 'fov', 'scale', 'zoom', 'image_mode',
    'sample_mult', 'nrr', 'resolution', 'layer', 'channels', 'channel', 'normalize']) {
    $(id).addEventListener('input', schedule);
    $(id).addEventListener('change', schedule);
  }
  $('layer').addEventListener('change', () => { $('layer-controls').hidden = !$('layer').value; });
  $('network').addEventListener('change', () => chooseNetwork($('network').value));
  $('refresh').addEventListener('click', loadNetworks);
  $('save').addEventListener('click', savePNG);
  $('display').addEventListener('input', () => { $('frame').style.width = $('display').value + 'px'; });
}

wire();
loadNetworks();
