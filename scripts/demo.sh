#!/usr/bin/env bash
# The offline demo. Everything runs against local, simulated data: nothing touches the internet.
set -euo pipefail
cd "$(dirname "$0")/.."
export COLUMNS="${COLUMNS:-160}"
export SCHEMAHUB_HOME="${SCHEMAHUB_HOME:-.schemahub-demo}"
bin=.venv/bin
echo "== SchemaHub demo (warehouse: $SCHEMAHUB_HOME) =="
echo "NOTE: this demo is partial: it shows init, plugin discovery and a mapping dry run."
echo "      Ingest from the simulated venues, replay and live arrive with their issues."
echo
echo "== schemahub init =="
$bin/schemahub init
echo "== schemahub plugins list =="
$bin/schemahub plugins list
echo "== schemahub mappings validate =="
$bin/schemahub mappings validate
echo "== schemahub mappings dry-run binance.trades (sample aggTrades page, SIMULATED data) =="
$bin/schemahub mappings dry-run binance.trades examples/samples/binance_aggtrades.json
