// The demo page at `/`: sign in, watch silent refreshes, manage sessions, log out.
// Every sentence comes from the page (#messages, templates), so one script serves
// every language; the client does the token work.

import { TokenstileClient } from './tokenstile.js';

const client = new TokenstileClient();
// For trying the client from the devtools console; it holds nothing a page script
// could not already reach.
window.tokenstileDemo = { client };

const $ = (id) => document.getElementById(id);
const messages = $('messages').dataset;
const lang = document.documentElement.lang || 'en';
const timeFormat = new Intl.DateTimeFormat(lang, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const dateFormat = new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'short' });
const MAX_LOG_ENTRIES = 50;

let mode = 'signin';
let user = null;
let countdownTimer = null;
let started = false; // until restore() settles, start() decides which view to show

/** The sentence `data-<key>` of #messages, with its {placeholders} filled in. */
function t(key, values = {}) {
  const template = messages[key.replace(/-(.)/g, (_, c) => c.toUpperCase())] ?? key;
  return template.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ''));
}

function setText(id, text) {
  $(id).textContent = text;
}

function formatSeconds(seconds) {
  if (seconds >= 60) {
    const minutes = Math.floor(seconds / 60);
    return `${minutes}:${String(Math.floor(seconds % 60)).padStart(2, '0')}`;
  }
  return t('seconds', { n: seconds.toFixed(1) });
}

// --- views ------------------------------------------------------------------

function showSignedOut({ notice = '', focus = false } = {}) {
  user = null;
  stopCountdown();
  $('loading').hidden = true;
  $('signed-in').hidden = true;
  $('signed-out').hidden = false;
  setText('auth-notice', notice);
  setText('auth-error', '');
  setMode('signin');
  document.title = `tokenstile · ${$('auth-title').dataset.signin}`;
  if (focus) $('auth-title').focus();
}

async function showSignedIn({ focus = false } = {}) {
  try {
    user = await client.me();
  } catch (error) {
    if (!client.signedIn) return; // the loggedout handler shows the form
    showAppError(error);
    return;
  }
  $('loading').hidden = true;
  $('signed-out').hidden = true;
  $('signed-in').hidden = false;
  setText('username', user.username);
  setText('user-id', user.id);
  setText('whoami-result', '');
  setText('app-error', '');
  document.title = `tokenstile · ${user.username}`;
  startCountdown();
  loadSessions();
  if (focus) $('welcome-title').focus();
}

function setMode(next) {
  mode = next;
  const registering = mode === 'register';
  $('signin-form').hidden = registering;
  $('register-form').hidden = !registering;
  for (const id of ['auth-title', 'switch-text', 'switch-mode']) {
    setText(id, $(id).dataset[mode]);
  }
}

function showAuthError(error) {
  setText('auth-notice', '');
  setText('auth-error', error.code === 'network_error' ? t('network') : error.detail);
}

function showAppError(error) {
  setText('app-error', error.code === 'network_error' ? t('network') : error.detail);
}

