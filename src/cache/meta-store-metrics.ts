/**
 * The metadata store's mode, on the mirror's prom-client registry (registered at start whenever the
 * records live in Redis, both series present from the start):
 * `mirror_meta_store_mode{mode="remote"|"local"}` is 1 for the mode in force (local: Redis
 * unreachable, records served from and written to this replica's own store), and
 * `mirror_meta_store_transitions_total{to}` counts the switches.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { MetaModeObserver, MetaStoreMode } from './outage-tolerant-meta-store.js';

export function metaStoreMetrics(registry: Registry): MetaModeObserver {
  const registers = [registry];
  const mode = new Gauge({
    name: 'mirror_meta_store_mode',
    help: 'Where tag records and membership are read from: 1 for remote (Redis) or local (Redis unreachable: this replica\'s own records)',
    labelNames: ['mode'],
    registers,
  });
  const transitions = new Counter({ name: 'mirror_meta_store_transitions_total', help: 'Switches of the metadata store mode, by the mode switched to', labelNames: ['to'], registers });
  for (const m of ['remote', 'local'] as const) {
    mode.set({ mode: m }, 0);
    transitions.inc({ to: m }, 0);
  }
  let first = true;
  return {
    mode: (m: MetaStoreMode) => {
      mode.set({ mode: 'remote' }, m === 'remote' ? 1 : 0);
      mode.set({ mode: 'local' }, m === 'local' ? 1 : 0);
      if (!first) transitions.inc({ to: m });
      first = false;
    },
  };
}
