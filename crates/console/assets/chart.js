// A line chart of a short time series as inline SVG, redrawn whole on every update: two series
// at most, a zero-based y axis with its top value, the last points on the right.
const NS = 'http://www.w3.org/2000/svg'; // a name, never fetched
const PAD_L = 44, PAD_B = 16, PAD_T = 14;

function svg(tag, attrs) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function label(v) {
  if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + 'k';
  if (v >= 10) return v.toFixed(0);
  if (v >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

// Draws `series` ([{name, points: [[t, v|null], ...]}]) into the element `host`, at its own
// size (text is never stretched); `left` and `right` label the x axis's ends.
export function draw(host, series, { span = 120000, now = Date.now(), left = `${span / 1000} s ago`, right = 'now' } = {}) {
  const W = host.clientWidth || 400, H = host.clientHeight || 140;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}` });
  const values = series.flatMap(s => s.points.map(p => p[1]).filter(v => v !== null));
  const top = Math.max(...values, 0) * 1.15 || 1;
  const x = t => PAD_L + (W - PAD_L - 4) * (1 - (now - t) / span);
  const y = v => H - PAD_B - (H - PAD_B - PAD_T) * (v / top);
  root.append(svg('line', { class: 'axis', x1: PAD_L, y1: H - PAD_B, x2: W, y2: H - PAD_B }));
  root.append(svg('line', { class: 'axis', x1: PAD_L, y1: PAD_T, x2: W, y2: PAD_T }));
  const topText = svg('text', { x: PAD_L - 4, y: PAD_T + 4, 'text-anchor': 'end' });
  topText.textContent = label(top);
  const zero = svg('text', { x: PAD_L - 4, y: H - PAD_B, 'text-anchor': 'end' });
  zero.textContent = '0';
  const ago = svg('text', { x: PAD_L, y: H - 3 });
  ago.textContent = left;
  const nowText = svg('text', { x: W - 2, y: H - 3, 'text-anchor': 'end' });
  nowText.textContent = right;
  root.append(topText, zero, ago, nowText);
  series.forEach((s, i) => {
    // A gap (null) ends a line: a missed scrape is not drawn as a slope.
    let run = [];
    const flush = () => {
      if (run.length > 1) root.append(svg('polyline', { class: 's' + i, points: run.join(' ') }));
      run = [];
    };
    for (const [t, v] of s.points) {
      if (now - t > span) continue;
      if (v === null) { flush(); continue; }
      run.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
    }
    flush();
    const last = s.points.length ? s.points[s.points.length - 1][1] : null;
    const legend = svg('text', { class: 'legend' + i, x: PAD_L + 6 + i * 150, y: PAD_T - 3 });
    legend.textContent = `${s.name}: ${last === null ? '–' : label(last)}`;
    root.append(legend);
  });
  host.replaceChildren(root);
}
