# The sync, tenant-list and audit benchmarks (issue 5). Sourced by `bench/run.sh sync` (or
# `all`) after the build: it uses run.sh's settings and helpers (log, die, wait_quiet, OHA,
# METATRON, HELPER, RESULTS, PORT, BASE, SECS, SERVER_PID, and SYNC_DIR / SYNC_PIDS for the
# cleanup). See bench/README.md.
#
# Settings (environment): BENCH_SYNC_RATES (1000,10000) events/s, BENCH_SYNC_SECONDS (5)
# of emitting per rate, BENCH_NATS_URL (nats://127.0.0.1:4222; when it is not set and
# nothing answers there, a nats-server of its own is started on BENCH_SYNC_NATS_PORT (38110)
# and stopped at exit), BENCH_SYNC_TENANTS (10000), BENCH_SYNC_CONNECTIONS (8) for the
# tenant-list loads, BENCH_SYNC_DEEP_PAGES (100) pages followed before the deep page,
# BENCH_AUDIT_ENTRIES (1000000).

SYNC_RATES=${BENCH_SYNC_RATES:-1000,10000}
SYNC_SECS=${BENCH_SYNC_SECONDS:-5}
SYNC_TENANTS=${BENCH_SYNC_TENANTS:-10000}
SYNC_C=${BENCH_SYNC_CONNECTIONS:-8}
SYNC_DEEP_PAGES=${BENCH_SYNC_DEEP_PAGES:-100}
AUDIT_ENTRIES=${BENCH_AUDIT_ENTRIES:-1000000}
SUPERADMIN_BODY='{"username":"test","password":"test123"}'

SYNC_DIR=$(mktemp -d)

# --- NATS: the given server, the machine's, or one of our own -----------------------------
port_answers() { # host, port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}
if [[ -n ${BENCH_NATS_URL:-} ]]; then
  NATS_URL=$BENCH_NATS_URL
  NATS_WHAT="NATS JetStream at $NATS_URL"
elif port_answers 127.0.0.1 4222; then
  NATS_URL=nats://127.0.0.1:4222
  NATS_WHAT="the machine's NATS JetStream at 127.0.0.1:4222"
else
  command -v nats-server >/dev/null ||
    die "NATS JetStream is needed: nothing answers at 127.0.0.1:4222 and nats-server is not installed (apt-get install -y nats-server, or set BENCH_NATS_URL)"
  NATS_PORT=${BENCH_SYNC_NATS_PORT:-38110}
  port_answers 127.0.0.1 "$NATS_PORT" && die "port $NATS_PORT is taken (set BENCH_SYNC_NATS_PORT)"
  log "starting nats-server -js on 127.0.0.1:$NATS_PORT (store: $SYNC_DIR/nats)"
  nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$SYNC_DIR/nats" >"$SYNC_DIR/nats.log" 2>&1 &
  SYNC_PIDS="$SYNC_PIDS $!"
  for _ in $(seq 1 100); do port_answers 127.0.0.1 "$NATS_PORT" && break; sleep 0.1; done
  port_answers 127.0.0.1 "$NATS_PORT" || die "nats-server did not start ($(cat "$SYNC_DIR/nats.log"))"
  NATS_URL=nats://127.0.0.1:$NATS_PORT
  NATS_WHAT="nats-server $(nats-server --version 2>/dev/null | awk '{print $2}') started by the script"
fi

# --- 1. sync lag, in-process and through NATS ---------------------------------------------
for transport in local nats; do
  wait_quiet "sync lag $transport"
  log "sync lag ($transport): $SYNC_RATES events/s, ${SYNC_SECS} s each"
  "$HELPER" sync-lag --transport "$transport" --nats-url "$NATS_URL" --rates "$SYNC_RATES" \
    --seconds "$SYNC_SECS" --data-dir "$SYNC_DIR/lag-$transport" >"$RESULTS/sync-lag-$transport.json" ||
    die "sync-lag ($transport) failed"
  rm -rf "$SYNC_DIR/lag-$transport"
done

# --- 2. the overview and the tenant list with many tenants --------------------------------
# Starts `metatron serve` with the given flags on DIR/data, waits for /ready and logs the
# superadmin in (TOKEN).
sync_serve() { # dir, [flags...]
  local dir=$1 ready=""
  shift
  if curl -s -o /dev/null "$BASE/health"; then die "port $PORT is taken (set BENCH_PORT)"; fi
  log "starting metatron serve $* on 127.0.0.1:$PORT (data: $dir/data)"
  (cd "$dir" && exec "$METATRON" serve "$@" --bind 127.0.0.1 --port "$PORT" \
    --data-dir "$dir/data" >>"$dir/server.out" 2>>"$dir/server.err") &
  SERVER_PID=$!
  for _ in $(seq 1 1200); do
    if curl -sf -o /dev/null "$BASE/ready"; then ready=yes; break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $ready ]]; then
    cat "$dir/server.err" >&2 || true
    die "the server did not become ready"
  fi
  TOKEN=$(curl -sf -X POST -H 'content-type: application/json' -d "$SUPERADMIN_BODY" \
    "$BASE/api/auth/login" | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])') ||
    die "the superadmin login failed"
}

