/**
 * The fleet's metrics, on the mirror's prom-client registry (registered only when fleet mode is on).
 * `mirror_fleet_coordination{mode}` is 1 for the mode in force: `fleet` (Redis answers) or `local`
 * (each replica on its own; fetches may repeat across replicas).
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { FleetObserver, FleetRole } from './coordinator.js';
import type { CoordinationMode, LinkObserver } from './link.js';

export class FleetMetrics {
  readonly coordination: Gauge<'mode'>;
  readonly transitions: Counter<'to'>;
  readonly downloads: Counter<'role'>;
  readonly peerReads: Counter<'from'>;
  readonly evictionPasses: Counter<'result'>;
  readonly leasesLost: Counter;

  constructor(registry: Registry) {
    const registers = [registry];
    this.coordination = new Gauge({ name: 'mirror_fleet_coordination', help: 'Coordination mode in force: 1 for fleet (through Redis) or local (Redis unreachable)', labelNames: ['mode'], registers });
    this.transitions = new Counter({ name: 'mirror_fleet_coordination_transitions_total', help: 'Switches of the coordination mode, by the mode switched to', labelNames: ['to'], registers });
    this.downloads = new Counter({
      name: 'mirror_fleet_downloads_total',
      help: 'Blob downloads started on this replica, by role: owner (fetched from upstream), peer (streamed from the owner replica), takeover (owner died), local (Redis unreachable)',
      labelNames: ['role'],
      registers,
    });
    this.peerReads = new Counter({ name: 'mirror_fleet_peer_reads_total', help: 'Blob reads served to other replicas on the peer endpoint, by where the bytes came from', labelNames: ['from'], registers });
    this.evictionPasses = new Counter({ name: 'mirror_fleet_eviction_lock_total', help: 'Eviction passes wanted, by whether this replica got the fleet lock (taken, held_elsewhere, unavailable)', labelNames: ['result'], registers });
    this.leasesLost = new Counter({ name: 'mirror_fleet_leases_lost_total', help: 'Download leases another replica took while this one still fetched (Redis away past the lease TTL, or restarted empty): the blob may be fetched twice', registers });
    for (const m of ['fleet', 'local']) this.coordination.set({ mode: m }, 0);
    for (const r of ['owner', 'peer', 'takeover', 'local']) this.downloads.inc({ role: r }, 0);
  }

  link(): LinkObserver {
    let first = true;
    return {
      mode: (mode: CoordinationMode) => {
        this.coordination.set({ mode: 'fleet' }, mode === 'fleet' ? 1 : 0);
        this.coordination.set({ mode: 'local' }, mode === 'local' ? 1 : 0);
        if (!first) this.transitions.inc({ to: mode });
        first = false;
      },
    };
  }

  fleet(): FleetObserver {
    return { download: (role: FleetRole) => this.downloads.inc({ role }), leaseLost: () => this.leasesLost.inc() };
  }
}
