/* The ColorGAN page: add photos, colourise them through POST /api/colorize, compare, download.
 *
 * Plain JavaScript, no build step, no libraries. The photos stay in this page's memory (so the
 * render size can change without picking them again); the server keeps nothing.
 */
(function () {
  'use strict';

  const $ = (selector, root) => (root || document).querySelector(selector);

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

    item.card = card;
    setSplit(item, 50);
    els.results.appendChild(card);
    return card;
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
