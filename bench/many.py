"""Many small objects: one warm container's SQS batch against rclone, with latency added at the Cloud
Storage front.

    python -m bench.many [--objects 100] [--per-message 10] [--size-kib 10] [--rounds 3]
                         [--latencies 0,20] [--transfers 16] [--s3-latency-ms MS] [--env NAME=VALUE ...]
    bench/run.sh many [same options]

Per added latency (ms per request at the rig's Cloud Storage front; S3 adds --s3-latency-ms, 0 by
default), per round: ``--objects`` fresh objects of ``--size-kib`` in S3, then in alternating order

* gcs-sync: one SQS batch (``--objects`` / ``--per-message`` messages, each an S3 notification of
  ``--per-message`` records) through ``lambda_function.lambda_handler`` in a warm container,
  to both destinations (``GCS_DESTINATIONS``), every message answered without a failure;
* rclone in turn: ``rclone copy --transfers N`` of the same objects to the first bucket, then to
  the second (one process each, as a user would run it);
* rclone at once: the same two processes started together.

Objects per second = source objects copied (to both destinations) / wall time; median of the
rounds. Every copy is counted at the backend (all objects in both buckets). Requests per object:
the front's count over the contender's run / objects.

Prints Markdown tables; asserts nothing. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from bench.distant import (
    BUCKETS,
    KIB,
    SOURCE,
    DistantRig,
    common_arguments,
    per_object,
    run,
)
from bench.run import RCLONE, progress, table
from bench.servers import rclone_s3_section

CONTENDERS = ("function", "rclone_turn", "rclone_once")
LABELS = {"function": "gcs-sync: one SQS batch, warm container",
          "rclone_turn": "rclone copy --transfers {t}, to each bucket in turn",
          "rclone_once": "rclone copy --transfers {t}, both buckets at once (2 processes)"}


def rclone_config(rig: DistantRig, token: str) -> str:
    env = rig.s3.info["env"]
    path = rig.tmp / "rclone.conf"
    path.write_text(rclone_s3_section(env) + f"""
[rig]
type = google cloud storage
access_token = {token}
endpoint = {rig.rig.info['front']}/storage/v1/
no_check_bucket = true
""")
    path.chmod(0o600)
    return str(path)


def rclone_copies(rig: DistantRig, config: str, source_prefix: str, tag: str, transfers: int,
                  at_once: bool) -> float:
    """``rclone copy`` of the prefix to ``rclone/TAG/`` in each bucket; wall time of the whole."""
    started = time.perf_counter()
    processes = []
    for bucket in BUCKETS:
        log = open(rig.tmp / f"rclone-{bucket}.log", "wb")
        process = subprocess.Popen(
            [str(RCLONE), "--config", config, "copy", "-q", "--retries", "1", "--transfers", str(transfers),
             f"s3:{SOURCE}/{source_prefix}", f"rig:{bucket}/rclone/{tag}/"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(rig.tmp)})
        processes.append((process, log, bucket))
        if not at_once:
            process.wait()
    for process, log, bucket in processes:
        process.wait()
        log.close()
        if process.returncode != 0:
            output = (rig.tmp / f"rclone-{bucket}.log").read_text(errors="replace")
            raise RuntimeError(f"rclone copy to {bucket} failed:\n{output}")
    return time.perf_counter() - started


def measure(rig: DistantRig, args: argparse.Namespace) -> None:
    size = args.size_kib * KIB
    driver = rig.driver("many", function=True, floor=True)
    config = rclone_config(rig, driver.call("token")["token"])
    results: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for ms in args.latencies:
        rig.latency(ms)
        for round_ in range(args.rounds):
            tag = uuid.uuid4().hex[:8]
            prefix = f"many/{tag}/"
            keys = rig.put_objects(prefix, args.objects, size)
            order = list(CONTENDERS) if round_ % 2 == 0 else list(reversed(CONTENDERS))
            progress(f"{ms} ms added, round {round_ + 1}/{args.rounds}: {', '.join(order)}")
            for who in order:
                rig.reset_counts()
                if who == "function":
                    answer = driver.call("copy_sqs", bucket=SOURCE, keys=keys, per_message=args.per_message)
                    seconds, where = answer["seconds"], prefix
                else:
                    run_tag = f"{tag}-{who}"
                    seconds = rclone_copies(rig, config, prefix, run_tag, args.transfers, who == "rclone_once")
                    where = f"rclone/{run_tag}/"
                counts = rig.counts()
                copied = [rig.listed(bucket, where) for bucket in BUCKETS]
                if copied != [args.objects] * len(BUCKETS):
                    raise RuntimeError(f"{who} at {ms} ms: {copied} objects under {where} in {BUCKETS}, "
                                       f"expected {args.objects} in each")
                results.setdefault((ms, who), []).append({"seconds": seconds, "counts": counts})
    rig.latency(0)

    rows, goals = [], []
    for ms in args.latencies:
        rate = {who: args.objects / statistics.median(r["seconds"] for r in results[(ms, who)]) for who in CONTENDERS}
        for who in CONTENDERS:
            runs = results[(ms, who)]
            middle = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
            rows.append([f"{ms}" if who == "function" else "", LABELS[who].format(t=args.transfers),
                         " / ".join(f"{r['seconds']:.2f}" for r in runs), f"{rate[who]:.0f}",
                         f"{rate[who] / rate['rclone_turn']:.2f}x", per_object(middle["counts"], args.objects)])
        for other in ("rclone_turn", "rclone_once"):
            ratio = rate["function"] / rate[other]
            goals.append([f"{args.objects} x {args.size_kib} KiB -> 2 dest, {ms} ms added: objects/s vs "
                          f"{LABELS[other].format(t=args.transfers)}", ">= 1.00x", f"{ratio:.2f}x",
                          "met" if ratio >= 1.0 else "NOT met"])

    table(f"Many small objects: {args.objects} x {args.size_kib} KiB to 2 destinations, "
          f"{args.objects // args.per_message} SQS messages of {args.per_message} records, median of {args.rounds}",
          ["added ms", "who", "runs s", "objects/s (median)", "vs rclone in turn", "requests / object at the front (by kind)"],
          rows,
          note="objects/s = source objects copied to both destinations / wall time. added ms: every request to\n"
               "the Cloud Storage front waits that long (S3: --s3-latency-ms, the same for all). gcs-sync: one\n"
               "invocation of lambda_handler with the whole batch, warm (clients built, token held); rclone:\n"
               "fresh processes (start-up, listing of source and destination included), as a scheduled\n"
               "`rclone copy` runs.\n"
               "Every run is checked at the backend: all objects in both buckets. requests / object: the\n"
               "front's counts over the middle run / objects (rclone's listings included).")
    table("Goals", ["figure", "goal", "measured", "verdict"], goals)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description="many small objects against rclone (see bench/README.md)")
    parser.add_argument("--objects", type=int, default=100, help="objects per batch (default 100)")
    parser.add_argument("--per-message", type=int, default=10, help="S3 records per SQS message (default 10)")
    parser.add_argument("--size-kib", type=int, default=10, help="object size in KiB (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per latency (default 3)")
    parser.add_argument("--latencies", default="0,20", help="ms added per request, comma-separated")
    parser.add_argument("--transfers", type=int, default=16, help="rclone --transfers (default 16)")
    common_arguments(parser)
    args = parser.parse_args(argv)
    args.latencies = [int(x) for x in args.latencies.split(",") if x.strip()]
    run("gcs-sync benchmark: many small objects", "bench.many", argv, args,
        lambda rig: measure(rig, args))


if __name__ == "__main__":
    main()
