"""Checks on the AWS side: the identity the function presents, its source buckets, its queue."""

from __future__ import annotations

import re

from .context import Context
from .identity import aws_role_attribute
from .runner import Outcome, failed, passed

LAMBDA_MAX_TIMEOUT = 900  # seconds: the queue's visibility timeout must cover any function timeout
_SQS_REGION = re.compile(r"^https?://sqs[.-]([a-z0-9-]+)\.amazonaws\.com")
_LOCAL = re.compile(r"^https?://(localhost|127\.|\[::1\])")


def aws_identity(ctx: Context) -> Outcome:
    """GetCallerIdentity with the keys in the environment, and the aws_role Google will see."""
    from botocore.exceptions import BotoCoreError, ClientError

    settings = ctx.credential_settings()
    missing = []
    if not settings.aws_region:
        missing.append("AWS_REGION")
    if not settings.aws_keys_present:
        missing.append("AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
    if missing:
        return failed(
            f"{' and '.join(missing)} not set in the environment; Google's AWS credential source reads them "
            "from there",
            "Lambda sets them from the execution role (check the function has one)" if ctx.in_lambda else
            "export the function role's temporary credentials (`eval \"$(aws configure export-credentials "
            "--format env)\"`, or `aws sts assume-role`) and AWS_REGION")
    client = ctx.aws("sts", settings.aws_region, attempts=2)
    endpoint = client.meta.endpoint_url
    try:
        identity = client.get_caller_identity()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        return failed(f"AWS STS GetCallerIdentity at {endpoint} refused the credentials in the environment "
                      f"({error.get('Code', '?')}: {error.get('Message', '')})", sts_refused_fix(ctx))
    except BotoCoreError as exc:
        return failed(f"could not call AWS STS GetCallerIdentity at {endpoint}: {exc}", sts_unreachable_fix(ctx))
    arn = str(identity.get("Arn", ""))
    ctx.aws_account = identity.get("Account")
    ctx.role_value = aws_role_attribute(arn)
    detail = f"region {settings.aws_region}; caller {arn}; Google sees attribute.aws_role = {ctx.role_value}"
    if ":assumed-role/" not in arn:
        detail += " (not an assumed role: in Lambda the caller is the execution role's session)"
    return passed(detail)


def sts_refused_fix(ctx: Context) -> str:
    if ctx.in_lambda:
        return ("the execution role's credentials were refused: check the role exists and trusts "
                "lambda.amazonaws.com")
    fix = ("the AWS credentials in the environment are invalid or expired: refresh them (aws sso login, or "
           "export new temporary credentials)")
    return fix + _local_sts_hint(ctx)


def sts_unreachable_fix(ctx: Context) -> str:
    if ctx.in_lambda:
        return ("the function cannot reach sts.REGION.amazonaws.com: a function in a VPC needs a NAT gateway "
                "or an STS interface endpoint (Google's token exchange needs internet access as well)")
    fix = ("check this machine's network access to AWS STS; AWS_ENDPOINT_URL_STS (or AWS_ENDPOINT_URL), "
           "when set, must name an STS endpoint that answers")
    return fix + _local_sts_hint(ctx)


def _local_sts_hint(ctx: Context) -> str:
    """Against local stand-ins: the S3 endpoint is local but STS is still asked at AWS."""
    s3 = ctx.environ.get("AWS_ENDPOINT_URL_S3") or ""
    if _LOCAL.match(s3) and not ctx.environ.get("AWS_ENDPOINT_URL_STS") and not ctx.environ.get("AWS_ENDPOINT_URL"):
        return (f"; AWS_ENDPOINT_URL_S3 names a local server ({s3}) but STS is asked at AWS: set "
                f"AWS_ENDPOINT_URL_STS to the local server that issued these keys (moto answers STS at "
                f"its S3 address: AWS_ENDPOINT_URL_STS={s3})")
    return ""


def unreachable_fix(ctx: Context, service: str, variable: str) -> str:
    """What to do when an AWS service cannot be reached, where the doctor runs."""
    if ctx.in_lambda:
        return (f"check the function's network access to {service} (a function in a VPC needs a VPC "
                f"endpoint for {service} or a NAT gateway), and {variable} if set")
    return f"check this machine's network access to {service}, and {variable} if set"


def source_bucket(ctx: Context, name: str) -> Outcome:
    """The source bucket can be listed, and one of its objects read (HEAD)."""
    from botocore.exceptions import BotoCoreError, ClientError

    assert ctx.settings is not None
    client = ctx.aws("s3", ctx.settings.aws_region)
    role = ctx.role_name()
    try:
        listing = client.list_objects_v2(Bucket=name, MaxKeys=1)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "?"))
        if code in ("NoSuchBucket", "404"):
            return failed(f"bucket {name} does not exist ({code})", "correct the name in SOURCE_BUCKETS / S3_BUCKET_NAME")
        return failed(f"cannot list s3://{name} ({code}: {exc.response.get('Error', {}).get('Message', '')})",
                      f"allow s3:ListBucket on arn:aws:s3:::{name} to {role} (and check the bucket "
                      "policy does not deny it)")
    except BotoCoreError as exc:
        return failed(f"could not reach S3 for s3://{name}: {exc}", unreachable_fix(ctx, "S3", "AWS_ENDPOINT_URL_S3"))
    contents = listing.get("Contents") or []
    if not contents:
        return passed(f"s3://{name} is listable and empty (object read access not tried)")
    key = contents[0]["Key"]
    try:
        client.head_object(Bucket=name, Key=key)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "?"))
        if code in ("NoSuchKey", "404", "NotFound"):
            return passed(f"s3://{name} is listable; {key!r} was deleted meanwhile (object read access not tried)")
        return failed(f"s3://{name} is listable but reading {key!r} is refused ({code})",
                      f"allow s3:GetObject (and s3:GetObjectVersion) on arn:aws:s3:::{name}/* to "
                      f"{role}; for SSE-KMS objects also kms:Decrypt on the key")
    except BotoCoreError as exc:
        return failed(f"could not reach S3 for s3://{name}: {exc}", unreachable_fix(ctx, "S3", "AWS_ENDPOINT_URL_S3"))
    return passed(f"s3://{name} is listable and {key!r} is readable (HEAD)")


