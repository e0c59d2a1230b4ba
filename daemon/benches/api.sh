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
cargo build --release -p mpayd --bench api
bin=target/release/mpayd
gen=$(ls -t target/release/deps/api-* | grep -v '\.d$' | head -1)
data=.bench-api
admin=127.0.0.1:19490
api=127.0.0.1:19493
rm -rf "$data"

taskset -c 0 "$bin" demo --data-dir "$data" --traffic 0 --admin "$admin" \
  --station 127.0.0.1:19491 --api "$api" > "$data.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; wait 2>/dev/null' EXIT
until curl -sf "http://$admin/healthz" > /dev/null; do sleep 1; done
echo "store: $(curl -s "http://$admin/healthz")"

load() { taskset -c 1 "$gen" --target "http://$api" --connections "$conns" "$@"; }
load --scenario create --count "$count"
load --scenario lifecycle --count "$((count / 3))"
echo "RSS: $(grep VmRSS /proc/$daemon/status)"
