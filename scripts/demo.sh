#!/usr/bin/env bash
# The offline demo: simulated venues on 127.0.0.1 -> raw Iceberg tables -> trades_unified -> replay.
# Nothing touches the internet; all market data here is SIMULATED.
set -euo pipefail
cd "$(dirname "$0")/.."
export COLUMNS="${COLUMNS:-160}"
export SCHEMAHUB_HOME="${SCHEMAHUB_HOME:-.schemahub-demo}"
bin=.venv/bin
port=$($bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
since="2024-02-08T15:11:00Z"
until="2024-02-08T15:14:00Z"

echo "== SchemaHub demo: SIMULATED venues on $base, warehouse in $SCHEMAHUB_HOME =="
rm -rf "$SCHEMAHUB_HOME"
$bin/schemahub sandbox --port "$port" > "$SCHEMAHUB_HOME.sandbox.log" 2>&1 &
sandbox=$!
trap 'kill $sandbox 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "$base/_sandbox/stats" >/dev/null 2>&1 && break; sleep 0.2; done
export SCHEMAHUB_BINANCE_BASE_URL="$base/binance" SCHEMAHUB_COINBASE_BASE_URL="$base/coinbase" \
       SCHEMAHUB_KRAKEN_BASE_URL="$base/kraken"
export SCHEMAHUB_LOAD_PLUGINS="binance,coinbase,kraken"

echo; echo "== schemahub plugins list =="
$bin/schemahub plugins list
echo; echo "== schemahub init =="
$bin/schemahub init
echo; echo "== schemahub run pipeline trades_unified ($since .. $until, the venues' real rate limits) =="
$bin/schemahub run pipeline trades_unified --since "$since" --until "$until"
echo; echo "== the same command again: nothing new lands, nothing is doubled =="
$bin/schemahub run pipeline trades_unified --since "$since" --until "$until"
echo; echo "== schemahub status =="
$bin/schemahub status
html="$SCHEMAHUB_HOME/replay-2024-02-08T151204Z.html"
echo; echo "== schemahub replay: the 12-second volatility event, tick by tick (SIMULATED) =="
$bin/schemahub replay --at 2024-02-08T15:12:04Z --window 12s --symbol BTC-USD --speed 0.5 --html "$html"
echo
echo "Replay page (slider and Play; opens offline): $(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
echo "In a browser, with Live quotes too: SCHEMAHUB_HOME=$SCHEMAHUB_HOME .venv/bin/schemahub serve --sandbox --at 2024-02-08T15:12:04Z"
