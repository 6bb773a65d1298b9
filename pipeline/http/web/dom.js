// Small DOM helpers: build elements without HTML strings (every text from the API stays text),
// and update keyed lists in place so a focused button keeps its focus across live updates.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

export function text(node, value) {
  const s = String(value);
  if (node.textContent !== s) node.textContent = s;
}

/**
 * Make `container`'s children match `items`: one child per item, found by `key(item)`,
 * made once by `create(item)` and brought up to date by `update(node, item)`. Nodes in the
 * right place are never moved (moving a node would drop its focus).
 */
export function syncList(container, items, key, create, update) {
  const existing = new Map([...container.children].map((child) => [child.dataset.key, child]));
  const wanted = new Set();
  items.forEach((item, index) => {
    const k = String(key(item));
    wanted.add(k);
    let node = existing.get(k);
    if (!node) {
      node = create(item);
      node.dataset.key = k;
    }
    update(node, item);
    const here = container.children[index];
    if (here !== node) container.insertBefore(node, here ?? null);
  });
  for (const [k, node] of existing) if (!wanted.has(k)) node.remove();
}

export function show(node, visible) {
  if (node.hidden === visible) node.hidden = !visible;
}
