/** Counters and summaries for GET /metrics, in the Prometheus text exposition format. */
export class Metrics {
  private readonly counters = new Map<string, { help: string; values: Map<string, number> }>();
  private readonly latencies = new Map<string, { help: string; samples: number[]; count: number; sum: number }>();

  count(name: string, help: string, labels: Record<string, string> = {}, by = 1): void {
    let c = this.counters.get(name);
    if (!c) this.counters.set(name, (c = { help, values: new Map() }));
    const key = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, '_')}"`).join(',');
    c.values.set(key, (c.values.get(key) ?? 0) + by);
  }

  /** Records one observation (seconds): its quantiles come from the last 1000, _count and _sum from all of them. */
  observe(name: string, help: string, seconds: number): void {
    let l = this.latencies.get(name);
    if (!l) this.latencies.set(name, (l = { help, samples: [], count: 0, sum: 0 }));
    l.count++;
    l.sum += seconds;
    l.samples.push(seconds);
    if (l.samples.length > 1000) l.samples.shift();
  }

  render(gauges: Record<string, { help: string; value: number }>): string {
    const lines: string[] = [];
    for (const [name, { help, values }] of this.counters) {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
      for (const [labels, v] of values) lines.push(`${name}${labels ? `{${labels}}` : ''} ${v}`);
    }
    for (const [name, { help, samples, count, sum }] of this.latencies) {
      const sorted = [...samples].sort((a, b) => a - b);
      const q = (p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] : 0);
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} summary`);
      for (const p of [0.5, 0.9, 0.99]) lines.push(`${name}{quantile="${p}"} ${q(p)}`);
      lines.push(`${name}_count ${count}`, `${name}_sum ${sum}`);
    }
    for (const [name, { help, value }] of Object.entries(gauges))
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`, `${name} ${value}`);
    return lines.join('\n') + '\n';
  }
}
