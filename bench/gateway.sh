# The gateway benchmark (issue 4). Sourced by `bench/run.sh gateway` (or `all`) after the
# build: it uses run.sh's settings and helpers (log, die, wait_quiet, OHA, METATRON, HELPER,
# RESULTS, and GW_DIR / GW_PIDS for the cleanup). See bench/README.md.
#
# Two upstreams, each loaded four ways with the same connections and duration: directly,
# through Metatron's gateway (`metatron serve --service gateway`), through nginx as a bare
# pass-through, and through nginx doing the header work the gateway does on every request
# (X-Forwarded-For/-Proto/-Host and an X-Request-Id to the upstream, the id in the answer):
#   static  `metatron-bench static-upstream`: 1 KiB to every request (the proxies' own cost)
#   auth    `metatron serve --demo`, GET /api/auth/.well-known/jwks.json (a real service)
#
# The four paths are loaded in turn, round after round (BENCH_GW_ROUNDS, 9), the proxies
# in rotating order (each goes first in every third round): on a shared
# virtual machine the speed of the cores drifts by tens of percent within a minute, so each
# figure is the median of its rounds, and the comparison of the proxies is the median of
# their ratio within each round. Each round loads every path under load
# (BENCH_GW_CONNECTIONS, 32, for BENCH_GW_SECONDS, 4 s), then with one connection for
# BENCH_GW_LATENCY_SECONDS (3 s): the latency a proxy adds to a request that does not wait
# for a core. The CPU time the hypervisor took away during each run (steal) is recorded.
#
# Then the work each proxy does per request, independent of the machine's speed: the
# user-space instructions per proxied request, counted by valgrind's callgrind over
# BENCH_GW_COUNTED (3000) requests on one connection, for the gateway and for both nginx
# configurations.
#
# The ports lie below Linux's range for outgoing connections (32768–60999), so no client
# connection of the run itself can hold one when a server is started on it.
# Settings (environment): BENCH_GW_PORT (28090) for the gateway, BENCH_GW_STATIC_PORT
# (28091), BENCH_GW_AUTH_PORT (28092), BENCH_GW_NGINX_PORT (28093),
# BENCH_GW_NGINX_HEADERS_PORT (28096), BENCH_GW_COUNT_PORT (28094),
# BENCH_GW_NGINX_COUNT_PORT (28095) and BENCH_GW_NGINX_HEADERS_COUNT_PORT (28097) for the
# counted runs, BENCH_GW_BALANCE (least_outstanding).

GW_C=${BENCH_GW_CONNECTIONS:-32}
GW_ROUNDS=${BENCH_GW_ROUNDS:-9}
GW_SECS=${BENCH_GW_SECONDS:-4}
GW_LATENCY_SECS=${BENCH_GW_LATENCY_SECONDS:-3}
GW_COUNTED=${BENCH_GW_COUNTED:-3000}
GW_COUNT_PORT=${BENCH_GW_COUNT_PORT:-28094}
GW_NGINX_COUNT_PORT=${BENCH_GW_NGINX_COUNT_PORT:-28095}
GW_PORT=${BENCH_GW_PORT:-28090}
GW_STATIC_PORT=${BENCH_GW_STATIC_PORT:-28091}
GW_AUTH_PORT=${BENCH_GW_AUTH_PORT:-28092}
GW_NGINX_PORT=${BENCH_GW_NGINX_PORT:-28093}
GW_NGINX_HEADERS_PORT=${BENCH_GW_NGINX_HEADERS_PORT:-28096}
GW_NGINX_HEADERS_COUNT_PORT=${BENCH_GW_NGINX_HEADERS_COUNT_PORT:-28097}
GW_BALANCE=${BENCH_GW_BALANCE:-least_outstanding}
GW_DIR=$(mktemp -d)
# The directory must be readable by nginx's workers, which drop root for `nobody`.
chmod 755 "$GW_DIR"

for port in "$GW_PORT" "$GW_STATIC_PORT" "$GW_AUTH_PORT" "$GW_NGINX_PORT" "$GW_NGINX_HEADERS_PORT" \
  "$GW_COUNT_PORT" "$GW_NGINX_COUNT_PORT" "$GW_NGINX_HEADERS_COUNT_PORT"; do
  if curl -s -o /dev/null "http://127.0.0.1:$port/"; then die "port $port is taken (see BENCH_GW_* in bench/gateway.sh)"; fi
