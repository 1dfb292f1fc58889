// imchat: the web chat. Everything it shows comes from the HTTP API (lists, history) and
// from the user's stream over /ws (stream.js). A conversation's messages are kept by their
// seq in the user's own stream, so whatever arrives twice (history and stream, a replay
// after a reconnect) is shown once.

import { Api, ApiError } from './api.js';
import { Stream } from './stream.js';

const $ = (id) => document.getElementById(id);
const SESSION = 'imchat.session';
const PAGE = 50;
const TYPING_SHOWN = 4_000;
const TYPING_EVERY = 2_500;

// Server error codes, in words.
const WORDS = {
  rate_limited: 'You are sending too fast. The message waits and goes out again in a moment.',
  unavailable: 'The server cannot store messages right now. The message waits and goes out again in a moment.',
  not_friends: 'Not sent: this server delivers messages between friends only.',
  not_member: 'Not sent: you are not a member of this group.',
  too_large: 'Not sent: the message is too long.',
  bad_packet: 'The server did not understand a request.',
  bad_json: 'The server did not understand a request.',
  unauthorized: 'Your session has ended. Log in again.',
  too_many_connections: 'Your account has too many open connections. Close a tab or device.',
  unavailable: 'The server cannot store messages right now. They will be sent again.',
  sender_mismatch: 'This tab is logged in as someone else. Reload the page.',
};

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// ---- Notices ------------------------------------------------------------------------------

let bannerTimer = null;
function notify(text, kind = 'error') {
  $('banner-text').textContent = text;
  $('banner').className = kind === 'info' ? 'info' : '';
  $('banner').hidden = false;
  clearTimeout(bannerTimer);
  bannerTimer = setTimeout(() => ($('banner').hidden = true), 8_000);
}

function words(error) {
  return WORDS[error.code] || error.message || `The server refused: ${error.code}`;
}

// Runs an action, showing what went wrong in words.
async function attempt(action) {
  try {
    return await action();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      logout(false, 'Your session has ended. Log in again.');
      return undefined;
    }
    notify(e.message || String(e));
    return undefined;
  }
}

// ---- Time ---------------------------------------------------------------------------------

function when(seconds) {
  const d = new Date(seconds * 1000);
  const today = new Date();
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  if (d.toDateString() === today.toDateString()) return time;
  return `${d.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time}`;
}

// ---- State --------------------------------------------------------------------------------

const state = {
  api: new Api(),
  stream: null,
  me: null, // { user, name, token }
  names: new Map(), // user id → name
  friends: new Map(), // user id → { user, name, online }
  groups: new Map(), // group id → group
  convs: new Map(), // peer → { peer, name, last, lastSeq, unread }
  blocks: [],
  open: null, // { peer, messages: Map(seq → message), pending: Map(id → message), more, oldest }
  typing: new Map(), // peer → { who, timer }
  reads: {}, // peer → the highest seq of mine they have read
  lastTyping: 0,
};

const isGroup = (peer) => peer.startsWith('g');

// The conversation an entry of my stream belongs to.
function peerOf(m) {
  if (isGroup(m.receiver)) return m.receiver;
  return m.sender === state.me.user ? m.receiver : m.sender;
}

function nameOf(peer) {
  if (isGroup(peer)) return state.groups.get(peer)?.name || state.convs.get(peer)?.name || peer;
  return state.names.get(peer) || state.convs.get(peer)?.name || `User ${peer}`;
}

function saveReads() {
  localStorage.setItem(`imchat.${state.me.user}.reads`, JSON.stringify(state.reads));
}

// ---- Log in, create an account, log out ---------------------------------------------------

function showAuth() {
  $('chat').hidden = true;
  $('auth').hidden = false;
  $('login-user').focus();
}

async function login(e) {
  e.preventDefault();
  const user = $('login-user').value.trim();
  const password = $('login-password').value;
  await attempt(async () => {
    const body = await new Api().post('/login', { user, password });
    const session = { user: body.user, name: body.name, token: body.token };
    localStorage.setItem(SESSION, JSON.stringify(session));
    $('login-password').value = '';
    await startChat(session);
  });
}

async function regist(e) {
  e.preventDefault();
  const account = {
    name: $('regist-name').value.trim(),
    email: $('regist-email').value.trim(),
    sex: $('regist-sex').value,
    signature: $('regist-signature').value.trim(),
    password: $('regist-password').value,
  };
  await attempt(async () => {
    const body = await new Api().post('/regist', account);
    $('regist-result').textContent = `Account created. Your user id is ${body.user}: log in with it.`;
    $('login-user').value = body.user;
    $('login-password').value = account.password;
    $('regist-password').value = '';
    $('login-password').focus();
  });
}

