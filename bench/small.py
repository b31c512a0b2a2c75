"""Small objects at a distance: gcs-sync against the floor with latency added at the Cloud Storage front.

    python -m bench.small [--n 40] [--warmup 5] [--latencies 0,20,50] [--size-kib 10] [--count 5]
                          [--s3-latency-ms MS] [--env NAME=VALUE ...]
    bench/run.sh small [same options]

For each added latency (ms per request at the rig's Cloud Storage front; S3 adds --s3-latency-ms
for both, 0 by default): a warm container copies fresh 10 KiB objects to two destinations through
``lambda_function.lambda_handler`` (an S3 notification per object), and the floor copies fresh
objects of the same size with the same credentials (``get_object``, then ``upload_from_string`` to
both buckets at once, in threads), interleaved ABBA in one driver process: median and p90 of
``--n`` events each. Then ``--count`` more objects each, one at a time, with the front's request
counts read before and after: the requests each makes per object, by kind.

Prints Markdown tables; asserts nothing. See bench/README.md.
"""

from __future__ import annotations

import argparse
import sys

from bench.distant import (
    KIB,
    SOURCE,
    DistantRig,
    common_arguments,
    median_and_p90,
    per_object,
    run,
)
from bench.run import progress, table, verdict

GOAL = 1.10  # issue 21: median <= 1.1x the floor


def measure(rig: DistantRig, args: argparse.Namespace) -> None:
    size = args.size_kib * KIB
    driver = rig.driver("small", function=True, floor=True)
    rows, counts_rows, goals = [], [], []
    for ms in args.latencies:
        rig.latency(ms)
        progress(f"{ms} ms added: {args.n} events each, interleaved")
        runs = driver.call("small", bucket=SOURCE, n=args.n, warmup=args.warmup, size=size)
        function, floor = median_and_p90(runs["function"]), median_and_p90(runs["floor"])
        ratio, ratio_p90 = function[0] / floor[0], function[1] / floor[1]

        progress(f"{ms} ms added: requests per object ({args.count} objects each)")
        keys = rig.put_objects(f"count/{ms}ms/", args.count, size)
        rig.reset_counts()
        for key in keys:
            driver.call("copy", bucket=SOURCE, key=key)
        ours = rig.counts()
        rig.reset_counts()
        for key in keys:
            driver.call("floor_small", bucket=SOURCE, key=key)
        theirs = rig.counts()

        rows.append([f"{ms}", f"{function[0] * 1e3:.1f}", f"{function[1] * 1e3:.1f}", f"{floor[0] * 1e3:.1f}",
                     f"{floor[1] * 1e3:.1f}", f"{ratio:.2f}x", f"{ratio_p90:.2f}x", verdict(ratio, GOAL),
                     f"{ours['total'] / args.count:.1f}", f"{theirs['total'] / args.count:.1f}"])
        counts_rows.append([f"{ms}", "gcs-sync", per_object(ours, args.count), f"{ours['writes'] / args.count:.1f}"])
        counts_rows.append(["", "floor", per_object(theirs, args.count), f"{theirs['writes'] / args.count:.1f}"])
        goals.append([f"small {args.size_kib} KiB -> 2 dest, {ms} ms added: median vs floor", f"<= {GOAL:.2f}x",
                      f"{ratio:.2f}x", verdict(ratio, GOAL)])
    rig.latency(0)

    table(f"Small objects at a distance: {args.size_kib} KiB to 2 destinations, warm, {args.n} events each "
          "(interleaved ABBA)",
          ["added ms", "gcs-sync median ms", "p90 ms", "floor median ms", "p90 ms", "ratio median",
           "ratio p90", f"goal <= {GOAL:.1f}x", "gcs-sync requests / object", "floor requests / object"], rows,
          note="added ms: every request to the Cloud Storage front waits that long before it is served (a\n"
               "round trip to Cloud Storage a region away; S3: --s3-latency-ms for both). Each event copies a\n"
               "fresh object, so every destination is really written. floor: get_object, then\n"
               "upload_from_string to both buckets at once (threads), same process, same credentials.\n"
               "requests / object: at the front, counted over separate copies one at a time (table below).")
    table("Requests per object at the Cloud Storage front, by kind",
          ["added ms", "who", "requests per object (by kind)", "object writes per object"], counts_rows,
          note="Counted by the front over --count objects copied one at a time after the timed runs (the\n"
               "function: one S3 notification each; the floor: one copy each). The token exchange goes to\n"
               "the STS / IAM stand-in, not to the front, and is not counted (warm: none).")
    table("Goals", ["figure", "goal", "measured", "verdict"], goals)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description="small objects at a distance (see bench/README.md)")
    parser.add_argument("--n", type=int, default=40, help="timed events per contender and latency (default 40)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed events first, per latency (default 5)")
    parser.add_argument("--latencies", default="0,20,50", help="ms added per request, comma-separated")
    parser.add_argument("--size-kib", type=int, default=10, help="object size in KiB (default 10)")
    parser.add_argument("--count", type=int, default=5, help="objects copied to count requests (default 5)")
    common_arguments(parser)
    args = parser.parse_args(argv)
    args.latencies = [int(x) for x in args.latencies.split(",") if x.strip()]
    run("gcs-sync benchmark: small objects at a distance", "bench.small", argv, args,
        lambda rig: measure(rig, args))


if __name__ == "__main__":
    main()