done

# --- nginx and valgrind: installed from Debian's packages when missing -------------------
as_root=()
if [[ $(id -u) != 0 ]]; then as_root=(sudo); fi
gw_apt_install() { # package
  if [[ ${#as_root[@]} -gt 0 ]] && ! command -v sudo >/dev/null; then
    die "$1 is missing and neither root nor sudo can install it (apt-get install -y $1)"
  fi
  log "installing $1: apt-get install -y $1"
  "${as_root[@]}" apt-get update -qq
  # A package's own service may fail to start (no init system here); the binary is there.
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null || true
}
NGINX=$(command -v nginx || true)
if [[ -z $NGINX && -x /usr/sbin/nginx ]]; then NGINX=/usr/sbin/nginx; fi
if [[ -z $NGINX ]]; then
  gw_apt_install nginx-light
  [[ -x /usr/sbin/nginx ]] || die "installing nginx failed"
  NGINX=/usr/sbin/nginx
fi
command -v valgrind >/dev/null || gw_apt_install valgrind
command -v valgrind >/dev/null || die "installing valgrind failed"
VALGRIND_VERSION=$(valgrind --version)
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')

# Starts a background process (stdout and stderr in GW_DIR/NAME.out/.err) and records it
# for the cleanup (and in GW_LAST_PID); waits until URL answers 200.
gw_start() { # name, url, command...
  local name=$1 url=$2 pid ready=""
  shift 2
  # In GW_DIR, so that no metatron.toml of the working directory is read.
  (cd "$GW_DIR" && exec "$@" >"$GW_DIR/$name.out" 2>"$GW_DIR/$name.err") &
  pid=$!
  GW_PIDS="$GW_PIDS $pid"
  GW_LAST_PID=$pid
  for _ in $(seq 1 600); do
    if curl -sf -o /dev/null "$url"; then ready=yes; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $ready ]]; then
    cat "$GW_DIR/$name.err" >&2 || true
    die "$name did not become ready at $url"
  fi
}

STATIC_PATH=/api/static/bench
AUTH_PATH=/api/auth/.well-known/jwks.json

log "starting the static upstream on 127.0.0.1:$GW_STATIC_PORT"
gw_start static "http://127.0.0.1:$GW_STATIC_PORT$STATIC_PATH" \
  "$HELPER" static-upstream --port "$GW_STATIC_PORT"

log "starting metatron serve --demo on 127.0.0.1:$GW_AUTH_PORT (data: $GW_DIR/data)"
gw_start auth "http://127.0.0.1:$GW_AUTH_PORT/ready" \
  "$METATRON" serve --demo --bind 127.0.0.1 --port "$GW_AUTH_PORT" --data-dir "$GW_DIR/data"

# The gateway routes only the two upstreams; rate limits are off because one address sends
# all the load (the per-IP limit would answer most of it 429).
cat >"$GW_DIR/metatron.toml" <<EOF
[gateway]
balance = "$GW_BALANCE"
health_check_interval_ms = 2000

[gateway.upstreams]
static = ["http://127.0.0.1:$GW_STATIC_PORT"]
auth = ["http://127.0.0.1:$GW_AUTH_PORT"]
cdx = []
crm = []

[gateway.rate_limit_per_ip]
per_second = 0.0

[gateway.rate_limit_per_tenant]
per_second = 0.0
EOF
log "starting metatron serve --service gateway on 127.0.0.1:$GW_PORT"
gw_start gateway "http://127.0.0.1:$GW_PORT/health" \
  "$METATRON" --config "$GW_DIR/metatron.toml" serve --service gateway --bind 127.0.0.1 --port "$GW_PORT"

mkdir -p "$GW_DIR/nginx"
cat >"$GW_DIR/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $GW_DIR/nginx/nginx.pid;
error_log $GW_DIR/nginx/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path $GW_DIR/nginx/body;
    proxy_temp_path $GW_DIR/nginx/proxy;
    fastcgi_temp_path $GW_DIR/nginx/fastcgi;
    uwsgi_temp_path $GW_DIR/nginx/uwsgi;
    scgi_temp_path $GW_DIR/nginx/scgi;
    keepalive_requests 1000000;

    upstream static {
        server 127.0.0.1:$GW_STATIC_PORT;
        keepalive 64;
    }
    upstream auth {
        server 127.0.0.1:$GW_AUTH_PORT;
        keepalive 64;
    }

    server {
        listen 127.0.0.1:$GW_NGINX_PORT;
        location /api/static/ {
            proxy_pass http://static;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location /api/auth/ {
            proxy_pass http://auth;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }

    # The same, doing the gateway's header work: what the client's address, scheme and host
    # were, and a request id, to the upstream; the id in the answer.
    server {
        listen 127.0.0.1:$GW_NGINX_HEADERS_PORT;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto \$scheme;
        proxy_set_header X-Forwarded-Host \$host;
        proxy_set_header X-Request-Id \$request_id;
        add_header X-Request-Id \$request_id always;
        location /api/static/ {
            proxy_pass http://static;
        }
        location /api/auth/ {
            proxy_pass http://auth;
        }
    }
}
EOF
log "starting $NGINX_VERSION on 127.0.0.1:$GW_NGINX_PORT (not as a daemon: killed at exit)"
gw_start nginx "http://127.0.0.1:$GW_NGINX_PORT$STATIC_PATH" \
  "$NGINX" -p "$GW_DIR/nginx" -c "$GW_DIR/nginx/nginx.conf" -g 'daemon off;'

# --- the loads ----------------------------------------------------------------------------
# The CPU time of the whole machine, and the part of it the hypervisor stole, so far.
cpu_times() { awk '/^cpu / { print $2+$3+$4+$5+$6+$7+$8+$9, $9 }' /proc/stat; }

# Loads every upstream directly, through the gateway and through nginx, one after the other,
# with CONNECTIONS connections for SECONDS each; results in
# gateway-UPSTREAM-VIA{SUFFIX}-rROUND.json, and the steal during each in .steal.json.
gw_loads() { # connections, seconds, suffix, round
  local connections=$1 seconds=$2 suffix=$3 round=$4 upstream via path direct port url
  local total0 steal0 total1 steal1 file
  for upstream in static auth; do
    if [[ $upstream == static ]]; then
      path=$STATIC_PATH direct=$GW_STATIC_PORT
    else
      path=$AUTH_PATH direct=$GW_AUTH_PORT
    fi
    local order
    case $((round % 3)) in
      1) order="direct gateway nginx nginx-headers" ;;
      2) order="direct nginx nginx-headers gateway" ;;
      0) order="direct nginx-headers gateway nginx" ;;
    esac
    for via in $order; do
      case $via in
        direct) port=$direct ;;
        gateway) port=$GW_PORT ;;
        nginx) port=$GW_NGINX_PORT ;;
        nginx-headers) port=$GW_NGINX_HEADERS_PORT ;;
      esac
      url="http://127.0.0.1:$port$path"
      curl -sf -o /dev/null "$url" || die "GET $url failed"
      file="$RESULTS/gateway-$upstream-$via$suffix-r$round"
      log "round $round: $upstream via $via, $connections connection(s) for ${seconds} s ($url)"
      read -r total0 steal0 < <(cpu_times)
      "${OHA[@]}" -z "${seconds}s" -c "$connections" "$url" >"$file.json"
      read -r total1 steal1 < <(cpu_times)
      printf '{"steal_pct": %s}\n' "$(( 100 * (steal1 - steal0) / (total1 - total0 + 1) ))" >"$file.steal.json"
    done
  done
}

