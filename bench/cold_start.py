"""Cold-start cost of the deployment zip, measured in fresh interpreters on this machine.

    python bench/cold_start.py [--zip PATH] [--runs 7] [--code DIR] [--no-copy]

Builds the zip with ``./build.sh --no-docker`` unless ``--zip`` is given, unzips it, and times
fresh ``python -I -S -B`` processes whose ``sys.path`` is the unzipped tree plus the standard
library (``-B``: nothing is written back, like Lambda's read-only /var/task):

  baseline      the interpreter alone (``pass``)
  a: imports    ``import boto3, google.cloud.storage``
  b: first call ``import lambda_function`` and a first invocation: settings, the Workload
                Identity credential configuration, the S3 and GCS clients, then an s3:TestEvent.
                Not included: the token exchange and the copy itself (network), and what they
                import lazily.
  b, no .pyc    b on a copy of the tree without __pycache__ (what a zip without .pyc costs)
  c: first copy ``import lambda_function`` (Lambda's init phase) and a first S3 notification:
                a fresh 10 KiB object copied to two destinations, against moto and the rig
                (``bench.distant``: the token exchange with the rig's STS / IAM, the uploads
                through its Cloud Storage front), as a first event pays it. The goal (issue 21):
                c <= 1.15x a. Then, in one more child per run, the same split by phase: the
                package's imports, settings and clients (``Runtime.build``), the token
                exchange, the first copy, and a second copy (warm) for comparison; with the
                modules the first copy still imported.

``--code DIR``: replace ``lambda_function.py`` and ``gcs_sync/`` in the unzipped tree by those in
DIR (compiled like the build does), to compare code revisions on one set of dependencies, e.g.
``git archive COMMIT lambda_function.py gcs_sync | tar -x -C DIR``. ``--no-copy``: a and b only.

With --awscrt, a and b also run on two copies of the tree that differ only in where awscrt is:
at the top (on the import path, where botocore imports it at start-up) and absent; the zip has
it under lazy/, off the path. The zip's share taken by awscrt is printed as well.

"in-process" is the time measured inside the child around the work; "process" is the wall
clock of the whole child, interpreter start-up included. Medians of --runs runs, interleaved.
Not a test: it only prints figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """\
import sys, time
sys.path.insert(0, {tree!r})
_t0 = time.perf_counter()
{body}
print("BENCH", time.perf_counter() - _t0)
"""

# What both children define: the invocation's context and an S3 notification for one key.
EVENT = """\
import json
class Context:
    aws_request_id = "bench-cold"
    def get_remaining_time_in_millis(self):
        return 300000
def event(key):
    return {{"Records": [{{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                          "eventTime": "2026-12-01T00:00:00.000Z", "s3": {{"bucket": {{"name": {bucket!r}}},
                          "object": {{"key": key, "size": {size}}}}}}}]}}
"""

# The first result of a cold container: import (init phase), then a first event copying an object.
FIRST_COPY = EVENT + """\
import lambda_function
_t1 = time.perf_counter()
result = lambda_function.lambda_handler(event({key!r}), Context())
assert result["copied"] == 1, result
print("PHASES", json.dumps({{"init": _t1 - _t0, "first event": time.perf_counter() - _t1}}))
"""

# The same, split by phase (the package's own steps, called one by one).
PHASES = EVENT + """\
phases, _last = {{}}, _t0
def mark(name):
    global _last
    now = time.perf_counter()
    phases[name] = now - _last
    _last = now
