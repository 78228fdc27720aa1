/** Resource figures in words a person reads in an error or a plan: "512 MiB", "2.0 GiB", "0.5 CPU". */

const KIB = 1024;
const MIB = 1024 * KIB;
const GIB = 1024 * MIB;

const trim = (n: number, digits: number): string => {
  const s = n.toFixed(digits);
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
};

/** Bytes in binary units: whole or one-decimal MiB below 1 GiB, one decimal GiB above. */
export function formatBytes(bytes: number): string {
  const b = Math.max(0, bytes);
  if (b >= GIB) return `${(b / GIB).toFixed(1)} GiB`;
  if (b >= MIB) return `${trim(b / MIB, 1)} MiB`;
  if (b >= KIB) return `${trim(b / KIB, 1)} KiB`;
  return `${Math.round(b)} B`;
}

/** CPUs with up to three decimals: "1 CPU", "0.25 CPU", "2 CPUs". */
export function formatCpus(cpus: number): string {
  const s = trim(Math.max(0, cpus), 3);
  return `${s} CPU${Number(s) > 1 ? 's' : ''}`;
}
