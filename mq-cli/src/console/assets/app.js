// mq console: plain JS over the console's JSON API. Every value from a
// backend is put in the page as text (never as HTML): payloads, keys and
// headers are untrusted.
'use strict';

const $ = (sel) => document.querySelector(sel);
const state = {
  info: null,
  token: '',
  topic: null,    // { b, name, partitions }
  tab: 'groups',
  letters: null,  // { b, dlq }
  tail: null,     // { cursor, seen: Set, timer }
};

// Builds an element: h('td', { class: 'num' }, 'text', child, ...).
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) el.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function status(text, isError) {
  const el = $('#status');
  el.textContent = text;
  el.classList.toggle('error', !!isError);
}

async function api(path, options) {
  const response = await fetch('/api' + path, options);
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(`${response.status}: ${body.error || 'request failed'}`);
  return body;
}

// Actions carry the token in a header and a JSON body: what a page on
// another site can send neither way without the console's consent.
function act(path, body) {
  return api(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-mq-token': state.token },
    body: JSON.stringify(body || {}),
  });
}

const enc = encodeURIComponent;
const topicPath = (b, topic) => `/backends/${b}/topics/${enc(topic)}`;
const dash = (v) => (v === null || v === undefined ? '-' : v);
const cut = (text, n) => (text.length > n ? text.slice(0, n) + '…' : text);

function table(headers, rows) {
  return h('table', {},
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', { class: /lag|partitions|offset|end|committed|letters|replays|attempts/.test(t) ? 'num' : null }, t)))),
    h('tbody', {}, rows));
}

// ---- backends and topics ------------------------------------------------

async function refreshBackends() {
  const root = $('#backends');
  const parts = [];
  for (const b of state.info.backends) {
    let topics = [];
    let letters = [];
    let failure = null;
    try {
      [topics, letters] = await Promise.all([
        api(`/backends/${b.index}/topics`),
        api(`/backends/${b.index}/dead-letters`),
      ]);
    } catch (e) {
      failure = e.message;
    }
    parts.push(backendView(b, topics.filter((t) => !t.dead_letter), letters, failure));
  }
  root.replaceChildren(h('div', { class: 'backends' }, parts));
  status('updated ' + new Date().toLocaleTimeString());
}

function backendView(b, topics, letters, failure) {
  const rows = topics.map((t) => h('tr', { 'data-topic': t.name },
    h('td', {}, h('button', { class: 'link open-topic', onclick: () => openTopic(b.index, t) }, t.name)),
    h('td', { class: 'num' }, t.partitions),
    h('td', {}, t.error ? h('span', { class: 'error-text' }, t.error)
      : t.groups.map((g) => `${g.group} (${g.lag})`).join(', ') || '-'),
    h('td', { class: 'num lag' + (t.lag > 0 ? ' behind' : '') }, t.lag)));
  const dlqs = letters.map((d) => h('tr', { 'data-dlq': d.topic },
    h('td', {}, h('button', { class: 'link open-dlq', onclick: () => openLetters(b.index, d.topic) }, d.topic)),
    h('td', { class: 'num letters' }, d.letters)));
  return h('div', { class: 'backend', 'data-backend': b.index },
    h('h2', {}, `${b.label} `, h('small', { class: 'hint' }, b.backend)),
    failure ? h('p', { class: 'error-text' }, failure) : null,
    table(['topic', 'partitions', 'groups (lag)', 'lag'], rows.length ? rows : [h('tr', {}, h('td', { colspan: 4, class: 'hint' }, 'no topics'))]),
    h('h3', {}, 'Dead letters'),
    dlqs.length ? table(['dead-letter topic', 'letters'], dlqs) : h('p', { class: 'hint' }, 'none'));
}

// ---- one topic: groups, messages, tail, produce -------------------------