async function whileBusy(button, task) {
  const label = button.textContent;
  button.disabled = true;
  if (button.dataset.busy) button.textContent = button.dataset.busy;
  try {
    return await task();
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

// --- the access token's countdown and the refresh log -----------------------

function startCountdown() {
  stopCountdown();
  const tick = () => {
    const left = client.expiresIn;
    setText('countdown', left > 0 ? formatSeconds(left) : t('expired'));
    const bar = $('countdown-bar');
    bar.max = client.lifetime || 1;
    bar.value = left;
  };
  tick();
  countdownTimer = setInterval(tick, 100);
}

function stopCountdown() {
  clearInterval(countdownTimer);
  countdownTimer = null;
}

function logRefresh({ source, at, expiresIn }) {
  const item = document.createElement('li');
  item.className = `log-entry log-${source}`;
  const time = document.createElement('time');
  time.dateTime = at.toISOString();
  time.textContent = timeFormat.format(at);
  const what = document.createElement('span');
  what.className = 'log-what';
  what.textContent = source === 'peer' ? t('refreshed-peer') : t('refreshed');
  const detail = document.createElement('span');
  detail.className = 'log-detail muted';
  detail.textContent = t('valid-for', { n: Math.round(expiresIn) });
  item.append(time, what, detail);
  const log = $('refresh-log');
  log.prepend(item);
  while (log.children.length > MAX_LOG_ENTRIES) log.lastElementChild.remove();
  $('log-empty').hidden = true;
}

// --- sessions ---------------------------------------------------------------

function describeAgent(agent) {
  if (!agent) return t('unknown-device');
  const browsers = [
    [/Edg\//, 'Edge'],
    [/OPR\//, 'Opera'],
    [/Firefox\//, 'Firefox'],
    [/HeadlessChrome\//, 'Headless Chrome'],
    [/Chrom(e|ium)\//, 'Chrome'],
    [/Safari\//, 'Safari'],
  ];
  const systems = [
    [/Android/, 'Android'],
    [/iPhone|iPad/, 'iOS'],
    [/Windows/, 'Windows'],
    [/Mac OS X/, 'macOS'],
    [/CrOS/, 'ChromeOS'],
    [/Linux/, 'Linux'],
  ];
  const found = (list) => list.find(([pattern]) => pattern.test(agent))?.[1];
  const name = found(browsers);
  const os = found(systems);
  if (name && os) return t('on', { browser: name, os });
  return name ?? os ?? agent.slice(0, 60);
}

async function loadSessions() {
  setText('sessions-status', t('sessions-loading'));
  let sessions;
  try {
    sessions = await client.sessions();
  } catch (error) {
    setText('sessions-status', '');
    if (client.signedIn) showAppError(error);
    return;
  }
  sessions.sort((a, b) => Number(b.current) - Number(a.current) || b.last_used_at.localeCompare(a.last_used_at));
  const list = $('sessions');
  list.replaceChildren(...sessions.map(renderSession));
  setText('sessions-status', t('sessions-count', { n: sessions.length }));
}

function renderSession(session) {
  const item = $('session-template').content.firstElementChild.cloneNode(true);
  const device = describeAgent(session.user_agent);
  const deviceLine = item.querySelector('.session-device');
  deviceLine.textContent = device;
  deviceLine.id = `session-${session.id}`;
  item.querySelector('.session-meta').textContent = t('session-meta', {
    created: dateFormat.format(new Date(session.created_at)),
    used: dateFormat.format(new Date(session.last_used_at)),
    ip: session.ip ?? t('unknown-ip'),
  });
  item.dataset.sessionId = session.id;
  if (session.current) {
    item.classList.add('current');
    item.querySelector('.badge').hidden = false;
  } else {
    const button = item.querySelector('.end-session');
    button.hidden = false;
    button.setAttribute('aria-describedby', deviceLine.id);
    button.addEventListener('click', () => endSession(session.id, button));
  }
  return item;
}

async function endSession(id, button) {
  try {
    await whileBusy(button, () => client.endSession(id));
  } catch (error) {
    showAppError(error);
    return;
  }
  await loadSessions();
  setText('sessions-status', t('session-ended'));
  $('sessions-title').focus();
}

// --- wiring -----------------------------------------------------------------

$('signin-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const username = form.elements.username.value.trim();
  const password = form.elements.password.value;
  if (!username || !password) {
    showAuthError({ detail: t('required') });
    (username ? form.elements.password : form.elements.username).focus();
    return;
  }
  try {
    await whileBusy($('signin-submit'), () =>
      client.login(username, password, { rememberMe: form.elements.remember_me.checked }),
    );
  } catch (error) {
    showAuthError(error);
    form.elements.password.select();
    return;
  }
  form.reset();
  await showSignedIn({ focus: true });
});

$('register-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  const username = form.elements.username.value.trim();
  const password = form.elements.password.value;
  if (!username || !password) {
    showAuthError({ detail: t('required') });
    return;
  }
  try {
    await whileBusy($('register-submit'), async () => {
      await client.register(username, password);
      setText('auth-error', '');
      setText('auth-notice', t('registered'));
      await client.login(username, password);
    });
  } catch (error) {
    showAuthError(error);
    return;
  }
  form.reset();
  await showSignedIn({ focus: true });
});

$('switch-mode').addEventListener('click', () => {
  setMode(mode === 'signin' ? 'register' : 'signin');
  setText('auth-error', '');
  setText('auth-notice', '');
  $(mode === 'signin' ? 'signin-username' : 'register-username').focus();
});

$('logout').addEventListener('click', async (event) => {
  try {
    await whileBusy(event.currentTarget, () => client.logout());
  } catch (error) {
    showAppError(error);
  }
});

$('logout-all').addEventListener('click', async (event) => {
  try {
    await whileBusy(event.currentTarget, () => client.logoutAll());
  } catch (error) {
    showAppError(error);
  }
});

$('whoami').addEventListener('click', async (event) => {
  try {
    const me = await whileBusy(event.currentTarget, () => client.me());
    setText('whoami-result', t('whoami', { username: me.username, time: timeFormat.format(new Date()) }));
  } catch (error) {
    if (client.signedIn) showAppError(error);
  }
});

$('reload-sessions').addEventListener('click', () => loadSessions());

client.addEventListener('refresh', (event) => logRefresh(event.detail));

client.addEventListener('tokens', (event) => {
  setText('app-error', '');
  // Another tab signed in, or a retried restore succeeded: follow it.
  if (started && user === null && event.detail.source !== 'login') showSignedIn();
});

client.addEventListener('loggedout', (event) => {
  const key = `loggedout-${String(event.detail.reason).replaceAll('_', '-')}`;
  const notice = t(key) === key ? t('loggedout-default') : t(key);
  $('refresh-log').replaceChildren();
  $('log-empty').hidden = false;
  showSignedOut({ notice, focus: true });
});

client.addEventListener('error', (event) => {
  const { error, retryIn, final } = event.detail;
  if (!user) return;
  setText(
    'app-error',
    final
      ? t('refresh-failed', { code: error.code })
      : t('refresh-retry', { code: error.code, n: Math.round(retryIn) }),
  );
});

// --- Secure cookies over plain http -------------------------------------------

/** Browsers drop Secure cookies that arrive over plain http, except in a secure
 *  context (loopback): the sign-in would be lost at the next reload. The server logs
 *  this; the page says it too, in a banner above everything. */
async function warnIfCookiesWillBeDropped() {
  const root = document.documentElement;
  if (location.protocol !== 'http:' || window.isSecureContext) {
    root.dataset.cookieWarning = 'none';
    return;
  }
  let config;
  try {
    const response = await fetch('/demo/config', { headers: { Accept: 'application/json' } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    config = await response.json();
  } catch {
    root.dataset.cookieWarning = 'unknown';
    return;
  }
  if (!config.cookie_secure) {
    root.dataset.cookieWarning = 'none';
    return;
  }
  const banner = document.createElement('div');
  banner.id = 'insecure-http-warning';
  banner.className = 'alert insecure-http-warning';
  banner.setAttribute('role', 'alert');
  banner.textContent = config.messages.insecure_http.replace('{host}', location.hostname);
  $('main').prepend(banner);
  root.dataset.cookieWarning = 'shown';
}

async function start() {
  let restored = false;
  try {
    restored = await client.restore();
  } catch (error) {
    // Unreachable server: the client retries by itself and a `tokens` event follows.
    showSignedOut();
    showAuthError(error);
    return;
  } finally {
    started = true;
  }
  if (restored) await showSignedIn();
  else if (user === null) showSignedOut();
}

warnIfCookiesWillBeDropped();
start();