async function logout(tellServer = true, why = null) {
  if (tellServer && state.api.token) {
    try {
      await state.api.post('/logout');
    } catch {
      // Logged out here all the same.
    }
  }
  state.stream?.stop();
  state.stream = null;
  localStorage.removeItem(SESSION);
  state.me = null;
  state.open = null;
  state.api = new Api();
  if (why) notify(why, 'info');
  showAuth();
}

// ---- The messenger ------------------------------------------------------------------------

async function startChat(session) {
  state.me = session;
  state.api = new Api(session.token);
  state.names.set(session.user, session.name);
  try {
    state.reads = JSON.parse(localStorage.getItem(`imchat.${session.user}.reads`) || '{}');
  } catch {
    state.reads = {};
  }
  $('me-name').textContent = session.name;
  $('me-id').textContent = session.user;
  $('auth').hidden = true;
  $('chat').hidden = false;
  await Promise.all([loadFriends(), loadGroups(), loadRequests(), loadBlocks()]);
  await loadConvs();
  state.stream = new Stream(session.user, session.token, {
    entry: onEntry,
    live: onLive,
    ack: onAck,
    failed: onFailed,
    error: (e) => notify(words(e)),
    state: (s) => {
      const label = { online: 'Connected', connecting: 'Connecting…', offline: 'Offline: reconnecting…' }[s];
      $('conn-state').textContent = label;
      $('conn-state').className = `conn ${s}`;
    },
    unauthorized: () => logout(false, 'Your session has ended. Log in again.'),
  });
  const hash = decodeURIComponent(location.hash.slice(1));
  if (hash) openConv(hash);
}

async function loadFriends() {
  const list = await attempt(() => state.api.get(`/list/${state.me.user}`));
  if (!list) return;
  const friends = new Map();
  for (const f of list) {
    state.names.set(f.user, f.name);
    friends.set(f.user, { ...f, online: state.friends.get(f.user)?.online || false });
  }
  state.friends = friends;
  renderFriends();
  // Who is online now; changes come as Presence packets.
  await Promise.all(
    list.map(async (f) => {
      try {
        const p = await state.api.get(`/presence/${f.user}`);
        const friend = state.friends.get(f.user);
        if (friend) friend.online = p.online;
      } catch {
        // Shown as offline.
      }
    }),
  );
  renderFriends();
}

async function loadGroups() {
  const list = await attempt(() => state.api.get('/groups'));
  if (!list) return;
  state.groups = new Map(list.map((g) => [g.group, g]));
  for (const g of list) for (const m of g.members) state.names.set(m.user, m.name);
  renderConvs();
}

async function loadRequests() {
  const r = await attempt(() => state.api.get('/friends/requests'));
  if (!r) return;
  const incoming = $('incoming');
  const outgoing = $('outgoing');
  incoming.replaceChildren(
    ...r.incoming.map((q) =>
      h(
        'li',
        {},
        h('span', { class: 'grow' }, `${q.name} (${q.user})`, q.message ? h('span', { class: 'preview' }, q.message) : null),
        h('button', { type: 'button', onclick: () => answer(q.user, 'accept'), 'aria-label': `Accept ${q.name}` }, 'Accept'),
        h('button', { type: 'button', class: 'secondary', onclick: () => answer(q.user, 'decline'), 'aria-label': `Decline ${q.name}` }, 'Decline'),
      ),
    ),
  );
  outgoing.replaceChildren(
    ...r.outgoing.map((q) => h('li', {}, h('span', { class: 'muted' }, `Asked ${q.name} (${q.user}), waiting`))),
  );
  $('requests-empty').hidden = r.incoming.length + r.outgoing.length > 0;
}

async function loadBlocks() {
  const list = await attempt(() => state.api.get('/blocks'));
  if (!list) return;
  state.blocks = list;
  $('blocked').replaceChildren(
    ...list.map((b) =>
      h(
        'li',
        {},
        h('span', { class: 'grow' }, `${b.name} (${b.user})`),
        h('button', { type: 'button', class: 'secondary', onclick: () => unblock(b.user), 'aria-label': `Unblock ${b.name}` }, 'Unblock'),
      ),
    ),
  );
  $('blocked-empty').hidden = list.length > 0;
}

async function loadConvs() {
  const list = await attempt(() => state.api.get('/conversations?limit=200'));
  if (!list) return;
  state.convs = new Map(list.map((c) => [c.peer, c]));
  for (const c of list) if (!isGroup(c.peer)) state.names.set(c.peer, c.name);
  renderConvs();
}

