/* The ColorGAN page: add photos, colourise them through POST /api/colorize, compare, download.
 *
 * Plain JavaScript, no build step, no libraries. The photos stay in this page's memory (so the
 * render size can change without picking them again); the server keeps nothing.
 */
(function () {
  'use strict';

  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));

  const els = {
    dropzone: $('#dropzone'),
    input: $('#file-input'),
    hint: $('#limits-hint'),
    renderSize: $('#render-size'),
    renderSizeValue: $('#render-size-value'),
    format: $('#format'),
    downloadAll: $('#download-all'),
    clearAll: $('#clear-all'),
    results: $('#results'),
    empty: $('#empty-note'),
    announcer: $('#announcer'),
    serverInfo: $('#server-info'),
    template: $('#card-template'),
  };

  const MAX_PARALLEL = 2;   // requests in flight from this page; the server queues the rest fairly
  const MAX_RETRIES = 30;   // 503 "busy" answers tolerated per photo before giving up

  const state = {
    items: [],
    nextId: 1,
    pending: [],
    active: 0,
    renderSize: Number(els.renderSize.value),
    format: els.format.value,
    maxUploadBytes: null,
    takesHints: false,
  };

  // ------------------------------------------------------------------------------ helpers

  function announce(text) {
    // Clear first so that the same message twice is still read out.
    els.announcer.textContent = '';
    window.setTimeout(() => { els.announcer.textContent = text; }, 50);
  }

  function formatMB(bytes) {
    return (bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0) + ' MB';
  }

  function stemOf(name) {
    const dot = name.lastIndexOf('.');
    return dot > 0 ? name.slice(0, dot) : name;
  }

  function safeName(name) {
    // For names inside the zip and for downloads: no folders, no control characters.
    const cleaned = name.replace(/[\\/:*?"<>|\u0000-\u001f]/g, '_').trim();
    return cleaned || 'photo';
  }

  function sleep(ms) {
    return new Promise((resolve) => window.setTimeout(resolve, ms));
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && typeof body.detail === 'string') return body.detail;
    } catch (e) { /* not JSON */ }
    return 'the server answered ' + response.status + ' ' + response.statusText;
  }

  function updateGlobalButtons() {
    const done = state.items.some((it) => it.blob);
    els.downloadAll.disabled = !done;
    els.clearAll.disabled = state.items.length === 0;
    els.empty.hidden = state.items.length > 0;
  }

  // ------------------------------------------------------------------------------ server info

  async function loadHealth() {
    try {
      const response = await fetch('/api/health', { cache: 'no-store' });
      if (!response.ok) throw new Error(await errorText(response));
      const health = await response.json();
      const limits = health.limits || {};
      if (limits.max_upload_mb) state.maxUploadBytes = limits.max_upload_mb * 1e6;
      const rs = limits.render_size;
      if (rs) {
        els.renderSize.min = String(rs.min);
        els.renderSize.max = String(rs.max);
        els.renderSize.value = String(rs.default);
        state.renderSize = rs.default;
        els.renderSizeValue.textContent = String(rs.default);
      }
      const mp = limits.max_pixels ? Math.floor(limits.max_pixels / 1e6) + ' megapixels' : '';
      els.hint.textContent = 'JPEG, PNG, TIFF, WebP or BMP; several at once; up to ' +
        limits.max_upload_mb + ' MB' + (mp ? ' and ' + mp : '') + ' each.';
      if (health.keeps_uploads) {
        $('#tagline').textContent = 'Colour for black-and-white photographs. Photos go only to this server, ' +
          'which keeps a copy of each photo and its result (it was started with --save-dir).';
      }
      const model = health.model || {};
      state.takesHints = Boolean(model.takes_hints);
      for (const item of state.items) if (item.blob) $('.guide', item.card).hidden = !state.takesHints;
      els.serverInfo.textContent = 'ColorGAN ' + health.version +
        (model.name ? ' · model ' + model.name + ' on ' + model.device : ' · model loading');
    } catch (err) {
      els.serverInfo.textContent = 'The server did not answer (' + err.message + ').';
    }
  }

  // ------------------------------------------------------------------------------ cards

  function makeCard(item) {
    const card = els.template.content.firstElementChild.cloneNode(true);
    card.id = 'photo-' + item.id;
    const title = $('.card-title', card);
    title.id = 'photo-title-' + item.id;
    title.textContent = item.name;
    card.setAttribute('aria-labelledby', title.id);

    const slider = $('.slider', card);
    slider.setAttribute('aria-label', 'Before and after split for ' + item.name);
    slider.addEventListener('input', () => setSplit(item, Number(slider.value)));

    // Dragging on the picture moves the split too (the slider stays the accessible control).
    const compare = $('.compare', card);
    const follow = (event) => {
      const rect = compare.getBoundingClientRect();
      if (rect.width <= 0) return;
      const value = Math.round(Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width)) * 100);
      slider.value = String(value);
      setSplit(item, value);
    };
    compare.addEventListener('pointerdown', (event) => {
      if (item.adding && !event.target.classList.contains('marker')) {
        addPoint(item, event);  // colour-point mode: a click places a point, the split stays
        return;
      }
      if (event.target.classList.contains('marker')) return; // a marker's own drag
      compare.setPointerCapture(event.pointerId);
      follow(event);
      compare.addEventListener('pointermove', follow);
    });
    const stop = () => compare.removeEventListener('pointermove', follow);
    compare.addEventListener('pointerup', stop);
    compare.addEventListener('pointercancel', stop);

    const before = $('.before', card);
    before.alt = 'Original: ' + item.name;
    before.addEventListener('error', () => {
      // Browsers cannot show TIFF (and some other) originals: show the result in grey instead,
      // which has the original's luminance exactly.
      if (item.url && !item.beforeFromResult) {
        item.beforeFromResult = true;
        before.classList.add('from-result');
        before.src = item.url;
      }
    });
    $('.after', card).alt = 'Colourised: ' + item.name;
    $('.remove', card).setAttribute('aria-label', 'Remove ' + item.name);
    $('.remove', card).addEventListener('click', () => removeItem(item));
    $('.download', card).setAttribute('aria-label', 'Download the colourised ' + item.name);

    setupGuide(item, card);
    item.card = card;
    setSplit(item, 50);
    els.results.appendChild(card);
    return card;
  }

  // ------------------------------------------------------------------------------ colour points

  function setupGuide(item, card) {
    item.points = [];      // {x, y, color}: pixels of the photo as shown, '#rrggbb'
    item.history = [];     // earlier point lists, for undo
    item.reference = null; // a File
    item.selected = -1;
    item.adding = false;
    const add = $('.add-points', card);
    add.addEventListener('click', () => {
      item.adding = !item.adding;
      add.setAttribute('aria-pressed', String(item.adding));
      add.textContent = item.adding ? 'Adding colour points (click the picture)' : 'Add colour points';
      $('.compare', card).classList.toggle('adding', item.adding);
    });
    const colour = $('.point-colour', card);
    colour.setAttribute('aria-label', 'Colour of new points for ' + item.name);
    colour.addEventListener('change', () => {
      // The colour of the selected point changes with it; new points take it too.
      if (item.selected >= 0 && item.points[item.selected]) {
        changePoints(item, (pts) => { pts[item.selected].color = colour.value; });
      }
    });
    $('.undo', card).addEventListener('click', () => {
      if (!item.history.length) return;
      item.points = item.history.pop();
      item.selected = Math.min(item.selected, item.points.length - 1);
      pointsChanged(item);
      announce('Undone: ' + item.points.length + ' colour point' + (item.points.length === 1 ? '' : 's') + '.');
    });
    const ref = $('.reference-input', card);
    ref.setAttribute('aria-label', 'Reference colour photo for ' + item.name);
    ref.addEventListener('change', () => {
      item.reference = ref.files && ref.files[0] ? ref.files[0] : null;
      $('.clear-reference', card).hidden = !item.reference;
      enqueue(item);
    });
    $('.clear-reference', card).addEventListener('click', () => {
      item.reference = null;
      ref.value = '';
      $('.clear-reference', card).hidden = true;
      enqueue(item);
    });
    updateHintsLink(item, card);
  }

  function hintsJSON(item) {
    return JSON.stringify({ points: item.points.map((p) => ({ x: p.x, y: p.y, color: p.color })) }, null, 1);
  }

  function updateHintsLink(item, card) {
    const link = $('.download-hints', card || item.card);
    if (item.hintsUrl) URL.revokeObjectURL(item.hintsUrl);
    item.hintsUrl = URL.createObjectURL(new Blob([hintsJSON(item)], { type: 'application/json' }));
    link.href = item.hintsUrl;
    link.download = safeName(stemOf(item.name)) + '.json';
  }

  function imagePoint(item, event) {
    // Pixels of the photo as shown: the picture is scaled to the card's width.
    const img = $('.after', item.card);
    const rect = $('.compare', item.card).getBoundingClientRect();
    const w = img.naturalWidth || rect.width, h = img.naturalHeight || rect.height;
    const x = Math.min(w - 1, Math.max(0, Math.floor((event.clientX - rect.left) / rect.width * w)));
    const y = Math.min(h - 1, Math.max(0, Math.floor((event.clientY - rect.top) / rect.height * h)));
    return { x, y };
  }

  function changePoints(item, edit) {
    item.history.push(item.points.map((p) => ({ ...p })));
    edit(item.points);
    pointsChanged(item);
  }

  function addPoint(item, event) {
    const { x, y } = imagePoint(item, event);
    changePoints(item, (pts) => pts.push({ x, y, color: $('.point-colour', item.card).value }));
    item.selected = item.points.length - 1;
    renderPoints(item);
    announce('Colour point ' + item.points.length + ' at ' + x + ', ' + y + '.');
    suggest(item);
  }

  // Colours likely at the selected point (POST /api/suggest, from the colour-distribution model):
  // a swatch sets the point's colour. Shown for the last place asked; a stale answer is dropped.
  async function suggest(item) {
    const box = $('.suggestions', item.card);
    const p = item.points[item.selected];
    if (!p) { box.hidden = true; return; }
    const ask = (item.suggestSeq = (item.suggestSeq || 0) + 1);
    const form = new FormData();
    form.append('file', item.file, item.name);
    form.append('x', String(p.x));
    form.append('y', String(p.y));
    let found = [];
    try {
      const response = await fetch('/api/suggest', { method: 'POST', body: form });
      if (!response.ok) { box.hidden = true; return; }
      found = (await response.json()).suggestions || [];
    } catch (e) {
      box.hidden = true;
      return;
    }
    if (ask !== item.suggestSeq || item.removed) return;
    $$('.swatch', box).forEach((b) => b.remove());
    const index = item.selected;
    found.forEach((s) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'swatch';
      b.style.background = s.color;
      b.dataset.color = s.color;
      b.title = s.color + ' (' + Math.round(s.probability * 100) + '%)';
      b.setAttribute('aria-label', 'Use ' + s.color + ', ' + Math.round(s.probability * 100) + '% likely here');
      b.addEventListener('click', () => {
        if (!item.points[index]) return;
        $('.point-colour', item.card).value = s.color;
        changePoints(item, (pts) => { pts[index].color = s.color; });
      });
      box.appendChild(b);
    });
    box.hidden = !found.length;
  }

  function pointsChanged(item) {
    renderPoints(item);
    updateHintsLink(item);
    $('.undo', item.card).disabled = !item.history.length;
    clearTimeout(item.renderTimer);
    item.renderTimer = setTimeout(() => enqueue(item), 150); // a drag or several clicks: one render
  }

  function renderPoints(item) {
    const card = item.card;
    const img = $('.after', card);
    const w = img.naturalWidth || 1, h = img.naturalHeight || 1;
    const markers = $('.markers', card);
    const list = $('.points', card);
    markers.textContent = '';
    list.textContent = '';
    item.points.forEach((p, i) => {
      const m = document.createElement('span');
      m.className = 'marker' + (i === item.selected ? ' selected' : '');
      m.style.left = ((p.x + 0.5) / w * 100) + '%';
      m.style.top = ((p.y + 0.5) / h * 100) + '%';
      m.style.background = p.color;
      m.dataset.index = String(i);
      m.addEventListener('pointerdown', (event) => startDrag(item, i, m, event));
      markers.appendChild(m);

      const li = document.createElement('li');
      li.className = i === item.selected ? 'selected' : '';
      const pick = document.createElement('input');
      pick.type = 'color';
      pick.value = p.color;
      pick.className = 'point-colour-' + i;
      pick.setAttribute('aria-label', 'Colour of point ' + (i + 1) + ' at ' + p.x + ', ' + p.y);
      pick.addEventListener('change', () => changePoints(item, (pts) => { pts[i].color = pick.value; }));
      const label = document.createElement('span');
      label.textContent = (i + 1) + ': ' + p.x + ', ' + p.y;
      const del = document.createElement('button');
      del.type = 'button';
      del.className = 'secondary delete-point';
      del.textContent = '×';
      del.setAttribute('aria-label', 'Delete point ' + (i + 1));
      del.addEventListener('click', () => {
        changePoints(item, (pts) => pts.splice(i, 1));
        item.selected = -1;
        renderPoints(item);
      });
      li.append(pick, label, del);
      li.addEventListener('click', (event) => {
        if (event.target === del) return;
        item.selected = i;
        $('.point-colour', card).value = p.color;
        renderPoints(item);
        suggest(item);
      });
      list.appendChild(li);
    });
  }

  function startDrag(item, i, marker, event) {
    event.stopPropagation();
    item.selected = i;
    marker.setPointerCapture(event.pointerId);
    const before = item.points.map((p) => ({ ...p }));
    let moved = false;
    const move = (e) => {
      const { x, y } = imagePoint(item, e);
      item.points[i].x = x;
      item.points[i].y = y;
      moved = true;
      const img = $('.after', item.card);
      marker.style.left = ((x + 0.5) / (img.naturalWidth || 1) * 100) + '%';
      marker.style.top = ((y + 0.5) / (img.naturalHeight || 1) * 100) + '%';
    };
    const end = () => {
      marker.removeEventListener('pointermove', move);
      marker.removeEventListener('pointerup', end);
      if (moved) {
        item.history.push(before);
        pointsChanged(item);
        suggest(item);
      } else {
        renderPoints(item);
      }
    };
    marker.addEventListener('pointermove', move);
    marker.addEventListener('pointerup', end);
  }

  function setSplit(item, value) {
    const compare = $('.compare', item.card);
    compare.style.setProperty('--split', value + '%');
    $('.slider', item.card).setAttribute('aria-valuetext', value + '% original, ' + (100 - value) + '% colour');
  }

  function setStatus(item, text, kind) {
    const status = $('.status', item.card);
    status.textContent = text;
    item.card.dataset.state = kind;
  }

  function fail(item, message, permanent) {
    item.error = message;
    // A file rejected for what it is (not an image, too large) is not sent again on re-render.
    item.rejectedForGood = Boolean(permanent) && !item.blob;
    setStatus(item, item.blob ? 'Re-render failed' : 'Rejected', item.blob ? 'done' : 'error');
    const error = $('.error', item.card);
    error.textContent = message;
    error.hidden = false; // role="alert": screen readers read it out by themselves
    updateGlobalButtons();
  }

  function show(item, blob, headers, opts) {
    if (item.url) URL.revokeObjectURL(item.url);
    item.blob = blob;
    item.url = URL.createObjectURL(blob);
    item.ext = opts.format === 'jpeg' ? 'jpg' : 'png';
    item.error = null;
    const card = item.card;
    $('.error', card).hidden = true;

    const before = $('.before', card);
    if (item.beforeFromResult) {
      before.src = item.url;
    } else if (!before.getAttribute('src')) {
      item.beforeUrl = URL.createObjectURL(item.file);
      before.src = item.beforeUrl;
    }
    $('.after', card).src = item.url;
    $('.compare', card).hidden = false;
    $('.slider-row', card).hidden = false;
    $('.guide', card).hidden = !state.takesHints;
    renderPoints(item);
    $('.card-actions', card).hidden = false;

    const link = $('.download', card);
    link.href = item.url;
    link.download = safeName(stemOf(item.name)) + '-colour.' + item.ext;

    const ms = Number(headers.get('X-Processing-Time-Ms') || 0);
    const size = (headers.get('X-Image-Size') || '').replace('x', ' × ');
    $('.meta', card).textContent = [size, opts.renderSize + ' px render', (ms / 1000).toFixed(2) + ' s']
      .filter(Boolean).join(' · ');
    card.dataset.renderSize = String(opts.renderSize);
    card.dataset.format = opts.format;
    const warning = headers.get('X-Colorgan-Warning');
    setStatus(item, warning ? 'Done. Note: ' + warning + '.' : 'Done', 'done');
    announce(item.name + ' colourised in ' + (ms / 1000).toFixed(1) + ' seconds.');
    updateGlobalButtons();
  }

  function removeItem(item) {
    item.removed = true;
    item.seq++;
    state.pending = state.pending.filter((it) => it !== item);
    state.items = state.items.filter((it) => it !== item);
    if (item.url) URL.revokeObjectURL(item.url);
    if (item.beforeUrl) URL.revokeObjectURL(item.beforeUrl);
    if (item.hintsUrl) URL.revokeObjectURL(item.hintsUrl);
    item.card.remove();
    announce(item.name + ' removed.');
    updateGlobalButtons();
    els.results.focus();
  }

  // ------------------------------------------------------------------------------ work

  function addFiles(files) {
    const added = [];
    for (const file of files) {
      const item = { id: state.nextId++, file, name: file.name || 'photo', seq: 0 };
      state.items.push(item);
      makeCard(item);
      added.push(item);
      if (state.maxUploadBytes && file.size > state.maxUploadBytes) {
        fail(item, item.name + ': ' + formatMB(file.size) + ' is over this server\u2019s limit of ' +
          formatMB(state.maxUploadBytes) + '.', true);
        continue;
      }
      if (file.size === 0) {
        fail(item, item.name + ': empty file (0 bytes).', true);
        continue;
      }
      enqueue(item);
    }
    if (added.length) announce(added.length === 1 ? 'Added ' + added[0].name + '.' : 'Added ' + added.length + ' photos.');
    updateGlobalButtons();
  }

  function enqueue(item) {
    item.seq++;
    $('.error', item.card).hidden = true;
    setStatus(item, item.blob ? 'Waiting to re-render…' : 'Waiting…', item.blob ? 'done' : 'queued');
    if (!state.pending.includes(item)) state.pending.push(item);
    pump();
  }

  function pump() {
    while (state.active < MAX_PARALLEL && state.pending.length) {
      const item = state.pending.shift();
      state.active++;
      run(item).catch((err) => fail(item, item.name + ': ' + err.message)).finally(() => {
        state.active--;
        pump();
      });
    }
  }

  async function run(item) {
    const seq = item.seq;
    const opts = { renderSize: state.renderSize, format: state.format };
    setStatus(item, item.blob ? 'Re-rendering at ' + opts.renderSize + ' px…' : 'Colourising…',
      item.blob ? 'rerendering' : 'working');
    for (let attempt = 0; ; attempt++) {
      const form = new FormData();
      form.append('file', item.file, item.name);
      form.append('render_size', String(opts.renderSize));
      form.append('format', opts.format);
      if (item.points && item.points.length) form.append('hints', hintsJSON(item));
      if (item.reference) form.append('reference', item.reference, item.reference.name);
      let response;
      try {
        response = await fetch('/api/colorize', { method: 'POST', body: form });
      } catch (err) {
        if (seq === item.seq) fail(item, item.name + ': could not reach the server (' + err.message + ').');
        return;
      }
      if (seq !== item.seq) return; // removed, or a newer render was asked for meanwhile
      if (response.status === 503 && attempt < MAX_RETRIES) {
        const wait = Math.min(30, Math.max(1, Number(response.headers.get('Retry-After')) || 2));
        setStatus(item, 'Server busy; trying again in ' + wait + ' s…', 'queued');
        await sleep(wait * 1000);
        if (seq !== item.seq) return;
        continue;
      }
      if (!response.ok) {
        fail(item, await errorText(response), [400, 413, 415].includes(response.status));
        return;
      }
      const blob = await response.blob();
      if (seq !== item.seq) return;
      show(item, blob, response.headers, opts);
      return;
    }
  }

  function rerenderAll() {
    for (const item of state.items) {
      // Photos rejected for what they are (not an image, too big) stay rejected.
      if (item.blob || (item.error && !item.rejectedForGood)) enqueue(item);
    }
  }

  // ------------------------------------------------------------------------------ zip

  async function downloadAll() {
    const done = state.items.filter((it) => it.blob);
    if (!done.length) return;
    els.downloadAll.disabled = true;
    try {
      const used = new Set();
      const entries = [];
      for (const item of done) {
        const base = safeName(stemOf(item.name)) + '-colour';
        let name = base + '.' + item.ext;
        for (let n = 2; used.has(name.toLowerCase()); n++) name = base + ' (' + n + ').' + item.ext;
        used.add(name.toLowerCase());
        entries.push({ name, data: new Uint8Array(await item.blob.arrayBuffer()) });
      }
      const zip = window.ColorGANZip.build(entries);
      const url = URL.createObjectURL(zip);
      const link = document.createElement('a');
      link.href = url;
      link.download = 'colorgan-results.zip';
      document.body.appendChild(link);
      link.click();
      link.remove();
      window.setTimeout(() => URL.revokeObjectURL(url), 60000);
      announce('Zip of ' + entries.length + ' photos ready.');
    } catch (err) {
      announce('Could not build the zip: ' + err.message);
    } finally {
      updateGlobalButtons();
    }
  }

  function clearAll() {
    for (const item of state.items.slice()) {
      item.removed = true;
      item.seq++;
      if (item.url) URL.revokeObjectURL(item.url);
      if (item.beforeUrl) URL.revokeObjectURL(item.beforeUrl);
      item.card.remove();
    }
    state.items = [];
    state.pending = [];
    announce('All photos cleared.');
    updateGlobalButtons();
    els.input.focus();
  }

  // ------------------------------------------------------------------------------ wiring

  els.input.addEventListener('change', () => {
    addFiles(Array.from(els.input.files || []));
    els.input.value = ''; // picking the same file again must fire "change" again
  });

  ['dragenter', 'dragover'].forEach((type) => els.dropzone.addEventListener(type, (event) => {
    event.preventDefault();
    els.dropzone.classList.add('dragging');
  }));
  ['dragleave', 'drop'].forEach((type) => els.dropzone.addEventListener(type, () => {
    els.dropzone.classList.remove('dragging');
  }));
  els.dropzone.addEventListener('drop', (event) => {
    event.preventDefault();
    addFiles(Array.from((event.dataTransfer && event.dataTransfer.files) || []));
  });
  // A photo dropped beside the drop zone must not make the browser leave the page.
  window.addEventListener('dragover', (event) => event.preventDefault());
  window.addEventListener('drop', (event) => event.preventDefault());

  let rerenderTimer = null;
  els.renderSize.addEventListener('input', () => {
    els.renderSizeValue.textContent = els.renderSize.value;
  });
  els.renderSize.addEventListener('change', () => {
    state.renderSize = Number(els.renderSize.value);
    // Arrow keys fire one change per step: wait for the user to settle before re-rendering.
    window.clearTimeout(rerenderTimer);
    rerenderTimer = window.setTimeout(rerenderAll, 400);
  });
  els.format.addEventListener('change', () => {
    state.format = els.format.value;
    rerenderAll();
  });
  els.downloadAll.addEventListener('click', downloadAll);
  els.clearAll.addEventListener('click', clearAll);

  updateGlobalButtons();
  loadHealth();
})();
