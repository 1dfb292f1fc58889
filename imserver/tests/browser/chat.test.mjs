// The web chat in a real browser: Debian's headless Chromium driven by playwright-core.
// Run by imserver/tests/browser.rs, which starts the servers and sets:
//   IMSERVER_URL       a server with the rate limit off
//   IMSERVER_RATE_URL  a server with a tight message rate limit
//   SCREENSHOTS        where the screenshots go
//   CHROMIUM           the browser (default /usr/bin/chromium)
// Waits are bounded (WAIT) and never assert on time.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const URL = process.env.IMSERVER_URL;
const RATE_URL = process.env.IMSERVER_RATE_URL;
const SHOTS = process.env.SCREENSHOTS || 'screenshots';
const WAIT = 20_000;

let browser;
const contexts = [];

before(async () => {
  assert.ok(URL && RATE_URL, 'IMSERVER_URL and IMSERVER_RATE_URL are set');
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
});

after(async () => {
  for (const c of contexts) await c.close().catch(() => {});
  await browser?.close();
});

// A browser profile of its own (one person's browser). Fails the test on any script error,
// and on any request that leaves the server.
async function newContext(base, viewport = { width: 1100, height: 720 }) {
  const context = await browser.newContext({ viewport });
  contexts.push(context);
  const origin = new globalThis.URL(base).origin;
  context.on('request', (r) => {
    const url = r.url();
    if (url.startsWith('data:')) return;
    assert.equal(new globalThis.URL(url).origin, origin, `a request to another origin: ${url}`);
  });
  return context;
}

async function newPage(context) {
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.on('pageerror', (e) => {
    throw new Error(`script error in the page: ${e.message}`);
  });
  return page;
}

// Registers `name` through the page and logs in: { context, page, id, name, token, base }.
async function person(name, base = URL, viewport) {
  const context = await newContext(base, viewport);
  const page = await newPage(context);
  await page.goto(base);
  const form = page.locator('#regist-form');
  await form.getByLabel('Name').fill(name);
  await form.getByLabel('Email').fill(`${name.toLowerCase()}@example.com`);
  await form.getByLabel('Password').fill(`${name}-secret`);
  await form.getByRole('button', { name: 'Create account' }).click();
  const said = page.locator('#regist-result');
  await said.filter({ hasText: 'Your user id is' }).waitFor();
  const id = (await said.textContent()).match(/user id is (\d+)/)[1];
  // The login form is filled in for the new account.
  await page.locator('#login-form').getByRole('button', { name: 'Log in' }).click();
  await page.locator('#me-id', { hasText: id }).waitFor();
  await connected(page);
  const token = await page.evaluate(() => JSON.parse(localStorage.getItem('imchat.session')).token);
  return { context, page, id, name, token, base };
}

async function connected(page) {
  await page.locator('#conn-state', { hasText: 'Connected' }).waitFor();
}

// The HTTP API, from the test itself.
async function api(who, method, path, body) {
  const r = await fetch(`${who.base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${who.token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${text}`);
  return JSON.parse(text);
}

async function befriend(x, y) {
  await api(x, 'POST', '/friends/requests', { user: y.id });
  await api(y, 'POST', `/friends/requests/${x.id}/accept`, {});
}

// Opens the conversation with `label` from the conversation or friend list.
async function open(page, label) {
  await page.locator('#side').getByRole('button', { name: label }).first().click();
  await page.locator('#conv-title', { hasText: label }).waitFor();
}

async function say(page, text) {
  const box = page.getByLabel('Message', { exact: true });
  await box.fill(text);
  await box.press('Enter');
}

// The conversation on screen: [{ text, mine, seq }], in order.
async function shown(page) {
  return page.locator('#messages > li').evaluateAll((items) =>
    items.map((li) => ({
      text: li.querySelector('.bubble').lastChild.textContent,
      mine: li.classList.contains('mine'),
      seq: li.dataset.seq ? Number(li.dataset.seq) : null,
    })),
  );
}