def no_source_bucket(ctx: Context) -> Outcome:
    return passed("no source bucket configured; set SOURCE_BUCKETS to check read access",
                  "set SOURCE_BUCKETS to the buckets whose notifications this function receives, so "
                  "the health check (and the handler) know which buckets to expect")


def slice_queue(ctx: Context) -> Outcome:
    """SLICE_QUEUE_URL: the queue exists and answers this role, and its visibility timeout covers
    an invocation. sqs:SendMessage itself cannot be tried without sending a message (a slice task
    would then be copied); the role's policy is not read."""
    from botocore.exceptions import BotoCoreError, ClientError

    assert ctx.settings is not None
    url = ctx.settings.slice_queue_url or ""
    region = _SQS_REGION.match(url)
    client = ctx.aws("sqs", region.group(1) if region else ctx.settings.aws_region)
    try:
        attributes = client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["VisibilityTimeout", "RedrivePolicy", "QueueArn"])["Attributes"]
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "?"))
        if "NonExistentQueue" in code or code == "404":
            return failed(f"SLICE_QUEUE_URL {url}: no such queue ({code})",
                          "set SLICE_QUEUE_URL to the function's own queue URL (the template's WorkQueue)")
        return failed(f"SLICE_QUEUE_URL {url}: refused ({code})",
                      f"allow sqs:GetQueueAttributes and sqs:SendMessage on the queue to {ctx.role_name()} "
                      "(deploy/template.yaml grants both when UseQueue=true)")
    except BotoCoreError as exc:
        return failed(f"could not reach SQS for {url}: {exc}", unreachable_fix(ctx, "SQS", "AWS_ENDPOINT_URL_SQS"))
    visibility = int(attributes.get("VisibilityTimeout", "0") or 0)
    dead_letter = "a dead-letter queue" if attributes.get("RedrivePolicy") else "no dead-letter queue"
    if visibility < LAMBDA_MAX_TIMEOUT:
        return failed(
            f"{url}: VisibilityTimeout is {visibility} s, below {LAMBDA_MAX_TIMEOUT} s; a slice still being copied "
            "could be delivered to a second invocation (the function cannot read its own timeout, so the "
            "check asks for Lambda's maximum)",
            f"set the queue's VisibilityTimeout to at least the function's timeout ({LAMBDA_MAX_TIMEOUT} s covers "
            "any; AWS advises 6 x the timeout: the template sets 5400 s)")
    return passed(f"{url} answers; VisibilityTimeout {visibility} s covers an invocation; {dead_letter} "
                  "(sqs:SendMessage is granted by the template; it cannot be tried without sending a task)")