function renderFriends() {
  const items = [...state.friends.values()].sort((a, b) => a.name.localeCompare(b.name));
  $('friends').replaceChildren(
    ...items.map((f) =>
      h(
        'li',
        {},
        h(
          'button',
          { type: 'button', class: 'open', onclick: () => openConv(f.user) },
          h('span', { class: 'row' },
            h('span', { class: `dot${f.online ? ' online' : ''}`, 'aria-hidden': 'true' }),
            h('span', { class: 'name' }, f.name),
          ),
          h('span', { class: 'muted' }, f.online ? 'online' : 'offline'),
        ),
      ),
    ),
  );
}

function renderConvs() {
  // Groups without messages yet are conversations too.
  for (const g of state.groups.values()) {
    if (!state.convs.has(g.group)) state.convs.set(g.group, { peer: g.group, name: g.name, lastSeq: 0, unread: 0, last: null });
  }
  const items = [...state.convs.values()].sort((a, b) => b.lastSeq - a.lastSeq);
  $('convs').replaceChildren(
    ...items.map((c) => {
      const last = c.last ? `${c.last.sender === state.me.user ? 'You: ' : ''}${c.last.message}` : 'No messages yet';
      const current = state.open?.peer === c.peer;
      return h(
        'li',
        {},
        h(
          'button',
          { type: 'button', class: 'open', onclick: () => openConv(c.peer), 'aria-current': current ? 'true' : null, 'data-peer': c.peer },
          h('span', { class: 'grow' }, h('span', { class: 'name' }, nameOf(c.peer)), h('span', { class: 'preview' }, last)),
          c.unread > 0 ? h('span', { class: 'unread', 'aria-label': `${c.unread} unread` }, c.unread) : null,
        ),
      );
    }),
  );
  $('convs-empty').hidden = items.length > 0;
}

// ---- A conversation -----------------------------------------------------------------------

async function openConv(peer) {
  if (!peer) return;
  state.open = { peer, messages: new Map(), pending: new Map(), more: false, oldest: null };
  location.hash = encodeURIComponent(peer);
  $('conv-empty').hidden = true;
  $('conv-body').hidden = false;
  $('chat').classList.add('viewing');
  $('conv-title').textContent = nameOf(peer);
  $('block').hidden = isGroup(peer);
  $('typing').textContent = '';
  $('messages').replaceChildren();
  // What is still in the outbox for this conversation (sent, not yet acknowledged).
  for (const m of state.stream?.outbox() || []) if (m.receiver === peer) state.open.pending.set(m.id, m);
  renderConvs();
  await loadOlder(true);
  $('text').focus();
}

async function loadOlder(first = false) {
  const open = state.open;
  if (!open) return;
  const before = open.oldest === null ? '' : `before=${open.oldest}&`;
  const page = await attempt(() => state.api.get(`/history/${encodeURIComponent(open.peer)}?${before}limit=${PAGE}`));
  if (!page || state.open !== open) return;
  const log = $('log');
  const fromBottom = log.scrollHeight - log.scrollTop;
  for (const m of page.messages) {
    open.messages.set(m.seq, m);
    if (m.id) open.pending.delete(m.id);
  }
  open.more = page.more;
  if (page.messages.length) open.oldest = Math.min(...page.messages.map((m) => m.seq));
  renderMessages();
  // Older ones go on top without moving what is on screen; the first page shows the newest.
  log.scrollTop = first ? log.scrollHeight : log.scrollHeight - fromBottom;
  markRead();
}

function tickOf(m) {
  if (m.sender !== state.me.user) return null;
  if (m.failed) return h('span', { class: 'tick' }, ' · not sent');
  if (m.seq === undefined) return h('span', { class: 'tick', 'aria-label': 'sending' }, ' · sending');
  const read = (state.reads[peerOf(m)] || 0) >= m.seq;
  return read
    ? h('span', { class: 'tick read', title: 'read', 'aria-label': 'read' }, ' ✓✓')
    : h('span', { class: 'tick', title: 'sent', 'aria-label': 'sent' }, ' ✓');
}

