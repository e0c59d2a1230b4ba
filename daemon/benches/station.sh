#!/usr/bin/env bash
# Station load figures: the node simulator against mpayd (1M positions) and against a bare axum
# handler that returns a fixed SOAP body, side by side, on this machine.
#
#   daemon/benches/station.sh [positions] [connections]
#   MPAY_STORE_ENGINE=fjall daemon/benches/station.sh     # the same on fjall
#
# The daemon runs on CPU 0 and the load generator on CPU 1 (taskset), so they do not fight for
# the same core. Data go to ./.bench-station-ENGINE-POSITIONS (kept between runs: the
# 1M-position demo store takes a few minutes to generate the first time). The daemon's RSS is
# sampled every second into ./.bench-station-ENGINE-POSITIONS.rss (seconds since start, phase,
# RSS in MiB) and summed up per phase.
set -euo pipefail
cd "$(dirname "$0")/../.."
positions=${1:-1000000}
conns=${2:-64}
# The binary where cargo puts it (CARGO_TARGET_DIR and all).
bin=$(cargo build --release -p mpayd --bin mpayd --message-format=json |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
engine=${MPAY_STORE_ENGINE:-sled}
export MPAY_STORE_ENGINE=$engine
data=.bench-station-$engine-$positions

# Every listener on a free port of the kernel's choosing, so that the run never drives somebody
# else's daemon: the demo writes its addresses to a ready file, the bare handler prints its own.
rm -f "$data.ready"
taskset -c 0 "$bin" demo --data-dir "$data" --positions "$positions" --traffic 0 \
  --admin 127.0.0.1:0 --station 127.0.0.1:0 --api 127.0.0.1:0 --ready-file "$data.ready" \
  > "$data.log" 2>&1 &
daemon=$!
taskset -c 0 "$bin" bare-station --listen 127.0.0.1:0 > "$data.bare" 2>&1 &
bare_pid=$!
trap 'kill $daemon $bare_pid 2>/dev/null; wait 2>/dev/null' EXIT
until [ -s "$data.ready" ]; do
  kill -0 $daemon 2>/dev/null || { cat "$data.log"; exit 1; }
  sleep 1
done
address() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" "$data.ready"; }
admin=$(address admin)
station=$(address station)
until grep -q "bare station on" "$data.bare"; do sleep 0.2; done
bare=$(sed -n 's|bare station on http://||p' "$data.bare")
echo "store ($engine): $(curl -s "http://$admin/healthz")"
# Receipts pay one notice each: on a small store, pay at most a fifth of its notices per step.
all=$(curl -s "http://$admin/healthz" | sed -n 's/.*"positions":\([0-9]*\).*/\1/p')
cap() { local most=$((all / 5)); echo $(($1 < most ? $1 : most)); }

# RSS once a second, labelled with the phase running.
: > "$data.rss"
rm -f "$data.phase"
(
  t=0
  while kill -0 $daemon 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print int($2/1024)}' /proc/$daemon/status 2>/dev/null || echo 0)
    echo "$t $(cat "$data.phase" 2>/dev/null || echo start) $rss" >> "$data.rss"
    sleep 1
    t=$((t + 1))
  done
) &
sampler=$!
trap 'kill $daemon $bare_pid $sampler 2>/dev/null; wait 2>/dev/null' EXIT
mark() { echo "$1" > "$data.phase"; }
rss_of() {
  awk -v p="$1" '$2 == p { n++; s[n] = $3; if (min == "" || $3 < min) min = $3; if ($3 > max) max = $3 }
    END { if (n) printf "RSS during %s: first %d, min %d, max %d, last %d MiB over %d s\n", p, s[1], min, max, s[n], n }' "$data.rss"
}

sim() { taskset -c 1 "$bin" simulate --admin "http://$admin" --concurrency "$conns" "$@"; }
echo "== bare handler, verify"
sim --target "http://$bare/" --scenario verify --count 200000
# 100k distinct notices: far more than the position cache holds, as with national traffic.
echo "== mpayd, verify"
sim --target "http://$station/pagopa/paForNode" --scenario verify --count 200000 --notices 100000
echo "== mpayd, getPayment"
sim --target "http://$station/pagopa/paForNode" --scenario get-payment --count 200000 --notices 100000
echo "== mpayd, receipts (durable)"
sim --target "http://$station/pagopa/paForNode" --scenario send-rt --count "$(cap 50000)"
echo "== mpayd, full payments with faults"
sim --target "http://$station/pagopa/paForNode" --scenario pay --count "$(cap 20000)" \
  --unknown-pct 3 --wrong-station-pct 1 --malformed-pct 1 --double-pct 2 --late-pct 2
echo "RSS: $(grep VmRSS /proc/$daemon/status)"

# Memory under service load: 1M requests over every notice of the store, verify, getPayment and
# receipts in turn. The RSS must stay flat once warm (see the .rss file for the curve).
mark warm-verify
sim --target "http://$station/pagopa/paForNode" --scenario verify --count 400000 --notices "$all"
mark warm-get-payment
sim --target "http://$station/pagopa/paForNode" --scenario get-payment --count 400000 --notices "$all"
mark warm-receipts
sim --target "http://$station/pagopa/paForNode" --scenario send-rt --count "$(cap 200000)"
mark end
for p in warm-verify warm-get-payment warm-receipts; do rss_of $p; done
