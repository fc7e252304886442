# The CRM benchmarks (issue 3). Sourced by `bench/run.sh crm` (or `all`) after the build:
# it uses run.sh's settings and helpers (log, die, wait_quiet, OHA, METATRON, HELPER,
# RESULTS, PORT, BASE, SECS, LOGIN_BODY, SERVER_PID, CRM_DIR and PG_DBS for the cleanup).
# See bench/README.md.
#
# Settings (environment): BENCH_CRM_CONNECTIONS (8) for the read and list loads and their
# raw references, BENCH_CRM_CREATE_CONNECTIONS (32) for the create load and its raw
# reference (concurrent writers are what group commit is for), BENCH_CRM_SCALE_CONNECTIONS (2)
# for the list latency by size, BENCH_CRM_DEEP_PAGES (150) pages followed before the deep page, BENCH_CRM_IMPORT_ROWS
# (100000) rows of the timed import, BENCH_PG_URL (postgres://postgres@127.0.0.1:5432)
# the PostgreSQL server ("none" skips PostgreSQL).

CRM_C=${BENCH_CRM_CONNECTIONS:-8}
CREATE_C=${BENCH_CRM_CREATE_CONNECTIONS:-32}
SCALE_C=${BENCH_CRM_SCALE_CONNECTIONS:-2}
DEEP_PAGES=${BENCH_CRM_DEEP_PAGES:-150}
IMPORT_ROWS=${BENCH_CRM_IMPORT_ROWS:-100000}
PG_BASE=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
CHUNK=100000 # rows per import request (the server answers 503 after 30 s)
CREATE_BODY='{"first_name":"Bench"}'

CRM_DIR=$(mktemp -d)
TOKEN=""
TENANT=""
USER_ID=""

# Starts `metatron serve --demo` on a new data dir under CRM_DIR, with the environment
# assignments given (e.g. database URLs), and waits for /ready.
crm_start() { # name, [VAR=value ...]
  local dir=$CRM_DIR/$1 ready=""
  shift
  mkdir -p "$dir"
  if curl -s -o /dev/null "$BASE/health"; then die "port $PORT is taken (set BENCH_PORT)"; fi
  log "starting metatron serve --demo on 127.0.0.1:$PORT (data: $dir/data)"
  (cd "$dir" && exec env "$@" "$METATRON" serve --demo --bind 127.0.0.1 --port "$PORT" \
    --data-dir "$dir/data" >"$dir/server.out" 2>"$dir/server.err") &
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
  TOKEN=$(curl -sf -X POST -H 'content-type: application/json' -d "$LOGIN_BODY" "$BASE/api/auth/login" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])') ||
    die "the demo login failed"
  local me
  me=$(curl -sf -H "authorization: Bearer $TOKEN" "$BASE/api/auth/me") || die "GET /api/auth/me failed"
  TENANT=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["tenant_id"])' "$me")
  USER_ID=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["id"])' "$me")
}

