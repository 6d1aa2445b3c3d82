// The staff board of one store: a column per open status, a card per order
// with its drinks, moved on with one button; recent delivered and cancelled
// orders; kept live by the event stream. Staff of several stores choose one
// (remembered in this browser). A move that lost a race to another member of
// staff says so on its card.
import {
  STATUS_LABELS, startSession, api, notice, live, remembered, el, optionsLabel, ago, linesOf, orderTitle,
} from './common.js';

const OPEN = ['received', 'preparing', 'delivering'];
const RECENT = ['delivered', 'cancelled'];
const RECENT_SHOWN = 8;
// A column with a backlog shows both ends of its queue: the longest waiting
// (what to make next) and the latest (what was just ordered or moved), and
// says that the middle is not shown.
const OLDEST_SHOWN = 500;
const NEWEST_SHOWN = 100;
const MOVES = {
  received: [['preparing', '제작 시작'], ['cancelled', '취소']],
  preparing: [['delivering', '배송 출발'], ['cancelled', '취소']],
  delivering: [['delivered', '배송 완료']],
};

const STORE_KEY = 'orders.board.store';

const state = {
  orders: new Map(), cardErrors: new Map(), busy: new Set(), capped: new Set(),
  // The stores the holder works at ([{store_id, name}]) and the one shown.
  stores: [], store: null, stream: null,
};

function upsert(status) {
  const known = state.orders.get(status.order_id);
  if (known && known.version >= status.version) return false;
  // A lost race's explanation stays on the card until staff act on it
  // again: the winner's change arriving live must not erase it.
  state.orders.set(status.order_id, status);
  return true;
}

function card(order) {
  const item = el('li', `card status-${order.status}`);
  item.dataset.orderId = order.order_id;
  const head = el('div', 'card-head');
  head.append(el('span', 'pickup', order.pickup_number == null ? '–' : `${order.pickup_number}`));
  const title = el('div', 'card-title');
  const lines = linesOf(order);
  if (lines.length === 1) {
    title.append(
      el('strong', 'drink-name', `${order.coffee_name} × ${order.coffee_qty}`),
      el('span', 'options', optionsLabel(order.options)),
    );
  } else {
    // Every drink to make, one per line.
    const list = el('ul', 'drinks-to-make');
    list.setAttribute('aria-label', `음료 ${lines.length}가지`);
    for (const line of lines) {
      const item = el('li');
      item.append(el('strong', 'drink-name', `${line.coffee_name} × ${line.coffee_qty}`), el('span', 'options', optionsLabel(line.options)));
      list.append(item);
    }
    title.append(list);
  }
  head.append(title);
  item.append(head);
  const meta = el('p', 'meta');
  meta.append(el('span', 'customer', order.user_id), ' · ');
  const when = el('time', 'ago', ago(order.ordered_at));
  when.dateTime = order.ordered_at;
  when.title = new Date(order.ordered_at).toLocaleString('ko-KR');
  meta.append(when);
  item.append(meta);
  const error = state.cardErrors.get(order.order_id);
  if (error) {
    const p = el('p', 'card-error', error);
    p.setAttribute('role', 'alert');
    item.append(p);
  }
  const moves = MOVES[order.status];
  if (moves) {
    const actions = el('div', 'actions');
    for (const [to, label] of moves) {
      const button = el('button', to === 'cancelled' ? 'button danger' : 'button primary', label);
      button.type = 'button';
      button.dataset.move = to;
      button.setAttribute('aria-label', `${order.pickup_number ?? ''}번 ${orderTitle(order)}: ${label}`);
      button.disabled = state.busy.has(order.order_id);
      button.addEventListener('click', () => move(order, to));
      actions.append(button);
    }
    item.append(actions);
  }
  return item;
}

function render() {
  // Keyboard users keep their place: focus returns to the same button of
  // the same order, wherever its card went.
  const active = document.activeElement;
  const focusKey = active && active.dataset && active.dataset.move
    ? [active.closest('[data-order-id]')?.dataset.orderId, active.dataset.move] : null;
  const all = [...state.orders.values()];
  for (const status of OPEN) {
    const cards = all.filter((o) => o.status === status)
      .sort((a, b) => a.ordered_at.localeCompare(b.ordered_at));
    document.querySelector(`[data-cards="${status}"]`).replaceChildren(...cards.map(card));
    const capped = state.capped.has(status);
    document.querySelector(`[data-count="${status}"]`).textContent = `${cards.length}${capped ? '+' : ''}`;
    const note = document.querySelector(`[data-capped="${status}"]`);
    note.hidden = !capped;
    note.textContent = capped
      ? `주문이 많아 가장 오래된 ${OLDEST_SHOWN}건과 최근 ${NEWEST_SHOWN}건만 보여 줍니다.` : '';
  }
  for (const status of RECENT) {
    const cards = all.filter((o) => o.status === status)
      .sort((a, b) => b.updated_at.localeCompare(a.updated_at)).slice(0, RECENT_SHOWN);
    document.querySelector(`[data-cards="${status}"]`).replaceChildren(...cards.map(card));
  }
  if (focusKey && focusKey[0]) {
    const again = document.querySelector(`[data-order-id="${focusKey[0]}"] [data-move="${focusKey[1]}"]`)
      || document.querySelector(`[data-order-id="${focusKey[0]}"] button`);
    if (again) again.focus();
  }
}

