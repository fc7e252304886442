#!/usr/bin/env bash
# The benchmark suite, in one command: `bench/run.sh` (see bench/README.md).
#
#   bench/run.sh              the foundation benchmarks (issue 2)
#   bench/run.sh crm          the CRM benchmarks (issue 3, bench/crm.sh)
#   bench/run.sh gateway      the gateway against nginx (issue 4, bench/gateway.sh)
#   bench/run.sh sync         sync lag, 10,000 tenants, audit chain (issue 5, bench/sync.sh)
#   bench/run.sh all          all four
#
# Builds the release binary and the bench helper, measures every benchmark next to its
# reference on this machine, prints the summary table and rewrites the generated section
# of BENCHMARKS.md. All load goes to 127.0.0.1; every load run is bounded in time; the
# server is killed on exit, whatever happens.
#
# Settings (environment): BENCH_SECONDS (10) per load run, BENCH_PORT (38080) for the
# load-test server, BENCH_AUX_PORT (38081) for the start-up and memory servers,
# BENCH_LOGIN_CONNECTIONS (8), BENCH_ME_CONNECTIONS (8), BENCH_OUT (BENCHMARKS.md),
# BENCH_QUIET_WAIT (300): seconds to wait, before each step, for other work on the machine
# (builds, tests) to calm down to BENCH_QUIET_BUSY (15) % CPU or less. The CRM settings are
# described in bench/crm.sh, the gateway's in bench/gateway.sh, the sync run's in bench/sync.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${1:-foundation}
case $MODE in
  foundation | crm | gateway | sync | all) ;;
  *)
    echo "usage: bench/run.sh [foundation|crm|gateway|sync|all]" >&2
    exit 2
    ;;
esac
COMMAND="bench/run.sh${1:+ $1}"

SECS=${BENCH_SECONDS:-10}
PORT=${BENCH_PORT:-38080}
AUX_PORT=${BENCH_AUX_PORT:-38081}
LOGIN_C=${BENCH_LOGIN_CONNECTIONS:-8}
ME_C=${BENCH_ME_CONNECTIONS:-8}
OUT=${BENCH_OUT:-BENCHMARKS.md}
TARGET=${CARGO_TARGET_DIR:-target}
METATRON=$TARGET/release/metatron
HELPER=$TARGET/release/metatron-bench
RESULTS=$TARGET/bench-results
BASE=http://127.0.0.1:$PORT
LOGIN_BODY='{"username":"john.doe@demo.com","password":"demo123","tenant":"demo"}'
export METATRON_LOG=warn
# The edge's rate limits are off in every server started here: all the load comes from one
# address (and one tenant), which is exactly what they exist to refuse.
export METATRON_HTTP_RATE_LIMIT_PER_IP_PER_SECOND=0 METATRON_HTTP_RATE_LIMIT_PER_TENANT_PER_SECOND=0

log() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# Percentage of all CPU time that was busy over the next second (whole machine).
cpu_busy() {
  local a b c d e f g h t1 i1 t2 i2
  read -r _ a b c d e f g h _ </proc/stat
  t1=$((a + b + c + d + e + f + g + h)) i1=$((d + e))
  sleep 1
  read -r _ a b c d e f g h _ </proc/stat
  t2=$((a + b + c + d + e + f + g + h)) i2=$((d + e))
  echo $((100 - 100 * (i2 - i1) / (t2 - t1)))
}

# Waits (bounded) until the machine has been quiet for 3 s in a row, so that a build running
# beside the benchmark does not pass for the server's own cost. Records what it found.
QUIET=""
wait_quiet() { # step name
  local deadline=$((SECONDS + ${BENCH_QUIET_WAIT:-300})) calm=0 busy
  while true; do
    busy=$(cpu_busy)
    if ((busy <= ${BENCH_QUIET_BUSY:-15})); then calm=$((calm + 1)); else calm=0; fi
    ((calm >= 3)) && break
    if ((SECONDS >= deadline)); then
      log "warning: the machine is still ${busy}% busy with other work; $1 will read low"
      break
    fi
  done
  QUIET="${QUIET:+$QUIET, }$1 ${busy}%"
}

