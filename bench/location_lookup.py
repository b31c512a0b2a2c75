"""google-auth's "allowed locations" lookup: what it costs per token in a Lambda-like process.

Each run is a fresh process (a new container): it loads the credentials as the function does
(gcs_sync.auth.GoogleAuth, the rig's Workload Identity configuration, the rig's STS / IAM), gets a
token, makes the first Cloud Storage request with it (which is what starts google-auth's lookup)
and waits for the lookup's background thread. Three ways:

- ``google``: the lookup as google-auth does it, to iamcredentials.googleapis.com (here it fails
  at once: this machine resolves no outside name);
- ``answered``: the same lookup answered by a local endpoint (what a successful lookup costs
  in-process, without the network and TLS to Google);
- ``off``: what gcs-sync does when the token and Cloud Storage endpoints are not Google's.

    .venv/bin/python -m bench.location_lookup --runs 7

Medians per way: the token's refresh (STS + impersonation), the first request, the time until the
lookup's thread is done, the process's CPU time over all that, and the outside hosts resolved.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WAYS = ("google", "answered", "off")
LOCAL = {"127.0.0.1", "localhost", "::1"}


def _one(way: str) -> dict:
    """One Lambda-like process: credentials built once, one token, one request."""
    sys.path.insert(0, str(ROOT))
    hosts: list[str] = []
    resolve = socket.getaddrinfo

    def recording(host, *args, **kwargs):
        hosts.append(str(host))
        return resolve(host, *args, **kwargs)

    socket.getaddrinfo = recording
    import google.auth._regional_access_boundary_utils as boundary

    from gcs_sync import auth
    from gcs_sync.config import Settings
    from google.auth.transport.requests import AuthorizedSession
    from tests.rig import GoogleTokenServer
    from tests.rig.s3 import AWS_ACCESS_KEY_ID, AWS_REGION, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN

    tokens = GoogleTokenServer(aws_keys={AWS_ACCESS_KEY_ID: AWS_SECRET_ACCESS_KEY}).start()
    if way == "answered":
        answer = _answering_server()
        boundary.get_service_account_rab_endpoint = lambda email: f"{answer}/v1/projects/-/serviceAccounts/{email}/allowedLocations"
    if way != "off":
        auth.location_lookup_wanted = lambda info, settings: True  # as if the endpoints were Google's
    work = Path(tempfile.mkdtemp())
    (work / "gcp-credentials.json").write_text(json.dumps(tokens.credential_config()))
    os.environ.update(AWS_ACCESS_KEY_ID=AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=AWS_SECRET_ACCESS_KEY,
                      AWS_SESSION_TOKEN=AWS_SESSION_TOKEN, AWS_REGION=AWS_REGION)
    settings = Settings.from_environ({
        "GCS_DESTINATIONS": "gs://bench-bucket", "GOOGLE_APPLICATION_CREDENTIALS": str(work / "gcp-credentials.json"),
        "AWS_REGION": AWS_REGION, "AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY,
        "GCS_API_ENDPOINT": tokens.url}, code_dir=str(work))
    google_auth = auth.GoogleAuth.from_settings(settings)
    session = AuthorizedSession(google_auth.credentials)
    cpu, started = time.process_time(), time.perf_counter()
    google_auth.ensure_token()
    refreshed = time.perf_counter()
    session.get(f"{tokens.url}/any-request")  # the first request made with the token
    requested = time.perf_counter()
    lookups = [t for t in threading.enumerate() if isinstance(t, boundary._RegionalAccessBoundaryRefreshThread)]
    for thread in lookups:
        thread.join()
    done = time.perf_counter()
    result = {
        "way": way, "refresh_ms": (refreshed - started) * 1000, "first_request_ms": (requested - refreshed) * 1000,
        "until_lookup_done_ms": (done - started) * 1000, "cpu_ms": (time.process_time() - cpu) * 1000,
        "lookups": len(lookups), "outside_hosts": sorted(set(hosts) - LOCAL),
        "boundary": google_auth.credentials.regional_access_boundary,
    }
    tokens.stop()
    return result


def _answering_server() -> str:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"encodedLocations": "0xA30", "locations": ["us-central1", "us-east1"]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per way (default 7)")
    parser.add_argument("--one", choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.one)))
        return 0
    results: dict[str, list[dict]] = {way: [] for way in WAYS}
    for _ in range(args.runs):
        for way in WAYS:  # interleaved, so load on the machine hits every way alike
            out = subprocess.run([sys.executable, "-m", "bench.location_lookup", "--one", way], cwd=ROOT,
                                 capture_output=True, text=True, check=True, timeout=120)
            results[way].append(json.loads(out.stdout.splitlines()[-1]))
    print(f"| way | refresh ms | first request ms | until the lookup is done ms | CPU ms | lookups | outside hosts | boundary |")
    print("|---|---:|---:|---:|---:|---:|---|---|")
    for way, runs in results.items():
        median = {k: statistics.median(r[k] for r in runs)
                  for k in ("refresh_ms", "first_request_ms", "until_lookup_done_ms", "cpu_ms")}
        print(f"| {way} | {median['refresh_ms']:.1f} | {median['first_request_ms']:.1f} | "
              f"{median['until_lookup_done_ms']:.1f} | {median['cpu_ms']:.1f} | {runs[0]['lookups']} | "
              f"{', '.join(runs[0]['outside_hosts']) or '-'} | {runs[0]['boundary'] or '-'} |")
    print(f"\nmedians of {args.runs} fresh processes per way; os.getloadavg() = {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