function renderMessage(m) {
  const mine = m.sender === state.me.user;
  const inGroup = isGroup(state.open.peer);
  return h(
    'li',
    { class: `msg${mine ? ' mine' : ''}${m.failed ? ' failed' : ''}`, 'data-seq': m.seq ?? null, 'data-id': m.id ?? null },
    inGroup && !mine ? h('div', { class: 'who' }, state.names.get(m.sender) || `User ${m.sender}`) : null,
    h('div', { class: 'bubble' }, h('span', { class: 'sr-only' }, mine ? 'You: ' : `${state.names.get(m.sender) || m.sender}: `), m.message),
    h('div', { class: 'meta' }, h('time', { datetime: new Date(m.createTime * 1000).toISOString() }, when(m.createTime)), tickOf(m)),
  );
}

function renderMessages() {
  const open = state.open;
  const stored = [...open.messages.values()].sort((a, b) => a.seq - b.seq);
  const pending = [...open.pending.values()];
  const log = $('log');
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  $('messages').replaceChildren(...stored.map(renderMessage), ...pending.map(renderMessage));
  $('older').hidden = !open.more;
  if (atBottom) log.scrollTop = log.scrollHeight;
}

// Tells the server (and the sender) that what is on screen is read.
function markRead() {
  const open = state.open;
  if (!open || document.hidden) return;
  let newest = 0;
  for (const m of open.messages.values()) if (m.sender !== state.me.user && m.seq > newest) newest = m.seq;
  const conv = state.convs.get(open.peer);
  if (newest && state.stream) state.stream.read(open.peer, newest);
  if (conv && conv.unread) {
    conv.unread = 0;
    renderConvs();
  }
}

function send(e) {
  e.preventDefault();
  const text = $('text').value;
  if (!text.trim() || !state.open || !state.stream) return;
  const m = state.stream.send(state.open.peer, text);
  state.open.pending.set(m.id, m);
  $('text').value = '';
  renderMessages();
  $('log').scrollTop = $('log').scrollHeight;
}

function typed() {
  const now = Date.now();
  if (!state.open || !state.stream || now - state.lastTyping < TYPING_EVERY) return;
  state.lastTyping = now;
  state.stream.typing(state.open.peer);
}

// ---- What the stream brings ---------------------------------------------------------------

function onEntry(p) {
  if (p.type === 'Message') onMessage(p);
  else onEvent(p);
}

function onMessage(m) {
  const peer = peerOf(m);
  const mine = m.sender === state.me.user;
  const conv = state.convs.get(peer) || { peer, name: nameOf(peer), unread: 0, lastSeq: 0 };
  // A replayed entry that the conversation list already counted is not new.
  const fresh = m.seq > (conv.lastSeq || 0);
  if (fresh) {
    conv.last = m;
    conv.lastSeq = m.seq;
    const open = state.open && state.open.peer === peer && !document.hidden;
    if (!mine && !open) conv.unread = (conv.unread || 0) + 1;
  }
  state.convs.set(peer, conv);
  if (!isGroup(peer) && !state.names.has(peer)) learnName(peer);
  renderConvs();
  if (state.open && state.open.peer === peer) {
    state.open.messages.set(m.seq, m);
    if (m.id) state.open.pending.delete(m.id);
    clearTyping(peer);
    renderMessages();
    if (!mine) markRead();
  }
}

async function learnName(user) {
  try {
    const r = await state.api.get(`/username/${user}`);
    state.names.set(user, r.name);
    const conv = state.convs.get(user);
    if (conv) conv.name = r.name;
    renderConvs();
    if (state.open?.peer === user) $('conv-title').textContent = r.name;
  } catch {
    // Shown by id.
  }
}

function onEvent(e) {
  switch (e.kind) {
    case 'friend_request':
      notify(`${e.name || e.user} asked to be your friend.`, 'info');
      loadRequests();
      break;
    case 'friend_accepted':
      loadFriends();
      loadRequests();
      break;
    case 'friend_removed':
      loadFriends();
      break;
    case 'read': {
      const peer = e.group || e.user;
      state.reads[peer] = Math.max(state.reads[peer] || 0, e.upTo || 0);
      saveReads();
      if (state.open?.peer === peer) renderMessages();
      break;
    }
    case 'group_added':
    case 'group_removed':
    case 'group_renamed':
    case 'member_joined':
    case 'member_left':
      loadGroups();
      break;
    default:
      break;
  }
}

function onLive(p) {
  if (p.type === 'Presence') {
    const f = state.friends.get(p.user);
    if (f) {
      f.online = p.online;
      renderFriends();
    }
  } else if (p.type === 'Typing') {
    const peer = isGroup(p.receiver) ? p.receiver : p.sender;
    if (state.open?.peer !== peer) return;
    clearTyping(peer);
    const who = state.names.get(p.sender) || `User ${p.sender}`;
    $('typing').textContent = `${who} is typing…`;
    state.typing.set(peer, setTimeout(() => clearTyping(peer), TYPING_SHOWN));
  }
}

