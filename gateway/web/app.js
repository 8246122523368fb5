// unsgate status page: live updates over server-sent events from
// /api/v1/events (a status event every second, then the tags that changed).
// No framework, no build step, nothing loaded from elsewhere.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const histMax = 32; // the gateway keeps as many per tag

  let skew = 0;        // server clock minus this browser's, ms
  let stream = null;   // the EventSource
  let selected = null; // UNS path of the tag shown in the sparkline
  let series = [];     // [{t, v}] of the selected tag
  const rows = new Map(); // UNS path -> {tr, cells, tag}
  const leaves = new Map(); // UNS path -> tree button

  // ---- formatting ----

  function fmtCount(n) {
    if (n === undefined || n === null) return '–';
    return n.toLocaleString('en-US');
  }

  function fmtBytes(n) {
    if (!n) return '0';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
  }

  function fmtAge(ms) {
    if (ms < 0) ms = 0;
    if (ms < 1000) return '<1 s';
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
    return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
  }

  function serverNow() { return Date.now() + skew; }

  // ago formats a unix-ms time as its age; 0 means never.
  function ago(ms) { return ms ? fmtAge(serverNow() - ms) + ' ago' : 'never'; }

  // parseTime reads the RFC 3339 times of the model status (nanoseconds
  // trimmed to what Date parses everywhere).
  function parseTime(s) {
    if (!s) return 0;
    const t = Date.parse(s.replace(/(\.\d{3})\d+/, '$1'));
    return isNaN(t) ? 0 : t;
  }

  function fmtTime(ms) {
    if (!ms) return '–';
    const d = new Date(ms);
    const pad = (n, w) => String(n).padStart(w || 2, '0');
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }

  function fmtValue(v) {
    if (v === null || v === undefined) return '—';
    if (Array.isArray(v)) return '[' + v.map(fmtValue).join(', ') + ']';
    if (typeof v === 'number') return String(v);
    return String(v);
  }

  function fmtMS(ms) {
    if (!ms) return '–';
    return ms < 10 ? ms.toFixed(2) + ' ms' : ms < 1000 ? ms.toFixed(0) + ' ms' : (ms / 1000).toFixed(2) + ' s';
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function cell(tr, cls) {
    const td = document.createElement('td');
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  // keyedRows keeps a table body's rows in the order of items, one row per
  // item name (data-name), made by make and filled by fill.
  function keyedRows(tbody, items, make, fill) {
    const byName = new Map();
    Array.from(tbody.children).forEach((tr) => byName.set(tr.dataset.name, tr));
    const seen = new Set();
    items.forEach((item, i) => {
      let tr = byName.get(item.name);
      if (!tr) {
        tr = document.createElement('tr');
        tr.dataset.name = item.name;
        make(tr);
      }
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
      fill(tr, item);
      seen.add(item.name);
    });
    Array.from(tbody.children).forEach((tr) => { if (!seen.has(tr.dataset.name)) tr.remove(); });
  }

  function num(td, n) {
    setText(td, fmtCount(n));
    td.classList.toggle('zero', !n);
  }

  // ---- status ----

  function renderStatus(s) {
    skew = s.gateway.now_ms - Date.now();
    setText($('gateway-id'), s.gateway.id);
    document.title = 'unsgate ' + s.gateway.id;
    setText($('uptime'), fmtAge(s.gateway.uptime_ms));
    setText($('broker'), s.gateway.broker ? 'broker mqtt://' + s.gateway.broker : '');
    const ready = $('ready');
    ready.dataset.ready = String(s.ready.ok);
    setText(ready, s.ready.ok ? 'ready' : 'not ready');
    const reason = $('ready-reason');
    reason.hidden = s.ready.ok;
    setText(reason, s.ready.ok ? '' : 'Not ready: ' + s.ready.reason);

    keyedRows($('sources').tBodies[0], s.sources || [], (tr) => {
      ['name', 'state', 'last-good', 'num requests', 'num failed', 'num latency', 'num q-good', 'num q-uncertain',
        'num q-bad', 'num q-stale', 'err last-error'].forEach((c) => cell(tr, c));
      const name = tr.cells[0];
      name.appendChild(document.createElement('span')).className = 'label';
      name.appendChild(document.createElement('span')).className = 'url';
    }, (tr, src) => {
      const c = tr.cells;
      setText(c[0].firstChild, src.name);
      setText(c[0].lastChild, src.url);
      c[1].dataset.state = src.state;
      setText(c[1], src.state + (src.state === 'reconnecting' && src.retry_at_ms ?
        ' (retry in ' + fmtAge(src.retry_at_ms - serverNow()) + ')' : ''));
      setText(c[2], ago(src.last_good_read_ms));
      num(c[3], src.requests);
      num(c[4], src.requests_failed);
      setText(c[5], fmtMS(src.latency_ms));
      num(c[6], src.tags.good);
      num(c[7], src.tags.uncertain);
      num(c[8], src.tags.bad);
      num(c[9], src.tags.stale);
      setText(c[10], src.last_error ? src.last_error + ' (' + ago(src.last_error_ms) + ')' : '');
    });

    keyedRows($('sinks').tBodies[0], s.sinks || [], (tr) => {
      ['name', 'state', 'num sent', 'num queued', 'num stored', 'num dropped', 'err last-error'].forEach((c) => cell(tr, c));
    }, (tr, sink) => {
      const c = tr.cells;
      setText(c[0], sink.name);
      const state = sink.connected ? 'connected' : 'disconnected';
      c[1].dataset.state = state;
      setText(c[1], state);
      num(c[2], sink.sent);
      num(c[3], sink.queued);
      setText(c[4], fmtBytes(sink.stored_bytes));
      c[4].classList.toggle('zero', !sink.stored_bytes);
      num(c[5], sink.dropped);
      const errs = [];
      if (sink.last_error) errs.push(sink.last_error + ' (' + ago(sink.last_error_ms) + ')');
      if (sink.last_store_error) errs.push('store: ' + sink.last_store_error);
      setText(c[6], errs.join('; '));
    });

    renderModel(s.model);

    const engine = $('engine');
    Object.keys(s.engine).forEach((k) => {
      const dd = engine.querySelector('dd[data-key="' + k + '"]');
      if (dd) setText(dd, fmtCount(s.engine[k]));
    });
    const t = s.tags;
    setText($('tag-summary'), t.total + ' tags: ' + t.good + ' good, ' + t.uncertain + ' uncertain, ' + t.bad +
      ' bad, ' + t.stale + ' stale, ' + t.waiting + ' waiting for a first value' +
      (s.events.dropped ? ' · ' + s.events.dropped + ' page updates dropped for slow browsers' : ''));
  }

  function renderModel(m) {
    setText($('model-version'), m.version || '–');
    const git = $('model-git');
    git.dataset.dirty = m.git ? String(m.git.dirty) : '';
    setText(git, m.git ? m.git.commit.slice(0, 12) : 'not in a git work tree');
    git.title = m.git ? m.git.commit : '';
    setText($('model-loaded'), fmtTime(parseTime(m.loaded_at)));
    setText($('model-tags'), fmtCount(m.tags));
    const reload = $('model-reload');
    reload.dataset.result = m.last_result || '';
    setText(reload, m.last_reload ? fmtTime(parseTime(m.last_reload)) + ' ' + (m.last_result || '') : 'none since start');
    fillList($('model-files'), m.files || []);
    fillList($('model-errors'), m.errors || []);
  }

  function fillList(ul, items) {
    const same = ul.children.length === items.length &&
      items.every((x, i) => ul.children[i].textContent === x);
    if (same) return;
    ul.replaceChildren(...items.map((x) => {
      const li = document.createElement('li');
      li.textContent = x;
      return li;
    }));
  }

  // ---- tags ----

  function makeRow(tag) {
    const tr = document.createElement('tr');
    tr.dataset.path = tag.path;
    const cells = {
      path: cell(tr, 'path'), value: cell(tr, 'num value'), unit: cell(tr, 'unit'),
      raw: cell(tr, 'num raw'), quality: cell(tr, 'quality'), age: cell(tr, 'num age'),
    };
    cells.path.textContent = tag.path;
    return { tr, cells, tag };
  }

  function fillRow(r, tag, flash) {
    const c = r.cells;
    const changed = r.tag.timestamp_ms !== tag.timestamp_ms || JSON.stringify(r.tag.value) !== JSON.stringify(tag.value);
    r.tag = tag;
    setText(c.value, fmtValue(tag.value));
    c.value.title = c.value.textContent; // the whole of a long value (an array)
    setText(c.unit, tag.unit || '');
    setText(c.raw, tag.raw === null || tag.raw === undefined ? '' : fmtValue(tag.raw));
    c.raw.title = c.raw.textContent;
    c.quality.dataset.quality = tag.quality || '';
    setText(c.quality, tag.quality ? tag.quality + (tag.stale ? ' stale' : '') : 'waiting');
    c.quality.title = tag.status ? 'status 0x' + tag.status.toString(16).padStart(8, '0') : '';
    r.tr.dataset.stale = String(!!tag.stale);
    r.tr.dataset.quality = tag.quality || '';
    r.tr.dataset.ts = String(tag.timestamp_ms || 0);
    setText(c.age, tag.timestamp_ms ? fmtAge(serverNow() - tag.timestamp_ms) : '–');
    const leaf = leaves.get(tag.path);
    if (leaf) leaf.dataset.quality = tag.quality || '';
    if (flash && changed) {
      r.tr.classList.remove('flash');
      void r.tr.offsetWidth; // restart the highlight
      r.tr.classList.add('flash');
    }
  }

  function renderTags(ev) {
    const tbody = $('tags').tBodies[0];
    if (ev.full) {
      rows.clear();
      const frag = document.createDocumentFragment();
      (ev.tags || []).forEach((tag) => {
        const r = makeRow(tag);
        fillRow(r, tag, false);
        rows.set(tag.path, r);
        frag.appendChild(r.tr);
      });
      tbody.replaceChildren(frag);
      buildTree(ev.tags || []);
      if (selected && rows.has(selected)) {
        rows.get(selected).tr.classList.add('selected');
      }
      setText($('tag-count'), ev.truncated ? 'showing ' + rows.size + ' of ' + ev.selected + ': narrow the filter'
        : rows.size + (rows.size === 1 ? ' tag' : ' tags'));
    } else {
      (ev.tags || []).forEach((tag) => {
        let r = rows.get(tag.path);
        if (!r) return; // beyond the limit of the full table
        fillRow(r, tag, true);
      });
    }
    (ev.tags || []).forEach((tag) => { if (tag.path === selected) addPoint(tag); });
  }

  // ageTick refreshes the age column between events.
  function ageTick() {
    const now = serverNow();
    rows.forEach((r) => {
      if (r.tag.timestamp_ms) setText(r.cells.age, fmtAge(now - r.tag.timestamp_ms));
    });
  }

  // ---- topic tree ----

  function buildTree(tags) {
    leaves.clear();
    const root = { children: new Map() };
    tags.forEach((tag) => {
      let node = root;
      tag.path.split('/').forEach((level) => {
        if (!node.children.has(level)) node.children.set(level, { children: new Map() });
        node = node.children.get(level);
      });
      node.tag = tag;
    });
    const render = (node, prefix, depth) => {
      const ul = document.createElement('ul');
      node.children.forEach((child, level) => {
        const li = document.createElement('li');
        const path = prefix ? prefix + '/' + level : level;
        if (child.children.size === 0) {
          const b = document.createElement('button');
          b.type = 'button';
          b.className = 'leaf';
          b.dataset.path = path;
          b.dataset.quality = child.tag ? child.tag.quality || '' : '';
          b.textContent = level;
          b.addEventListener('click', () => select(path, true));
          leaves.set(path, b);
          li.appendChild(b);
        } else {
          const d = document.createElement('details');
          d.open = depth < 3;
          const sum = document.createElement('summary');
          sum.textContent = level;
          const pick = document.createElement('button');
          pick.type = 'button';
          pick.className = 'pick';
          pick.title = 'filter the table to ' + path;
          pick.textContent = '⌕';
          pick.addEventListener('click', (e) => {
            e.preventDefault();
            $('filter').value = path + '/';
            reconnect();
          });
          sum.appendChild(pick);
          d.appendChild(sum);
          d.appendChild(render(child, path, depth + 1));
          li.appendChild(d);
        }
        ul.appendChild(li);
      });
      return ul;
    };
    $('tree').replaceChildren(render(root, '', 0));
  }

  // ---- selection and sparkline ----

  function select(path, scroll) {
    if (selected && rows.has(selected)) rows.get(selected).tr.classList.remove('selected');
    selected = path;
    series = [];
    $('detail').hidden = false;
    setText($('selected-tag'), path);
    const r = rows.get(path);
    if (r) {
      r.tr.classList.add('selected');
      if (scroll) r.tr.scrollIntoView({ block: 'nearest' });
      showSelected(r.tag);
    }
    drawSpark();
    fetch('/api/v1/tags/' + path + '/history', { credentials: 'same-origin' })
      .then((resp) => (resp.ok ? resp.json() : null))
      .then((h) => {
        if (!h || selected !== path) return;
        const known = series;
        series = h.values.map((p) => ({ t: p.timestamp_ms, v: p.value }));
        known.forEach((p) => { if (!series.length || p.t > series[series.length - 1].t) series.push(p); });
        series = series.slice(-histMax);
        drawSpark();
      })
      .catch(() => {});
  }

  function showSelected(tag) {
    setText($('selected-value'), fmtValue(tag.value) + (tag.unit ? ' ' + tag.unit : '') + ' · ' +
      (tag.quality || 'waiting') + (tag.stale ? ' stale' : '') + ' · ' + fmtTime(tag.timestamp_ms));
  }

  function addPoint(tag) {
    showSelected(tag);
    let v = tag.value;
    if (typeof v === 'boolean') v = v ? 1 : 0;
    if (typeof v !== 'number' || tag.quality === 'BAD' || tag.quality === '') return;
    const last = series[series.length - 1];
    if (last && last.t === tag.timestamp_ms && last.v === v) return;
    series.push({ t: tag.timestamp_ms, v: v });
    if (series.length > histMax) series = series.slice(-histMax);
    drawSpark();
  }

  function drawSpark() {
    const line = $('spark-line');
    if (series.length === 0) {
      line.setAttribute('points', '');
      setText($('spark-range'), 'no numeric values yet');
      return;
    }
    let lo = Infinity, hi = -Infinity;
    series.forEach((p) => { lo = Math.min(lo, p.v); hi = Math.max(hi, p.v); });
    const w = 300, h = 60, pad = 3;
    const span = hi - lo || 1;
    const n = series.length;
    const pts = series.map((p, i) => {
      const x = n === 1 ? w / 2 : (i / (n - 1)) * w;
      const y = hi === lo ? h / 2 : pad + (1 - (p.v - lo) / span) * (h - 2 * pad);
      return x.toFixed(1) + ',' + y.toFixed(1);
    });
    line.setAttribute('points', pts.join(' '));
    setText($('spark-range'), n + ' values · min ' + lo + ' · max ' + hi + ' · last ' + series[n - 1].v);
  }

  // ---- live stream ----

  function setStream(state) {
    const el = $('stream');
    el.dataset.state = state;
    setText(el, state);
  }

  function reconnect() {
    if (stream) stream.close();
    const f = $('filter').value.trim();
    const url = '/api/v1/events' + (f ? '?filter=' + encodeURIComponent(f) : '');
    stream = new EventSource(url);
    setStream('connecting');
    stream.addEventListener('open', () => setStream('live'));
    stream.addEventListener('error', () => {
      setStream(stream.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting');
    });
    stream.addEventListener('status', (e) => renderStatus(JSON.parse(e.data)));
    stream.addEventListener('tags', (e) => renderTags(JSON.parse(e.data)));
  }

  function init() {
    let timer = null;
    $('filter').addEventListener('input', () => {
      clearTimeout(timer);
      timer = setTimeout(reconnect, 300);
    });
    $('tags').tBodies[0].addEventListener('click', (e) => {
      const tr = e.target.closest('tr[data-path]');
      if (tr) select(tr.dataset.path, false);
    });
    $('close-detail').addEventListener('click', () => {
      if (selected && rows.has(selected)) rows.get(selected).tr.classList.remove('selected');
      selected = null;
      $('detail').hidden = true;
    });
    setInterval(ageTick, 1000);
    reconnect();
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', init);
  } else {
    init();
  }
})();
