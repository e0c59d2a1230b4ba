#!/usr/bin/env bash
# Station load figures: the node simulator against mpayd (1M positions) and against a bare axum
# handler that returns a fixed SOAP body, side by side, on this machine.
#
#   daemon/benches/station.sh [positions] [connections]
#
# The daemon runs on CPU 0 and the load generator on CPU 1 (taskset), so they do not fight for
# the same core. Data go to ./.bench-station (kept between runs: the 1M-position demo store takes
# a few minutes to generate the first time).
set -euo pipefail
cd "$(dirname "$0")/../.."
positions=${1:-1000000}
conns=${2:-64}
cargo build --release -p mpayd
bin=target/release/mpayd
data=.bench-station
admin=127.0.0.1:19480
station=127.0.0.1:19481
bare=127.0.0.1:19482

taskset -c 0 "$bin" demo --data-dir "$data" --positions "$positions" --traffic 0 \
  --admin "$admin" --station "$station" > "$data.log" 2>&1 &
daemon=$!
taskset -c 0 "$bin" bare-station --listen "$bare" > /dev/null 2>&1 &
bare_pid=$!
trap 'kill $daemon $bare_pid 2>/dev/null; wait 2>/dev/null' EXIT
until curl -sf "http://$admin/healthz" > /dev/null; do sleep 1; done
echo "store: $(curl -s "http://$admin/healthz")"

sim() { taskset -c 1 "$bin" simulate --admin "http://$admin" --concurrency "$conns" "$@"; }
echo "== bare handler, verify"
sim --target "http://$bare/" --scenario verify --count 200000
# 100k distinct notices: far more than the position cache holds, as with national traffic.
echo "== mpayd, verify"
sim --target "http://$station/pagopa/paForNode" --scenario verify --count 200000 --notices 100000
echo "== mpayd, getPayment"
sim --target "http://$station/pagopa/paForNode" --scenario get-payment --count 200000 --notices 100000
echo "== mpayd, receipts (durable)"
sim --target "http://$station/pagopa/paForNode" --scenario send-rt --count 50000
echo "== mpayd, full payments with faults"
sim --target "http://$station/pagopa/paForNode" --scenario pay --count 20000 \
  --unknown-pct 3 --wrong-station-pct 1 --malformed-pct 1 --double-pct 2 --late-pct 2
echo "RSS: $(grep VmRSS /proc/$daemon/status)"