import gc
gc.disable()  # as lambda_function does during the init
import botocore.session, botocore.config, google.cloud.storage
mark("import botocore + google.cloud.storage")
from gcs_sync import handler, logs
from gcs_sync.config import LogSettings, Settings
from gcs_sync.runtime import Runtime
mark("import the package (handler, runtime)")
logs.configure_from(LogSettings.from_environ())
settings = Settings.from_environ()
mark("settings")
runtime = Runtime.build(settings)
mark("clients (Runtime.build)")
runtime.auth.ensure_token()
mark("token exchange (in Lambda's init: beside the clients)")
gc.freeze()
gc.enable()
before = set(sys.modules)
assert handler.handle(event({key!r}), Context(), runtime)["copied"] == 1
mark("first copy")
late = sorted({{m.split(".")[0] + "." + m.split(".")[1] if "." in m else m for m in set(sys.modules) - before}})
assert handler.handle(event({key2!r}), Context(), runtime)["copied"] == 1
mark("second copy (warm)")
print("PHASES", json.dumps(phases))
print("LATE", json.dumps(late))
"""

BODIES = {
    "baseline": "pass",
    "a": "import boto3, google.cloud.storage",
    "b": (
        "import lambda_function\n"
        "lambda_function.lambda_handler("
        "{'Service': 'Amazon S3', 'Event': 's3:TestEvent', 'Bucket': 'bench-source'}, None)"
    ),
}

CREDENTIAL_CONFIG = {
    "type": "external_account",
    "audience": "//iam.googleapis.com/projects/123456789012/locations/global/"
                "workloadIdentityPools/bench-pool/providers/bench-provider",
    "subject_token_type": "urn:ietf:params:aws:token-type:aws4_request",
    "service_account_impersonation_url": "https://iamcredentials.googleapis.com/v1/projects/-/"
                                         "serviceAccounts/bench@example.iam.gserviceaccount.com"
                                         ":generateAccessToken",
    "token_url": "https://sts.googleapis.com/v1/token",
    "credential_source": {
        "environment_id": "aws1",
        "region_url": "http://169.254.169.254/latest/meta-data/placement/availability-zone",
        "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials",
        "regional_cred_verification_url":
            "https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15",
    },
}


def build_zip(out_dir: Path) -> Path:
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    env = {**os.environ, "PYTHON": sys.executable, "PYTHON_VERSION": version}
    env.pop("SOURCE_DATE_EPOCH", None)
    print(f"building the zip for Python {version} (./build.sh --no-docker) ...", file=sys.stderr)
    result = subprocess.run(
        ["bash", str(REPO / "build.sh"), "--no-docker", "--out", str(out_dir)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, check=True,
    )
    return Path(result.stdout.splitlines()[-1])


def run_child(tree: Path, body: str, env: dict) -> tuple[float, float, list[str]]:
    code = CHILD.format(tree=str(tree), body=body)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-B", "-c", code],
        cwd=tree, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        listing = " ".join(sorted(os.listdir(tree)))
        sys.exit(f"the child failed in {tree}:\n{result.stderr[-3000:]}\n{tree} now holds: {listing}")
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("BENCH ")][-1]
    return float(line.split()[1]), wall, result.stdout.splitlines()


def run_once(tree: Path, body: str, env: dict) -> tuple[float, float]:
    inside, wall, _ = run_child(tree, body, env)
    return inside, wall


def overlay(tree: Path, code: Path) -> None:
    """``code``'s lambda_function.py and gcs_sync/ in place of the tree's, compiled as the build does."""
    shutil.rmtree(tree / "gcs_sync")
    shutil.copytree(code / "gcs_sync", tree / "gcs_sync", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(code / "lambda_function.py", tree / "lambda_function.py")
    for stale in (tree / "__pycache__").glob("lambda_function.*"):
        stale.unlink()
    subprocess.run([sys.executable, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash",
                    str(tree / "gcs_sync"), str(tree / "lambda_function.py")], check=True)


def first_copies(tree: Path, a: tuple[float, float], runs: int) -> None:
    """Scenario c and its split by phase, against moto and the rig (bench.distant)."""
    sys.path.insert(0, str(REPO))
    from bench.distant import KIB, SOURCE, DistantRig

    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        rig = DistantRig(Path(tmp), {})
        try:
            print("starting moto and the rig ...", file=sys.stderr)
            rig.start()
            env = {**rig.env(), "LAMBDA_TASK_ROOT": str(tree), "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"}
            env.pop("PYTHONPATH", None)
            keys = iter(rig.put_objects("cold/", 3 * runs + 2, 10 * KIB))
            firsts, splits, late, bare = [], [], [], []
            run_child(tree, FIRST_COPY.format(bucket=SOURCE, key=next(keys), size=10 * KIB), env)  # file cache
            for _ in range(runs):
                # a again, right before each c, in the same conditions (the servers up, the same load)
                bare.append(run_once(tree, BODIES["a"], env))
                inside, wall, lines = run_child(tree, FIRST_COPY.format(bucket=SOURCE, key=next(keys), size=10 * KIB),
                                                env)
                phases = json.loads([ln for ln in lines if ln.startswith("PHASES ")][-1][7:])
                firsts.append((inside, wall, phases["init"], phases["first event"]))
                _, _, lines = run_child(tree, PHASES.format(bucket=SOURCE, key=next(keys), key2=next(keys),
                                                           size=10 * KIB), env)
                splits.append(json.loads([ln for ln in lines if ln.startswith("PHASES ")][-1][7:]))
                late = json.loads([ln for ln in lines if ln.startswith("LATE ")][-1][5:])
        finally:
            rig.stop()
    med = [statistics.median(f[i] for f in firsts) for i in range(4)]
    a_now = [statistics.median(b[i] for b in bare) for i in range(2)]
    print(f"\nc: import lambda_function + first copy (10 KiB -> 2 destinations, moto + rig), median of {runs}")
    print(f"  in-process {med[0]:.3f}s (init {med[2]:.3f}s + first event {med[3]:.3f}s)   process {med[1]:.3f}s")
    print(f"  a, interleaved with c: in-process {a_now[0]:.3f}s   process {a_now[1]:.3f}s")
    print(f"  ratio c/a (a interleaved): {med[0] / a_now[0]:.2f} in-process, {med[1] / a_now[1]:.2f} process   "
          f"(goal <= 1.15; against the first a: {med[0] / a[0]:.2f})")
    print("  split by phase (medians, separate children):")
    for name in splits[0]:
        print(f"    {name:<40} {1000 * statistics.median(s[name] for s in splits):7.1f} ms")
    print(f"  modules first imported by the first copy ({len(late)} packages / modules): {' '.join(late)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zip", type=Path, help="zip to measure (default: build one)")
    parser.add_argument("--runs", type=int, default=7, help="runs per scenario (default 7)")
    parser.add_argument("--code", type=Path, help="take lambda_function.py and gcs_sync/ from this directory")
    parser.add_argument("--no-copy", action="store_true", help="skip c (the first copy against moto and the rig)")
    parser.add_argument("--awscrt", action="store_true",
                        help="also compare awscrt under lazy/ (as built) with awscrt at the top and absent")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gcs-sync-bench-") as tmp:
        tmp_path = Path(tmp)
        zip_path = args.zip.resolve() if args.zip else build_zip(tmp_path / "dist")
        tree = tmp_path / "tree"
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tree)
        if args.code:
            overlay(tree, args.code.resolve())
        tag = sys.implementation.cache_tag
        if not (tree / "__pycache__" / f"lambda_function.{tag}.pyc").exists():
            print(f"note: the zip has no {tag} .pyc for this interpreter ({sys.version.split()[0]}); "
                  "the figures include compiling the sources", file=sys.stderr)
        bare = tmp_path / "tree-no-pyc"
        shutil.copytree(tree, bare, ignore=shutil.ignore_patterns("__pycache__"))

        variants = []
        if args.awscrt:
            lazy = tree / "lazy"
            if not lazy.is_dir():
                sys.exit("--awscrt: the zip has no lazy/ directory")
            at_top = tmp_path / "tree-awscrt-at-top"
            shutil.copytree(tree, at_top)
            for entry in (at_top / "lazy").iterdir():
                entry.rename(at_top / entry.name)
            (at_top / "lazy").rmdir()
            absent = tmp_path / "tree-no-awscrt"
            shutil.copytree(tree, absent, ignore=lambda d, _: ["lazy"] if Path(d) == tree else [])
            variants = [("awscrt at top", at_top), ("no awscrt", absent)]

        config = tmp_path / "wif-config.json"
        config.write_text(json.dumps(CREDENTIAL_CONFIG))
        home = tmp_path / "home"
        home.mkdir()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(home),
            "TMPDIR": tmp,
            "GCS_DESTINATIONS": "gs://bench-bucket",
            "GOOGLE_APPLICATION_CREDENTIALS": str(config),
            "AWS_LAMBDA_FUNCTION_NAME": "gcs-sync-bench",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE00",
            "AWS_SECRET_ACCESS_KEY": "bench/secret/key",
            "AWS_SESSION_TOKEN": "bench-session-token",
        }
        scenarios = [
            ("baseline", tree, BODIES["baseline"]),
            ("a: import boto3 + google.cloud.storage", tree, BODIES["a"]),
            ("b: import lambda_function + first call", tree, BODIES["b"]),
            ("b, tree without .pyc", bare, BODIES["b"]),
        ]
        for label, where in variants:
            scenarios += [(f"a, {label}", where, BODIES["a"]), (f"b, {label}", where, BODIES["b"])]
        for _, where, body in scenarios:  # warm the OS file cache once
            run_once(where, body, {**env, "LAMBDA_TASK_ROOT": str(where)})
        timings: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in scenarios}
        for _ in range(args.runs):
            for name, where, body in scenarios:
                timings[name].append(run_once(where, body, {**env, "LAMBDA_TASK_ROOT": str(where)}))

        medians = {name: (statistics.median(t[0] for t in runs), statistics.median(t[1] for t in runs))
                   for name, runs in timings.items()}
        size = zip_path.stat().st_size
        print(f"\nzip: {zip_path.name}  {size / 1e6:.1f} MB ({size / 2**20:.1f} MiB)   "
              f"python {sys.version.split()[0]}   {os.cpu_count()} CPUs   median of {args.runs} runs")
        width = max(len(name) for name in medians)
        print(f"{'scenario':<{width}}  in-process  process")
        for name, (inside, wall) in medians.items():
            print(f"{name:<{width}}  {inside:9.3f}s  {wall:6.3f}s")
        a = medians["a: import boto3 + google.cloud.storage"]
        b = medians["b: import lambda_function + first call"]
        nopyc = medians["b, tree without .pyc"]
        print(f"ratio b/a: {b[0] / a[0]:.2f} in-process, {b[1] / a[1]:.2f} process;"
              f"  .pyc save {nopyc[0] - b[0]:.2f}s per cold start (b)")
        if not args.no_copy:
            first_copies(tree, a, args.runs)
        if variants:
            with zipfile.ZipFile(zip_path) as zf:
                # Each entry costs its data plus a local header (30 bytes) and a central one (46),
                # each holding the name.
                share = sum(i.compress_size + 76 + 2 * len(i.filename)
                            for i in zf.infolist() if i.filename.startswith("lazy/"))
            print(f"awscrt in the zip (lazy/): {share / 1e6:.1f} MB; without it the zip would be "
                  f"{(size - share) / 1e6:.1f} MB (at the top: the same size as under lazy/)")
            for label, _ in variants:
                for kind in ("a", "b"):
                    other = medians[f"{kind}, {label}"]
                    mine = a if kind == "a" else b
                    print(f"{kind}, {label} vs as built (lazy/): {1000 * (other[0] - mine[0]):+.0f} ms "
                          f"in-process, {1000 * (other[1] - mine[1]):+.0f} ms process")


if __name__ == "__main__":
    main()