async function refreshOne(order) {
  const answer = await api('GET', `/delivery-ms/${encodeURIComponent(order.user_id)}/${order.order_id}`);
  if (answer.ok) upsert(answer.body);
}

async function move(order, to) {
  state.busy.add(order.order_id);
  render();
  const answer = await api('POST', `/delivery-ms/${encodeURIComponent(order.user_id)}/${order.order_id}/status`, {
    headers: { 'If-Match': `"${order.version}"` },
    body: { status: to },
  });
  state.busy.delete(order.order_id);
  if (answer.ok) {
    state.cardErrors.delete(order.order_id);
    upsert(answer.body);
  } else if (answer.status === 401) {
    notice('로그인이 끝났습니다. 다시 로그인하세요.');
  } else if (answer.status === 409 || answer.status === 412) {
    await refreshOne(order);
    const now = state.orders.get(order.order_id);
    const where = now && now.version !== order.version ? ` (지금: ${STATUS_LABELS[now.status]})` : '';
    state.cardErrors.set(order.order_id, `다른 곳에서 먼저 처리된 주문입니다${where}. 다시 확인하세요.`);
  } else {
    state.cardErrors.set(order.order_id, answer.problem || `처리하지 못했습니다 (${answer.status}).`);
  }
  render();
}

async function loadAll() {
  const store = state.store;
  const at = `&store=${encodeURIComponent(store)}`;
  const lists = await Promise.all([
    ...OPEN.map((s) => api('GET', `/delivery-ms/${s}?limit=${OLDEST_SHOWN}${at}`)),
    ...OPEN.map((s) => api('GET', `/delivery-ms/${s}?order=newest&limit=${NEWEST_SHOWN}${at}`)),
    ...RECENT.map((s) => api('GET', `/delivery-ms/${s}?order=newest&limit=${RECENT_SHOWN}${at}`)),
  ]);
  // Another store was chosen while these were read: its own load shows it.
  if (store !== state.store) return;
  const failed = lists.find((a) => !a.ok);
  if (failed) {
    notice(failed.status === 401 ? '로그인이 끝났습니다. 다시 로그인하세요.' : failed.problem || '주문을 불러오지 못했습니다.');
    return;
  }
  // Orders that left the open columns while the stream was away are replaced.
  state.orders.clear();
  state.capped = new Set(OPEN.filter((_, i) => lists[i].body.length >= OLDEST_SHOWN));
  for (const answer of lists) for (const status of answer.body) upsert(status);
  render();
}

function storeName(id) {
  return state.stores.find((s) => s.store_id === id)?.name ?? id;
}

/** Shows `store`'s board (remembered), its orders and its live changes only. */
function show(store) {
  state.store = store;
  remembered.set(STORE_KEY, store);
  state.stream?.close();
  state.orders.clear();
  state.cardErrors.clear();
  state.capped.clear();
  render();
  document.getElementById('store-picker').hidden = true;
  document.getElementById('board').hidden = false;
  document.getElementById('store-switch').hidden = state.stores.length < 2;
  document.getElementById('store').value = store;
  // One store: its name by the title; several: the chooser shows it.
  document.getElementById('store-name').textContent = state.stores.length < 2 ? `· ${storeName(store)}` : '';
  document.title = `주문 현황판 · ${storeName(store)}`;
  state.stream = live(`/events/board?store=${encodeURIComponent(store)}`, ['status'], {
    onOpen: loadAll,
    onEvent: (_, status) => { if (status.store_id === state.store && upsert(status)) render(); },
  });
}

/** Asks which of the holder's stores to show. */
function pick() {
  const buttons = state.stores.map((s) => {
    const button = el('button', 'button large', s.name);
    button.type = 'button';
    button.dataset.store = s.store_id;
    button.addEventListener('click', () => show(s.store_id));
    return button;
  });
  document.getElementById('store-buttons').replaceChildren(...buttons);
  document.getElementById('store-picker').hidden = false;
  buttons[0]?.focus();
}

/** The stores the session works at, named as the chain names them. */
async function loadStores(session) {
  const chain = await api('GET', '/stores');
  const names = new Map((chain.ok && Array.isArray(chain.body) ? chain.body : []).map((s) => [s.store_id, s.name]));
  state.stores = (session.stores || []).map((id) => ({ store_id: id, name: names.get(id) ?? id }));
  const select = document.getElementById('store');
  select.replaceChildren(...state.stores.map((s) => {
    const option = el('option', '', s.name);
    option.value = s.store_id;
    return option;
  }));
}

async function start() {
  const session = await startSession();
  if (session === undefined) return;
  if (!session) { notice('로그인하세요.'); return; }
  if (!session.roles.includes('staff')) { notice('이 화면은 직원만 볼 수 있습니다.'); return; }
  await loadStores(session);
  if (!state.stores.length) { notice('일하는 매장이 없습니다. 관리자에게 문의하세요.'); return; }
  document.getElementById('store').addEventListener('change', (e) => show(e.target.value));
  const kept = remembered.get(STORE_KEY);
  if (state.stores.some((s) => s.store_id === kept)) show(kept);
  else if (state.stores.length === 1) show(state.stores[0].store_id);
  else pick();
  setInterval(() => {
    for (const time of document.querySelectorAll('time.ago')) time.textContent = ago(time.dateTime);
  }, 30000);
}

start();