sync_stop() {
  kill "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

TENANTS_DIR=$SYNC_DIR/tenants
mkdir -p "$TENANTS_DIR"
sync_serve "$TENANTS_DIR" --demo
log "creating $SYNC_TENANTS tenants through POST /api/cdx/tenants"
python3 bench/cdx_tenants.py seed --base "$BASE" --token "$TOKEN" --count "$SYNC_TENANTS" >/dev/null ||
  die "creating the tenants failed"
sync_stop
log "customers and companies for every tenant (metatron-bench tenant-events)"
"$HELPER" tenant-events --data-dir "$TENANTS_DIR/data" >"$RESULTS/sync-tenant-events.json" ||
  die "tenant-events failed"
sync_serve "$TENANTS_DIR"
ALL_TENANTS=$(curl -sf -H "authorization: Bearer $TOKEN" "$BASE/api/cdx/overview" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["tenants"]["total"])') ||
  die "GET /api/cdx/overview failed"
DEEP_CURSOR=$(python3 bench/cdx_tenants.py cursor --base "$BASE" --token "$TOKEN" \
  --path '/api/cdx/tenants?sort=-customers&limit=50' --pages "$SYNC_DEEP_PAGES") ||
  die "following the tenant list's cursors failed"

sync_load() { # file label, path
  wait_quiet "$1"
  log "GET $2, $SYNC_C connections for ${SECS} s"
  "${OHA[@]}" -z "${SECS}s" -c "$SYNC_C" -H "authorization: Bearer $TOKEN" "$BASE$2" \
    >"$RESULTS/sync-$1.json"
}
sync_load health /health
sync_load overview /api/cdx/overview
sync_load tenants-id '/api/cdx/tenants?limit=50'
sync_load tenants-customers '/api/cdx/tenants?sort=-customers&limit=50'
sync_load tenants-name '/api/cdx/tenants?sort=name&limit=50'
sync_load tenants-deep "/api/cdx/tenants?sort=-customers&limit=50&cursor=$DEEP_CURSOR"
sync_stop
rm -rf "$TENANTS_DIR"

# --- 3. the audit chain: append, then verify ----------------------------------------------
wait_quiet "audit append"
log "audit append: $AUDIT_ENTRIES entries through CDX's consumer, and as plain inserts"
"$HELPER" audit-append --entries "$AUDIT_ENTRIES" --data-dir "$SYNC_DIR/audit" \
  --reference-dir "$SYNC_DIR/audit-reference" >"$RESULTS/sync-audit-append.json" ||
  die "audit-append failed"
rm -rf "$SYNC_DIR/audit-reference"

wait_quiet "audit verify"
log "metatron audit verify on $AUDIT_ENTRIES entries"
began=$EPOCHREALTIME
(cd "$SYNC_DIR" && "$METATRON" audit verify --json --data-dir "$SYNC_DIR/audit" >"$SYNC_DIR/verify.json") ||
  die "metatron audit verify failed: $(cat "$SYNC_DIR/verify.json")"
ended=$EPOCHREALTIME
python3 - "$SYNC_DIR/verify.json" "$began" "$ended" >"$RESULTS/sync-audit-verify.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
print(json.dumps({"benchmark": "audit-verify", "seconds": float(sys.argv[3]) - float(sys.argv[2]),
                  "entries": report["entries"], "checkpoints": report["checkpoints"],
                  "valid": report["valid"]}, indent=2))
EOF
wait_quiet "audit read"
log "reference: one ordered read of the log with one SHA-256 per row"
"$HELPER" audit-read --db "$SYNC_DIR/audit/cdx.db" >"$RESULTS/sync-audit-read.json" ||
  die "audit-read failed"
rm -rf "$SYNC_DIR/audit"

# --- the sync run's facts, for the report -------------------------------------------------
export SECS QUIET COMMAND SYNC_C SYNC_TENANTS SYNC_DEEP_PAGES ALL_TENANTS NATS_URL NATS_WHAT
python3 - "$RESULTS/sync-tenant-events.json" >"$RESULTS/sync-run.json" <<'EOF'
import datetime, json, os, sys
e = os.environ
events = json.load(open(sys.argv[1]))
print(json.dumps({
    "command": e["COMMAND"],
    "commit": e["BENCH_COMMIT"],
    "rustc": e["BENCH_RUSTC"],
    "load_generator": e["BENCH_OHA"],
    "nats": e["NATS_WHAT"],
    "nats_url": e["NATS_URL"],
    "seconds": float(e["SECS"]),
    "connections": e["SYNC_C"],
    "deep_pages": int(e["SYNC_DEEP_PAGES"]),
    "tenants": int(e["ALL_TENANTS"]),
    "tenants_created": int(e["SYNC_TENANTS"]),
    "customers": events["customers"],
    "machine_busy_before": e["QUIET"],
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
}, indent=2))
EOF
