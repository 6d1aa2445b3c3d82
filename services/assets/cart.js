// The customer's cart: drinks with their options and quantities, kept in
// this browser per user (a cart is not an order until it is placed: ADR
// 0023) and shown in the page's cart panel. No price is kept: every line is
// priced from the menu as the page last read it, and the service checks each
// line again when the cart is placed.
import { remembered, el, won, optionsLabel } from './common.js';

// API.md: an order holds 1 to 20 lines; the page keeps a line to 20 cups.
export const MAX_LINES = 20;
export const MAX_QTY = 20;

/** The menu's price of a line, or why it cannot be ordered now. */
export function priced(menu, line) {
  const drink = menu.find((d) => d.coffee_name === line.coffee_name);
  if (!drink) return { problem: '메뉴에 없습니다' };
  if (drink.sold_out) return { problem: '품절' };
  const price = drink.prices[line.size];
  if (price === undefined || !drink.temperatures.includes(line.temperature)) return { problem: '선택할 수 없는 옵션입니다' };
  return { price };
}

function lineLabel(line) {
  return `${line.coffee_name} ${optionsLabel({ temperature: line.temperature, size: line.size })}`;
}

export class Cart {
  /** The cart this browser kept under `key`, without lines it cannot hold. */
  constructor(key, onChange) {
    this.key = key;
    this.onChange = onChange;
    const kept = remembered.get(key);
    this.lines = (Array.isArray(kept) ? kept : [])
      .filter((l) => l && typeof l.coffee_name === 'string' && typeof l.temperature === 'string'
        && typeof l.size === 'string' && Number.isInteger(l.qty) && l.qty >= 1 && l.qty <= MAX_QTY)
      .slice(0, MAX_LINES)
      .map(({ coffee_name, temperature, size, qty }) => ({ coffee_name, temperature, size, qty }));
  }

  changed() {
    remembered.set(this.key, this.lines);
    this.onChange();
  }

  get cups() {
    return this.lines.reduce((sum, l) => sum + l.qty, 0);
  }

  /**
   * Adds `qty` of a drink with its options: the same drink with the same
   * options again is one line of more cups. Returns why not, or null.
   */
  add(line) {
    const same = this.lines.find((l) => l.coffee_name === line.coffee_name
      && l.temperature === line.temperature && l.size === line.size);
    if (same) {
      if (same.qty + line.qty > MAX_QTY) return `한 음료는 ${MAX_QTY}잔까지 담을 수 있습니다.`;
      same.qty += line.qty;
    } else {
      if (this.lines.length >= MAX_LINES) return `한 번에 ${MAX_LINES}가지까지 주문할 수 있습니다.`;
      this.lines.push({ ...line });
    }
    this.changed();
    return null;
  }

  clear() {
    this.lines = [];
    this.changed();
  }

  /** The order's `items` at the menu's prices, or the first line that cannot be ordered. */
  items(menu) {
    const items = [];
    for (const line of this.lines) {
      const { price, problem } = priced(menu, line);
      if (problem) return { problem: `${line.coffee_name}: ${problem}. 장바구니에서 빼 주세요.` };
      items.push({
        coffee_name: line.coffee_name, coffee_price: price, coffee_qty: line.qty,
        options: { temperature: line.temperature, size: line.size },
      });
    }
    return { items };
  }

  /** Shows the cart: its lines (quantity, removal), its count and total; whether it can be ordered. */
  render(menu, storeOpen) {
    const list = document.getElementById('cart');
    list.replaceChildren(...this.lines.map((line, i) => this.lineItem(menu, line, i)));
    document.getElementById('cart-empty').hidden = this.lines.length > 0;
    document.getElementById('cart-count').textContent = `${this.cups}`;
    const prices = this.lines.map((line) => priced(menu, line));
    const total = prices.reduce((sum, p, i) => sum + (p.price ?? 0) * this.lines[i].qty, 0);
    document.getElementById('total').textContent = this.lines.length ? won(total) : '–';
    return this.lines.length > 0 && prices.every((p) => p.price !== undefined) && storeOpen;
  }

  lineItem(menu, line, index) {
    const { price, problem } = priced(menu, line);
    const item = el('li', problem ? 'cart-line unavailable' : 'cart-line');
    const title = el('div', 'line-title');
    title.append(el('strong', 'drink-name', line.coffee_name));
    title.append(el('span', 'muted', `${optionsLabel({ temperature: line.temperature, size: line.size })}${price === undefined ? '' : ` · ${won(price)}`}`));
    if (problem) title.append(el('span', 'line-problem', problem));
    item.append(title);
    const stepper = el('div', 'stepper small');
    const step = (name, text, label, by, disabled) => {
      const button = el('button', 'button', text);
      button.type = 'button';
      button.dataset.step = name;
      button.disabled = disabled;
      button.setAttribute('aria-label', `${lineLabel(line)} ${label}`);
      button.addEventListener('click', () => { line.qty += by; this.changed(); this.focus(index, name); });
      return button;
    };
    const count = el('span', 'line-qty', `${line.qty}`);
    count.setAttribute('aria-label', `${line.qty}잔`);
    stepper.append(step('down', '−', '하나 빼기', -1, line.qty <= 1), count, step('up', '+', '하나 더하기', 1, line.qty >= MAX_QTY));
    item.append(stepper);
    item.append(el('span', 'line-price', price === undefined ? '–' : won(price * line.qty)));
    const remove = el('button', 'button quiet', '삭제');
    remove.type = 'button';
    remove.setAttribute('aria-label', `삭제: ${lineLabel(line)}`);
    remove.addEventListener('click', () => {
      this.lines.splice(index, 1);
      this.changed();
      // Focus stays in the cart: on the next line, or on the order button.
      const next = document.querySelectorAll('#cart .cart-line')[Math.min(index, this.lines.length - 1)];
      (next?.querySelector('button.quiet') || document.getElementById('place-order')).focus();
    });
    item.append(remove);
    return item;
  }

  /** After a quantity change re-renders the cart, focus returns to the same button. */
  focus(index, step) {
    const line = document.querySelectorAll('#cart .cart-line')[index];
    const button = line?.querySelector(`[data-step="${step}"]:not(:disabled)`) || line?.querySelector('[data-step]:not(:disabled)');
    button?.focus();
  }
}
