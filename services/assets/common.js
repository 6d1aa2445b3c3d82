// What both pages share: who is signed in, calling the API as the signed-in
// user (the session cookie, plus the CSRF token on every write), the live
// event stream, and small formatting helpers. Every text a page shows is set
// with textContent: nothing a client sent is ever parsed as HTML.

export const STATUS_LABELS = {
  received: '접수완료', preparing: '제작중', delivering: '배송중',
  delivered: '배송완료', cancelled: '취소',
};
export const TEMPERATURE_LABELS = { hot: '핫', iced: '아이스' };
export const SIZE_LABELS = { regular: '레귤러', large: '라지' };

/**
 * The path the product is served under ("" or "/coffee"): the server writes
 * it into every page, and every path below begins with it.
 */
export const BASE = document.querySelector('meta[name="orders-base"]')?.content ?? '';

let csrfToken = null;

/** The signed-in user ({user_id, roles, csrf_token}) or null. */
async function loadSession() {
  const response = await fetch(`${BASE}/auth/session`, { headers: { Accept: 'application/json' } });
  if (response.status === 401) return null;
  if (!response.ok) throw new Error(`the session could not be read (${response.status})`);
  const session = await response.json();
  csrfToken = session.csrf_token;
  return session;
}

/** An API answer: ok, status, the JSON body (or null) and its headers. */
export async function api(method, path, { body, headers = {} } = {}) {
  const init = { method, headers: { Accept: 'application/json', ...headers } };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  if (method !== 'GET' && csrfToken) init.headers['X-CSRF-Token'] = csrfToken;
  let response;
  try {
    response = await fetch(BASE + path, init);
  } catch {
    return { ok: false, status: 0, body: null, problem: '서버에 연결할 수 없습니다. 잠시 후 다시 시도하세요.' };
  }
  let json = null;
  const type = response.headers.get('Content-Type') || '';
  if (type.includes('json')) {
    try { json = await response.json(); } catch { json = null; }
  }
  return { ok: response.ok, status: response.status, body: json, headers: response.headers, problem: json && (json.detail || json.title) };
}

/** Shows who is signed in and wires the sign-out button. */
export function showAccount(session) {
  const name = document.getElementById('who-name');
  const signIn = document.getElementById('sign-in');
  const signOut = document.getElementById('sign-out');
  if (!session) {
    name.textContent = '';
    signIn.hidden = false;
    signOut.hidden = true;
    return;
  }
  name.textContent = session.user_id;
  signIn.hidden = true;
  signOut.hidden = false;
  signOut.addEventListener('click', async () => {
    signOut.disabled = true;
    const answer = await api('POST', '/auth/logout');
    // The provider ends its own session too, then sends the browser back.
    window.location.assign(answer.ok && answer.body && answer.body.redirect_to ? answer.body.redirect_to : `${BASE}/`);
  });
}

/**
 * Loads the session and shows it in the bar. Returns it (`null`: signed
 * out), or `undefined` when it could not be loaded: the notice says why.
 */
export async function startSession() {
  let session;
  try {
    session = await loadSession();
  } catch (e) {
    notice(e.message);
    return undefined;
  }
  showAccount(session);
  return session;
}

/** Shows a sentence in the page's notice line (empty clears it). */
export function notice(text) {
  document.getElementById('notice').textContent = text;
}

/**
 * Opens the live stream at `path` and calls `onEvent(name, data)` for each of
 * `names`. `onOpen` runs on every (re)connection: the page reloads what it
 * shows then, so nothing changed while it was away is missed. Returns
 * `{ close() }`: the page closes a stream it no longer wants (the board
 * switching stores), and none is opened again for it.
 *
 * The server ends a stream when the caller's access ends (the session
 * expired or was signed out, a key was withdrawn). When the browser gives up
 * reconnecting, the page asks who is signed in: nobody any more, and it says
 * so and offers the sign-in; still signed in (the server restarted, or this
 * user has too many streams open), and it opens the stream again a few
 * seconds later.
 */
export function live(path, names, handlers) {
  const { onOpen, onEvent } = handlers;
  const indicator = document.getElementById('live');
  let closed = false;
  let source = null;
  let retry = null;
  const open = () => {
    source = new EventSource(BASE + path);
    const current = source;
    current.addEventListener('ready', () => {
      indicator.textContent = '실시간 연결됨';
      indicator.dataset.state = 'open';
      onOpen();
    });
    for (const name of names) {
      current.addEventListener(name, (event) => {
        let data;
        try { data = JSON.parse(event.data); } catch { return; }
        onEvent(name, data);
      });
    }
    current.addEventListener('error', async () => {
      if (closed) return;
      if (current.readyState !== EventSource.CLOSED) {
        indicator.textContent = '다시 연결하는 중…';
        indicator.dataset.state = 'connecting';
        return;
      }
      indicator.textContent = '실시간 연결이 끊겼습니다';
      indicator.dataset.state = 'closed';
      let session;
      try { session = await loadSession(); } catch { session = undefined; }
      if (closed) return;
      if (session === null) {
        // What only a signed-in user may use (the order form, the board) goes
        // away with the sign-in, as on a page opened signed out.
        for (const part of document.querySelectorAll('[data-signed-in]')) part.hidden = true;
        showAccount(null);
        notice('로그인이 끝났습니다. 다시 로그인하세요.');
        return;
      }
      retry = setTimeout(open, 3000 + Math.random() * 2000);
    });
  };
  open();
  return {
    close() {
      closed = true;
      clearTimeout(retry);
      source.close();
    },
  };
}

/**
 * What a page remembers in this browser (the chosen store, the cart):
 * nothing when storage is unavailable or holds something unreadable.
 */
export const remembered = {
  get(key) {
    try { return JSON.parse(localStorage.getItem(key)); } catch { return null; }
  },
  set(key, value) {
    try { localStorage.setItem(key, JSON.stringify(value)); } catch { /* private mode: not remembered */ }
  },
};

/**
 * An order's lines: `items`, or its single drink for an answer of a build
 * that had no `items`.
 */
export function linesOf(order) {
  if (Array.isArray(order.items) && order.items.length) return order.items;
  return [{
    coffee_name: order.coffee_name, coffee_qty: order.coffee_qty,
    coffee_price: order.coffee_price, options: order.options, line_price: order.total_price,
  }];
}

/** "latte", or "latte 외 2" for an order of three lines. */
export function orderTitle(order) {
  const lines = linesOf(order);
  return lines.length > 1 ? `${lines[0].coffee_name} 외 ${lines.length - 1}` : lines[0].coffee_name;
}

/** `element` with `className` and text. */
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function won(amount) {
  return `${Number(amount).toLocaleString('ko-KR')}원`;
}

export function optionsLabel(options) {
  const o = options || {};
  return `${TEMPERATURE_LABELS[o.temperature] || o.temperature} · ${SIZE_LABELS[o.size] || o.size}`;
}

/** "방금", "3분 전", "1시간 5분 전". */
export function ago(iso, now = Date.now()) {
  const minutes = Math.max(0, Math.floor((now - Date.parse(iso)) / 60000));
  if (minutes < 1) return '방금';
  if (minutes < 60) return `${minutes}분 전`;
  const hours = Math.floor(minutes / 60);
  return `${hours}시간 ${minutes % 60}분 전`;
}

/**
 * A fresh idempotency key per order attempt: a random UUID (version 4).
 * crypto.randomUUID exists only in secure contexts (https, localhost); a
 * page served over plain http on another host (behind a load balancer that
 * ends no TLS) builds one from crypto.getRandomValues, which exists always.
 */
export function newKey() {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