function clearTyping(peer) {
  clearTimeout(state.typing.get(peer));
  state.typing.delete(peer);
  if (state.open?.peer === peer) $('typing').textContent = '';
}

function onAck(ack, message) {
  const stored = { ...message, seq: ack.seq };
  const peer = peerOf(message);
  const conv = state.convs.get(peer) || { peer, name: nameOf(peer), unread: 0 };
  if (ack.seq >= (conv.lastSeq || 0)) {
    conv.last = stored;
    conv.lastSeq = ack.seq;
  }
  state.convs.set(peer, conv);
  renderConvs();
  const open = state.open;
  if (open && open.peer === peer) {
    open.pending.delete(message.id);
    open.messages.set(ack.seq, stored);
    renderMessages();
  }
}

function onFailed(message, error) {
  notify(words(error));
  const open = state.open;
  if (open && open.pending.has(message.id)) {
    open.pending.set(message.id, { ...message, failed: true });
    renderMessages();
  }
}

// ---- Friends, blocks, groups --------------------------------------------------------------

async function addFriend(e) {
  e.preventDefault();
  const user = $('friend-id').value.trim();
  const r = await attempt(() => state.api.post('/friends/requests', { user }));
  if (!r) return;
  $('friend-id').value = '';
  notify(r.status === 'accepted' ? 'You are friends now.' : 'Request sent.', 'info');
  await Promise.all([loadRequests(), loadFriends()]);
}

async function answer(user, verb) {
  const r = await attempt(() => state.api.post(`/friends/requests/${user}/${verb}`));
  if (!r) return;
  await Promise.all([loadRequests(), loadFriends()]);
}

async function block() {
  const peer = state.open?.peer;
  if (!peer || isGroup(peer)) return;
  if (!confirm(`Block ${nameOf(peer)}? They will no longer be able to message you.`)) return;
  const r = await attempt(() => state.api.post(`/blocks/${peer}`));
  if (!r) return;
  notify(`${nameOf(peer)} is blocked.`, 'info');
  await Promise.all([loadBlocks(), loadFriends()]);
}

async function unblock(user) {
  const r = await attempt(() => state.api.delete(`/blocks/${user}`));
  if (!r) return;
  await loadBlocks();
}

function newGroup() {
  const friends = [...state.friends.values()].sort((a, b) => a.name.localeCompare(b.name));
  $('group-members').replaceChildren(
    ...friends.map((f) => h('label', {}, h('input', { type: 'checkbox', value: f.user }), f.name)),
  );
  if (!friends.length) $('group-members').append(h('p', { class: 'muted' }, 'Add friends first to invite them.'));
  $('group-name').value = '';
  $('group-dialog').showModal();
}

async function createGroup(e) {
  e.preventDefault();
  const name = $('group-name').value.trim();
  const members = [...$('group-members').querySelectorAll('input:checked')].map((i) => i.value);
  const g = await attempt(() => state.api.post('/groups', { name, members }));
  if (!g) return;
  $('group-dialog').close();
  state.groups.set(g.group, g);
  for (const m of g.members) state.names.set(m.user, m.name);
  renderConvs();
  openConv(g.group);
}

// ---- Start --------------------------------------------------------------------------------

function bind() {
  $('login-form').addEventListener('submit', login);
  $('regist-form').addEventListener('submit', regist);
  $('logout').addEventListener('click', () => logout());
  $('banner-close').addEventListener('click', () => ($('banner').hidden = true));
  $('composer').addEventListener('submit', send);
  $('text').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('text').addEventListener('input', typed);
  $('older').addEventListener('click', () => loadOlder());
  $('log').addEventListener('scroll', () => {
    if ($('log').scrollTop === 0 && state.open?.more) loadOlder();
  });
  $('back').addEventListener('click', () => {
    $('chat').classList.remove('viewing');
    state.open = null;
    history.replaceState(null, '', location.pathname);
    renderConvs();
  });
  $('block').addEventListener('click', block);
  $('add-friend').addEventListener('submit', addFriend);
  $('new-group').addEventListener('click', newGroup);
  $('group-form').addEventListener('submit', createGroup);
  $('group-cancel').addEventListener('click', () => $('group-dialog').close());
  document.addEventListener('visibilitychange', markRead);
}

bind();
let saved = null;
try {
  saved = JSON.parse(localStorage.getItem(SESSION));
} catch {
  saved = null;
}
if (saved && saved.user && saved.token) startChat(saved);
else showAuth();
