#!/usr/bin/env python3
"""A/B two (or more) link-cli release builds in one invocation.

Alternates the binaries round by round, so both see the same machine load, and
prints the median of each throughput/p50 metric (and, with --child, the hub's
CPU µs per message) with its ratio to the first binary. Used for every before/after figure in docs/perf.md.

    cp target/release/link-cli /tmp/link-cli-before   # build, copy, change, build again
    python3 xtask/scripts/ab_bench.py /tmp/link-cli-before,target/release/link-cli \
        publish,send,rpc-conc,fanout 3 [extra link-cli bench flags...]

Pass a binary twice (a copy under another name) for an A/A control of the
machine's noise; add --child for the hub's CPU time per message.
"""
import json
import statistics
import subprocess
import sys

# Rates and latencies; with --child (or --hub-pid) also the hub's CPU time per
# unit of work, which a busy shared machine disturbs far less than the rates.
METRICS = ("msgs/s", "calls/s", "delivered/s", "p50 µs",
           "hub CPU µs/msg", "hub CPU µs/call", "hub CPU µs/delivery")


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    bins = sys.argv[1].split(",")
    scenarios = sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    extra = sys.argv[4:]
    values = {b: {} for b in bins}
    for _ in range(rounds):
        for b in bins:
            out = subprocess.run(
                [b, "bench", "-q", "--json", "--scenario", scenarios, *extra],
                capture_output=True, text=True, check=True,
            )
            for result in json.loads(out.stdout)["results"]:
                for m in result["metrics"]:
                    if m["name"] in METRICS or m["name"].startswith("hub CPU"):
                        key = f"{result['scenario']} {m['name']}"
                        values[b].setdefault(key, []).append(m["value"])
    for key in values[bins[0]]:
        meds = [statistics.median(values[b][key]) for b in bins]
        ratios = "".join(f"  x{v / meds[0]:.2f}" for v in meds[1:])
        fmt = "12.2f" if "CPU" in key else "12.0f"
        print(f"{key:28s}" + "".join(f"{v:{fmt}}" for v in meds) + ratios)


if __name__ == "__main__":
    main()
