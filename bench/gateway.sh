# The gateway benchmark (issue 4). Sourced by `bench/run.sh gateway` (or `all`) after the
# build: it uses run.sh's settings and helpers (log, die, wait_quiet, OHA, METATRON, HELPER,
# RESULTS, SECS, and GW_DIR / GW_PIDS for the cleanup). See bench/README.md.
#
# Two upstreams, each loaded three ways with the same connections and duration: directly,
# through Metatron's gateway (`metatron serve --service gateway`) and through nginx:
#   static  `metatron-bench static-upstream`: 1 KiB to every request (the proxies' own cost)
#   auth    `metatron serve --demo`, GET /api/auth/.well-known/jwks.json (a real service)
#
# Then each path again with one connection for BENCH_GW_LATENCY_SECONDS (5): the latency a
# proxy adds to a request that does not wait for a core.
#
# Settings (environment): BENCH_GW_CONNECTIONS (32), BENCH_GW_PORT (38090) for the gateway,
# BENCH_GW_STATIC_PORT (38091), BENCH_GW_AUTH_PORT (38092), BENCH_GW_NGINX_PORT (38093),
# BENCH_GW_BALANCE (least_outstanding).

GW_C=${BENCH_GW_CONNECTIONS:-32}
GW_LATENCY_SECS=${BENCH_GW_LATENCY_SECONDS:-5}
GW_PORT=${BENCH_GW_PORT:-38090}
GW_STATIC_PORT=${BENCH_GW_STATIC_PORT:-38091}
GW_AUTH_PORT=${BENCH_GW_AUTH_PORT:-38092}
GW_NGINX_PORT=${BENCH_GW_NGINX_PORT:-38093}
GW_BALANCE=${BENCH_GW_BALANCE:-least_outstanding}
GW_DIR=$(mktemp -d)
# The directory must be readable by nginx's workers, which drop root for `nobody`.
chmod 755 "$GW_DIR"

for port in "$GW_PORT" "$GW_STATIC_PORT" "$GW_AUTH_PORT" "$GW_NGINX_PORT"; do
  if curl -s -o /dev/null "http://127.0.0.1:$port/"; then die "port $port is taken (see BENCH_GW_* in bench/gateway.sh)"; fi
done

# --- nginx: installed from Debian's packages when missing -------------------------------
NGINX=$(command -v nginx || true)
if [[ -z $NGINX && -x /usr/sbin/nginx ]]; then NGINX=/usr/sbin/nginx; fi
if [[ -z $NGINX ]]; then
  as_root=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || die "nginx is missing and neither root nor sudo can install it (apt-get install -y nginx-light)"
    as_root=(sudo)
  fi
  log "installing nginx: apt-get install -y nginx-light"
  "${as_root[@]}" apt-get update -qq
  # The package's own service may fail to start (no init system here); the binary is there.
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null ||
    [[ -x /usr/sbin/nginx ]] || die "installing nginx failed"
  NGINX=/usr/sbin/nginx
fi
NGINX_VERSION=$("$NGINX" -v 2>&1 | sed 's/^nginx version: //')

# Starts a background process (stdout and stderr in GW_DIR/NAME.out/.err) and records it
# for the cleanup; waits until URL answers 200.
gw_start() { # name, url, command...
  local name=$1 url=$2 pid ready=""
  shift 2
  # In GW_DIR, so that no metatron.toml of the working directory is read.
  (cd "$GW_DIR" && exec "$@" >"$GW_DIR/$name.out" 2>"$GW_DIR/$name.err") &
  pid=$!
  GW_PIDS="$GW_PIDS $pid"
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
}
EOF
log "starting $NGINX_VERSION on 127.0.0.1:$GW_NGINX_PORT (not as a daemon: killed at exit)"
gw_start nginx "http://127.0.0.1:$GW_NGINX_PORT$STATIC_PATH" \
  "$NGINX" -p "$GW_DIR/nginx" -c "$GW_DIR/nginx/nginx.conf" -g 'daemon off;'

# --- the loads ----------------------------------------------------------------------------
# Loads every upstream directly, through the gateway and through nginx, one after the other,
# with CONNECTIONS connections for SECONDS each; results in gateway-UPSTREAM-VIA{SUFFIX}.json.
gw_loads() { # connections, seconds, suffix
  local connections=$1 seconds=$2 suffix=$3 upstream via path direct port url
  for upstream in static auth; do
    if [[ $upstream == static ]]; then
      path=$STATIC_PATH direct=$GW_STATIC_PORT
    else
      path=$AUTH_PATH direct=$GW_AUTH_PORT
    fi
    for via in direct gateway nginx; do
      case $via in
        direct) port=$direct ;;
        gateway) port=$GW_PORT ;;
        nginx) port=$GW_NGINX_PORT ;;
      esac
      url="http://127.0.0.1:$port$path"
      curl -sf -o /dev/null "$url" || die "GET $url failed"
      wait_quiet "$upstream $via, $connections connection(s)"
      log "$upstream via $via: $connections connection(s) for ${seconds} s ($url)"
      "${OHA[@]}" -z "${seconds}s" -c "$connections" "$url" >"$RESULTS/gateway-$upstream-$via$suffix.json"
    done
  done
}

gw_loads "$GW_C" "$SECS" ""
# One connection: under the load above requests wait for the shared cores, and that wait
# dominates the latency; one request at a time shows the cost of the extra hop itself.
gw_loads 1 "$GW_LATENCY_SECS" -1c

# --- the gateway run's facts, for the report ----------------------------------------------
export SECS QUIET COMMAND GW_C GW_BALANCE NGINX_VERSION GW_LATENCY_SECS
python3 - >"$RESULTS/gateway-run.json" <<'EOF'
import datetime, json, os
e = os.environ
print(json.dumps({
    "command": e["COMMAND"],
    "commit": e["BENCH_COMMIT"],
    "rustc": e["BENCH_RUSTC"],
    "load_generator": e["BENCH_OHA"],
    "nginx_version": e["NGINX_VERSION"],
    "seconds": float(e["SECS"]),
    "connections": e["GW_C"],
    "latency_seconds": float(e["GW_LATENCY_SECS"]),
    "balance": e["GW_BALANCE"],
    "machine_busy_before": e["QUIET"],
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
}, indent=2))
EOF
