// The music map's scatter: up to hundreds of thousands of points drawn by WebGL (one draw
// call, a colour per legend slot in a uniform array), with a 2-D canvas fallback where WebGL
// is missing. Points live in map units ([-1, 1] on both axes); the camera turns them into
// pixels. A grid over the plane finds the point under the pointer and the points in a lasso
// without looking at all of them. An overlay canvas carries what changes often: selection
// rings, the highlighted song, the path, the lasso.

const SLOTS = 64; // legend slots with a colour of their own; the last one is "everything else"
const GRID = 256;

const VERTEX = `
attribute vec2 a_pos;
attribute float a_slot;
uniform vec2 u_scale;
uniform vec2 u_offset;
uniform float u_size;
uniform vec4 u_colours[${SLOTS}];
varying vec4 v_colour;
void main() {
  gl_Position = vec4(a_pos * u_scale + u_offset, 0.0, 1.0);
  gl_PointSize = u_size;
  v_colour = u_colours[int(a_slot)];
}`;

const FRAGMENT = `
precision mediump float;
varying vec4 v_colour;
void main() {
  if (v_colour.a == 0.0) discard;
  vec2 d = gl_PointCoord - vec2(0.5);
  if (dot(d, d) > 0.25) discard;
  gl_FragColor = v_colour;
}`;

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(shader));
  return shader;
}

export class Scatter {
  constructor(canvas, overlay) {
    this.canvas = canvas;
    this.overlay = overlay;
    this.ctx = overlay.getContext("2d");
    this.n = 0;
    this.x = new Float32Array(0);
    this.y = new Float32Array(0);
    this.slot = new Uint8Array(0);
    this.colours = new Float32Array(SLOTS * 4);
    this.camera = { cx: 0, cy: 0, zoom: 1 };
    this.decorate = () => {}; // draws the overlay (set by the page)
    this.onDrawn = () => {};
    this.pending = false;
    this.gl = canvas.getContext("webgl", { antialias: false, preserveDrawingBuffer: false });
    if (this.gl) this.setupGl();
    else this.flat = canvas.getContext("2d");
    canvas.dataset.renderer = this.gl ? "webgl" : "canvas";
    this.buildGrid();
  }

