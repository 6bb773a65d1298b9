// The map's pointer gestures, for mouse, pen and touch alike (Pointer Events): hover, click,
// drag to pan (or to draw a lasso), two-finger pinch to zoom, the wheel to zoom at the pointer.
// What they mean is the page's: `hover(i, px, py)`, `click(i)`, `lassoed(indices)`, with i
// the index of the point under the pointer (-1: none); `tool()` says "pan" or "lasso".

export function attachGestures(stage, scatter, { tool, hover, click, lassoed }) {
  const pointers = new Map();
  const gesture = { lasso: null }; // the lasso being drawn, in pixels (the overlay draws it)
  let drag = null;
  const at = (event) => {
    const box = stage.getBoundingClientRect();
    return [event.clientX - box.left, event.clientY - box.top];
  };
  const pinch = () => {
    const [a, b] = [...pointers.values()];
    return { d: Math.hypot(a[0] - b[0], a[1] - b[1]), m: [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2] };
  };

  stage.addEventListener("pointerdown", (event) => {
    stage.setPointerCapture(event.pointerId);
    const [px, py] = at(event);
    pointers.set(event.pointerId, [px, py]);
    drag = { start: [px, py], last: [px, py], moved: false, pinch: pointers.size === 2 ? pinch() : null };
    gesture.lasso = tool() === "lasso" && pointers.size === 1 ? [[px, py]] : null;
  });

  stage.addEventListener("pointermove", (event) => {
    const [px, py] = at(event);
    if (!drag) {
      hover(scatter.nearest(px, py), px, py);
      return;
    }
    pointers.set(event.pointerId, [px, py]);
    if (pointers.size === 2) {
      const now = pinch();
      if (drag.pinch) {
        scatter.panBy(now.m[0] - drag.pinch.m[0], now.m[1] - drag.pinch.m[1]);
        scatter.zoomAt(now.m[0], now.m[1], now.d / Math.max(drag.pinch.d, 1));
      }
      Object.assign(drag, { pinch: now, moved: true });
      gesture.lasso = null;
      return;
    }
    if (Math.hypot(px - drag.start[0], py - drag.start[1]) > 4) drag.moved = true;
    if (gesture.lasso) gesture.lasso.push([px, py]);
    else scatter.panBy(px - drag.last[0], py - drag.last[1]);
    drag.last = [px, py];
    scatter.request();
  });

  const end = (event) => {
    pointers.delete(event.pointerId);
    if (!drag || pointers.size) return;
    const [px, py] = at(event);
    if (!drag.moved) click(scatter.nearest(px, py));
    else if (gesture.lasso) lassoed(scatter.inLasso(gesture.lasso));
    gesture.lasso = null;
    drag = null;
    scatter.request();
  };
  stage.addEventListener("pointerup", end);
  stage.addEventListener("pointercancel", end);
  stage.addEventListener("pointerleave", () => { if (!drag) hover(-1, 0, 0); });
  stage.addEventListener("wheel", (event) => {
    event.preventDefault();
    const [px, py] = at(event);
    scatter.zoomAt(px, py, Math.exp(-event.deltaY * 0.0015));
  }, { passive: false });
  return gesture;
}
