"""The headline per-iteration case, two daskem source trees against each other.

Used to check that a change leaves the EM iteration as fast as it was: the
full-covariance headline case of bench_em.py (1,000,000 x 16, K=16, float64,
20 row chunks, identical starting parameters, tol=0) is fitted by a child
process per tree, the trees alternating A B B A ... for ``--rounds`` rounds,
so that both see the same machine. Each fit reports the median of its
``iteration_seconds_``; the report gives, per round, both medians and their
ratio, and the median ratio over the rounds.

Usage::

    git worktree add /tmp/daskem-before <commit>       # the tree to compare with
    python benchmarks/bench_versions.py --before /tmp/daskem-before --after . --rounds 6

Each child imports daskem from the tree it is given (PYTHONPATH), and this
folder's bench_em.py for the data and starting parameters.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def child(args):
    import warnings

    import dask.array as da

    sys.path.insert(0, HERE)
    from bench_em import make_data, starting_parameters

    import daskem
    from daskem import GaussianMixture

    X = make_data(args.n, args.d, args.k, "float64")
    init = starting_parameters(X, args.covariance_type, args.k)
    Xd = da.from_array(X, chunks=(-(-args.n // args.chunks), args.d))
    gm = GaussianMixture(args.k, covariance_type=args.covariance_type, max_iter=args.iters, tol=0,
                         random_state=0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(Xd)
    print(json.dumps({
        "daskem": os.path.dirname(daskem.__file__),
        "seconds": statistics.median(gm.iteration_seconds_[1:]),
        "lower_bound": gm.lower_bound_,
    }))


def run_tree(tree, args):
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    cmd = [sys.executable, os.path.abspath(__file__), "--child",
           "--n", str(args.n), "--d", str(args.d), "--k", str(args.k), "--chunks", str(args.chunks),
           "--iters", str(args.iters), "--covariance-type", args.covariance_type]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.abspath(tree)).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if not result["daskem"].startswith(os.path.abspath(tree)):
        raise RuntimeError(f"the child ran daskem from {result['daskem']}, not from {tree}")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", help="source tree A (the reference)")
    p.add_argument("--after", default=".", help="source tree B")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=16)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--iters", type=int, default=6, help="EM iterations per fit (the first is left out)")
    p.add_argument("--covariance-type", default="full")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    if not args.before:
        p.error("--before is required")
    rows = []
    for r in range(args.rounds):
        order = ("before", "after") if r % 2 == 0 else ("after", "before")
        got = {}
        for which in order:
            got[which] = run_tree(getattr(args, which), args)
        ratio = got["after"]["seconds"] / got["before"]["seconds"]
        rows.append((r + 1, got["before"]["seconds"], got["after"]["seconds"], ratio,
                     abs(got["after"]["lower_bound"] - got["before"]["lower_bound"])))
        print(f"round {r + 1}: before {rows[-1][1]:.4f} s, after {rows[-1][2]:.4f} s, "
              f"ratio {ratio:.3f}", file=sys.stderr, flush=True)
    load = os.getloadavg()[0]
    print(f"Headline case ({args.covariance_type}, {args.n:,} x {args.d}, K={args.k}, "
          f"{args.chunks} chunks, float64), seconds per EM iteration (median of iterations "
          f"2..{args.iters} of each fit); {time.strftime('%Y-%m-%d %H:%M')}, load {load:.2f}.\n")
    print("| round | before (s) | after (s) | after / before | final lower bounds differ by |")
    print("|---|---|---|---|---|")
    for r, b, a, ratio, diff in rows:
        print(f"| {r} | {b:.4f} | {a:.4f} | {ratio:.3f} | {diff:.1e} |")
    print(f"\nMedian before {statistics.median(r[1] for r in rows):.4f} s, after "
          f"{statistics.median(r[2] for r in rows):.4f} s; median ratio after/before "
          f"**{statistics.median(r[3] for r in rows):.3f}**.")


if __name__ == "__main__":
    main()
