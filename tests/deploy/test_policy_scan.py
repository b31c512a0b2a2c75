"""Policy scanners on deploy/template.yaml, which know nothing of this project:

- cfn-lint with AWS's serverless rules (cfn-lint-serverless): destinations and dead-letter queues
  for every asynchronous path, log retention, tracing, ...;
- cfripper: IAM wildcards, privilege escalation, cross-account trust, public queue and topic
  policies, bucket rules — run with the template's conditions decided several ways, since it
  reads one resolved template at a time.

Every finding is either fixed in the template or listed below with the reason it does not apply;
a new finding fails the test until it is one or the other, and a listed finding that is gone
fails it too, so the list never outlives its reasons. deploy/README.md's "Policy scan" gives the
list to its readers. Both run offline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "template.yaml"
DEPLOY_README = ROOT / "deploy" / "README.md"
BIN = Path(sys.executable).parent

# (scanner's rule, resource) -> why it does not apply.
NOT_APPLICABLE = {
    ("WS1000", "Function"):
        "X-Ray tracing: SAM would attach the managed policy AWSXrayWriteOnlyAccess to the role; "
        "the function's JSON logs (requestId on every line) and its metrics say what a trace would",
    ("WS1002", "Function"):
        "two invoke permissions with different principals: S3's (a bucket the stack creates) and "
        "EventBridge's (an existing bucket) are under opposite conditions, never both",
    ("WS1004", "Function"):
        "a log group with a retention: it exists (FunctionLogGroup, LogRetentionInDays) and is the "
        "function's through LoggingConfig; the rule looks for one named after the function",
    ("ES1007", "S3InvokePermission"):
        "an on-failure destination for asynchronous invocations: the function's EventInvokeConfig "
        "(SAM's property) sends them to the failure queue; the rule looks for a separate resource",
    ("ES1007", "EventBridgeInvokePermission"): "as for S3InvokePermission",
    ("ES1001", "WorkQueueEventSourceMapping"):
        "an on-failure destination on the SQS trigger: Lambda takes none for SQS; the work queue's "
        "redrive policy sends a message that failed 5 times to its dead-letter queue",
    ("ES6000", "FailureQueue"):
        "a redrive policy: it is the last stop, watched by an alarm; a dead-letter queue of its own "
        "would only move the messages out of sight",
    ("ES6000", "WorkDeadLetterQueue"): "as for FailureQueue",
    ("ES7000", "AlarmEmailSubscription"):
        "a dead-letter queue for the e-mail subscription: SNS retries e-mail deliveries itself, "
        "and the alarm stays in ALARM on the console and the dashboard",
    ("S3ObjectVersioningRule", "SourceBucket"):
        "versioning of the source bucket: the function copies versioned and unversioned buckets "
        "alike; versioning keeps every overwritten object (a cost), the owner's choice",
    ("S3LifecycleConfigurationRule", "SourceBucket"):
        "a lifecycle configuration on the source bucket: its objects are the user's data, kept as "
        "long as the owner decides",
}

# The template's conditions decided several ways for cfripper (parameters it needs: no default).
REQUIRED = {"SourceBucketName": "my-source", "GcsDestinations": "gs://bucket-a gs://bucket-b/prefix/"}
VARIANTS = {
    "defaults": {},
    "everything": {"SourceBucketKmsKeyArn": "arn:aws:kms:eu-west-1:123456789012:key/abc",
                   "MirrorDeletes": "true", "AlarmEmail": "ops@example.com", "ReservedConcurrency": "10",
                   "QueueMaximumConcurrency": "5", "AlarmOnCopiesWithoutS3Proof": "true",
                   "RoleName": "gcs-sync-role"},
    "existing bucket": {"SourceBucketExists": "true"},
    "existing bucket, no queue": {"SourceBucketExists": "true", "UseQueue": "false"},
    "no queue, topic given": {"UseQueue": "false",
                              "AlarmTopicArn": "arn:aws:sns:eu-west-1:123456789012:alarms"},
}


def _tool(name: str) -> str:
    path = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    assert path, f"{name} is missing from {BIN}: it comes from requirements-dev.txt; run tools/ensure-venv.sh"
    return path


def serverless_rules(template: Path) -> set[tuple[str, str]]:
    """cfn-lint's findings with AWS's serverless rules added, as (rule, resource)."""
    result = subprocess.run(
        [_tool("cfn-lint"), "--format", "json", "--append-rules", "cfn_lint_serverless.rules", "--", str(template)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode in (0, 2, 4, 6, 8, 10, 12, 14), (
        f"cfn-lint failed ({result.returncode}); its serverless rules come from cfn-lint-serverless in "
        f"requirements-dev.txt (tools/ensure-venv.sh installs it):\n{result.stderr[-3000:]}")
    findings = json.loads(result.stdout or "[]")
    assert not [f for f in findings if f["Rule"]["Id"].startswith("E0")], findings  # could not read it
    return {(f["Rule"]["Id"], f["Location"]["Path"][1]) for f in findings}


def cfripper(template: Path, parameters: dict, tmp_path: Path) -> set[tuple[str, str]]:
    """cfripper's findings on the template resolved with these parameters, as (rule, resource)."""
    resolve = tmp_path / "parameters.json"
    resolve.write_text(json.dumps(REQUIRED | parameters))
    result = subprocess.run(
        [_tool("cfripper"), str(template), "--resolve", "--resolve-parameters", str(resolve), "--format", "json",
         "--logging", "ERROR"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode in (0, 2), f"cfripper failed ({result.returncode}):\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    assert report["exceptions"] == [], report["exceptions"]  # a rule that crashed checked nothing
    return {(f["rule"], resource) for f in report["failures"] for resource in f["resource_ids"] or ["-"]}


@pytest.fixture(scope="module")
def findings(tmp_path_factory) -> dict[str, set[tuple[str, str]]]:
    found = {"cfn-lint serverless rules": serverless_rules(TEMPLATE)}
    for name, parameters in VARIANTS.items():
        found[f"cfripper, {name}"] = cfripper(TEMPLATE, parameters, tmp_path_factory.mktemp("cfripper"))
    return found


def test_every_finding_is_fixed_or_explained(findings):
    unexplained = {scan: sorted(found - set(NOT_APPLICABLE)) for scan, found in findings.items()}
    assert all(not found for found in unexplained.values()), (
        f"fix the template or say why each does not apply: {unexplained}")


def test_every_explanation_still_has_its_finding(findings):
    every = set().union(*findings.values())
    assert sorted(set(NOT_APPLICABLE) - every) == []


def test_the_scanners_catch_a_broken_template(tmp_path):
    """Broken on purpose: a wildcard action and resource in the role, and an EventBridge target
    without its dead-letter queue, are found."""
    text = TEMPLATE.read_text()
    action = "Action: [logs:CreateLogStream, logs:PutLogEvents]"
    resource = "Resource: !Sub arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:${FunctionLogGroup}:*"
    dead_letter = "          DeadLetterConfig:\n            Arn: !GetAtt FailureQueue.Arn\n"
    assert action in text and resource in text and dead_letter in text
    broken = tmp_path / "template.yaml"
    broken.write_text(text.replace(action, 'Action: "*"').replace(resource, 'Resource: "*"').replace(dead_letter, ""))
    found = cfripper(broken, {}, tmp_path) - set(NOT_APPLICABLE)
    assert {("WildcardResourceRule", "FunctionRole"), ("PrivilegeEscalationRule", "FunctionRole")} <= found, found
    assert ("ES4000", "SourceEventRule") in serverless_rules(broken)


def test_the_deploy_readme_lists_each_finding_and_its_reason():
    section = DEPLOY_README.read_text(encoding="utf-8").split("## Policy scan", 1)[1]
    for rule, resource in NOT_APPLICABLE:
        assert f"`{rule}`" in section and f"`{resource}`" in section, (rule, resource)