crm_stop() {
  kill "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# POSTs a CSV to the import; writes {rows, bytes, seconds, created, updated, skipped} to
# the output file when one is given. Dies unless the answer is 200.
crm_import() { # csv file, rows, [output file]
  local answer=$CRM_DIR/import-answer.json result code secs
  result=$(curl -sS -o "$answer" -w '%{http_code} %{time_total}' -X POST \
    -H "authorization: Bearer $TOKEN" -H 'content-type: text/csv' -H 'expect:' \
    --data-binary @"$1" "$BASE/api/crm/customers/import") || die "the import request failed"
  code=${result% *} secs=${result#* }
  if [[ $code != 200 ]]; then
    cat "$answer" >&2 || true
    die "the import of $1 answered $code after $secs s"
  fi
  if [[ -n ${3:-} ]]; then
    python3 - "$answer" "$2" "$(stat -c %s "$1")" "$secs" >"$3" <<'EOF'
import json, sys
answer = json.load(open(sys.argv[1]))
rows, size, secs = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
assert answer["created"] == rows, answer
print(json.dumps({"benchmark": "csv-import", "rows": rows, "bytes": size, "seconds": secs,
                  "created": answer["created"], "updated": answer["updated"],
                  "skipped": answer["skipped"], "rows_per_sec": answer["created"] / secs},
                 indent=2))
EOF
  fi
}

# A CSV of N customers with unique emails (prefix, first number).
crm_csv() { # file, rows, prefix, start
  "$HELPER" csv --out "$1" --rows "$2" --prefix "$3" --start "$4" >/dev/null
}

# The id of the newest customer of the demo tenant.
first_customer() {
  curl -sf -H "authorization: Bearer $TOKEN" "$BASE/api/crm/customers?limit=1" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["items"][0]["id"])'
}

# The read, list and create loads on the running server, each next to its raw reference on
# the database at URL.
crm_loads() { # file prefix (sqlite or pg), database URL
  local id
  id=$(first_customer) || die "the customer list is empty"

  wait_quiet "$1 read"
  log "$1: GET /api/crm/customers/{id}, $CRM_C connections for ${SECS} s"
  "${OHA[@]}" -z "${SECS}s" -c "$CRM_C" -H "authorization: Bearer $TOKEN" \
    "$BASE/api/crm/customers/$id" >"$RESULTS/crm-$1-read.json"
  wait_quiet "$1 raw read"
  log "$1: raw point read, $CRM_C connections for ${SECS} s"
  "$HELPER" raw-read --url "$2" --tenant "$TENANT" --id "$id" --seconds "$SECS" \
    --concurrency "$CRM_C" >"$RESULTS/crm-$1-raw-read.json"

  wait_quiet "$1 list"
  log "$1: GET /api/crm/customers?limit=50, $CRM_C connections for ${SECS} s"
  "${OHA[@]}" -z "${SECS}s" -c "$CRM_C" -H "authorization: Bearer $TOKEN" \
    "$BASE/api/crm/customers?limit=50" >"$RESULTS/crm-$1-list.json"
  wait_quiet "$1 raw list"
  log "$1: raw list page, $CRM_C connections for ${SECS} s"
  "$HELPER" raw-read --url "$2" --tenant "$TENANT" --list 50 --seconds "$SECS" \
    --concurrency "$CRM_C" >"$RESULTS/crm-$1-raw-list.json"

  wait_quiet "$1 create"
  log "$1: POST /api/crm/customers, $CREATE_C connections for ${SECS} s"
  "${OHA[@]}" -z "${SECS}s" -c "$CREATE_C" -m POST -H "authorization: Bearer $TOKEN" \
    -H 'content-type: application/json' -d "$CREATE_BODY" \
    "$BASE/api/crm/customers" >"$RESULTS/crm-$1-create.json"
  wait_quiet "$1 raw insert"
  log "$1: raw INSERT transactions, $CREATE_C tasks for ${SECS} s"
  "$HELPER" raw-insert --url "$2" --tenant "$TENANT" --owner "$USER_ID" --seconds "$SECS" \
    --concurrency "$CREATE_C" >"$RESULTS/crm-$1-raw-insert.json"
}

IMPORT_CSV=$CRM_DIR/import.csv
crm_csv "$IMPORT_CSV" "$IMPORT_ROWS" i 0

# --- 1. SQLite: import, then read, list and create --------------------------------------
crm_start sqlite
SQLITE_URL=sqlite://$CRM_DIR/sqlite/data/crm.db

# The import's reference: Python's sqlite3 on an empty crm.db of the same schema.
(cd "$CRM_DIR" && "$METATRON" migrate --data-dir "$CRM_DIR/reference" >/dev/null) ||
  die "metatron migrate failed"
wait_quiet "import reference"
log "import reference: $IMPORT_ROWS rows with Python's sqlite3"
python3 bench/import_reference.py --db "$CRM_DIR/reference/crm.db" --csv "$IMPORT_CSV" \
  --tenant "$TENANT" --owner "$USER_ID" >"$RESULTS/crm-import-python.json"
rm -rf "$CRM_DIR/reference"

wait_quiet "import"
log "sqlite: CSV import of $IMPORT_ROWS rows in one request"
crm_import "$IMPORT_CSV" "$IMPORT_ROWS" "$RESULTS/crm-import.json"
CUSTOMERS_SQLITE=$((2 + IMPORT_ROWS))

wait_quiet "health"
log "GET /health (hello world), $CRM_C connections for ${SECS} s"
"${OHA[@]}" -z "${SECS}s" -c "$CRM_C" "$BASE/health" >"$RESULTS/crm-sqlite-health.json"

crm_loads sqlite "$SQLITE_URL"
crm_stop

# --- 2. PostgreSQL: the same on new databases the server creates ------------------------
PG_RUN=""
CUSTOMERS_PG=0
PG_VERSION=""
if [[ $PG_BASE != none ]] && command -v psql >/dev/null &&
  PG_VERSION=$(psql "$PG_BASE/postgres" -qAtX -c 'SHOW server_version' 2>/dev/null); then
  PG_RUN=yes
  PG_DBS="$PG_BASE/postgres bench_cdx_$$ bench_auth_$$ bench_crm_$$"
  for db in bench_cdx_$$ bench_auth_$$ bench_crm_$$; do
    exists=$(psql "$PG_BASE/postgres" -qAtX -c "SELECT 1 FROM pg_database WHERE datname = '$db'")
    [[ -z $exists ]] || die "database $db exists already"
  done
  crm_start pg \
    "METATRON_CDX_DATABASE_URL=$PG_BASE/bench_cdx_$$" \
    "METATRON_AUTH_DATABASE_URL=$PG_BASE/bench_auth_$$" \
    "METATRON_CRM_DATABASE_URL=$PG_BASE/bench_crm_$$"

  wait_quiet "pg import"
  log "pg: CSV import of $IMPORT_ROWS rows in one request"
  crm_import "$IMPORT_CSV" "$IMPORT_ROWS" "$RESULTS/crm-pg-import.json"
  CUSTOMERS_PG=$((2 + IMPORT_ROWS))
  # Fresh statistics, as autovacuum would have them after a while.
  psql "$PG_BASE/bench_crm_$$" -qX -c 'ANALYZE' >/dev/null

  crm_loads pg "$PG_BASE/bench_crm_$$"
  crm_stop
  for db in bench_cdx_$$ bench_auth_$$ bench_crm_$$; do
    psql "$PG_BASE/postgres" -qX -c "DROP DATABASE $db WITH (FORCE)" >/dev/null
  done
  PG_DBS=""
else
  log "warning: no PostgreSQL at $PG_BASE (or no psql): its benchmarks are left out"
fi

# --- 3. list latency at 10k, 100k and 1M customers (SQLite) ------------------------------
rm -rf "$CRM_DIR/sqlite"
crm_start scale
SCALE_DB=$CRM_DIR/scale/data/crm.db
loaded=0
grow_to() { # rows to reach (besides the 2 demo customers)
  local n
  while ((loaded < $1)); do
    n=$(($1 - loaded))
    ((n > CHUNK)) && n=$CHUNK
    crm_csv "$CRM_DIR/chunk.csv" "$n" s "$loaded"
    log "scale: importing rows $loaded..$((loaded + n))"
    crm_import "$CRM_DIR/chunk.csv" "$n"
    loaded=$((loaded + n))
  done
  rm -f "$CRM_DIR/chunk.csv"
}
deep_cursor() { # pages to follow
  python3 - "$BASE" "$TOKEN" "$1" <<'EOF'
import json, sys, urllib.request
base, token, pages = sys.argv[1], sys.argv[2], int(sys.argv[3])
cursor = None
for i in range(pages):
    url = base + "/api/crm/customers?limit=50" + (f"&cursor={cursor}" if cursor else "")
    req = urllib.request.Request(url, headers={"authorization": "Bearer " + token})
    with urllib.request.urlopen(req) as answer:
        cursor = json.load(answer)["next_cursor"]
    if not cursor:
        sys.exit(f"the list ended after {i + 1} pages")
print(cursor)
EOF
}
for point in 10k:10000 100k:100000 1m:1000000; do
  label=${point%%:*}
  grow_to "${point#*:}"
  customers=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(
    "SELECT COUNT(*) FROM customers WHERE tenant_id = ?", (sys.argv[2],)).fetchone()[0])' \
    "$SCALE_DB" "$TENANT")
  size() { stat -c %s "$1" 2>/dev/null || echo 0; }
  printf '{"customers": %s, "deep_pages": %s, "db_bytes": %s, "wal_bytes": %s}\n' "$customers" \
    "$DEEP_PAGES" "$(size "$SCALE_DB")" "$(size "$SCALE_DB-wal")" >"$RESULTS/crm-scale-$label.json"
  wait_quiet "scale $label first"
  log "scale $label ($customers customers): first page, $SCALE_C connections for ${SECS} s"
  "${OHA[@]}" -z "${SECS}s" -c "$SCALE_C" -H "authorization: Bearer $TOKEN" \
    "$BASE/api/crm/customers?limit=50" >"$RESULTS/crm-scale-$label-first.json"
  cursor=$(deep_cursor "$DEEP_PAGES") || die "following the cursor failed"
  wait_quiet "scale $label deep"
  log "scale $label: page $((DEEP_PAGES + 1)), $SCALE_C connections for ${SECS} s"
  "${OHA[@]}" -z "${SECS}s" -c "$SCALE_C" -H "authorization: Bearer $TOKEN" \
    "$BASE/api/crm/customers?limit=50&cursor=$cursor" >"$RESULTS/crm-scale-$label-deep.json"