  setupGl() {
    const gl = this.gl;
    const program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX));
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, FRAGMENT));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program));
    gl.useProgram(program);
    this.program = program;
    this.loc = {
      pos: gl.getAttribLocation(program, "a_pos"),
      slot: gl.getAttribLocation(program, "a_slot"),
      scale: gl.getUniformLocation(program, "u_scale"),
      offset: gl.getUniformLocation(program, "u_offset"),
      size: gl.getUniformLocation(program, "u_size"),
      colours: gl.getUniformLocation(program, "u_colours"),
    };
    this.posBuffer = gl.createBuffer();
    this.slotBuffer = gl.createBuffer();
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA);
  }

  /** New points: x, y (Float32Array, map units), slot (Uint8Array: the legend slot). */
  setPoints(x, y, slot) {
    this.n = x.length;
    this.x = x;
    this.y = y;
    this.slot = slot;
    this.buildGrid();
    if (this.gl) {
      const gl = this.gl;
      const xy = new Float32Array(this.n * 2);
      for (let i = 0; i < this.n; i++) {
        xy[2 * i] = x[i];
        xy[2 * i + 1] = y[i];
      }
      gl.bindBuffer(gl.ARRAY_BUFFER, this.posBuffer);
      gl.bufferData(gl.ARRAY_BUFFER, xy, gl.STATIC_DRAW);
      gl.bindBuffer(gl.ARRAY_BUFFER, this.slotBuffer);
      gl.bufferData(gl.ARRAY_BUFFER, slot, gl.STATIC_DRAW);
    }
    this.request();
  }

  /** Colours per slot: [[r, g, b, a], ...] in 0..1; alpha 0 hides the slot's points. */
  setColours(colours) {
    this.colours.fill(0);
    colours.slice(0, SLOTS).forEach((c, i) => this.colours.set(c, i * 4));
    this.request();
  }

  visible(i) {
    return this.colours[this.slot[i] * 4 + 3] > 0;
  }

  // -- the camera -----------------------------------------------------------------------------

  get size() {
    return { w: this.canvas.clientWidth || 1, h: this.canvas.clientHeight || 1 };
  }

  scale() {
    const { w, h } = this.size;
    return (Math.min(w, h) / 2) * 0.96 * this.camera.zoom; // pixels per map unit
  }

  toScreen(x, y) {
    const { w, h } = this.size;
    const s = this.scale();
    return [(x - this.camera.cx) * s + w / 2, h / 2 - (y - this.camera.cy) * s];
  }

  toMap(px, py) {
    const { w, h } = this.size;
    const s = this.scale();
    return [(px - w / 2) / s + this.camera.cx, (h / 2 - py) / s + this.camera.cy];
  }

  zoomAt(px, py, factor) {
    const [mx, my] = this.toMap(px, py);
    this.camera.zoom = Math.min(400, Math.max(0.5, this.camera.zoom * factor));
    const [nx, ny] = this.toMap(px, py);
    this.camera.cx += mx - nx;
    this.camera.cy += my - ny;
    this.request();
  }

  panBy(dx, dy) {
    const s = this.scale();
    this.camera.cx -= dx / s;
    this.camera.cy += dy / s;
    this.request();
  }

  centreOn(x, y, zoom = null) {
    this.camera.cx = x;
    this.camera.cy = y;
    if (zoom !== null) this.camera.zoom = Math.max(this.camera.zoom, zoom);
    this.request();
  }

  /** Show the map-unit box [x0, x1] x [y0, y1] with a margin. */
  fit(x0, y0, x1, y1) {
    const span = Math.max(x1 - x0, y1 - y0, 0.02);
    this.camera = { cx: (x0 + x1) / 2, cy: (y0 + y1) / 2, zoom: Math.min(400, Math.max(1, 1.6 / span)) };
    this.request();
  }

  reset() {
    this.camera = { cx: 0, cy: 0, zoom: 1 };
    this.request();
  }

  // -- drawing --------------------------------------------------------------------------------

  request() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  pointSize() {
    return Math.min(12, Math.max(2.5, 2 + Math.log2(this.camera.zoom + 1) * 1.5 + (this.n < 2000 ? 3 : 0)));
  }

  draw() {
    const ratio = window.devicePixelRatio || 1;
    const { w, h } = this.size;
    for (const c of [this.canvas, this.overlay]) {
      const cw = Math.round(w * ratio);
      const ch = Math.round(h * ratio);
      if (c.width !== cw || c.height !== ch) {
        c.width = cw;
        c.height = ch;
      }
    }
    if (this.gl) this.drawGl(ratio, w, h);
    else this.drawFlat(ratio);
    this.ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    this.ctx.clearRect(0, 0, w, h);
    this.decorate(this.ctx);
    let shown = 0;
    for (let i = 0; i < this.n; i++) if (this.visible(i)) shown++;
    this.canvas.dataset.drawn = String(this.n);
    this.canvas.dataset.visible = String(shown);
    this.onDrawn(this.n);
  }

  drawGl(ratio, w, h) {
    const gl = this.gl;
    gl.viewport(0, 0, this.canvas.width, this.canvas.height);
    gl.clearColor(0, 0, 0, 0);
    gl.clear(gl.COLOR_BUFFER_BIT);
    if (!this.n) return;
    const s = this.scale();
    const sx = s / (w / 2);
    const sy = s / (h / 2);
    gl.uniform2f(this.loc.scale, sx, sy);
    gl.uniform2f(this.loc.offset, -this.camera.cx * sx, -this.camera.cy * sy);
    gl.uniform1f(this.loc.size, this.pointSize() * ratio);
    gl.uniform4fv(this.loc.colours, this.colours);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.posBuffer);
    gl.enableVertexAttribArray(this.loc.pos);
    gl.vertexAttribPointer(this.loc.pos, 2, gl.FLOAT, false, 0, 0);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.slotBuffer);
    gl.enableVertexAttribArray(this.loc.slot);
    gl.vertexAttribPointer(this.loc.slot, 1, gl.UNSIGNED_BYTE, false, 0, 0);
    gl.drawArrays(gl.POINTS, 0, this.n);
  }

  drawFlat(ratio) {
    const ctx = this.flat;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    const size = this.pointSize();
    const colour = (slot) => {
      const c = this.colours.subarray(slot * 4, slot * 4 + 4);
      return `rgba(${c[0] * 255},${c[1] * 255},${c[2] * 255},${c[3]})`;
    };
    const styles = Array.from({ length: SLOTS }, (_, slot) => colour(slot));
    for (let i = 0; i < this.n; i++) {
      if (!this.visible(i)) continue;
      const [px, py] = this.toScreen(this.x[i], this.y[i]);
      ctx.fillStyle = styles[this.slot[i]];
      ctx.fillRect(px - size / 2, py - size / 2, size, size);
    }
  }

  // -- finding points -------------------------------------------------------------------------

  buildGrid() {
    const cells = new Int32Array(GRID * GRID + 1);
    const cellOf = new Int32Array(this.n);
    for (let i = 0; i < this.n; i++) {
      const c = this.cell(this.x[i], this.y[i]);
      cellOf[i] = c;
      cells[c + 1]++;
    }
    for (let c = 0; c < GRID * GRID; c++) cells[c + 1] += cells[c];
    const fill = cells.slice(0, GRID * GRID);
    const order = new Int32Array(this.n);
    for (let i = 0; i < this.n; i++) order[fill[cellOf[i]]++] = i;
    this.grid = { cells, order };
  }

  axis(v) {
    return Math.min(GRID - 1, Math.max(0, Math.floor(((v + 1) / 2) * GRID)));
  }

  cell(x, y) {
    return this.axis(y) * GRID + this.axis(x);
  }

  /** Indices of the points in the map-unit box, visible ones only. */
  *inBox(x0, y0, x1, y1) {
    const { cells, order } = this.grid;
    for (let gy = this.axis(y0); gy <= this.axis(y1); gy++) {
      for (let gx = this.axis(x0); gx <= this.axis(x1); gx++) {
        const c = gy * GRID + gx;
        for (let k = cells[c]; k < cells[c + 1]; k++) {
          const i = order[k];
          if (this.x[i] >= x0 && this.x[i] <= x1 && this.y[i] >= y0 && this.y[i] <= y1 && this.visible(i)) yield i;
        }
      }
    }
  }

  /** The visible point nearest the pixel (px, py) within `radius` pixels, or -1. */
  nearest(px, py, radius = 10) {
    if (!this.n) return -1;
    const [mx, my] = this.toMap(px, py);
    const r = radius / this.scale();
    let best = -1;
    let bestD = r * r;
    for (const i of this.inBox(mx - r, my - r, mx + r, my + r)) {
      const d = (this.x[i] - mx) ** 2 + (this.y[i] - my) ** 2;
      if (d <= bestD) {
        bestD = d;
        best = i;
      }
    }
    return best;
  }

  /** The visible points inside the polygon of pixel points [[px, py], ...]. */
  inLasso(pixels) {
    if (pixels.length < 3) return [];
    const poly = pixels.map(([px, py]) => this.toMap(px, py));
    const xs = poly.map((p) => p[0]);
    const ys = poly.map((p) => p[1]);
    const found = [];
    for (const i of this.inBox(Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys))) {
      if (inside(this.x[i], this.y[i], poly)) found.push(i);
    }
    return found;
  }
}

function inside(x, y, poly) {
  let hit = false;
  for (let a = 0, b = poly.length - 1; a < poly.length; b = a++) {
    const [xa, ya] = poly[a];
    const [xb, yb] = poly[b];
    if (ya > y !== yb > y && x < ((xb - xa) * (y - ya)) / (yb - ya) + xa) hit = !hit;
  }
  return hit;
}