SERVER_PID=""
STORM_PID=""
DATA_DIR=""
CRM_DIR=""  # bench/crm.sh: its temporary directory
PG_DBS=""   # bench/crm.sh: PostgreSQL databases to drop ("ADMIN_URL name name ...")
GW_DIR=""   # bench/gateway.sh: its temporary directory
GW_PIDS=""  # bench/gateway.sh: upstreams, gateway and nginx
SYNC_DIR="" # bench/sync.sh: its temporary directory
SYNC_PIDS="" # bench/sync.sh: its own nats-server, when it started one
cleanup() {
  local pid
  for pid in $SYNC_PIDS; do kill "$pid" 2>/dev/null || true; done
  for pid in $SYNC_PIDS; do wait "$pid" 2>/dev/null || true; done
  for pid in $GW_PIDS; do kill "$pid" 2>/dev/null || true; done
  for pid in $GW_PIDS; do wait "$pid" 2>/dev/null || true; done
  if [[ -n $GW_DIR ]]; then rm -rf "$GW_DIR"; fi
  if [[ -n $STORM_PID ]]; then kill "$STORM_PID" 2>/dev/null || true; fi
  if [[ -n $SERVER_PID ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ -n $DATA_DIR ]]; then rm -rf "$DATA_DIR"; fi
  if [[ -n $PG_DBS ]]; then
    local admin db
    read -r admin _ <<<"$PG_DBS"
    for db in ${PG_DBS#* }; do
      psql "$admin" -qX -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
  fi
  if [[ -n $CRM_DIR ]]; then rm -rf "$CRM_DIR"; fi
  if [[ -n $SYNC_DIR ]]; then rm -rf "$SYNC_DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools --------------------------------------------------------------------------------
command -v curl >/dev/null || die "curl is needed (apt-get install -y curl)"
command -v python3 >/dev/null || die "python3 is needed (apt-get install -y python3)"
if ! command -v oha >/dev/null; then
  if [[ -x $HOME/.cargo/bin/oha ]]; then
    PATH=$HOME/.cargo/bin:$PATH
  else
    log "installing the load generator: cargo install oha --locked"
    cargo install oha --locked
    PATH=$HOME/.cargo/bin:$PATH
  fi
fi
OHA_HELP=$(oha --help)
OHA=(oha --no-tui)
if grep -q -- '--output-format' <<<"$OHA_HELP"; then OHA+=(--output-format json); else OHA+=(-j); fi
# Requests still running at the deadline are waited for rather than counted as errors.
if grep -q -- '--wait-ongoing-requests-after-deadline' <<<"$OHA_HELP"; then
  OHA+=(--wait-ongoing-requests-after-deadline)
fi

# --- build --------------------------------------------------------------------------------
log "cargo build --release -p metatron -p metatron-bench"
cargo build --release -p metatron -p metatron-bench
METATRON=$(realpath "$METATRON")
HELPER=$(realpath "$HELPER")

mkdir -p "$RESULTS"
# BENCH_COMMIT names the code when it is not this checkout's (e.g. a copy being measured).
if [[ -n ${BENCH_COMMIT:-} ]]; then
  commit=$BENCH_COMMIT
else
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [[ -n $(git status --porcelain 2>/dev/null) ]]; then commit="$commit + uncommitted changes"; fi
fi
export BENCH_COMMIT=$commit BENCH_RUSTC=$(rustc --version) BENCH_OHA=$(oha --version | head -n 1)
SECTIONS=()

if [[ $MODE == foundation || $MODE == all ]]; then
  # Only this section's results are replaced; the CRM's and the gateway's are kept.
  find "$RESULTS" -maxdepth 1 -name '*.json' ! -name 'crm-*' ! -name 'gateway-*' -delete
  SECTIONS+=(--section foundation)

  # --- 1. reference: raw argon2id rate, nothing else running ------------------------------
  # Measured before the server starts and again after it stops; the reference is the mean.
  wait_quiet "argon2"
  log "argon2id reference: $(nproc) threads for ${SECS} s"
  "$HELPER" argon2 --seconds "$SECS" >"$RESULTS/argon2.json"

  # --- the load-test server ---------------------------------------------------------------
  if curl -s -o /dev/null "$BASE/health"; then die "port $PORT is taken (set BENCH_PORT)"; fi
  DATA_DIR=$(mktemp -d)
  log "starting metatron serve --demo on 127.0.0.1:$PORT (data: $DATA_DIR)"
  (cd "$DATA_DIR" && exec "$METATRON" serve --demo --bind 127.0.0.1 --port "$PORT" \
    --data-dir "$DATA_DIR/data" >"$DATA_DIR/server.out" 2>"$DATA_DIR/server.err") &
  SERVER_PID=$!
  ready=""
  for _ in $(seq 1 600); do
    if curl -sf -o /dev/null "$BASE/ready"; then ready=yes; break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $ready ]]; then
    cat "$DATA_DIR/server.err" >&2 || true
    die "the server did not become ready"
  fi

  TOKEN=$(curl -sf -X POST -H 'content-type: application/json' -d "$LOGIN_BODY" "$BASE/api/auth/login" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])') ||
    die "the demo login failed"
  curl -sf -o /dev/null -H "authorization: Bearer $TOKEN" "$BASE/api/auth/me" || die "GET /api/auth/me failed"

  login_load() { # duration, output file
    "${OHA[@]}" -z "$1" -c "$LOGIN_C" -m POST -H 'content-type: application/json' -d "$LOGIN_BODY" \
      "$BASE/api/auth/login" >"$2"
  }
  me_load() { # duration, output file
    "${OHA[@]}" -z "$1" -c "$ME_C" -H "authorization: Bearer $TOKEN" "$BASE/api/auth/me" >"$2"
  }

  # --- 2. login throughput ----------------------------------------------------------------
  wait_quiet "login"
  log "login throughput: $LOGIN_C connections for ${SECS} s"
  login_load "${SECS}s" "$RESULTS/login.json"

  # --- 3. /me alone, then during a login storm --------------------------------------------
  wait_quiet "me"
  log "GET /api/auth/me alone: $ME_C connections for ${SECS} s"
  me_load "${SECS}s" "$RESULTS/me.json"

  wait_quiet "storm"
  log "GET /api/auth/me during a login storm: both loads at once"
  login_load "$((SECS + 4))s" "$RESULTS/storm-login.json" &
  STORM_PID=$!
  sleep 2 # the storm saturates the hashing pool before /me is measured
  me_load "${SECS}s" "$RESULTS/storm-me.json"
  wait "$STORM_PID" || die "the login storm failed"
  STORM_PID=""

  # What the load left behind: resident memory once the server is idle again.
  sleep 2
  vm() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$SERVER_PID/status"; }
  printf '{"benchmark": "memory-after-load", "settle_ms": 2000, "vmrss_kib": %s, "vmhwm_kib": %s}\n' \
    "$(vm VmRSS)" "$(vm VmHWM)" >"$RESULTS/memory-after-load.json"

  kill "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""

  wait_quiet "argon2 again"
  log "argon2id reference again, with the server stopped"
  "$HELPER" argon2 --seconds "$SECS" >"$RESULTS/argon2-after.json"

  # --- 4. idle memory and start-up time ---------------------------------------------------
  wait_quiet "memory"
  log "idle memory: serve, then serve --demo"
  "$HELPER" idle-memory --bin "$METATRON" --port "$AUX_PORT" >"$RESULTS/memory.json"
  "$HELPER" idle-memory --bin "$METATRON" --port "$AUX_PORT" --demo >"$RESULTS/memory-demo.json"

  wait_quiet "start-up"
  log "start-up to /ready: 5 starts on new empty data dirs"
  "$HELPER" startup --bin "$METATRON" --port "$AUX_PORT" --runs 5 >"$RESULTS/startup.json"

  # --- the foundation run's facts, for the report -----------------------------------------
  export SECS PORT LOGIN_C ME_C QUIET COMMAND
  python3 - >"$RESULTS/run.json" <<'EOF'
