// The customer page: the store, the menu, a cart of drinks placed as one
// order, and the customer's orders with their status kept live by the event
// stream.
import {
  STATUS_LABELS, startSession, api, showAccount, notice, live, remembered,
  el, won, optionsLabel, newKey, linesOf, orderTitle,
} from './common.js';
import { Cart, MAX_QTY } from './cart.js';

const STEPS = ['received', 'preparing', 'delivering', 'delivered'];
const CANCELLABLE = new Set(['received', 'preparing']);
const STORE_KEY = 'orders.store';

const state = {
  session: null,
  stores: [],
  store: null,
  menu: [],
  cart: null,
  // The idempotency key of the cart as it was last sent: a retry of the same
  // cart (the answer was lost) cannot place it twice.
  sentKey: null,
  orders: new Map(),
  cardErrors: new Map(),
};

const form = document.getElementById('drink-form');
const qty = document.getElementById('qty');

function selectedDrink() {
  const checked = form.querySelector('input[name="drink"]:checked');
  return checked ? state.menu.find((d) => d.coffee_name === checked.value) : undefined;
}

function choice(name) {
  const checked = form.querySelector(`input[name="${name}"]:checked`);
  return checked ? checked.value : undefined;
}

function quantity() {
  const n = Number.parseInt(qty.value, 10);
  return Number.isInteger(n) ? n : NaN;
}

function storeName(id) {
  return state.stores.find((s) => s.store_id === id)?.name ?? id;
}

/** Enables the options the chosen drink allows, and shows its prices and the line's price. */
function refreshChoices() {
  const drink = selectedDrink();
  for (const input of form.querySelectorAll('input[name="temperature"]')) {
    input.disabled = !drink || !drink.temperatures.includes(input.value);
  }
  for (const input of form.querySelectorAll('input[name="size"]')) {
    const price = drink && drink.prices[input.value];
    input.disabled = price === undefined;
    form.querySelector(`.price[data-size="${input.value}"]`).textContent = price === undefined ? '' : won(price);
  }
  // A choice the drink does not allow moves to one it does.
  for (const name of ['temperature', 'size']) {
    const checked = form.querySelector(`input[name="${name}"]:checked`);
    if (!checked || checked.disabled) {
      const first = form.querySelector(`input[name="${name}"]:not(:disabled)`);
      if (first) first.checked = true;
    }
  }
  const size = choice('size');
  const n = quantity();
  const price = drink && size ? drink.prices[size] : undefined;
  document.getElementById('line-price').textContent =
    price !== undefined && n >= 1 && n <= MAX_QTY ? won(price * n) : '';
  document.getElementById('add-to-cart').disabled = !drink || !storeOpen();
}

function storeOpen() {
  return Boolean(state.stores.find((s) => s.store_id === state.store)?.open);
}

function renderMenu() {
  const list = document.getElementById('drinks');
  const before = choice('drink');
  list.replaceChildren();
  const onSale = state.menu.filter((d) => !d.sold_out);
  document.getElementById('menu-empty').hidden = state.menu.length > 0;
  const keep = onSale.find((d) => d.coffee_name === before) || onSale[0];
  state.menu.forEach((drink, i) => {
    const label = el('label', 'drink');
    const input = document.createElement('input');
    input.type = 'radio';
    input.name = 'drink';
    input.value = drink.coffee_name;
    input.disabled = drink.sold_out;
    input.checked = keep === drink;
    input.id = `drink-${i}`;
    label.append(input, el('span', 'drink-name', drink.coffee_name));
    const prices = Object.values(drink.prices);
    label.append(el('span', 'drink-price', drink.sold_out ? '품절' : `${won(Math.min(...prices))}~`));
    list.append(label);
  });
  refreshChoices();
  renderCart();
}

/** The cart changed: a new order, not a retry of the one last sent. */
function cartChanged() {
  state.sentKey = null;
  renderCart();
}

function renderCart() {
  document.getElementById('place-order').disabled = !state.cart.render(state.menu, storeOpen());
}

function addToCart(event) {
  event.preventDefault();
  const error = document.getElementById('drink-error');
  error.textContent = '';
  const drink = selectedDrink();
  const n = quantity();
  if (!drink) { error.textContent = '음료를 고르세요.'; return; }
  if (!(n >= 1 && n <= MAX_QTY)) { error.textContent = `수량은 1개에서 ${MAX_QTY}개까지입니다.`; qty.focus(); return; }
  const refused = state.cart.add({ coffee_name: drink.coffee_name, temperature: choice('temperature'), size: choice('size'), qty: n });
  if (refused) { error.textContent = refused; return; }
  qty.value = 1;
  refreshChoices();
  notice(`장바구니에 담았습니다: ${drink.coffee_name} ${n}잔`);
}

