// Learning curves as SVG, drawn by hand: one line and one dot per epoch and series.
import { s } from './dom.js';

const WIDTH = 480;
const HEIGHT = 260;
const PAD = { left: 48, right: 16, top: 28, bottom: 36 };

function ticks(min, max, count) {
  const step = (max - min) / count;
  return Array.from({ length: count + 1 }, (_, i) => min + i * step);
}

/**
 * `series`: [{ name, className, points: [{x, y}] }] (points with a null y are skipped).
 * `y`: a fixed range { min, max } (accuracy), or null to fit the data from 0 (loss).
 * `xMax`: the last epoch expected, so the axis does not rescale on every point.
 */
export function lineChart({ id, title, series, xMax = 1, y = null, format = (v) => v.toFixed(2) }) {
  const points = series.flatMap((serie) => serie.points.filter((p) => p.y !== null && Number.isFinite(p.y)));
  const lastX = Math.max(xMax, ...points.map((p) => p.x), 1);
  const yMin = y ? y.min : 0;
  const yMax = y ? y.max : Math.max(...points.map((p) => p.y), 0.1) * 1.1;
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const px = (x) => PAD.left + (lastX <= 1 ? plotW / 2 : ((x - 1) / (lastX - 1)) * plotW);
  const py = (v) => PAD.top + plotH - ((v - yMin) / (yMax - yMin || 1)) * plotH;

  const describe = series
    .map((serie) => {
      const last = serie.points.filter((p) => p.y !== null).at(-1);
      return last ? `${serie.name} ${format(last.y)} at epoch ${last.x}` : `${serie.name}: no data yet`;
    })
    .join('; ');
  const svg = s('svg', { id, class: 'chart', viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', 'aria-label': `${title}: ${describe}` }, s('title', {}, title));

  for (const v of ticks(yMin, yMax, 4)) {
    svg.append(s('line', { class: 'grid', x1: PAD.left, x2: WIDTH - PAD.right, y1: py(v), y2: py(v) }));
    svg.append(s('text', { x: PAD.left - 6, y: py(v) + 4, 'text-anchor': 'end' }, format(v)));
  }
  const xStep = Math.max(1, Math.ceil(lastX / 10));
  for (let x = 1; x <= lastX; x += xStep) {
    svg.append(s('text', { x: px(x), y: HEIGHT - PAD.bottom + 16, 'text-anchor': 'middle' }, String(x)));
  }
  svg.append(s('line', { class: 'axis', x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: PAD.top + plotH }));
  svg.append(s('line', { class: 'axis', x1: PAD.left, x2: WIDTH - PAD.right, y1: PAD.top + plotH, y2: PAD.top + plotH }));
  svg.append(s('text', { x: PAD.left + plotW / 2, y: HEIGHT - 6, 'text-anchor': 'middle' }, 'epoch'));

  series.forEach((serie, i) => {
    const visible = serie.points.filter((p) => p.y !== null && Number.isFinite(p.y));
    if (visible.length > 1) {
      svg.append(s('polyline', { class: `line ${serie.className}`, points: visible.map((p) => `${px(p.x)},${py(p.y)}`).join(' ') }));
    }
    for (const p of visible) {
      svg.append(
        s('circle', { class: `point ${serie.className}`, cx: px(p.x), cy: py(p.y), r: 3.5 }, s('title', {}, `${serie.name}, epoch ${p.x}: ${format(p.y)}`)),
      );
    }
    const lx = PAD.left + 8 + i * 110;
    svg.append(
      s('g', { class: 'legend' }, s('rect', { class: serie.className, x: lx, y: 8, width: 12, height: 4 }), s('text', { x: lx + 16, y: 13 }, serie.name)),
    );
  });
  return svg;
}
