"""./demo.sh: the whole path on one machine, no cloud account.

Local S3 (moto) sends real S3 event notifications to a local SQS queue; the SQS batch goes to
the real handler, which authenticates through local Google STS / IAM endpoints (verifying the
signed AWS request, as Google does) and copies into two local Cloud Storage buckets.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.rig import DEFAULT_AUDIENCE, DEFAULT_SERVICE_ACCOUNT, FakeGcsServer, GcsFront, GoogleTokenServer, LocalS3  # noqa: E402
from tests.rig.s3 import AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY  # noqa: E402

TREE = {
    "reports/2026/summary.csv": b"month,total\n2026-10,42\n2026-11,57\n",
    "reports/2026/11/detail.json": json.dumps({"rows": list(range(20))}).encode(),
    "images/logo.png": os.urandom(48_000),
    "日本語 フォルダ/レポート 1.txt": "四半期の報告書です。\n".encode(),
    "empty-folder/": b"",
}
CONTENT_TYPES = {".csv": "text/csv", ".json": "application/json", ".png": "image/png", ".txt": "text/plain; charset=utf-8"}


def main() -> int:
    import logging

    # The local servers' request logs would drown the demo's own output.
    for noisy in ("werkzeug", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="gcs-sync-demo-"))
    tokens = GoogleTokenServer(aws_keys={AWS_ACCESS_KEY_ID: AWS_SECRET_ACCESS_KEY},
                               audience=DEFAULT_AUDIENCE, service_account=DEFAULT_SERVICE_ACCOUNT).start()
    gcs = FakeGcsServer(work / "gcs", backend="memory").start()
    front = GcsFront(gcs.url, tokens).start()
    s3 = LocalS3().start()
    try:
        return run(work, tokens, gcs, front, s3)
    finally:
        s3.stop()
        front.stop()
        gcs.stop()
        tokens.stop()


def run(work: Path, tokens: GoogleTokenServer, gcs: FakeGcsServer, front: GcsFront, s3: LocalS3) -> int:
    source = f"demo-source-{uuid.uuid4().hex[:6]}"
    primary, archive = "demo-primary", "demo-archive"
    s3_client = s3.client()
    sqs = _sqs_client(s3)
    queue_url = sqs.create_queue(QueueName="gcs-sync-demo")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3_client.create_bucket(Bucket=source)
    s3_client.put_bucket_notification_configuration(Bucket=source, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]})
    for bucket in (primary, archive):
        gcs.create_bucket(bucket)

    credentials = work / "task" / "gcp-credentials.json"
    credentials.parent.mkdir()
    credentials.write_text(json.dumps(tokens.credential_config(), indent=2))
    os.environ.update(s3.aws_env())
    os.environ.update({
        "GCS_DESTINATIONS": f"gs://{primary} gs://{archive}/from-s3/",
        "GOOGLE_APPLICATION_CREDENTIALS": "gcp-credentials.json",
        "LAMBDA_TASK_ROOT": str(credentials.parent),
        "GCS_API_ENDPOINT": front.url,
        "AWS_LAMBDA_FUNCTION_NAME": "gcs-sync-demo",
        "LOG_LEVEL": "WARNING",
    })

    print(f"Uploading {len(TREE)} objects to s3://{source}/ ...")
    for key, body in TREE.items():
        suffix = Path(key).suffix
        extra = {"ContentType": CONTENT_TYPES[suffix]} if suffix in CONTENT_TYPES else {}
        s3_client.put_object(Bucket=source, Key=key, Body=body, Metadata={"origin": "demo"}, **extra)

    records = []
    while len(records) < len(TREE):
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in answer.get("Messages", []):
            records.append({"messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
                            "body": message["Body"], "eventSource": "aws:sqs", "eventSourceARN": queue_arn,
                            "awsRegion": "us-east-1", "attributes": {}, "messageAttributes": {}})
    print(f"S3 sent {len(records)} notifications to SQS; delivering them to the handler as one batch.")

    import io

    import lambda_function
    from gcs_sync import metrics

    emf = io.StringIO()  # the metric documents CloudWatch would read from the function's stdout
    metrics.set_output(emf)
    result = lambda_function.lambda_handler({"Records": records}, _Context())
    print(f"Handler returned: {json.dumps(result)}")
    proofs = {d["Proof"]: d["CopiesProven"] for d in map(json.loads, emf.getvalue().splitlines()) if "Proof" in d}
    print(f"Copies proven against S3's record, by proof: {proofs}; "
          f"{len(emf.getvalue().splitlines())} metric documents written (CloudWatch EMF)")
    print(f"Google token exchanges: STS {tokens.sts_calls}, impersonation {tokens.iam_calls}; "
          f"unauthenticated Cloud Storage requests: {len(front.unauthorized)}")
    ok = not result["batchItemFailures"]
    for bucket in (primary, archive):
        print(f"\ngs://{bucket}/")
        listing = gcs.list_objects(bucket)
        for item in listing:
            print(f"  {item['name']:<40} {int(item['size']):>7} bytes  crc32c={item.get('crc32c', '-'):<10} "
                  f"{item.get('contentType', '')}")
        expected = {(("from-s3/" if bucket == archive else "") + key) for key in TREE}
        missing = expected - {item["name"] for item in listing}
        if missing:
            ok = False
            print(f"  MISSING: {sorted(missing)}")
    print("\nDemo " + ("succeeded: the tree is in both buckets." if ok else "FAILED."))
    return 0 if ok else 1


def _sqs_client(s3: "LocalS3"):
    import boto3

    env = s3.aws_env()
    return boto3.client("sqs", endpoint_url=s3.url, region_name=env["AWS_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                        aws_session_token=env["AWS_SESSION_TOKEN"])


class _Context:
    aws_request_id = "demo-" + uuid.uuid4().hex[:8]

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 300_000


if __name__ == "__main__":
    sys.exit(main())