done
crm_stop
rm -rf "$CRM_DIR/scale"

# --- the CRM run's facts, for the report ------------------------------------------------
export SECS PORT QUIET COMMAND CRM_C CREATE_C SCALE_C DEEP_PAGES CUSTOMERS_SQLITE CUSTOMERS_PG PG_RUN \
  PG_BASE PG_VERSION
python3 - >"$RESULTS/crm-run.json" <<'EOF'
import datetime, json, os
e = os.environ
print(json.dumps({
    "command": e["COMMAND"],
    "commit": e["BENCH_COMMIT"],
    "rustc": e["BENCH_RUSTC"],
    "load_generator": e["BENCH_OHA"],
    "seconds": float(e["SECS"]),
    "port": e["PORT"],
    "connections": e["CRM_C"],
    "create_connections": e["CREATE_C"],
    "scale_connections": e["SCALE_C"],
    "deep_pages": int(e["DEEP_PAGES"]),
    "customers_sqlite": int(e["CUSTOMERS_SQLITE"]),
    "customers_pg": int(e["CUSTOMERS_PG"]),
    "postgres": e["PG_BASE"] if e["PG_RUN"] else None,
    "postgres_tried": e["PG_BASE"],
    "postgres_version": "PostgreSQL " + e["PG_VERSION"] if e["PG_RUN"] else None,
    "machine_busy_before": e["QUIET"],
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
}, indent=2))
EOF