function openTopic(b, topic) {
  stopTail();
  state.topic = { b, name: topic.name, partitions: topic.partitions };
  $('#detail').hidden = false;
  $('#detail-title').textContent = `${topic.name} on ${state.info.backends[b].label}`;
  const select = $('#browse-form [name=partition]');
  select.replaceChildren(h('option', { value: '' }, 'all'),
    [...Array(topic.partitions).keys()].map((p) => h('option', { value: p }, p)));
  $('#messages').replaceChildren();
  $('#browse-summary').textContent = '';
  $('#tail').replaceChildren();
  showTab(state.tab);
  $('#detail').scrollIntoView({ behavior: 'smooth' });
}

function showTab(tab) {
  if (tab !== 'tail') stopTail();
  state.tab = tab;
  for (const button of document.querySelectorAll('.tabs button')) button.classList.toggle('on', button.dataset.tab === tab);
  for (const panel of document.querySelectorAll('.panel')) panel.hidden = panel.dataset.panel !== tab;
  if (tab === 'groups') refreshGroups();
  if (tab === 'messages') browse();
}

async function refreshGroups() {
  if (!state.topic || state.tab !== 'groups' || $('#detail').hidden) return;
  const { b, name } = state.topic;
  try {
    const groups = await api(topicPath(b, name) + '/groups');
    const parts = groups.map((g) => h('div', { class: 'group', 'data-group': g.group },
      h('h3', {}, `${g.group}: lag `, h('span', { class: 'group-lag' }, g.lag)),
      table(['partition', 'lag', 'end', 'committed'], g.partitions.map((p) => h('tr', { 'data-partition': p.partition },
        h('td', { class: 'num' }, p.partition),
        h('td', { class: 'num lag' + (p.lag > 0 ? ' behind' : '') }, p.lag),
        h('td', { class: 'num' }, dash(p.end)),
        h('td', { class: 'num' }, dash(p.committed)))))));
    $('#groups').replaceChildren(...(parts.length ? parts : [h('p', { class: 'hint' }, 'no consumer groups')]));
    $('#groups-at').textContent = 'updated ' + new Date().toLocaleTimeString();
  } catch (e) {
    $('#groups').replaceChildren(h('p', { class: 'error-text' }, e.message));
  }
}

function messageRows(messages) {
  return messages.map((m) => {
    const row = h('tr', { class: 'message', 'data-offset': dash(m.offset) },
      h('td', { class: 'num' }, m.partition),
      h('td', { class: 'num' }, dash(m.offset)),
      h('td', {}, dash(m.key)),
      h('td', {}, dash(m.published_at)),
      h('td', { class: 'payload' }, cut(m.payload, 200)));
    row.addEventListener('click', () => toggleDetails(row, m, 5));
    return row;
  });
}

// Opens (or closes) a row below `row` with the headers and whole payload.
function toggleDetails(row, m, span) {
  if (row.nextSibling && row.nextSibling.classList.contains('details')) {
    row.nextSibling.remove();
    row.classList.remove('open');
    return;
  }
  row.classList.add('open');
  const headers = Object.entries(m.headers).map(([n, v]) => h('tr', {}, h('td', {}, n), h('td', {}, v)));
  row.after(h('tr', { class: 'details' }, h('td', { colspan: span },
    h('div', {}, `id ${dash(m.id)} · ${m.payload_bytes} bytes${m.payload_utf8 ? '' : ' (not UTF-8)'}${m.payload_cut ? ' (cut)' : ''}`),
    h('table', { class: 'headers' }, h('tbody', {}, headers.length ? headers : h('tr', {}, h('td', {}, 'no headers')))),
    h('div', { class: 'payload' }, m.payload))));
}