async function placeOrder() {
  const error = document.getElementById('order-error');
  error.textContent = '';
  if (!state.cart.lines.length) { error.textContent = '장바구니가 비어 있습니다.'; return; }
  const { items, problem } = state.cart.items(state.menu);
  if (problem) { error.textContent = problem; return; }
  state.sentKey = state.sentKey || newKey();
  const button = document.getElementById('place-order');
  button.disabled = true;
  const answer = await api('POST', `/order-ms/${encodeURIComponent(state.session.user_id)}/orders`, {
    headers: { 'Idempotency-Key': state.sentKey },
    body: { store_id: state.store, items },
  });
  button.disabled = false;
  if (answer.ok) {
    state.cart.clear();
    upsert(answer.body);
    notice(`주문했습니다. ${storeName(answer.body.store_id)} 픽업 번호 ${answer.body.pickup_number ?? '–'}번`);
    document.getElementById('orders').querySelector(`[data-order-id="${answer.body.order_id}"]`)?.focus();
  } else if (answer.status === 401) {
    signedOut();
  } else {
    error.textContent = answer.problem || `주문하지 못했습니다 (${answer.status}).`;
    // A refusal wrote nothing: the cart as changed is a new order. An
    // unknown outcome (no answer, 503) is retried with the same key.
    if (answer.status >= 400 && answer.status < 500) state.sentKey = null;
    if (answer.status === 422) await loadCatalog();
    renderCart();
  }
}

function upsert(order) {
  const known = state.orders.get(order.order_id);
  if (known && known.version >= order.version) return;
  state.orders.set(order.order_id, order);
  renderOrders();
}

function progress(order) {
  const steps = el('ol', 'steps');
  steps.setAttribute('aria-label', '진행 상황');
  const at = STEPS.indexOf(order.status);
  for (const [i, step] of STEPS.entries()) {
    const item = el('li', i < at ? 'done' : i === at ? 'current' : '', STATUS_LABELS[step]);
    if (i === at) item.setAttribute('aria-current', 'step');
    steps.append(item);
  }
  return steps;
}

function orderCard(order) {
  const card = el('li', `order card status-${order.status}`);
  card.dataset.orderId = order.order_id;
  card.tabIndex = -1;
  const lines = linesOf(order);
  const head = el('div', 'card-head');
  head.append(el('span', 'pickup', order.pickup_number == null ? '–' : `${order.pickup_number}`));
  const title = el('div', 'card-title');
  const where = state.stores.length > 1 && order.store_id ? `${storeName(order.store_id)} · ` : '';
  const cups = lines.reduce((sum, l) => sum + Number(l.coffee_qty), 0);
  const summary = lines.length > 1
    ? `${where}${cups}잔 · ${won(order.total_price)}`
    : `${where}${optionsLabel(order.options)} · ${order.coffee_qty}잔 · ${won(order.total_price)}`;
  title.append(el('strong', 'drink-name', orderTitle(order)), el('span', 'muted', summary));
  head.append(title, el('span', `badge status-${order.status}`, order.status_label || STATUS_LABELS[order.status]));
  card.append(head);
  if (lines.length > 1) {
    const list = el('ul', 'lines');
    list.setAttribute('aria-label', '주문한 음료');
    for (const line of lines) {
      const item = el('li');
      item.append(el('span', 'line-name', `${line.coffee_name} ${optionsLabel(line.options)} × ${line.coffee_qty}`));
      item.append(el('span', 'line-price', won(line.line_price ?? line.coffee_price * line.coffee_qty)));
      list.append(item);
    }
    card.append(list);
  }
  if (order.status !== 'cancelled') card.append(progress(order));
  const error = state.cardErrors.get(order.order_id);
  if (error) card.append(el('p', 'card-error', error));
  if (CANCELLABLE.has(order.status)) {
    const cancel = el('button', 'button danger', '주문 취소');
    cancel.type = 'button';
    cancel.setAttribute('aria-label', `주문 취소: ${order.pickup_number ?? ''}번 ${orderTitle(order)}`);
    cancel.addEventListener('click', () => cancelOrder(order));
    card.append(cancel);
  }
  return card;
}

