/** Generated VM passwords in the agent's store (store file mode 0600): the VmSecretStore the agent hands the runtime. */
import type { Store } from '../../store/store.js';
import type { VmSecretStore } from './libvirt-runtime.js';

export function storeVmSecrets(store: Store): VmSecretStore {
  return {
    get: (id) => (store.data.vmSecrets && Object.hasOwn(store.data.vmSecrets, id) ? store.data.vmSecrets[id]?.password : undefined),
    set: (id, password) =>
      store.update((d) => {
        d.vmSecrets = { ...(d.vmSecrets ?? {}), [id]: { password } };
      }),
    delete: (id) => {
      if (!store.data.vmSecrets || !Object.hasOwn(store.data.vmSecrets, id)) return;
      store.update((d) => {
        if (d.vmSecrets) delete d.vmSecrets[id];
      });
    },
  };
}
