#!/usr/bin/env bash
# Latency of one upgrade estimate, one request at a time over a kept-alive connection, for each
# `tally` binary given, in turn (give two builds alternately, e.g. old new old new, to compare
# them in one run). Each run: a fresh database, a test-mode tenant with the example catalog, the
# README's contract (acme, basic, 5 seats) and its estimate of 8 seats on Jan 16; 300 requests
# to warm up, then 3000 timed. Prints the median, p90 and mean.
# Usage: scripts/preview-latency.sh BIN [BIN...]
# DATABASE=sqlite (default: postgres, on $TALLY_BENCH_POSTGRES or postgres://postgres@127.0.0.1:5432).
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${DATABASE:-postgres}"
pg="${TALLY_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
port=18089
for bin in "$@"; do
  work="$(mktemp -d)"
  if [ "$kind" = sqlite ]; then
    url="sqlite://$work/tally.db"
  else
    db="tally_latency_$$"
    PGOPTIONS=--client-min-messages=warning psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    url="$pg/$db"
  fi
  "$bin" migrate --database "$url" >/dev/null 2>&1
  key=$("$bin" tenant create --name latency --test-mode --database "$url" 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["api_key"])')
  RUST_LOG=warn "$bin" serve --listen "127.0.0.1:$port" --database "$url" >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  echo -n "$bin ($kind): "
  python3 - "$key" "$port" <<'PY'
import http.client, json, statistics, sys, time

key, port = sys.argv[1], int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port)


def call(path, body, ctype="application/json"):
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    conn.request("POST", path, body=body, headers={"wb-key": key, "content-type": ctype})
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit(f"{path}: {r.status} {data[:300]!r}")
    return data


call("/v1/c/catalog", open("examples/catalog.yaml", "rb").read(), "application/yaml")
call("/v1/c/test_clock/advance", {"to": "2030-01-01T00:00:00Z"})
contract = json.loads(call("/v1/c/contract", {
    "customer": "acme", "plan": "basic", "currency": "usd", "cycle": "month",
    "unit_count_configuration": {"seats": "5"}}))
call("/v1/c/test_clock/advance", {"to": "2030-01-16T00:00:00Z"})
estimate = json.dumps({"upgrade_configuration": {
    "upgrade_strategy": "change_unit_count",
    "activation": {"type": "date", "upgrade_date": "2030-01-16T00:00:00Z"},
    "unit_count_configuration": {"seats": "8"}}})
path = f"/v1/c/contract/{contract}/upgrade_estimate"
for _ in range(300):
    call(path, estimate)
times = []
for _ in range(3000):
    start = time.perf_counter()
    call(path, estimate)
    times.append(time.perf_counter() - start)
times.sort()
print(f"median {statistics.median(times) * 1e6:.0f} us, p90 {times[len(times) * 9 // 10] * 1e6:.0f} us, "
      f"mean {statistics.mean(times) * 1e6:.0f} us")
PY
  kill "$server"
  wait "$server" 2>/dev/null || true
  rm -rf "$work"
  if [ "$kind" != sqlite ]; then psql -q "$pg/postgres" -c "DROP DATABASE $db"; fi
done
