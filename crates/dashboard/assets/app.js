// mekong's operations-room dashboard: stations on a map, their latest values and alert
// states, a chart of any series over any range, the active alerts, kept live from the API's
// event stream (or by polling where this mekong has none). Plain script, no build step: the
// page loads Leaflet (window.L) and uPlot (window.uPlot) before it.
//
// Data comes only from the API, with the user's token when the API asks for one (kept in
// sessionStorage, never in a URL). Text from the API is put in the page as text, never as HTML.
// window.mekongDashboard tells a test (or a curious operator) what the page drew.
(function () {
  'use strict';

  const TOKEN_KEY = 'mekong.token';
  // Bucket lengths the chart asks for, in ms: each a whole number of the API's units
  // (crates/api/src/time.rs parse_step), whole hours and days use the store's rollups.
  const STEPS = [1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 108e5, 216e5, 432e5, 864e5];
  const RAW_LIMIT = 10000; // the API's largest page of points
  const POLL_MS = 10000;
  // The series a station's chart opens on: what each kind is watched for.
  const PREFERRED = ['water_level', 'vehicle_count', 'pm2_5'];
  const KIND_COLOURS = { water: '#1f77b4', traffic: '#d9822b', air: '#2ca05a' };
  const SEVERITY_COLOURS = { warning: '#e0a100', critical: '#d62728' };

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || '',
    config: { tile_url: '', tile_attribution: '' },
    features: { stream: false, alerts: false },
    devices: new Map(), // id -> device as /v1/devices gives it
    latest: new Map(), // id -> Map(metric -> {v, t_ms, unit})
    alerts: new Map(), // rule|device|metric -> alert
    selected: { device: null, metric: null, range: 6 * 3600e3 },
    series: [],
    map: null,
    markers: new Map(),
    plot: null,
    agg: null, // per bucket {sum, count} of an aggregate chart, for live updates
    chartSeq: 0,
    live: null,
  };

  const dash = (window.mekongDashboard = {
    ready: false, // the first render is done
    firstRenderMs: null,
    live: 'starting', // 'stream', 'polling' or 'starting'
    chart: null, // {device, metric, mode, url, step_ms, points, appended}
    charts: 0, // how many charts were drawn
    drawnPoints: () => (state.plot ? state.plot.data[0].length : 0),
    stations: () => Array.from(state.devices.keys()),
    alerts: () => Array.from(state.alerts.values()),
  });

  class Unauthorized extends Error {}

  const $ = (sel) => document.querySelector(sel);

  // An element with attributes and children (strings become text nodes).
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k.startsWith('data-')) el.setAttribute(k, v);
      else el[k] = v;
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function authHeaders(extra) {
    const headers = Object.assign({ Accept: 'application/json' }, extra || {});
    if (state.token) headers.Authorization = 'Bearer ' + state.token;
    return headers;
  }

  async function api(path) {
    const res = await fetch(path, { headers: authHeaders(), cache: 'no-store' });
    if (res.status === 401) throw new Unauthorized('a token is needed');
    if (!res.ok) {
      let message = res.status + ' ' + res.statusText;
      try {
        const body = await res.json();
        if (body && body.error && body.error.message) message = body.error.message;
      } catch (_) {
        // not JSON: keep the status line
      }
      throw new Error(path.split('?')[0] + ': ' + message);
    }
    return res.json();
  }

  function say(text) {
    const el = $('#message');
    el.textContent = text || '';
    el.hidden = !text;
  }

  function askToken(why) {
    $('#token-form').hidden = false;
    $('#sign-out').hidden = true;
    say(why || 'This mekong needs an API token with the read scope (mekong token create).');
    $('#token').focus();
  }

  function setLive(mode, text) {
    dash.live = mode;
    const el = $('#live');
    el.textContent = text;
    el.classList.toggle('off', mode !== 'stream');
  }

  const enc = encodeURIComponent;

  function ago(ms) {
    if (ms === null || ms === undefined) return 'never';
    const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 86400) return Math.round(s / 3600) + ' h ago';
    return Math.round(s / 86400) + ' d ago';
  }

  function fmt(v) {
    if (!Number.isFinite(v)) return String(v);
    return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
  }

  // ---- what the API says -------------------------------------------------------------

  async function loadFleet() {
    const [devices, latest, alerts] = await Promise.all([
      api('/v1/devices'),
      api('/v1/latest'),
      state.features.alerts ? api('/v1/alerts') : Promise.resolve(null),
    ]);
    state.devices = new Map(devices.devices.map((d) => [d.id, d]));
    state.latest = new Map();
    for (const l of latest.latest) noteLatest(l.device, l.kind, l.metric, l.unit, l.t_ms, l.v);
    if (alerts) {
      state.alerts = new Map();
      for (const a of alerts.alerts || []) noteAlert(Object.assign({ at_ms: a.since_ms }, a));
    }
  }

  function noteLatest(device, kind, metric, unit, t_ms, v) {
    let d = state.devices.get(device);
    if (!d) {
      d = { id: device, kind: kind || '', name: null, location: null, last_seen_ms: null };
      state.devices.set(device, d);
    }
    if (d.last_seen_ms === null || d.last_seen_ms === undefined || t_ms > d.last_seen_ms) d.last_seen_ms = t_ms;
    let m = state.latest.get(device);
    if (!m) state.latest.set(device, (m = new Map()));
    const old = m.get(metric);
    if (!old || t_ms >= old.t_ms) m.set(metric, { v, t_ms, unit });
  }

  function alertKey(a) {
    return [a.rule, a.device, a.metric].join('|');
  }

  function noteAlert(a) {
    if (!a || !a.device) return;
    if (a.state === 'resolved') state.alerts.delete(alertKey(a));
    else state.alerts.set(alertKey(a), a);
  }

  // The most severe firing alert of a device, or null.
  function alertOf(id) {
    let worst = null;
    for (const a of state.alerts.values()) {
      if (a.device !== id) continue;
      if (!worst || (a.severity === 'critical' && worst.severity !== 'critical')) worst = a;
    }
    return worst;
  }

  // ---- the stations table, the map and the alerts list ---------------------------------

  function label(d) {
    return d.name || d.id;
  }

  function renderStations() {
    const body = $('#stations tbody');
    const rows = [];
    // Stations with a firing alert first, critical before warning.
    const weight = (id) => {
      const a = alertOf(id);
      return a ? (a.severity === 'critical' ? 0 : 1) : 2;
    };
    const ids = Array.from(state.devices.keys()).sort((a, b) => weight(a) - weight(b) || a.localeCompare(b));
    for (const id of ids) {
      const d = state.devices.get(id);
      const values = Array.from((state.latest.get(id) || new Map()).entries()).map(([metric, l]) =>
        h('span', { class: 'value', title: new Date(l.t_ms).toISOString() }, metric + ' ' + fmt(l.v) + (l.unit ? ' ' + l.unit : ''))
      );
      const alert = alertOf(id);
      const stale = d.last_seen_ms && Date.now() - d.last_seen_ms > 15 * 60e3;
      rows.push(
        h(
          'tr',
          { 'data-device': id, class: id === state.selected.device ? 'selected' : '' },
          h('td', {}, label(d), d.name ? h('span', { class: 'id' }, id) : null),
          h('td', { class: 'nowrap' }, h('span', { class: 'kind ' + d.kind }), d.kind),
          h('td', {}, values.length ? values : '—'),
          h('td', { class: stale ? 'stale' : '' }, ago(d.last_seen_ms)),
          h('td', {}, alert ? h('span', { class: 'badge ' + alert.severity }, alert.severity) : h('span', { class: 'badge ok' }, 'ok'))
        )
      );
    }
    body.replaceChildren(...rows);
    $('#station-count').textContent = String(ids.length);
  }

  function setupMap() {
    const el = $('#map');
    const tiles = state.config.tile_url;
    const map = L.map(el, { attributionControl: Boolean(tiles), zoomSnap: 0.25 });
    if (tiles) {
      L.tileLayer(tiles, { attribution: state.config.tile_attribution, maxZoom: 19 }).addTo(map);
      map.attributionControl.setPrefix(false);
    } else {
      el.classList.add('plain');
    }
    map.setView([0, 0], 2);
    map.on('dragstart zoomstart', () => {
      if (!state.fitting) state.userMoved = true;
    });
    // The page's layout settles after the first fit (the table's rows, a scroll bar).
    new ResizeObserver(() => fitMap()).observe(el);
    state.map = map;
  }

  // Shows every placed station, until the user moves the map.
  function fitMap() {
    if (state.userMoved || !state.placed || !state.placed.length) return;
    state.fitting = true;
    state.map.invalidateSize({ animate: false });
    // Room on the right for the names beside the markers.
    state.map.fitBounds(L.latLngBounds(state.placed), {
      paddingTopLeft: [30, 30],
      paddingBottomRight: [230, 30],
      maxZoom: 15,
      animate: false,
    });
    state.fitting = false;
    state.mapFitted = true;
  }

  function renderMap() {
    const map = state.map;
    const placed = [];
    let unplaced = 0;
    const seen = new Set();
    for (const [id, d] of state.devices) {
      if (!d.location) {
        unplaced++;
        continue;
      }
      seen.add(id);
      const at = [d.location.lat, d.location.lon];
      placed.push(at);
      const alert = alertOf(id);
      const style = {
        radius: id === state.selected.device ? 11 : 8,
        color: alert ? SEVERITY_COLOURS[alert.severity] || SEVERITY_COLOURS.warning : '#ffffff',
        weight: alert ? 4 : 2,
        fillColor: KIND_COLOURS[d.kind] || '#777',
        fillOpacity: 0.9,
      };
      let marker = state.markers.get(id);
      if (!marker) {
        marker = L.circleMarker(at, style).addTo(map);
        // An element, so that the name is text, never HTML.
        marker.bindTooltip(h('span', {}, label(d)), { permanent: state.devices.size <= 20, direction: 'right', offset: [8, 0], className: 'station-label' });
        marker.on('click', () => select(id));
        state.markers.set(id, marker);
      } else {
        marker.setLatLng(at);
        marker.setStyle(style);
      }
    }
    for (const [id, marker] of state.markers) {
      if (!seen.has(id)) {
        marker.remove();
        state.markers.delete(id);
      }
    }
    state.placed = placed;
    if (!state.mapFitted && placed.length) fitMap();
    const notes = [];
    if (!state.config.tile_url) notes.push('No tile server configured ([dashboard] tile_url): stations at their positions on a plain background.');
    if (unplaced) notes.push(unplaced + ' station' + (unplaced === 1 ? ' has' : 's have') + ' no position in the registry.');
    $('#map-note').textContent = notes.join(' ');
  }

  function renderAlerts() {
    const list = Array.from(state.alerts.values()).sort((a, b) => (b.at_ms || 0) - (a.at_ms || 0));
    $('#alerts').replaceChildren(
      ...list.map((a) => {
        const d = state.devices.get(a.device);
        return h(
          'li',
          { class: 'alert ' + (a.severity || 'warning'), 'data-device': a.device, 'data-rule': a.rule },
          h('span', { class: 'what' }, (a.severity || 'warning') + ': ' + (d ? label(d) : a.device)),
          ' ',
          a.message || a.rule + ' on ' + a.metric + (a.value !== undefined ? ' = ' + fmt(a.value) : ''),
          h('div', { class: 'when' }, a.rule + ' · ' + a.metric + ' · since ' + ago(a.at_ms))
        );
      })
    );
    for (const li of $('#alerts').children) li.addEventListener('click', () => select(li.getAttribute('data-device')));
    $('#alert-count').textContent = String(list.length);
    $('#alerts-note').textContent = state.features.alerts
      ? list.length
        ? ''
        : 'No alert is firing.'
      : 'This mekong serves no alerts (/v1/alerts).';
  }

  let renderQueued = false;
  function renderSoon() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      renderStations();
      renderMap();
      renderAlerts();
    });
  }

  // ---- the chart ---------------------------------------------------------------------

  function chartWidth() {
    return Math.max(300, $('#chart').clientWidth || 600);
  }

  // The smallest step that keeps the range within `buckets` buckets.
  function stepFor(range, buckets) {
    const want = range / buckets;
    return STEPS.find((s) => s >= want) || Math.ceil(want / 864e5) * 864e5;
  }

  async function select(id, metric) {
    if (!state.devices.has(id)) return;
    state.selected.device = id;
    renderSoon();
    const list = await api('/v1/devices/' + enc(id) + '/series');
    if (state.selected.device !== id) return;
    state.series = list.series;
    const menu = $('#metric');
    menu.replaceChildren(...list.series.map((s) => h('option', { value: s.metric }, s.metric + (s.unit ? ' (' + s.unit + ')' : ''))));
    const chosen =
      list.series.find((s) => s.metric === metric) ||
      list.series.find((s) => PREFERRED.includes(s.metric)) ||
      list.series[0];
    state.selected.metric = chosen ? chosen.metric : null;
    if (chosen) menu.value = chosen.metric;
    await drawChart();
  }

  async function drawChart() {
    const { device, metric, range } = state.selected;
    const seq = ++state.chartSeq;
    const d = state.devices.get(device);
    $('#chart-title').textContent = d ? label(d) : 'Select a station';
    const s = state.series.find((x) => x.metric === metric);
    if (!s) {
      showChart(null, [[]], 'This station has sent no readings yet.');
      dash.chart = null;
      return;
    }
    const to = Date.now();
    const from = to - range;
    const buckets = Math.max(10, Math.floor(chartWidth() / 2));
    // How many points the range holds, from the series' mean density: raw points when they
    // fit the chart's width, else aggregates at a step that does.
    const span = Math.max(1, s.last_ms - s.first_ms);
    const overlap = Math.max(0, Math.min(to, s.last_ms + 1) - Math.max(from, s.first_ms));
    const estimate = s.count <= 1 ? s.count : (s.count * overlap) / span;
    const base = '/v1/devices/' + enc(device) + '/series/' + enc(metric);
    let chart = null;
    if (estimate <= buckets) {
      const url = base + '?from=' + from + '&to=' + to + '&limit=' + Math.min(RAW_LIMIT, buckets);
      const body = await api(url);
      if (body.next_from_ms === null || body.next_from_ms === undefined) {
        const x = body.points.map((p) => p.t_ms / 1000);
        chart = { mode: 'raw', url, step_ms: null, data: [x, body.points.map((p) => p.v)], unit: body.unit };
        state.agg = null;
      }
    }
    if (!chart) {
      const step = stepFor(range, buckets);
      const url = base + '/aggregate?from=' + from + '&to=' + to + '&step=' + step;
      const body = await api(url);
      const b = body.buckets;
      chart = {
        mode: 'aggregate',
        url,
        step_ms: step,
        unit: body.unit,
        data: [b.map((x) => x.t_ms / 1000), b.map((x) => x.avg), b.map((x) => x.min), b.map((x) => x.max)],
      };
      state.agg = b.map((x) => ({ sum: x.sum, count: x.count }));
    }
    if (seq !== state.chartSeq) return; // a newer choice was made meanwhile
    const n = chart.data[0].length;
    const note =
      (n ? n + (chart.mode === 'raw' ? ' points' : ' buckets of ' + chart.step_ms / 1000 + ' s (mean, min, max)') : 'No readings in this range.') +
      ' · ' + chart.url;
    showChart(chart, chart.data, note);
    dash.chart = { device, metric, mode: chart.mode, url: chart.url, step_ms: chart.step_ms, points: n, appended: 0 };
    dash.charts++;
  }

  function showChart(chart, data, note) {
    const el = $('#chart');
    if (state.plot) {
      state.plot.destroy();
      state.plot = null;
    }
    $('#chart-note').textContent = note;
    if (!chart) return;
    const metric = state.selected.metric + (chart.unit ? ' (' + chart.unit + ')' : '');
    const colour = KIND_COLOURS[(state.devices.get(state.selected.device) || {}).kind] || '#1f77b4';
    const series = [{}, { label: metric, stroke: colour, width: 2, points: { show: chart.mode === 'raw' && data[0].length < 200 } }];
    if (chart.mode === 'aggregate') {
      series.push({ label: 'min', stroke: colour, width: 1, dash: [4, 4], alpha: 0.5 });
      series.push({ label: 'max', stroke: colour, width: 1, dash: [4, 4], alpha: 0.5 });
    }
    const [from, to] = [(Date.now() - state.selected.range) / 1000, Date.now() / 1000];
    state.plot = new uPlot(
      { width: chartWidth(), height: 280, series, scales: { x: { time: true, range: () => [from, Math.max(to, Date.now() / 1000)] } } },
      data,
      el
    );
  }

  // A reading that arrived live: onto the chart, if it shows that series.
  function appendToChart(device, metric, t_ms, v) {
    const plot = state.plot;
    const c = dash.chart;
    if (!plot || !c || c.device !== device || c.metric !== metric) return;
    const data = plot.data.map((a) => Array.from(a));
    const x = data[0];
    const last = x.length ? x[x.length - 1] * 1000 : -Infinity;
    if (c.mode === 'raw') {
      if (t_ms <= last) return;
      x.push(t_ms / 1000);
      data[1].push(v);
      c.appended++;
    } else {
      const start = Math.floor(t_ms / c.step_ms) * c.step_ms;
      if (start < last) return;
      if (start === last) {
        const i = x.length - 1;
        const a = state.agg[i];
        a.sum += v;
        a.count += 1;
        data[1][i] = a.sum / a.count;
        data[2][i] = Math.min(data[2][i], v);
        data[3][i] = Math.max(data[3][i], v);
      } else {
        x.push(start / 1000);
        data[1].push(v);
        data[2].push(v);
        data[3].push(v);
        state.agg.push({ sum: v, count: 1 });
        c.appended++;
      }
    }
    plot.setData(data);
  }

  // ---- live updates ------------------------------------------------------------------

  function onReadings(r) {
    if (!r || !Array.isArray(r.points)) return;
    for (const p of r.points) {
      noteLatest(r.device, r.kind, r.metric, r.unit, p.t_ms, p.v);
      appendToChart(r.device, r.metric, p.t_ms, p.v);
    }
    renderSoon();
  }

  function onAlert(a) {
    noteAlert(a);
    renderSoon();
  }

  // Server-sent events read with fetch(), which can send the token (EventSource cannot);
  // reconnects with Last-Event-ID, backing off up to 15 s, and catches up on what it may
  // have missed from /v1/latest and /v1/alerts.
  async function streamLoop() {
    let lastId = null;
    let delay = 1000;
    for (;;) {
      try {
        const extra = { Accept: 'text/event-stream' };
        if (lastId !== null) extra['Last-Event-ID'] = lastId;
        const res = await fetch('/v1/stream', { headers: authHeaders(extra), cache: 'no-store' });
        if (res.status === 401) {
          setLive('starting', 'signed out');
          askToken();
          return;
        }
        if (!res.ok || !res.body) throw new Error('stream: ' + res.status);
        setLive('stream', 'live');
        delay = 1000;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        let event = { type: 'message', data: [], id: null };
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let nl;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).replace(/\r$/, '');
            buf = buf.slice(nl + 1);
            if (line === '') {
              if (event.id !== null) lastId = event.id;
              if (event.data.length) dispatch(event.type, event.data.join('\n'));
              event = { type: 'message', data: [], id: null };
            } else if (!line.startsWith(':')) {
              const colon = line.indexOf(':');
              const field = colon < 0 ? line : line.slice(0, colon);
              const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
              if (field === 'event') event.type = val;
              else if (field === 'data') event.data.push(val);
              else if (field === 'id') event.id = val;
            }
          }
        }
      } catch (_) {
        // the connection failed or ended: reconnect below
      }
      setLive('starting', 'reconnecting…');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15000);
      try {
        await catchUp();
      } catch (e) {
        if (e instanceof Unauthorized) return askToken();
      }
    }
  }

  function dispatch(type, data) {
    let body;
    try {
      body = JSON.parse(data);
    } catch (_) {
      return;
    }
    if (type === 'readings') onReadings(body);
    else if (type === 'alert') onAlert(body);
  }

  async function catchUp() {
    const latest = await api('/v1/latest');
    for (const l of latest.latest) {
      noteLatest(l.device, l.kind, l.metric, l.unit, l.t_ms, l.v);
      appendToChart(l.device, l.metric, l.t_ms, l.v);
    }
    if (state.features.alerts) {
      const alerts = await api('/v1/alerts');
      state.alerts = new Map();
      for (const a of alerts.alerts || []) noteAlert(Object.assign({ at_ms: a.since_ms }, a));
    }
    renderSoon();
  }

  function startLive() {
    if (state.live) return;
    if (state.features.stream) {
      state.live = streamLoop();
    } else {
      setLive('polling', 'polling every ' + POLL_MS / 1000 + ' s');
      state.live = setInterval(() => {
        catchUp().catch((e) => {
          if (e instanceof Unauthorized) askToken();
        });
      }, POLL_MS);
    }
  }

  // ---- start -------------------------------------------------------------------------

  async function start() {
    try {
      await loadFleet();
    } catch (e) {
      if (e instanceof Unauthorized) {
        askToken(state.token ? 'That token was refused: enter a token with the read scope.' : undefined);
        return;
      }
      throw e;
    }
    $('#token-form').hidden = true;
    $('#sign-out').hidden = !state.token;
    say('');
    renderStations();
    renderMap();
    renderAlerts();
    if (!state.selected.device) {
      // A station with an alert first, then a water station (the river is what a flood
      // watch looks at), then any that has sent something.
      const rank = (d) => (alertOf(d.id) ? 0 : d.kind === 'water' ? 1 : 2);
      const first = Array.from(state.devices.values())
        .filter((d) => state.latest.has(d.id))
        .sort((a, b) => rank(a) - rank(b) || a.id.localeCompare(b.id))[0];
      if (first) await select(first.id);
    } else {
      await select(state.selected.device, state.selected.metric);
    }
    if (!dash.ready) {
      performance.mark('mekong-first-render');
      dash.firstRenderMs = performance.now();
      dash.ready = true;
    }
    startLive();
  }

  async function boot() {
    const [config, openapi] = await Promise.all([
      fetch('/dashboard/config.json', { cache: 'no-store' }).then((r) => r.json()),
      fetch('/openapi.json').then((r) => r.json()),
    ]);
    state.config = config;
    // Parts of the API that a mekong may not serve yet: asked for only when described, so
    // that the page makes no request that can fail.
    const paths = (openapi && openapi.paths) || {};
    state.features.stream = '/v1/stream' in paths;
    state.features.alerts = '/v1/alerts' in paths;
    setupMap();

    $('#token-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      state.token = $('#token').value.trim();
      $('#token').value = '';
      if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
      run();
    });
    $('#sign-out').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      location.reload();
    });
    $('#stations tbody').addEventListener('click', (ev) => {
      const row = ev.target.closest('tr[data-device]');
      if (row) run(() => select(row.getAttribute('data-device')));
    });
    $('#metric').addEventListener('change', (ev) => {
      state.selected.metric = ev.target.value;
      run(drawChart);
    });
    for (const b of document.querySelectorAll('#ranges button')) {
      b.addEventListener('click', () => {
        for (const o of document.querySelectorAll('#ranges button')) o.classList.toggle('on', o === b);
        state.selected.range = Number(b.getAttribute('data-range'));
        run(drawChart);
      });
    }
    let resize = null;
    window.addEventListener('resize', () => {
      clearTimeout(resize);
      resize = setTimeout(() => {
        if (state.plot) state.plot.setSize({ width: chartWidth(), height: 280 });
        if (state.map) state.map.invalidateSize();
      }, 200);
    });
    // "ago" and staleness move with the clock.
    setInterval(renderSoon, 5000);
    await start();
  }

  // Runs `what` (default: the whole start), showing what went wrong instead of throwing.
  function run(what) {
    Promise.resolve()
      .then(what || start)
      .catch((e) => {
        if (e instanceof Unauthorized) askToken();
        else say(String(e.message || e));
      });
  }

  document.addEventListener('DOMContentLoaded', () => run(boot));
})();