async function browse(event) {
  if (event) event.preventDefault();
  if (!state.topic) return;
  const form = new FormData($('#browse-form'));
  const query = new URLSearchParams();
  for (const [name, value] of form) if (value !== '') query.set(name, value);
  try {
    const result = await api(`${topicPath(state.topic.b, state.topic.name)}/messages?${query}`);
    $('#browse-summary').textContent = `${result.messages.length} of ${result.scanned} messages read match`;
    $('#messages').replaceChildren(table(['partition', 'offset', 'key', 'published', 'payload'], messageRows(result.messages)));
  } catch (e) {
    $('#browse-summary').textContent = '';
    $('#messages').replaceChildren(h('p', { class: 'error-text' }, e.message));
  }
}

function stopTail() {
  if (state.tail) clearTimeout(state.tail.timer);
  state.tail = null;
  $('#tail-toggle').textContent = 'Start';
}

async function pollTail() {
  const tail = state.tail;
  if (!tail || !state.topic) return;
  try {
    const query = tail.cursor === null ? '' : `?cursor=${enc(tail.cursor)}`;
    const result = await api(`${topicPath(state.topic.b, state.topic.name)}/tail${query}`);
    if (state.tail !== tail) return;
    tail.cursor = result.cursor;
    // Repeats can come where a backend has neither offsets nor ids.
    const fresh = result.messages.filter((m) => !m.id || !tail.seen.has(m.id));
    fresh.forEach((m) => m.id && tail.seen.add(m.id));
    if (tail.seen.size > 5000) tail.seen = new Set([...tail.seen].slice(-1000));
    const body = $('#tail tbody');
    for (const row of messageRows(fresh)) body.prepend(row);
    while (body.children.length > 500) body.lastChild.remove();
  } catch (e) {
    status(e.message, true);
  }
  if (state.tail === tail) tail.timer = setTimeout(pollTail, 1000);
}

function toggleTail() {
  if (state.tail) return stopTail();
  $('#tail').replaceChildren(table(['partition', 'offset', 'key', 'published', 'payload'], []));
  state.tail = { cursor: null, seen: new Set(), timer: null };
  $('#tail-toggle').textContent = 'Stop';
  pollTail();
}

async function produce(event) {
  event.preventDefault();
  const out = $('#produce-result');
  const headers = {};
  for (const line of $('#produce-headers').value.split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) headers[line.slice(0, at).trim()] = line.slice(at + 1);
  }
  try {
    const sent = await act(topicPath(state.topic.b, state.topic.name) + '/messages', {
      payload: $('#produce-payload').value,
      key: $('#produce-key').value || null,
      headers,
    });
    out.className = 'ok-text';
    out.textContent = `sent ${sent.id} to partition ${sent.partition}, offset ${dash(sent.offset)}`;
    refreshBackends();
  } catch (e) {
    out.className = 'error-text';
    out.textContent = e.message;
  }
}

// ---- dead letters -------------------------------------------------------

async function openLetters(b, dlq) {
  state.letters = { b, dlq };
  $('#letters').hidden = false;
  $('#letters-title').textContent = `Dead letters of ${dlq} on ${state.info.backends[b].label}`;
  $('#letters-result').textContent = '';
  await refreshLetters();
  $('#letters').scrollIntoView({ behavior: 'smooth' });
}

async function refreshLetters() {
  const { b, dlq } = state.letters;
  const root = $('#letters-table');
  root.replaceChildren(h('p', { class: 'hint' }, 'reading…'));
  try {
    const letters = await api(`/backends/${b}/dead-letters/${enc(dlq)}`);
    const rows = letters.map((l) => {
      const row = h('tr', { class: 'letter', 'data-id': dash(l.id) },
        h('td', { class: 'action' }, h('input', { type: 'checkbox', class: 'pick', value: l.id || '' })),
        h('td', {}, h('button', { class: 'link show-headers', onclick: () => toggleDetails(row, l, 9) }, cut(dash(l.id), 13))),
        h('td', {}, dash(l.key)),
        h('td', {}, dash(l.from_topic)),
        h('td', {}, dash(l.group)),
        h('td', { class: 'num' }, dash(l.attempts)),
        h('td', { class: 'num' }, l.replays),
        h('td', { class: 'error-text' }, dash(l.error)),
        h('td', { class: 'action' }, h('button', { class: 'redrive-one', onclick: () => redrive({ ids: [l.id] }) }, 'Redrive')));
      return row;
    });
    root.replaceChildren(rows.length
      ? table(['', 'id', 'key', 'from', 'group', 'attempts', 'replays', 'error', ''], rows)
      : h('p', { class: 'hint' }, 'no pending letters'));
  } catch (e) {
    root.replaceChildren(h('p', { class: 'error-text' }, e.message));
  }
}

