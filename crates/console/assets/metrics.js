// The Prometheus text format of `/metrics`, read into samples, and the rates and quantiles the
// charts show from two scrapes in a row.

// Every sample: {name, labels: {k: v}, value}.
export function parse(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const l of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return samples;
}

// The sum of every sample named `name` whose labels pass `keep`.
export function total(samples, name, keep = () => true) {
  let sum = 0;
  for (const s of samples) if (s.name === name && keep(s.labels)) sum += s.value;
  return sum;
}

// A histogram's buckets (cumulative counts by upper bound) summed over the series `keep` passes.
function buckets(samples, name, keep) {
  const by = new Map();
  for (const s of samples) {
    if (s.name !== name + '_bucket' || !keep(s.labels)) continue;
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    by.set(le, (by.get(le) || 0) + s.value);
  }
  return by;
}

// Between two scrapes of histogram `name`: the mean and the q-quantile (the upper bound of the
// bucket it falls in), in seconds; null when nothing was observed in between.
export function window(before, after, name, q, keep = () => true) {
  const count = total(after, name + '_count', keep) - total(before, name + '_count', keep);
  if (!(count > 0)) return null;
  const sum = total(after, name + '_sum', keep) - total(before, name + '_sum', keep);
  const b0 = buckets(before, name, keep), b1 = buckets(after, name, keep);
  const bounds = [...b1.keys()].sort((x, y) => x - y);
  let quantile = null;
  for (const le of bounds) {
    if ((b1.get(le) - (b0.get(le) || 0)) >= q * count) { quantile = le; break; }
  }
  if (quantile === Infinity) quantile = bounds.filter(Number.isFinite).pop() ?? null;
  return { mean: sum / count, quantile };
}
