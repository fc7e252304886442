#!/usr/bin/env python3
"""The reference of the CSV import benchmark (bench/run.sh crm).

Reads the same CSV the server imports and inserts the same rows (customers with their
name and email keys, one customer_tags row per tag) into a crm.db made by `metatron
migrate`, with `executemany` in one transaction, WAL and synchronous = NORMAL as the
server. Prints one JSON object: rows, seconds, rows_per_sec.

    python3 bench/import_reference.py --db DIR/crm.db --csv FILE --tenant T --owner U
"""

import argparse
import csv
import json
import os
import sqlite3
import sys
import time


def uuid7(ms, n):
    """A UUIDv7-shaped text id: time-ordered like the server's, unique per n."""
    rand = int.from_bytes(os.urandom(8), "big")
    hi = (ms << 16) | 0x7000 | (n & 0x0FFF)
    lo = (0b10 << 62) | (rand & ((1 << 62) - 1))
    h = "%016x%016x" % (hi, lo)
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True)
    p.add_argument("--csv", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--owner", default=None)
    a = p.parse_args()

    db = sqlite3.connect(a.db, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")

    started = time.perf_counter()
    now = int(time.time() * 1000)
    customers, tag_rows, seen = [], [], set()
    with open(a.csv, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader)]
        col = {name: i for i, name in enumerate(header)}
        for n, rec in enumerate(reader):
            first = rec[col["first_name"]].strip()
            last = rec[col["last_name"]].strip()
            email = rec[col["email"]].strip().lower() or None
            if not first or (email and (email in seen or "@" not in email)):
                sys.exit(f"invalid row {n + 2}")
            if email:
                seen.add(email)
            phone = rec[col["phone"]].strip() or None
            status = rec[col["status"]].strip().lower() or "lead"
            tags = []
            for t in rec[col["tags"]].replace(",", ";").split(";"):
                t = t.strip().lower()
                if t and t not in tags:
                    tags.append(t)
            cid = uuid7(now, n)
            customers.append((
                a.tenant, cid, first, last, f"{first} {last}".strip().lower(), email, email,
                phone, None, status, a.owner, json.dumps(tags), "{}", now, now, 1,
            ))
            tag_rows.extend((a.tenant, t, cid) for t in tags)
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "INSERT INTO customers (tenant_id, id, first_name, last_name, name_key, email, "
        "email_key, phone, company_id, status, owner_id, tags, custom, created_at, "
        "updated_at, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        customers,
    )
    db.executemany(
        "INSERT INTO customer_tags (tenant_id, tag, customer_id) VALUES (?, ?, ?)", tag_rows
    )
    db.execute("COMMIT")
    seconds = time.perf_counter() - started
    count = db.execute(
        "SELECT COUNT(*) FROM customers WHERE tenant_id = ?", (a.tenant,)
    ).fetchone()[0]
    db.close()
    if count != len(customers):
        sys.exit(f"{len(customers)} rows inserted but {count} in the table")
    print(json.dumps({
        "benchmark": "python-sqlite3-import",
        "rows": len(customers),
        "tag_rows": len(tag_rows),
        "seconds": seconds,
        "rows_per_sec": len(customers) / seconds,
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
    }, indent=2))


if __name__ == "__main__":
    main()
