"""Side-by-side benchmark harness: each library runs in its own process per thread count, case by case in turn.

A benchmark script defines CASES (dicts with a unique "name" and "flops", "bytes" or "images"), one runner per side
`run_<side>(case, threads) -> seconds | harness.measure(...)`, and calls
`harness.main(CASES, sides={"convcore": run_convcore, "torch": run_torch}, metric="GFLOP/s")`.
The parent starts one worker process per side (setting OMP/MKL/OpenBLAS thread variables for each) and has the
workers measure each case in turn, `--rounds` times, alternating which side goes first; before each measurement it
waits until the side measured last has stopped using the CPU (OpenBLAS's threads spin ~0.1 s after a call, ONNX
Runtime's ~0.02 s: a 2-thread product measured in that time ran 60-100x slower). The machines these run on are
shared: a core's speed changes from minute to minute, by up to 2x, so a case's two sides are measured back to back
(seconds apart), and each ratio (peer time / convcore time, so > 1 means convcore is faster) is the median over
rounds of the ratio of the times measured together.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Benchmark the checkout's own build (scripts/dev-build.sh puts _core*.so into convcore/) when there is one;
# otherwise the installed convcore is used.
ROOT = Path(__file__).resolve().parent.parent
if any((ROOT / "convcore").glob("_core*.so")):
    sys.path.insert(0, str(ROOT))

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# A row whose sides' rounds differ by more than this factor (slowest / fastest) is flagged as unsteady.
UNSTEADY_FACTOR = 1.5


def median_time(fn, warmup: int = 2, repeat: int = 7, min_seconds: float = 0.2, max_repeat: int = 1000,
                warmup_seconds: float = 0.05) -> float:
    """Median wall time of fn() after warm-up: at least `warmup` calls and `warmup_seconds` (a library's first
    hundred calls of a few microseconds each can run 1.5x slower than its steady state: caches, branch predictors,
    clock ramp), then at least `repeat` timed calls, more (up to `max_repeat`) until `min_seconds` have passed."""
    start = time.perf_counter()
    done = 0
    while done < warmup or (warmup and time.perf_counter() - start < warmup_seconds):
        fn()
        done += 1
    times = []
    start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start < min_seconds and len(times) < max_repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def thread_halvings(threads: int) -> list[int]:
    """The counts a convcore ThreadChoice picks from for a setting of `threads`: it, its halvings, down to 1."""
    counts = [threads]
    while counts[-1] > 1:
        counts.append(counts[-1] // 2)
    return counts


def fastest_of_halvings(threads: int, measure_at) -> dict:
    """A peer's result at its fastest of thread_halvings(threads), measure_at(count) -> measure(...)'s dict, with
    the count in "threads": the choice a convcore side running under a ThreadChoice (a frozen model, fit's steps)
    makes for itself, given to the peer too."""
    results = []
    for count in thread_halvings(threads):
        result = measure_at(count)
        results.append(dict(result, threads=count) if isinstance(result, dict) else
                       {"seconds": result, "peak_bytes": None, "threads": count})
    return min(results, key=lambda r: r["seconds"])


def _read_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def peak_extra_bytes(fn) -> int | None:
    """Peak resident memory one call of fn() adds above the current resident size (Linux; None elsewhere).

    Resets the kernel's high-water mark (/proc/self/clear_refs), so allocations made in C++ count too. convcore
    keeps freed outputs for reuse (its buffer cache), which would hide what the call needs: the cache is emptied
    and off for the call.
    """
    convcore = sys.modules.get("convcore")
    limit = convcore.buffer_cache_info()["limit_bytes"] if convcore else None
    if convcore:
        convcore.set_buffer_cache_limit(0)  # before the reset: the memory it frees must not stay in the high-water mark
    try:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return None
        base = _read_kib("VmRSS:")
        fn()
        return max(0, _read_kib("VmHWM:") - base) * 1024
    finally:
        if convcore:
            convcore.set_buffer_cache_limit(limit)


def measure(fn, **kw) -> dict:
    """Median time and peak extra memory of fn()."""
    seconds = median_time(fn, **kw)
    return {"seconds": seconds, "peak_bytes": peak_extra_bytes(fn)}


def _serve(cases, runner, threads):
    """A worker: measures the case named on each line of stdin, answers one JSON line on stdout. Anything the
    libraries print goes to stderr instead, so that it cannot be taken for an answer."""
    by_name = {case["name"]: case for case in cases}
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    for line in sys.stdin:
        r = runner(by_name[line.rstrip("\n")], threads)
        answers.write(json.dumps(r if isinstance(r, dict) else {"seconds": r, "peak_bytes": None}) + "\n")
        answers.flush()


class _Worker:
    """One side's worker process for one thread count."""

    def __init__(self, script_args, side, threads):
        env = dict(os.environ)
        for var in THREAD_VARS:
            env[var] = str(threads)
        self.side = side
        self.errors = tempfile.TemporaryFile(mode="w+")
        cmd = [sys.executable, sys.argv[0], *script_args, "--side", side, "--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.errors, text=True)

    def measure(self, name):
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            self.proc.wait()
            self.errors.seek(0)
            raise RuntimeError(f"benchmark side {self.side!r} failed on {name!r}:\n{self.errors.read()[-3000:]}")
        return json.loads(answer)

    def _cpu_ticks(self):
        """The worker's CPU time so far (all its threads), in clock ticks; None where /proc has no such file."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            return None

    def wait_idle(self, timeout: float = 1.0):
        """Returns once the worker's threads have used no CPU for 30 ms (or after timeout seconds): a library's pool
        spinning after its last call would take a core from the next side's measurement."""
        end = time.monotonic() + timeout
        before = self._cpu_ticks()
        while before is not None and time.monotonic() < end:
            time.sleep(0.03)
            now = self._cpu_ticks()
            if now == before:
                return
            before = now
        if before is None:
            time.sleep(0.15)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()
        self.errors.close()


def _fmt_metric(case, seconds, metric):
    if not seconds:
        return "-"
    if metric == "GFLOP/s":
        return f"{case['flops'] / seconds / 1e9:8.1f}"
    if metric == "img/s":
        return f"{case['images'] / seconds:8.0f}"
    return f"{case['bytes'] / seconds / 1e9:8.2f}"


def main(cases, sides: dict, metric: str = "GFLOP/s", argv=None, default_sides=None):
    """Run the sides (default_sides, or all) for all cases at each thread count and print the table; returns the
    results: {(case name, threads): {side: {"seconds", "round_seconds", "peak_bytes"}, for the peers "ratio", and for
    a side measured by fastest_of_halvings "round_threads"}}."""
    parser = argparse.ArgumentParser(description=(sys.modules["__main__"].__doc__ or "").strip().splitlines()[0]
                                     if sys.modules["__main__"].__doc__ else None)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements of each case per side, the sides back to back (default 3)")
    parser.add_argument("--filter", default="", help="only cases whose name contains this text")
    parser.add_argument("--sides", default=",".join(default_sides or sides),
                        help=f"which sides to run, of {', '.join(sides)} (default {', '.join(default_sides or sides)})")
    parser.add_argument("--json", default="", help="also write the results to this JSON file")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    selected = [c for c in cases if args.filter in c["name"]]
    thread_counts = [int(t) for t in args.threads.split(",")]

    if args.side:
        _serve(selected, sides[args.side], thread_counts[0])
        return None

    side_names = [s for s in args.sides.split(",") if s]
    unknown = [s for s in side_names if s not in sides]
    if unknown:
        parser.error(f"--sides names unknown side(s) {unknown}; known: {list(sides)}")
    script_args = [a for a in (argv if argv is not None else sys.argv[1:])]
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    table = {}
    for threads in thread_counts:
        workers = {}
        try:
            for side in side_names:
                workers[side] = _Worker(script_args, side, threads)
            last = None  # the side measured last (in this case or the one before)
            for case in selected:
                runs = {s: [] for s in side_names}
                for rnd in range(args.rounds):
                    for side in side_names if rnd % 2 == 0 else side_names[::-1]:
                        if last is not None:
                            workers[last].wait_idle()
                        runs[side].append(workers[side].measure(case["name"]))
                        last = side
                row = {}
                for side in side_names:
                    peaks = [r["peak_bytes"] for r in runs[side]]
                    row[side] = {"seconds": statistics.median(r["seconds"] for r in runs[side]),
                                 "round_seconds": [r["seconds"] for r in runs[side]],
                                 "peak_bytes": max(peaks) if all(p is not None for p in peaks) else None}
                    if any("threads" in r for r in runs[side]):  # fastest_of_halvings's choices
                        row[side]["round_threads"] = [r.get("threads") for r in runs[side]]
                base_rounds = row[side_names[0]]["round_seconds"]
                for side in side_names[1:]:  # the peers' ratios, paired round by round
                    paired = [t / u for t, u in zip(row[side]["round_seconds"], base_rounds) if u]
                    row[side]["ratio"] = statistics.median(paired) if paired else float("nan")
                table[(case["name"], threads)] = row
        finally:
            for worker in workers.values():
                worker.close()

    base = side_names[0]
    peers = side_names[1:]
    header = f"{'case':38s} {'thr':>3s} {base + ' ms':>12s} {metric:>9s} {'peak MB':>8s}"
    for p in peers:
        header += f" {p + ' ms':>12s} {metric:>9s} {'ratio':>6s}"
    print(header)
    print("-" * len(header))
    ratios = {p: {t: [] for t in thread_counts} for p in peers}
    unsteady = 0
    for case in selected:
        for threads in thread_counts:
            row = table[(case["name"], threads)]
            b = row[base]
            peak = f"{b['peak_bytes'] / 2**20:8.1f}" if b["peak_bytes"] is not None else f"{'-':>8s}"
            line = f"{case['name']:38s} {threads:3d} {b['seconds'] * 1e3:12.3f} {_fmt_metric(case, b['seconds'], metric):>9s} {peak}"
            for p in peers:
                s, ratio = row[p]["seconds"], row[p]["ratio"]
                ratios[p][threads].append(ratio)
                line += f" {s * 1e3:12.3f} {_fmt_metric(case, s, metric):>9s} {ratio:6.2f}"
            if any(max(r["round_seconds"]) > UNSTEADY_FACTOR * min(r["round_seconds"]) for r in row.values()):
                line += " *"
                unsteady += 1
            print(line)
    for p in peers:
        for threads in thread_counts:
            rs = [r for r in ratios[p][threads] if r == r and r > 0]
            if rs:
                gmean = statistics.geometric_mean(rs)
                print(f"geometric mean ratio vs {p}, {threads} thread(s): {gmean:.2f} (min {min(rs):.2f})")
    if peers:
        print(f"(ratio = {', '.join(peers)} time / {base} time, the median over {args.rounds} rounds of the times "
              f"measured back to back; each side in its own process, medians of warm runs)")
    if unsteady:
        print(f"* {unsteady} row(s) where a side's rounds differed by more than {UNSTEADY_FACTOR}x: load from outside "
              f"(another process on these cores) can do that; rerun them (--filter) before trusting their figures")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{k[0]}@{k[1]}": v for k, v in table.items()}, f, indent=1)
    return table
