"""Benchmark harness: tap-events against a bare requests + orjson loop, in the same run.

    python -m benchmarks.run                       # 200k events, 0 and 50 ms per page, 3 reps
    python -m benchmarks.run --events 20000 --reps 1 --latency 0
    python -m benchmarks.run --memory              # peak RSS at 100k and 1M events
    python -m benchmarks.run --together            # all APIs in one run vs the slowest alone
    python -m benchmarks.run --pipeline --apis box  # meltano run vs bare loop into the target

For each per-page latency it starts the emulator in its own process, then for each API runs
(a) `benchmarks/bare_loops.py` (the least code that reads the API and prints RECORD lines) and
(b) `tap-events` selected to the same stream, both to /dev/null, alternating, `--reps` times.
It reports the median events/s, CPU seconds and peak RSS of each, and the ratio tap / bare.
Results are written as JSON to benchmarks/results/ so runs can be compared.

The emulator keeps its answers to repeated requests (`--response-cache-mb`) and each API is
read once before measuring, so the runners are timed against pages served from memory: the
ratio measures the tap, not the emulator generating events in Python. Alpaca's SSE replay is
generated afresh for every request (its `until` bound is "now"), so Alpaca runs are bound by
the emulator. `--together` also runs the tap once over every API's stream (one process per
API, `parallel_apis`) and compares its wall time with the slowest API alone.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.bare_loops import LOOPS
from tap_events_emulator import box, tap_config

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PYTHON = sys.executable
#: Emulator answers kept for repeated requests: every page of a run at 200k events per API.
CACHE_MB = 4096


@dataclass
class Measurement:
    api: str
    runner: str
    latency_ms: float
    events: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def emulator(events: int, latency_ms: float) -> t.Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [PYTHON, "-m", "tap_events_emulator.cli", "--port", str(port), "--events", str(events),
         "--latency-ms", str(latency_ms), "--response-cache-mb", str(CACHE_MB)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/_emulator/box/stats", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def stream_counts(url: str, api: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/_emulator/{api}/stats", timeout=10) as response:
        return json.load(response)["streams"]


def measured(command: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of one process writing to /dev/null."""
    started = time.perf_counter()
    # The log goes to a file: a pipe read only at the end would fill up and stall the tap.
    with open(os.devnull, "wb") as sink, tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=sink, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        log.seek(0)
        stderr = log.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{stderr[-2000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def catalog_for(config_path: Path, streams: set[str], folder: Path) -> Path:
    out = subprocess.run([PYTHON, "-m", "tap_events", "--config", str(config_path),
                          "--discover"], capture_output=True, check=True, text=True)
    catalog = json.loads(out.stdout)
    for entry in catalog["streams"]:
        for item in entry["metadata"]:
            if item["breadcrumb"] == []:
                item["metadata"]["selected"] = entry["tap_stream_id"] in streams
    path = folder / f"catalog-{'-'.join(sorted(streams))}.json"
    path.write_text(json.dumps(catalog))
    return path


def benchmark_config(url: str) -> dict[str, t.Any]:
    """The emulator's tap config, Box with its fixed developer token: minted tokens differ
    per run, which would keep the emulator from serving a page again from memory."""
    config = tap_config(url)
    config["box"] = {"api_url": config["box"]["api_url"], "access_token": box.DEVELOPER_TOKEN}
    return config


def bench_api(api: str, url: str, latency: float, reps: int, folder: Path) -> list[Measurement]:
    loop = LOOPS[api]
    config_path = folder / "config.json"
    config_path.write_text(json.dumps(benchmark_config(url)))
    catalog = catalog_for(config_path, {loop.stream}, folder)
    events = stream_counts(url, api)[loop.stream]
    commands = {
        "bare": [PYTHON, str(ROOT / "benchmarks" / "bare_loops.py"), api, str(config_path)],
        "tap": [PYTHON, "-m", "tap_events", "--config", str(config_path),
                "--catalog", str(catalog)],
    }
    measured(commands["bare"])  # warm-up: the emulator now serves these pages from memory
    results = []
    for _ in range(reps):
        for runner, command in commands.items():
            seconds, cpu, rss = measured(command)
            results.append(Measurement(api, runner, latency, events, seconds, cpu, rss))
    return results


def bench_together(apis: list[str], url: str, latency: float, reps: int,
                   folder: Path) -> list[Measurement]:
    """The tap over every API's stream in one run (one process per API)."""
    config_path = folder / "config.json"
    config_path.write_text(json.dumps(benchmark_config(url)))
    catalog = catalog_for(config_path, {LOOPS[api].stream for api in apis}, folder)
    counts = {api: stream_counts(url, api)[LOOPS[api].stream] for api in apis}
    command = [PYTHON, "-m", "tap_events", "--config", str(config_path),
               "--catalog", str(catalog)]
    results = []
    for _ in range(reps):
        # CPU and RSS of the parent; the children run the APIs.
        seconds, cpu, rss = measured(command)
        results.append(Measurement("all", "tap", latency, sum(counts.values()), seconds, cpu,
                                   rss))
    return results


def together_report(results: list[Measurement]) -> list[dict[str, t.Any]]:
    rows = []
    for latency in dict.fromkeys(r.latency_ms for r in results):
        alone = {
            r.api: statistics.median(x.seconds for x in results if x.api == r.api
                                     and x.runner == "tap" and x.latency_ms == latency)
            for r in results if r.api != "all" and r.latency_ms == latency
        }
        together = statistics.median(r.seconds for r in results
                                     if r.api == "all" and r.latency_ms == latency)
        slowest = max(alone, key=alone.get)  # type: ignore[arg-type]
        ratio = together / alone[slowest]
        rows.append({"latency_ms": latency, "together_seconds": together,
                     "alone_seconds": alone, "slowest": slowest, "ratio": ratio})
        print(f"all APIs together at {latency:.0f} ms/page: {together:.1f} s; slowest alone "
              f"({slowest}) {alone[slowest]:.1f} s; sum alone {sum(alone.values()):.1f} s; "
              f"together / slowest {ratio:.2f}")
    return rows


def median_of(results: list[Measurement], **match: t.Any) -> dict[str, float]:
    chosen = [r for r in results if all(getattr(r, k) == v for k, v in match.items())]
    return {
        "events_per_second": statistics.median(r.events_per_second for r in chosen),
        "cpu_seconds": statistics.median(r.cpu_seconds for r in chosen),
        "peak_rss_mb": max(r.peak_rss_mb for r in chosen),
        "events": chosen[0].events,
    }


def report(results: list[Measurement]) -> list[dict[str, t.Any]]:
    rows = []
    results = [r for r in results if r.api != "all"]
    print(f"\n{'API':<8} {'latency':>8} {'events':>8} {'bare ev/s':>10} {'tap ev/s':>10} "
          f"{'tap/bare':>8} {'bare CPU s':>10} {'tap CPU s':>9} {'tap RSS MB':>10}")
    for api, latency in dict.fromkeys((r.api, r.latency_ms) for r in results):
        bare = median_of(results, api=api, latency_ms=latency, runner="bare")
        tap = median_of(results, api=api, latency_ms=latency, runner="tap")
        ratio = tap["events_per_second"] / bare["events_per_second"]
        rows.append({"api": api, "latency_ms": latency, "bare": bare, "tap": tap,
                     "ratio": ratio})
        print(f"{api:<8} {latency:>6.0f}ms {tap['events']:>8} "
              f"{bare['events_per_second']:>10,.0f} {tap['events_per_second']:>10,.0f} "
              f"{ratio:>8.2f} {bare['cpu_seconds']:>10.1f} {tap['cpu_seconds']:>9.1f} "
              f"{tap['peak_rss_mb']:>10.0f}")
    return rows


def memory_growth(apis: list[str], small: int, large: int) -> list[dict[str, t.Any]]:
    """Peak RSS of the tap at `small` and at `large` events, per API (0 ms latency)."""
    rows = []
    for api in apis:
        peaks = {}
        for events in (small, large):
            with emulator(events, 0) as url, tempfile.TemporaryDirectory() as tmp:
                result = bench_api(api, url, 0, 1, Path(tmp))
                peaks[events] = next(r.peak_rss_mb for r in result if r.runner == "tap")
        growth = peaks[large] / peaks[small] - 1
        rows.append({"api": api, "rss_mb": peaks, "growth": growth})
        print(f"{api:<8} peak RSS {peaks[small]:.0f} MB at {small:,} events, "
              f"{peaks[large]:.0f} MB at {large:,}: {growth:+.1%}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int,
                        help="events per API (default 200k; 50k with --pipeline)")
    parser.add_argument("--latency", default="0,50", help="per-page latencies in ms")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each runner")
    parser.add_argument("--apis", default=",".join(LOOPS), help="APIs to measure")
    parser.add_argument("--together", action="store_true",
                        help="also run every API's stream in one tap run")
    parser.add_argument("--memory", action="store_true",
                        help="measure peak RSS at 100k and 1M events instead")
    parser.add_argument("--pipeline", action="store_true",
                        help="measure meltano run tap-events target-postgres against the bare "
                             "loop piped into the same target instead (0 ms)")
    args = parser.parse_args(argv)
    apis = [a for a in args.apis.split(",") if a]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    if args.memory:
        output = {"memory": memory_growth(apis, 100_000, 1_000_000)}
    elif args.pipeline:
        from benchmarks.pipeline import bench_pipeline

        args.events = args.events or 50_000
        output = {"pipeline": bench_pipeline(apis, args.events, args.reps)}
    else:
        args.events = args.events or 200_000
        results: list[Measurement] = []
        for latency in (float(x) for x in args.latency.split(",")):
            with emulator(args.events, latency) as url, tempfile.TemporaryDirectory() as tmp:
                for api in apis:
                    print(f"measuring {api} at {latency:.0f} ms/page ...", file=sys.stderr)
                    results += bench_api(api, url, latency, args.reps, Path(tmp))
                if args.together:
                    print(f"measuring all APIs together at {latency:.0f} ms/page ...",
                          file=sys.stderr)
                    results += bench_together(apis, url, latency, args.reps, Path(tmp))
        output = {"runs": [asdict(r) for r in results], "summary": report(results)}
        if args.together:
            output["together"] = together_report(results)
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps({"args": vars(args), **output}, indent=2))
    print(f"\nresults: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
