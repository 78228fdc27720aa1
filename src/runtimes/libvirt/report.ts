import * as v from 'valibot';
import { errorSummarySchema } from '../../spec/error-summary.js';
import type { ReportBlock } from '../runtime.js';

const d = v.description;

/** The status report's `vm` block: addresses and login, from what the libvirt runtime saw (Runtime.live). */
export const vmReportBlock: ReportBlock = {
  key: 'vm',
  description: 'Virtual machine facts (vm workloads).',
  schema: v.object({
    interfaces: v.pipe(
      v.array(
        v.object({
          mac: v.pipe(v.string(), d('MAC address of the interface.')),
          ips: v.pipe(v.array(v.string()), d('Addresses in CIDR form, e.g. 10.0.0.5/24.')),
          source: v.pipe(v.optional(v.picklist(['agent', 'lease', 'arp'])), d('Where the addresses came from: guest agent, DHCP lease or ARP table; absent while none is known.')),
        }),
      ),
      d('Network interfaces and their addresses.'),
    ),
    login: v.pipe(
      v.optional(
        v.object({
          username: v.pipe(v.string(), d('User created by cloud-init.')),
          ssh: v.pipe(v.optional(v.string()), d('Ready-to-use ssh command line.')),
          sshKeyFingerprints: v.pipe(v.optional(v.array(v.string())), d('SHA256 fingerprints of the authorized keys.')),
          console: v.pipe(v.optional(v.string()), d('How to reach the console (e.g. a virsh console command or VNC address).')),
          password: v.pipe(v.optional(v.string()), d('Generated password; present only when the spec sets login.reportPassword.')),
        }),
      ),
      d('How a person logs in.'),
    ),
    warning: v.pipe(v.optional(v.nullable(errorSummarySchema)), d('A problem that does not stop the VM, e.g. VM_NO_IP while it keeps looking for an address.')),
  }),
  build: (f) => (isBlock(f.live) ? f.live : undefined),
};

function isBlock(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}
