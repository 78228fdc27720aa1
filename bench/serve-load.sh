#!/usr/bin/env bash
# Runs bench/serve-load.ts: 2,000 long-poll clients against one `serve`, then the same clients
# polling nginx statically (loopback only, bounded: it stops by itself within 8 minutes).
# Raises the file-descriptor limit first: 2,000 held connections need ~2,100 fds in serve and in
# the client process each (nginx sets its own worker_rlimit via worker_connections).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "serve-load: ulimit -n $(ulimit -n)"
[[ "${BENCH_SKIP_BUILD:-}" == 1 ]] || npm run build --silent
exec node dist/bench/serve-load.js
