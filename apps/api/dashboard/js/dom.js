// Builds DOM from data without innerHTML: names, labels and messages come from users and the API,
// so everything is text nodes and attributes.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h('button', { type: 'button', onclick }, 'Save'). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

/** 0.9731 → "97.3 %" */
export function percent(value, digits = 1) {
  return value === null || value === undefined || Number.isNaN(value) ? '—' : `${(value * 100).toFixed(digits)} %`;
}

export function number(value, digits = 3) {
  return value === null || value === undefined ? '—' : Number(value).toFixed(digits);
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : '—';
}

export function statusBadge(status) {
  return h('span', { class: `status ${status}` }, status);
}

/** A live region for a view's messages; `show` replaces its text. */
export function messageArea() {
  const el = h('p', { class: 'error', role: 'alert' });
  el.hidden = true;
  return {
    el,
    show(text, kind = 'error') {
      el.className = kind;
      el.textContent = text;
      el.hidden = !text;
    },
    clear() {
      el.textContent = '';
      el.hidden = true;
    },
  };
}
