#!/usr/bin/env bash
# Fuzzes the whole API from its own OpenAPI document with Schemathesis: a fresh server on a fresh
# SQLite file, a test-mode tenant with the example catalog, every operation, and the checks
# "no server error", "responses match the schema", "documented status codes and content types".
# Usage: scripts/schemathesis.sh [MAX_EXAMPLES]   (needs python3; installs schemathesis with pip)
# PROFILE=release uses the release build instead of the debug one.
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-40}"
command -v st >/dev/null || python3 -m pip install --quiet schemathesis
profile="${PROFILE:-debug}"
if [ "$profile" = release ]; then cargo build --quiet --release -p tally; else cargo build --quiet -p tally; fi
bin="$PWD/target/$profile/tally"
work="$(mktemp -d)"
port=18099
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
"$bin" serve --listen "127.0.0.1:$port" --database "sqlite://$work/tally.db" --bill-run-interval 0 >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
key=$("$bin" tenant create --name fuzz --test-mode --database "sqlite://$work/tally.db" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
curl -sf "http://127.0.0.1:$port/v1/c/catalog" -H "wb-key: $key" -H 'content-type: application/yaml' \
  --data-binary @examples/catalog.yaml >/dev/null
st run "http://127.0.0.1:$port/openapi.json" -H "wb-key: $key" -n "$examples" \
  -c not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance
