"""Wall time of `daskem demo`, the README's first command (issue 19).

Runs ``python -m daskem.cli demo`` (its defaults: 2,000,000 rows, a local
cluster of this machine's cores) a few times in a fresh temporary folder,
each a new process as a user would start it, and reports the wall time of
each run from start to exit (Python's start-up, writing the Zarr store,
starting the cluster, the fit, the sample and the plot), its iterations and
the largest distance between a true mean and the nearest fitted one.

Usage::

    python benchmarks/bench_demo.py --runs 5          # about 2 minutes on 2 cores
    python benchmarks/bench_demo.py --runs 1 -- --rows 20000000
"""

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_demo(extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "daskem.cli", "demo", *extra], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=600)
        seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"daskem demo failed ({proc.returncode}):\n{proc.stderr}")
    iterations = re.search(r"(converged|did not converge) after (\d+) iteration", proc.stdout)
    error = re.search(r"nearest fitted mean: ([\d.]+)", proc.stdout)
    dashboard = re.search(r"dashboard: (\S+)", proc.stderr)
    return {
        "seconds": seconds,
        "converged": iterations.group(1) == "converged",
        "n_iter": int(iterations.group(2)),
        "error": float(error.group(1)),
        "dashboard": dashboard.group(1) if dashboard else None,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("extra", nargs="*", help="options for daskem demo (after --)")
    args = p.parse_args(argv)
    load = os.getloadavg()
    when = datetime.datetime.now(datetime.timezone.utc)
    runs = []
    for i in range(args.runs):
        runs.append(run_demo(args.extra))
        r = runs[-1]
        print(f"run {i + 1}: {r['seconds']:.1f} s, {r['n_iter']} iterations, "
              f"{'converged' if r['converged'] else 'NOT converged'}, mean error {r['error']:.4f}, "
              f"dashboard {r['dashboard']}", flush=True)
    seconds = [r["seconds"] for r in runs]
    command = f"daskem demo {' '.join(args.extra)}".rstrip()
    print(f"\n{when:%Y-%m-%d %H:%M} UTC, `{command}`, {args.runs} runs, "
          f"load average at start {load[0]:.2f}: median {statistics.median(seconds):.1f} s "
          f"(min {min(seconds):.1f}, max {max(seconds):.1f}); iterations "
          f"{sorted({r['n_iter'] for r in runs})}; largest mean error {max(r['error'] for r in runs):.4f}")


if __name__ == "__main__":
    sys.exit(main())
