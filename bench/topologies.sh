#!/usr/bin/env bash
# The same call in both topologies (issue 4): `GET /api/auth/me` with a tenant user's token,
# against `metatron serve --demo` (all-in-one) and through the gateway of `metatron up --demo`
# (gateway + one process per service, NATS JetStream), same load generator, same
# connections, same duration, one after the other on this machine.
#
#   bench/topologies.sh        builds the release binary, measures, prints the table and
#                              rewrites the topologies section of BENCHMARKS.md
#
# Settings (environment): BENCH_SECONDS (10), BENCH_TOPO_CONNECTIONS (32),
# BENCH_TOPO_PORT (38100, the all-in-one port and the gateway's; the services of `up` use
# 38101-38103), BENCH_OUT (BENCHMARKS.md). NATS must answer on 127.0.0.1:4222 or
# `nats-server` be installed (then `up` starts it). Load goes to 127.0.0.1 only; every
# process is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECONDS:-10}
C=${BENCH_TOPO_CONNECTIONS:-32}
PORT=${BENCH_TOPO_PORT:-38100}
OUT=${BENCH_OUT:-BENCHMARKS.md}
TARGET=${CARGO_TARGET_DIR:-target}
METATRON=$PWD/$TARGET/release/metatron
WORK=$(mktemp -d)
PID=""

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
cleanup() {
  if [[ -n $PID ]]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v oha >/dev/null || die "oha is missing (cargo install oha --locked)"
log "building the release binary"
cargo build --release -p metatron >&2

# Rate limits off: one client address sends all the load.
export METATRON_LOG=warn METATRON_HTTP_RATE_LIMIT_PER_IP_PER_SECOND=0 \
  METATRON_HTTP_RATE_LIMIT_PER_TENANT_PER_SECOND=0 \
  METATRON_GATEWAY_RATE_LIMIT_PER_IP_PER_SECOND=0 \
  METATRON_GATEWAY_RATE_LIMIT_PER_TENANT_PER_SECOND=0

start() { # name, command...
  local name=$1
  shift
  (cd "$WORK" && exec "$@" >"$WORK/$name.out" 2>"$WORK/$name.err") &
  PID=$!
}

stop() {
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=""
}

# Waits for the demo login, then loads /me; prints "req/s p50_ms p99_ms".
measure() { # name
  local base=http://127.0.0.1:$PORT token="" json
  for _ in $(seq 1 600); do
    token=$(curl -sf -X POST -H 'content-type: application/json' \
      -d '{"username":"john.doe@demo.com","password":"demo123","tenant":"demo"}' \
      "$base/api/auth/login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])' 2>/dev/null) && break
    sleep 0.1
  done
  [[ -n $token ]] || { cat "$WORK/$1.err" >&2; die "$1: the demo login failed"; }
  log "$1: GET /api/auth/me, $C connections for ${SECS} s"
  json=$(oha --no-tui --output-format json -z "${SECS}s" -c "$C" \
    -H "authorization: Bearer $token" "$base/api/auth/me")
  python3 -c '
import json, sys
d = json.loads(sys.argv[1])
s = d["summary"]; p = d["latencyPercentiles"]
ok = d.get("statusCodeDistribution", {})
assert set(ok) <= {"200"}, f"non-200 answers: {ok}"
rps, p50, p99 = s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000
print(f"{rps:.0f} {p50:.3f} {p99:.3f}")' "$json"
}

log "all-in-one: metatron serve --demo"
start all-in-one "$METATRON" serve --demo --bind 127.0.0.1 --port "$PORT" --data-dir "$WORK/one"
read -r one_rps one_p50 one_p99 < <(measure all-in-one)
stop

log "distributed: metatron up --demo"
cat >"$WORK/up.toml" <<EOF
port = $PORT
bind = "127.0.0.1"
[events]
prefix = "bench$RANDOM$RANDOM"
[services.urls]
cdx = "http://127.0.0.1:$((PORT + 1))"
auth = "http://127.0.0.1:$((PORT + 2))"
crm = "http://127.0.0.1:$((PORT + 3))"
[gateway.upstreams]
cdx = ["http://127.0.0.1:$((PORT + 1))"]
auth = ["http://127.0.0.1:$((PORT + 2))"]
crm = ["http://127.0.0.1:$((PORT + 3))"]
EOF
start distributed "$METATRON" up --demo --config "$WORK/up.toml" --data-dir "$WORK/dist"
read -r dist_rps dist_p50 dist_p99 < <(measure distributed)
stop

commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- crates bench || echo "+changes")
table=$(cat <<EOF
<!-- bench:topologies:begin -->
### The same call in both topologies

\`bench/topologies.sh\` — $(date -u +%Y-%m-%d), commit $commit, $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(oha --version | head -n 1), ${SECS} s per run, $C connections, \`GET /api/auth/me\` with a tenant user's token, rate limits off.

| Topology | req/s | p50 | p99 |
| --- | ---: | ---: | ---: |
| all-in-one (\`metatron serve --demo\`) | $one_rps | ${one_p50} ms | ${one_p99} ms |
| distributed (\`metatron up --demo\`: gateway → auth process) | $dist_rps | ${dist_p50} ms | ${dist_p99} ms |

The distributed call crosses one more process (the gateway) and one more loopback hop; on
this 2-core machine the gateway, the services, NATS and the load generator share the cores.
<!-- bench:topologies:end -->
EOF
)
printf '%s\n' "$table"
python3 - "$OUT" "$table" <<'PY'
import re, sys
path, table = sys.argv[1], sys.argv[2]
text = open(path).read()
pattern = re.compile(r"<!-- bench:topologies:begin -->.*?<!-- bench:topologies:end -->", re.S)
text = pattern.sub(lambda _: table, text) if pattern.search(text) else text.rstrip() + "\n\n" + table + "\n"
open(path, "w").write(text)
PY
