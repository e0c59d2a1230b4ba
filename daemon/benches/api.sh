#!/usr/bin/env bash
# REST API write figures: the API load generator against a demo mpayd, durable writes over
# keep-alive connections.
#
#   daemon/benches/api.sh [connections] [count]
#
# The daemon runs on CPU 0 and the load generator on CPU 1 (taskset). Data go to ./.bench-api,
# removed at the start of each run.
set -euo pipefail
cd "$(dirname "$0")/../.."
conns=${1:-32}
count=${2:-20000}
# The binaries where cargo puts them (CARGO_TARGET_DIR and all).
executable() { sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1; }
bin=$(cargo build --release -p mpayd --bin mpayd --message-format=json | executable)
gen=$(cargo build --release -p mpayd --bench api --message-format=json | executable)
data=.bench-api
rm -rf "$data" "$data.ready"

# Listeners on free ports (the demo writes them to its ready file): never somebody else's daemon.
taskset -c 0 "$bin" demo --data-dir "$data" --traffic 0 --admin 127.0.0.1:0 \
  --station 127.0.0.1:0 --api 127.0.0.1:0 --ready-file "$data.ready" > "$data.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait 2>/dev/null' EXIT
until [ -s "$data.ready" ]; do
  kill -0 $daemon 2>/dev/null || { cat "$data.log"; exit 1; }
  sleep 1
done
address() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" "$data.ready"; }
admin=$(address admin)
api=$(address api)
echo "store: $(curl -s "http://$admin/healthz")"

load() { taskset -c 1 "$gen" --target "http://$api" --connections "$conns" "$@"; }
load --scenario create --count "$count"
load --scenario lifecycle --count "$((count / 3))"
echo "RSS: $(grep VmRSS /proc/$daemon/status)"