for round in $(seq 1 "$GW_ROUNDS"); do
  wait_quiet "round $round"
  gw_loads "$GW_C" "$GW_SECS" "" "$round"
  # One connection: under the load above requests wait for the shared cores, and that wait
  # dominates the latency; one request at a time shows the cost of the extra hop itself.
  gw_loads 1 "$GW_LATENCY_SECS" -1c "$round"
done

# --- instructions per request (callgrind) ------------------------------------------------
# Counts the user-space instructions PID spends on GW_COUNTED requests to URL (after a
# warm-up), writing {"requests", "instructions"} to FILE.
gw_count() { # name, pid, url, file
  local name=$1 pid=$2 url=$3 file=$4 total
  "${OHA[@]}" -n 300 -c 1 "$url" >/dev/null
  callgrind_control -z "$pid" >/dev/null
  log "counting the instructions of $name: $GW_COUNTED requests on one connection"
  "${OHA[@]}" -n "$GW_COUNTED" -c 1 "$url" >"$file.load.json"
  callgrind_control -d "$pid" >/dev/null
  # Each dump is a new file (NAME.callgrind.1, .2, …): the newest holds this count.
  total=$(awk '/^totals:/ { print $2 }' "$(ls -t "$GW_DIR/$name.callgrind."* | head -n 1)")
  [[ -n $total ]] || die "callgrind wrote no totals for $name"
  printf '{"requests": %s, "instructions": %s}\n' "$GW_COUNTED" "$total" >"$file"
}

# Starts NAME under callgrind (not counting until told) and waits until URL answers.
gw_start_counted() { # name, url, command...
  local name=$1 url=$2
  shift 2
  gw_start "$name" "$url" valgrind --tool=callgrind --callgrind-out-file="$GW_DIR/$name.callgrind" "$@"
}

sed -e "s/^worker_processes auto;/worker_processes 1;/" -e "s/$GW_NGINX_PORT/$GW_NGINX_COUNT_PORT/" \
  -e "s/$GW_NGINX_HEADERS_PORT/$GW_NGINX_HEADERS_COUNT_PORT/" \
  -e "s#$GW_DIR/nginx/nginx.pid#$GW_DIR/nginx/nginx-counted.pid#" \
  "$GW_DIR/nginx/nginx.conf" >"$GW_DIR/nginx/nginx-counted.conf"
wait_quiet "instructions"
gw_start_counted gateway-counted "http://127.0.0.1:$GW_COUNT_PORT$STATIC_PATH" \
  "$METATRON" --config "$GW_DIR/metatron.toml" serve --service gateway --bind 127.0.0.1 --port "$GW_COUNT_PORT"
gw_count gateway-counted "$GW_LAST_PID" \
  "http://127.0.0.1:$GW_COUNT_PORT$STATIC_PATH" "$RESULTS/gateway-instructions-gateway.json"
gw_start_counted nginx-counted "http://127.0.0.1:$GW_NGINX_COUNT_PORT$STATIC_PATH" \
  "$NGINX" -p "$GW_DIR/nginx" -c "$GW_DIR/nginx/nginx-counted.conf" -g 'daemon off; master_process off;'
nginx_counted=$GW_LAST_PID
gw_count nginx-counted "$nginx_counted" \
  "http://127.0.0.1:$GW_NGINX_COUNT_PORT$STATIC_PATH" "$RESULTS/gateway-instructions-nginx.json"
gw_count nginx-counted "$nginx_counted" \
  "http://127.0.0.1:$GW_NGINX_HEADERS_COUNT_PORT$STATIC_PATH" "$RESULTS/gateway-instructions-nginx-headers.json"

# --- the gateway run's facts, for the report ----------------------------------------------
export QUIET COMMAND GW_C GW_BALANCE NGINX_VERSION GW_ROUNDS GW_SECS GW_LATENCY_SECS VALGRIND_VERSION GW_COUNTED
python3 - >"$RESULTS/gateway-run.json" <<'EOF'
import datetime, json, os
e = os.environ
print(json.dumps({
    "command": e["COMMAND"],
    "commit": e["BENCH_COMMIT"],
    "rustc": e["BENCH_RUSTC"],
    "load_generator": e["BENCH_OHA"],
    "nginx_version": e["NGINX_VERSION"],
    "valgrind_version": e["VALGRIND_VERSION"],
    "rounds": int(e["GW_ROUNDS"]),
    "counted": e["GW_COUNTED"],
    "seconds": float(e["GW_SECS"]),
    "connections": e["GW_C"],
    "latency_seconds": float(e["GW_LATENCY_SECS"]),
    "balance": e["GW_BALANCE"],
    "machine_busy_before": e["QUIET"],
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
}, indent=2))
EOF