async function waitFor(page, text) {
  await page.locator('#messages > li .bubble', { hasText: text }).first().waitFor();
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`) });
}

test('two people register, become friends and chat both ways', async () => {
  const ann = await person('Ann');
  const bob = await person('Bob');
  await shot(ann.page, 'login-and-empty');

  // Ann asks Bob, by his id, in the page.
  await ann.page.getByLabel('Add a friend by user id').fill(bob.id);
  await ann.page.getByRole('button', { name: 'Send request' }).click();
  await ann.page.locator('#banner', { hasText: 'Request sent' }).waitFor();
  // Bob sees the request live and accepts it.
  await bob.page.getByRole('button', { name: 'Accept Ann' }).click();
  await bob.page.locator('#friends').getByRole('button', { name: /Ann/ }).waitFor();
  await ann.page.locator('#friends').getByRole('button', { name: /Bob/ }).waitFor();
  // Each sees the other online.
  await ann.page.locator('#friends li', { hasText: 'Bob' }).locator('.dot.online').waitFor();

  await open(ann.page, 'Bob');
  await say(ann.page, 'Hello Bob');
  await waitFor(ann.page, 'Hello Bob');
  // Stored: the tick says sent.
  await ann.page.locator('#messages li.mine .tick[aria-label="sent"]').waitFor();

  // Bob has an unread conversation; opening it reads it.
  await bob.page.locator('#convs .unread', { hasText: '1' }).waitFor();
  await open(bob.page, 'Ann');
  await waitFor(bob.page, 'Hello Bob');
  // Ann is told it was read.
  await ann.page.locator('#messages li.mine .tick[aria-label="read"]').waitFor();

  // Typing shows on the other side.
  await bob.page.getByLabel('Message', { exact: true }).pressSequentially('Hi A');
  await ann.page.locator('#typing', { hasText: 'Bob is typing' }).waitFor();
  await bob.page.getByLabel('Message', { exact: true }).fill('Hi Ann!');
  await bob.page.getByLabel('Message', { exact: true }).press('Enter');
  await waitFor(ann.page, 'Hi Ann!');

  const annSees = await shown(ann.page);
  assert.deepEqual(
    annSees.map((m) => [m.text, m.mine]),
    [
      ['Hello Bob', true],
      ['Hi Ann!', false],
    ],
  );
  await shot(ann.page, 'conversation');
  await shot(bob.page, 'conversation-other-side');
});

test('a reload shows the same conversation, with no duplicate and no gap', async () => {
  const ann = await person('Cat');
  const bob = await person('Dan');
  await befriend(ann, bob);
  await ann.page.reload();
  await bob.page.reload();
  await connected(ann.page);
  await connected(bob.page);
  await open(ann.page, 'Dan');
  await open(bob.page, 'Cat');
  for (let i = 1; i <= 3; i++) {
    await say(ann.page, `a${i}`);
    await waitFor(bob.page, `a${i}`);
    await say(bob.page, `b${i}`);
    await waitFor(ann.page, `b${i}`);
  }
  await ann.page.locator('#messages li.mine .tick[aria-label="sending"]').waitFor({ state: 'detached' });
  const before = await shown(ann.page);
  assert.equal(before.length, 6);

  await ann.page.reload();
  await connected(ann.page);
  await waitFor(ann.page, 'b3');
  const after = await shown(ann.page);
  assert.deepEqual(after, before, 'the same messages, in the same order, each once');

  // What comes next arrives once.
  await say(bob.page, 'after the reload');
  await waitFor(ann.page, 'after the reload');
  const next = await shown(ann.page);
  assert.deepEqual(next.slice(0, 6), before);
  assert.equal(next.length, 7);
  assert.equal(new Set(next.map((m) => m.seq)).size, 7, 'no seq twice');
});

test('a message sent while the other is logged out waits for them, counted unread', async () => {
  const ann = await person('Eve');
  const bob = await person('Fay');
  await befriend(ann, bob);
  await bob.page.getByRole('button', { name: 'Log out' }).click();
  await bob.page.locator('#login-form').waitFor();

  await ann.page.reload();
  await connected(ann.page);
  await open(ann.page, 'Fay');
  await say(ann.page, 'while you were away');
  await ann.page.locator('#messages li.mine .tick[aria-label="sent"]').waitFor();

  const login = bob.page.locator('#login-form');
  await login.getByLabel('User id').fill(bob.id);
  await login.getByLabel('Password').fill('Fay-secret');
  await login.getByLabel('Password').press('Enter');
  await connected(bob.page);
  await bob.page.locator('#convs li', { hasText: 'Eve' }).locator('.unread', { hasText: '1' }).waitFor();
  await shot(bob.page, 'unread-after-login');
  await open(bob.page, 'Eve');
  await waitFor(bob.page, 'while you were away');
  await bob.page.locator('#convs .unread').waitFor({ state: 'detached' });
});

test('three people chat in a group', async () => {
  const ann = await person('Gus');
  const bob = await person('Hal');
  const cid = await person('Ida');
  await befriend(ann, bob);
  await befriend(ann, cid);
  await ann.page.reload();
  await connected(ann.page);
  await ann.page.locator('#friends').getByRole('button', { name: /Ida/ }).waitFor();

  await ann.page.getByRole('button', { name: 'New group' }).click();
  const dialog = ann.page.locator('#group-dialog');
  await dialog.getByLabel('Group name').fill('Trio');
  await dialog.getByLabel('Hal').check();
  await dialog.getByLabel('Ida').check();
  await dialog.getByRole('button', { name: 'Create' }).click();
  await ann.page.locator('#conv-title', { hasText: 'Trio' }).waitFor();
  await say(ann.page, 'hello group');

  for (const who of [bob, cid]) {
    await who.page.locator('#convs').getByRole('button', { name: /Trio/ }).waitFor();
    await open(who.page, 'Trio');
    await waitFor(who.page, 'hello group');
  }
  await say(cid.page, 'hi from Ida');
  await waitFor(ann.page, 'hi from Ida');
  await waitFor(bob.page, 'hi from Ida');
  // Others' messages in a group carry their name.
  await bob.page.locator('#messages li:not(.mine) .who', { hasText: 'Ida' }).waitFor();
  const seen = await shown(bob.page);
  assert.deepEqual(
    seen.map((m) => m.text),
    ['hello group', 'hi from Ida'],
  );
  await shot(bob.page, 'group');
});

test('the same person in two tabs sees their own messages in both', async () => {
  const ann = await person('Jon');
  const bob = await person('Kim');
  await befriend(ann, bob);
  const second = await newPage(ann.context);
  await second.goto(URL);
  await connected(second);
  await ann.page.reload();
  await connected(ann.page);
  await open(ann.page, 'Kim');
  await open(second, 'Kim');
  await say(ann.page, 'from the first tab');
  await waitFor(second, 'from the first tab');
  await say(second, 'from the second tab');
  await waitFor(ann.page, 'from the second tab');
  for (const page of [ann.page, second]) {
    const seen = await shown(page);
    assert.deepEqual(
      seen.map((m) => [m.text, m.mine]),
      [
        ['from the first tab', true],
        ['from the second tab', true],
      ],
    );
  }
});

test('a rate-limit refusal is shown in words, and the message still goes', async () => {
  const ann = await person('Lea', RATE_URL);
  const bob = await person('Max', RATE_URL);
  await befriend(ann, bob);
  await ann.page.reload();
  await connected(ann.page);
  await open(ann.page, 'Max');
  for (let i = 1; i <= 6; i++) await say(ann.page, `quick ${i}`);
  await ann.page.locator('#banner', { hasText: 'You are sending too fast' }).waitFor();
  await shot(ann.page, 'rate-limited');
  // Each refused message was kept and sent again: all arrive, once each (in the order the
  // server took them).
  await open(bob.page, 'Lea');
  await bob.page.locator('#messages > li').nth(5).waitFor();
  const seen = await shown(bob.page);
  assert.deepEqual(
    seen.map((m) => m.text).sort(),
    [1, 2, 3, 4, 5, 6].map((i) => `quick ${i}`),
  );
});

test('a dropped connection is made again, and what was typed meanwhile is sent once', async () => {
  const ann = await person('Tia');
  const bob = await person('Uma');
  await befriend(ann, bob);
  // Ann's WebSocket goes through the test, which can cut it.
  const live = [];
  await ann.page.routeWebSocket(/\/ws$/, (ws) => {
    const server = ws.connectToServer();
    live.push([ws, server]);
  });
  await ann.page.reload();
  await connected(ann.page);
  await open(ann.page, 'Uma');
  await say(ann.page, 'before the drop');
  await ann.page.locator('#messages li.mine .tick[aria-label="sent"]').waitFor();

  for (const [ws, server] of live.splice(0)) {
    await server.close();
    await ws.close({ code: 4000, reason: 'network dropped' });
  }
  await ann.page.locator('#conn-state', { hasText: 'Offline' }).waitFor();
  await say(ann.page, 'typed while offline');
  // Back by itself; the message kept in the outbox goes out and is stored.
  await connected(ann.page);
  await ann.page.locator('#messages li.mine .tick[aria-label="sending"]').waitFor({ state: 'detached' });
  await open(bob.page, 'Tia');
  await waitFor(bob.page, 'typed while offline');
  const seen = await shown(bob.page);
  assert.deepEqual(
    seen.map((m) => m.text),
    ['before the drop', 'typed while offline'],
  );
});

test('older messages load when scrolling back', async () => {
  const ann = await person('Pia');
  const bob = await person('Quinn');
  await befriend(ann, bob);
  await ann.page.reload();
  await connected(ann.page);
  await open(ann.page, 'Quinn');
  const count = 57; // more than a page (50)
  for (let i = 1; i <= count; i++) await say(ann.page, `line ${i}`);
  await ann.page.locator('#messages li.mine .tick[aria-label="sending"]').waitFor({ state: 'detached' });

  await bob.page.reload();
  await connected(bob.page);
  await open(bob.page, 'Pia');
  await waitFor(bob.page, `line ${count}`);
  assert.equal((await shown(bob.page)).length, 50, 'the newest page first');
  // Scrolling to the top loads the rest, above what was there.
  await bob.page.locator('#log').evaluate((log) => {
    log.scrollTop = 0;
  });
  await bob.page.locator('#messages > li').nth(count - 1).waitFor();
  const seen = await shown(bob.page);
  assert.deepEqual(
    seen.map((m) => m.text),
    Array.from({ length: count }, (_, i) => `line ${i + 1}`),
  );
  assert.equal(await bob.page.locator('#older').isVisible(), false, 'nothing older is left');
});

test('a request can be declined, and a person blocked and unblocked', async () => {
  const ann = await person('Rae');
  const bob = await person('Sam');
  await api(ann, 'POST', '/friends/requests', { user: bob.id, message: 'hi, it is Rae' });
  await bob.page.locator('#incoming li', { hasText: 'hi, it is Rae' }).waitFor();
  await bob.page.getByRole('button', { name: 'Decline Rae' }).click();
  await bob.page.locator('#requests-empty').waitFor();

  // Rae writes anyway (the server's default policy relays between anyone); Sam blocks her.
  await ann.page.getByLabel('Add a friend by user id').fill(bob.id);
  await ann.page.getByRole('button', { name: 'Send request' }).click();
  await bob.page.getByRole('button', { name: 'Accept Rae' }).click();
  await bob.page.locator('#friends').getByRole('button', { name: /Rae/ }).waitFor();
  await open(bob.page, 'Rae');
  bob.page.once('dialog', (d) => d.accept());
  await bob.page.getByRole('button', { name: 'Block' }).click();
  await bob.page.locator('#blocked li', { hasText: 'Rae' }).waitFor();
  await bob.page.locator('#friends li', { hasText: 'Rae' }).waitFor({ state: 'detached' });
  await bob.page.getByRole('button', { name: 'Unblock Rae' }).click();
  await bob.page.locator('#blocked-empty').waitFor();
});

test('on a phone-sized screen, one pane at a time, usable by keyboard', async () => {
  const ann = await person('Ned', URL, { width: 360, height: 740 });
  const bob = await person('Ola');
  await befriend(ann, bob);
  await ann.page.reload();
  await connected(ann.page);
  await shot(ann.page, 'phone-list');
  assert.equal(await ann.page.locator('#conv').isVisible(), false, 'the list alone');
  await open(ann.page, 'Ola');
  assert.equal(await ann.page.locator('#side').isVisible(), false, 'the conversation alone');
  // Keyboard only: the message box has focus; Enter sends.
  await ann.page.keyboard.type('typed on a phone');
  await ann.page.keyboard.press('Enter');
  await waitFor(ann.page, 'typed on a phone');
  // Tab moves focus to the next control, and the focus is visible.
  await ann.page.keyboard.press('Tab');
  const outline = await ann.page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
  assert.equal(outline, 'solid');
  await shot(ann.page, 'phone-conversation');
  await ann.page.getByRole('button', { name: 'Back to the list' }).click();
  await ann.page.locator('#side').waitFor();
});
