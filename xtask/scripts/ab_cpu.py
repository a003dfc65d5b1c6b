#!/usr/bin/env python3
"""CPU per delivered fan-out message, two (or more) link-cli builds alternated.

Runs `link-cli bench --scenario fanout -n N` under `perf stat -e task-clock`,
round by round with the order of the binaries reversed every other round, and
prints the median CPU time of the whole process (hub, 100 subscribers and the
publisher) per delivered message, and the median rate. CPU time is steadier
than a rate on a shared machine; used for the per-step figures in
docs/perf.md.

    python3 xtask/scripts/ab_cpu.py /tmp/link-cli-before,target/release/link-cli 12 [N] [flags...]
"""
import re
import statistics
import subprocess
import sys


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    bins = sys.argv[1].split(",")
    rounds = int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
    extra = sys.argv[4:]
    subscribers = 100
    if "--subscribers" in extra:
        subscribers = int(extra[extra.index("--subscribers") + 1])
    cpu = {b: [] for b in bins}
    rate = {b: [] for b in bins}
    for r in range(rounds):
        for b in bins if r % 2 == 0 else bins[::-1]:
            out = subprocess.run(
                ["perf", "stat", "-x,", "-e", "task-clock", b, "bench", "-q", "--runs", "1",
                 "--peer-updates", "off", "--scenario", "fanout", "-n", str(n), *extra],
                capture_output=True, text=True, check=True,
            )
            line = next(l for l in out.stderr.splitlines() if "task-clock" in l)
            ms = float(line.split(",")[0])
            cpu[b].append(ms * 1000 / (n * subscribers))
            found = re.search(r"delivered/s\s+([\d ]+)", out.stdout)
            rate[b].append(float(found.group(1).replace(" ", "")) if found else 0.0)
    for b in bins:
        runs = " ".join(f"{x:.2f}" for x in cpu[b])
        print(f"{b}: {statistics.median(cpu[b]):.3f} µs CPU per delivery ({runs}); "
              f"median {statistics.median(rate[b]):.0f} delivered/s")
    base_cpu, base_rate = statistics.median(cpu[bins[0]]), statistics.median(rate[bins[0]])
    for b in bins[1:]:
        print(f"{b} vs {bins[0]}: CPU x{statistics.median(cpu[b]) / base_cpu:.3f}, "
              f"rate x{statistics.median(rate[b]) / base_rate:.3f}")


if __name__ == "__main__":
    main()
