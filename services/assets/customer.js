// The customer page: the menu, the order form, and the customer's orders
// with their status kept live by the event stream.
import {
  STATUS_LABELS, startSession, api, showAccount, notice, live,
  el, won, optionsLabel, newKey,
} from './common.js';

const STEPS = ['received', 'preparing', 'delivering', 'delivered'];
const CANCELLABLE = new Set(['received', 'preparing']);

const state = { session: null, menu: [], orders: new Map(), cardErrors: new Map() };

const form = document.getElementById('order-form');
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

/** Enables the options the chosen drink allows, and shows its prices and the total. */
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
  document.getElementById('total').textContent =
    price !== undefined && n >= 1 && n <= 20 ? won(price * n) : '–';
  document.getElementById('place-order').disabled = !drink;
}

function renderMenu() {
  const list = document.getElementById('drinks');
  list.replaceChildren();
  const onSale = state.menu.filter((d) => !d.sold_out);
  document.getElementById('menu-empty').hidden = state.menu.length > 0;
  state.menu.forEach((drink, i) => {
    const label = el('label', 'drink');
    const input = document.createElement('input');
    input.type = 'radio';
    input.name = 'drink';
    input.value = drink.coffee_name;
    input.disabled = drink.sold_out;
    input.checked = onSale[0] === drink;
    input.id = `drink-${i}`;
    label.append(input, el('span', 'drink-name', drink.coffee_name));
    const prices = Object.values(drink.prices);
    label.append(el('span', 'drink-price', drink.sold_out ? '품절' : `${won(Math.min(...prices))}~`));
    list.append(label);
  });
  refreshChoices();
}

async function placeOrder(event) {
  event.preventDefault();
  const error = document.getElementById('order-error');
  error.textContent = '';
  const drink = selectedDrink();
  const size = choice('size');
  const n = quantity();
  if (!drink) { error.textContent = '음료를 고르세요.'; return; }
  if (!(n >= 1 && n <= 20)) { error.textContent = '수량은 1개에서 20개까지입니다.'; qty.focus(); return; }
  const button = document.getElementById('place-order');
  button.disabled = true;
  const answer = await api('POST', `/order-ms/${encodeURIComponent(state.session.user_id)}/orders`, {
    headers: { 'Idempotency-Key': newKey() },
    body: {
      coffee_name: drink.coffee_name,
      coffee_price: drink.prices[size],
      coffee_qty: n,
      options: { temperature: choice('temperature'), size },
    },
  });
  button.disabled = false;
  if (answer.ok) {
    upsert(answer.body);
    notice(`주문했습니다. 픽업 번호 ${answer.body.pickup_number ?? '–'}번`);
  } else if (answer.status === 401) {
    signedOut();
  } else {
    error.textContent = answer.problem || `주문하지 못했습니다 (${answer.status}).`;
    if (answer.status === 422) await loadMenu();
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
  const head = el('div', 'card-head');
  head.append(el('span', 'pickup', order.pickup_number == null ? '–' : `${order.pickup_number}`));
  const title = el('div', 'card-title');
  title.append(el('strong', 'drink-name', order.coffee_name), el('span', 'muted', `${optionsLabel(order.options)} · ${order.coffee_qty}잔 · ${won(order.total_price)}`));
  head.append(title, el('span', `badge status-${order.status}`, order.status_label || STATUS_LABELS[order.status]));
  card.append(head);
  if (order.status !== 'cancelled') card.append(progress(order));
  const error = state.cardErrors.get(order.order_id);
  if (error) card.append(el('p', 'card-error', error));
  if (CANCELLABLE.has(order.status)) {
    const cancel = el('button', 'button danger', '주문 취소');
    cancel.type = 'button';
    cancel.setAttribute('aria-label', `주문 취소: ${order.pickup_number ?? ''}번 ${order.coffee_name}`);
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

async function loadMenu() {
  const answer = await api('GET', '/menu');
  if (answer.ok) {
    state.menu = answer.body;
    renderMenu();
  }
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
  form.addEventListener('change', refreshChoices);
  form.addEventListener('input', refreshChoices);
  form.addEventListener('submit', placeOrder);
  document.getElementById('qty-down').addEventListener('click', () => { qty.value = Math.max(1, (quantity() || 1) - 1); refreshChoices(); });
  document.getElementById('qty-up').addEventListener('click', () => { qty.value = Math.min(20, (quantity() || 0) + 1); refreshChoices(); });
  await loadMenu();
  live('/events/orders', ['order', 'menu'], {
    onOpen: loadOrders,
    onEvent: (name, data) => (name === 'menu' ? loadMenu() : upsert(data)),
  });
}

start();
