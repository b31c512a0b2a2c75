"""Writes objects into S3 with the AWS CLI v1, the way its users do: ``aws s3 cp`` and ``aws s3api``.

Run as a script by tests/e2e/test_client_shapes.py (never imported there: importing ``awscli``
makes ``import botocore`` load the AWS CLI's own copy). Each command goes through the CLI's own
entry point (``awscli.clidriver``), all of them in this one process: a separate ``aws`` process
per command costs about a CPU-second of start-up each.

    python aws_cli_shapes.py ENDPOINT BUCKET DIRECTORY_BUCKET FOLDER

FOLDER holds the files (see ``FILES``) and the configuration files ``defaults`` (8 MiB parts,
multipart from 1 MB), ``small`` (5 MiB parts) and ``plain`` (no additional checksum unless required).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys

from awscli.clidriver import create_clidriver


def aws(folder: str, config: str, *argv: str) -> dict:
    """One ``aws`` command with configuration file ``config``; its JSON output ({} when none)."""
    os.environ["AWS_CONFIG_FILE"] = os.path.join(folder, config)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = create_clidriver().main(list(argv))
    if code != 0:
        raise SystemExit(f"aws {' '.join(argv[:2])} failed ({code}): {err.getvalue()[-2000:]}")
    text = out.getvalue().strip()
    return json.loads(text) if text.startswith("{") else {}


def multipart(folder: str, endpoint: str, bucket: str, key: str, bodies: list[str], *create: str) -> None:
    """``aws s3api``: create-multipart-upload, upload-part per body, complete-multipart-upload."""
    where = ["--bucket", bucket, "--key", key, "--endpoint-url", endpoint]
    upload = aws(folder, "plain", "s3api", "create-multipart-upload", *where, *create)["UploadId"]
    algorithm = create[create.index("--checksum-algorithm") + 1] if "--checksum-algorithm" in create else None
    parts = []
    for number, body in enumerate(bodies, 1):
        part = aws(folder, "plain", "s3api", "upload-part", *where, "--upload-id", upload, "--part-number",
                   str(number), "--body", body, *(["--checksum-algorithm", algorithm] if algorithm else []))
        parts.append({"PartNumber": number, "ETag": part["ETag"],
                      **({f"Checksum{algorithm}": part[f"Checksum{algorithm}"]} if algorithm else {})})
    listing = os.path.join(folder, "parts-" + key.replace("/", "_") + ".json")
    with open(listing, "w", encoding="utf-8") as handle:
        json.dump({"Parts": parts}, handle)
    aws(folder, "plain", "s3api", "complete-multipart-upload", *where, "--upload-id", upload,
        "--multipart-upload", f"file://{listing}")


def main(endpoint: str, bucket: str, directory_bucket: str, folder: str) -> None:
    os.chdir(os.path.join(folder, "files"))
    at = ["--endpoint-url", endpoint]
    # Its defaults: the empty file in one PUT, the others as multipart uploads of 8 MiB parts, CRC32.
    aws(folder, "defaults", "s3", "cp", "cli", f"s3://{bucket}/cli", "--recursive", *at)
    for algorithm, config, name in (("SHA256", "small", "sha256.bin"), ("CRC32C", "small", "crc32c.bin"),
                                    ("SHA1", "defaults", "sha1.bin")):
        aws(folder, config, "s3", "cp", name, f"s3://{bucket}/{name}", "--checksum-algorithm", algorithm, *at)
    multipart(folder, endpoint, bucket, "api/empty-part", ["empty"])
    multipart(folder, endpoint, bucket, "api/one-part-composite.bin", ["one-part-composite.bin"],
              "--checksum-algorithm", "CRC32C", "--checksum-type", "COMPOSITE")
    multipart(folder, endpoint, bucket, "api/last-part-empty.bin", ["first-part", "empty"])
    aws(folder, "plain", "s3api", "create-bucket", "--bucket", directory_bucket, *at)
    aws(folder, "plain", "s3api", "put-object", "--bucket", directory_bucket, "--key", "plain.bin",
        "--body", "plain.bin", *at)


if __name__ == "__main__":
    main(*sys.argv[1:5])
