#!/usr/bin/env bash
# Hub instructions per message under callgrind (counts instructions, not
# seconds: steady on a shared, busy machine). Runs BIN's hub under valgrind,
# drives it with BIN's own bench tool, and prints the hub's total Ir.
#
#   xtask/scripts/callgrind_hub.sh BIN TAG SCENARIO N [OUTDIR]
#
# Marginal cost per message = (Ir at N2 - Ir at N1) / (N2 - N1): run it twice
# (e.g. N=2000 and N=6000) so start-up and connection set-up cancel out.
# SHA-256 runs in software under valgrind (no SHA-NI), so totals exceed what the
# real CPU executes; compare binaries with each other, not with perf figures.
set -euo pipefail
BIN=$1; TAG=$2; SC=$3; N=$4; DIR=${5:-/tmp/link-callgrind}
mkdir -p "$DIR"
OUT=$DIR/$TAG-$SC-$N.out; LOG=$DIR/$TAG-$SC-$N.log
rm -f "$OUT" "$LOG"
valgrind --tool=callgrind --callgrind-out-file="$OUT" "$BIN" hub --bind 127.0.0.1:0 \
    --secret callgrind-secret >"$LOG" 2>&1 &
VPID=$!
for _ in $(seq 1 300); do grep -q "^listening=" "$LOG" && break; sleep 0.2; done
URL=$(grep -o "^listening=.*" "$LOG" | head -1 | cut -d= -f2)
"$BIN" bench -q --url "$URL" --secret callgrind-secret --scenario "$SC" -n "$N" --runs 1 \
    >"$DIR/$TAG-$SC-$N.bench" 2>&1
kill -INT "$VPID"; wait "$VPID" || true
IR=$(grep -E "^(summary|totals):" "$OUT" | head -1 | awk '{print $2}')
echo "$TAG $SC n=$N hub_Ir=$IR ($OUT; callgrind_annotate it)"