function renderOrders() {
  const list = document.getElementById('orders');
  const orders = [...state.orders.values()].sort((a, b) => b.ordered_at.localeCompare(a.ordered_at));
  list.replaceChildren(...orders.map(orderCard));
  document.getElementById('orders-empty').hidden = orders.length > 0;
}

async function cancelOrder(order) {
  const user = encodeURIComponent(state.session.user_id);
  const answer = await api('POST', `/order-ms/${user}/orders/${order.order_id}/cancel`, {
    headers: { 'If-Match': `"${order.version}"` },
  });
  if (answer.ok) {
    state.cardErrors.delete(order.order_id);
    upsert(answer.body);
    return;
  }
  if (answer.status === 401) { signedOut(); return; }
  state.cardErrors.set(order.order_id, answer.status === 409 || answer.status === 412
    ? '이미 진행되어 취소할 수 없습니다.'
    : answer.problem || `취소하지 못했습니다 (${answer.status}).`);
  await loadOrders();
}

/** The store chooser: the chain's stores, closed ones shown but not chosen. */
function renderStores() {
  const select = document.getElementById('store');
  select.replaceChildren(...state.stores.map((s) => {
    const option = el('option', '', s.open ? s.name : `${s.name} (준비 중)`);
    option.value = s.store_id;
    option.disabled = !s.open;
    return option;
  }));
  select.value = state.store ?? '';
  document.getElementById('store-choice').hidden = state.stores.length < 2;
  document.getElementById('store-closed').hidden = storeOpen();
}

/** The stores, then the chosen store's menu (its own sold-outs). */
async function loadCatalog() {
  const stores = await api('GET', '/stores');
  if (stores.ok && Array.isArray(stores.body) && stores.body.length) state.stores = stores.body;
  const open = state.stores.filter((s) => s.open);
  const wanted = [state.store, remembered.get(STORE_KEY)].find((id) => open.some((s) => s.store_id === id));
  state.store = wanted ?? open[0]?.store_id ?? state.stores[0]?.store_id ?? null;
  renderStores();
  const menu = await api('GET', state.store ? `/menu?store=${encodeURIComponent(state.store)}` : '/menu');
  if (menu.ok) state.menu = menu.body;
  renderMenu();
  renderOrders();
}

async function chooseStore() {
  state.store = document.getElementById('store').value;
  remembered.set(STORE_KEY, state.store);
  state.sentKey = null;
  await loadCatalog();
  notice(`${storeName(state.store)}에서 주문합니다.`);
}

async function loadOrders() {
  const user = encodeURIComponent(state.session.user_id);
  const answer = await api('GET', `/order-ms/${user}/orders?limit=20`, { headers: { Prefer: 'consistency=strong' } });
  if (answer.status === 401) { signedOut(); return; }
  if (!answer.ok) { notice(answer.problem || '주문을 불러오지 못했습니다.'); return; }
  const orders = Array.isArray(answer.body) ? answer.body : answer.body.orders || [];
  for (const order of orders) upsert(order);
  renderOrders();
}

function signedOut() {
  notice('로그인이 끝났습니다. 다시 로그인하세요.');
  document.getElementById('shop').hidden = true;
  document.getElementById('welcome').hidden = false;
  showAccount(null);
}

async function start() {
  const session = await startSession();
  if (session === undefined) return;
  state.session = session;
  if (!session) {
    document.getElementById('welcome').hidden = false;
    return;
  }
  document.getElementById('shop').hidden = false;
  state.cart = new Cart(`orders.cart.${session.user_id}`, cartChanged);
  form.addEventListener('change', refreshChoices);
  form.addEventListener('input', refreshChoices);
  form.addEventListener('submit', addToCart);
  document.getElementById('store').addEventListener('change', chooseStore);
  document.getElementById('place-order').addEventListener('click', placeOrder);
  document.getElementById('qty-down').addEventListener('click', () => { qty.value = Math.max(1, (quantity() || 1) - 1); refreshChoices(); });
  document.getElementById('qty-up').addEventListener('click', () => { qty.value = Math.min(MAX_QTY, (quantity() || 0) + 1); refreshChoices(); });
  await loadCatalog();
  live('/events/orders', ['order', 'menu'], {
    onOpen: loadOrders,
    onEvent: (name, data) => (name === 'menu' ? loadCatalog() : upsert(data)),
  });
}

start();
