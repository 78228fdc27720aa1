/**
 * Freeze visibility: whether the document in force has passed its expiresAt, and when it does.
 * Alert rules (deploy/prometheus) use both: a frozen host keeps running its last good workloads,
 * so only these numbers say that no fresh document has arrived.
 */
import { Gauge, type Registry } from 'prom-client';

export function registerExpiryMetrics(registry: Registry, expiresAt: () => string | undefined): void {
  const registers = [registry];
  new Gauge({
    name: 'persys_desired_state_expired',
    help: '1 when the desired state in force has passed its expiresAt (its workloads keep running; no fresh document arrived), else 0.',
    registers,
    collect() {
      const at = expiresAt();
      this.set(at !== undefined && Date.parse(at) <= Date.now() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'persys_desired_state_expiry_timestamp_seconds',
    help: 'expiresAt of the desired state in force, in unix seconds; NaN when it has none.',
    registers,
    collect() {
      const at = expiresAt();
      const t = at === undefined ? Number.NaN : Date.parse(at) / 1000;
      this.set(t);
    },
  });
}