async function redrive(body) {
  const { b, dlq } = state.letters;
  const out = $('#letters-result');
  out.className = '';
  out.textContent = 'redriving…';
  try {
    const r = await act(`/backends/${b}/dead-letters/${enc(dlq)}/redrive`, body);
    const refused = r.refused ? `, ${r.refused} refused (replay limit)` : '';
    const notes = r.letters.filter((l) => l.outcome !== 'redriven').map((l) => `${l.id}: ${l.outcome}`);
    out.className = 'ok-text';
    out.textContent = `redriven ${r.redriven}${refused}${notes.length ? ' · ' + notes.join('; ') : ''}`;
  } catch (e) {
    out.className = 'error-text';
    out.textContent = e.message;
  }
  await Promise.all([refreshLetters(), refreshBackends()]);
}

async function purge() {
  const { b, dlq } = state.letters;
  if (!confirm(`Remove every pending letter of ${dlq}? This cannot be undone.`)) return;
  const out = $('#letters-result');
  try {
    const r = await act(`/backends/${b}/dead-letters/${enc(dlq)}/purge`, {});
    out.className = 'ok-text';
    out.textContent = `purged ${r.purged}`;
  } catch (e) {
    out.className = 'error-text';
    out.textContent = e.message;
  }
  await Promise.all([refreshLetters(), refreshBackends()]);
}

// ---- start --------------------------------------------------------------

// The token comes in the address's fragment (never sent to a server) or
// is typed in; it is kept for this tab only and taken out of the address.
function takeToken() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem('mq-token', decodeURIComponent(match[1]));
    history.replaceState(null, '', location.pathname + location.search);
  }
  state.token = sessionStorage.getItem('mq-token') || '';
  const input = $('#token');
  input.value = state.token;
  input.addEventListener('input', () => {
    state.token = input.value.trim();
    sessionStorage.setItem('mq-token', state.token);
  });
}

async function start() {
  try {
    state.info = await api('/info');
  } catch (e) {
    return status(e.message, true);
  }
  const actions = state.info.actions;
  document.body.classList.toggle('read-only', !actions);
  $('#mode').textContent = actions ? 'actions enabled' : 'read-only';
  $('#mode').classList.toggle('actions', actions);
  $('#token-box').hidden = !actions;
  if (actions) takeToken();
  for (const button of document.querySelectorAll('.tabs button')) button.addEventListener('click', () => showTab(button.dataset.tab));
  $('#browse-form').addEventListener('submit', browse);
  $('#produce-form').addEventListener('submit', produce);
  $('#tail-toggle').addEventListener('click', toggleTail);
  $('#redrive-selected').addEventListener('click', () => {
    const ids = [...document.querySelectorAll('#letters-table .pick:checked')].map((c) => c.value).filter(Boolean);
    if (ids.length) redrive({ ids });
    else $('#letters-result').textContent = 'select letters first';
  });
  $('#redrive-all').addEventListener('click', () => redrive({ all: true }));
  $('#purge').addEventListener('click', purge);
  every(3000, refreshBackends);
  every(2000, refreshGroups);
}

// Runs `work` again `ms` after each run ends, so a slow backend never has
// requests piling up.
async function every(ms, work) {
  try {
    await work();
  } finally {
    setTimeout(() => every(ms, work), ms);
  }
}

start();
