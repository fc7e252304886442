#!/usr/bin/env python3
"""Tenants for the sync benchmarks (bench/sync.sh), through CDX's HTTP API as the superadmin.

  cdx_tenants.py seed --base URL --token T --count N      creates N tenants of the first client
  cdx_tenants.py cursor --base URL --token T --path P --pages N
                                                          prints the cursor of page N + 1 of P

Only the standard library: one keep-alive connection per thread.
"""

import argparse
import http.client
import json
import sys
import threading
import urllib.parse


def connection(base):
    url = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(url.hostname, url.port, timeout=60)


def call(conn, method, path, token, body=None):
    headers = {"authorization": f"Bearer {token}"}
    if body is not None:
        headers["content-type"] = "application/json"
        body = json.dumps(body)
    conn.request(method, path, body=body, headers=headers)
    answer = conn.getresponse()
    data = answer.read()
    if answer.status >= 300:
        sys.exit(f"{method} {path} answered {answer.status}: {data[:300]!r}")
    return json.loads(data)


def seed(args):
    conn = connection(args.base)
    clients = call(conn, "GET", "/api/cdx/clients?limit=1", args.token)["items"]
    if not clients:
        sys.exit("no client to create tenants for")
    client_id = clients[0]["id"]
    failures = []

    def create(first, step):
        conn = connection(args.base)
        try:
            for i in range(first, args.count, step):
                body = {"slug": f"bench-{i:05d}", "name": f"Bench tenant {i:05d}",
                        "client_id": client_id}
                call(conn, "POST", "/api/cdx/tenants", args.token, body)
        except SystemExit as e:
            failures.append(str(e))

    threads = [threading.Thread(target=create, args=(t, args.threads))
               for t in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        sys.exit(failures[0])
    print(json.dumps({"tenants": args.count, "client_id": client_id}))


def cursor(args):
    conn = connection(args.base)
    after = None
    for _ in range(args.pages):
        path = args.path + ("&cursor=" + urllib.parse.quote(after, safe="") if after else "")
        after = call(conn, "GET", path, args.token).get("next_cursor")
        if not after:
            sys.exit(f"{args.path} has fewer than {args.pages + 1} pages")
    print(urllib.parse.quote(after, safe=""))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("seed")
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--threads", type=int, default=4)
    c = commands.add_parser("cursor")
    c.add_argument("--path", required=True)
    c.add_argument("--pages", type=int, required=True)
    for p in (s, c):
        p.add_argument("--base", required=True)
        p.add_argument("--token", required=True)
    args = parser.parse_args()
    seed(args) if args.command == "seed" else cursor(args)


if __name__ == "__main__":
    main()