import json, os
print(json.dumps({
    "command": os.environ["COMMAND"],
    "commit": os.environ["BENCH_COMMIT"],
    "rustc": os.environ["BENCH_RUSTC"],
    "load_generator": os.environ["BENCH_OHA"],
    "seconds": float(os.environ["SECS"]),
    "port": os.environ["PORT"],
    "login_connections": os.environ["LOGIN_C"],
    "me_connections": os.environ["ME_C"],
    "machine_busy_before": os.environ["QUIET"],
}, indent=2))
EOF
fi

if [[ $MODE == crm || $MODE == all ]]; then
  find "$RESULTS" -maxdepth 1 -name 'crm-*.json' -delete
  SECTIONS+=(--section crm)
  QUIET=""
  # shellcheck source=bench/crm.sh
  source bench/crm.sh
fi

if [[ $MODE == gateway || $MODE == all ]]; then
  find "$RESULTS" -maxdepth 1 -name 'gateway-*.json' -delete
  SECTIONS+=(--section gateway)
  QUIET=""
  # shellcheck source=bench/gateway.sh
  source bench/gateway.sh
fi

if [[ $MODE == sync || $MODE == all ]]; then
  find "$RESULTS" -maxdepth 1 -name 'sync-*.json' -delete
  SECTIONS+=(--section sync)
  QUIET=""
  # shellcheck source=bench/sync.sh
  source bench/sync.sh
fi

# --- report -------------------------------------------------------------------------------
log "summary (raw results in $RESULTS)"
"$HELPER" report --results "$RESULTS" --out "$OUT" "${SECTIONS[@]}"
