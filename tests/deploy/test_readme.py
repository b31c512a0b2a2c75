"""The README against deploy/ and the code: one source of truth for every value they share.

The README's table "Function settings and their defaults" must hold deploy/template.yaml's
defaults; its configuration table must name every variable gcs_sync/config.py reads and give
config.py's defaults; its IAM policies must be the template's; its manual Google commands must be
the ones deploy/gcp-setup.sh runs; its links must lead somewhere.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from gcs_sync.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DEPLOY_README = ROOT / "deploy" / "README.md"
TEMPLATE = ROOT / "deploy" / "template.yaml"
SETUP = ROOT / "deploy" / "gcp-setup.sh"
CONFIG = ROOT / "gcs_sync" / "config.py"
BASH = shutil.which("bash")


# ------------------------------------------------------------------------------------------------
# Reading the files
# ------------------------------------------------------------------------------------------------

# The `template` fixture (the parsed deploy/template.yaml) is in tests/deploy/conftest.py.


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


def section(text: str, heading: str) -> str:
    """The text under the heading whose title is ``heading``, up to the next heading of its level
    or higher (lines inside fenced code blocks are never headings)."""
    lines = text.splitlines(keepends=True)
    start = level = None
    fenced = False
    for number, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"^(#+) (.+?)\s*$", line)
        if not match:
            continue
        if start is None:
            if match.group(2) == heading:
                start, level = number + 1, len(match.group(1))
        elif len(match.group(1)) <= level:
            return "".join(lines[start:number])
    assert start is not None, f"README has no heading {heading!r}"
    return "".join(lines[start:])


def table(text: str) -> list[dict[str, str]]:
    """The first Markdown table in ``text``, as one dict per row keyed by the header cells."""
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break  # the first table ends at its first line that is not a row
    assert len(lines) >= 3, "no table found"
    split = lambda line: [cell.strip() for cell in line.strip().strip("|").split("|")]  # noqa: E731
    header = split(lines[0])
    return [dict(zip(header, split(line))) for line in lines[2:]]


def code_blocks(text: str, language: str) -> list[tuple[str, str]]:
    """(text before the block since the previous block, block body) for each fenced block."""
    blocks, previous_end = [], 0
    for match in re.finditer(rf"^```{language}\n(.*?)^```", text, re.M | re.S):
        blocks.append((text[previous_end:match.start()], match.group(1)))
        previous_end = match.end()
    return blocks


def number(cell: str) -> int:
    match = re.search(r"\d[\d,]*", cell)
    assert match, f"no number in {cell!r}"
    return int(match.group(0).replace(",", ""))


# ------------------------------------------------------------------------------------------------
# Function settings: README table == template defaults
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def settings_table(readme) -> dict[str, dict[str, str]]:
    rows = table(section(readme, "Function settings and their defaults"))
    return {row["setting"]: row for row in rows}


def _row(settings_table, starts: str) -> dict[str, str]:
    found = [row for name, row in settings_table.items() if name.startswith(starts)]
    assert len(found) == 1, f"one row starting {starts!r} expected in the function settings table"
    return found[0]


def test_every_function_parameter_of_the_template_is_in_the_readme_table(template, settings_table):
    groups = template["Metadata"]["AWS::CloudFormation::Interface"]["ParameterGroups"]
    function = next(g for g in groups if g["Label"]["default"] == "Function")["Parameters"]
    documented = {row["template"].strip("`") for row in settings_table.values()}
    assert set(function) <= documented, f"not in the README's table: {set(function) - documented}"


def test_readme_defaults_are_the_template_parameter_defaults(template, settings_table):
    parameters = template["Parameters"]
    checked = 0
    for row in settings_table.values():
        name = row["template"].strip("`")
        if name not in parameters:
            continue
        default = parameters[name].get("Default")
        if parameters[name]["Type"] == "Number":
            assert number(row["default"]) == default, (name, row["default"], default)
        elif default == "":
            assert row["default"].startswith("empty"), (name, row["default"])
        else:
            assert row["default"].strip("`") == default, (name, row["default"], default)
        checked += 1
    assert checked >= 6


def test_readme_defaults_are_the_template_resource_settings(template, settings_table):
    resources = template["Resources"]
    function = resources["Function"]["Properties"]
    assert _row(settings_table, "architecture")["default"].strip("`") == function["Architectures"][0]
    assert number(_row(settings_table, "asynchronous retries")["default"]) == (
        function["EventInvokeConfig"]["MaximumRetryAttempts"])
    days = number(_row(settings_table, "failure queue retention")["default"])
    assert days * 86400 == resources["FailureQueue"]["Properties"]["MessageRetentionPeriod"]
    assert number(_row(settings_table, "SQS trigger batch size")["default"]) == (
        resources["WorkQueueEventSourceMapping"]["Properties"]["BatchSize"])
    visibility = _row(settings_table, "SQS queue visibility timeout")["default"]
    queue = resources["WorkQueue"]["Properties"]
    assert number(visibility) == queue["VisibilityTimeout"]
    # "6 x the largest timeout, 900 s": both numbers are the template's
    assert re.search(r"6 × the largest timeout, (\d+) s", visibility).group(1) == str(
        template["Parameters"]["Timeout"]["MaxValue"])
    assert queue["VisibilityTimeout"] >= 6 * template["Parameters"]["Timeout"]["MaxValue"]
    assert number(_row(settings_table, "receives before the dead-letter queue")["default"]) == (
        queue["RedrivePolicy"]["maxReceiveCount"])


def test_console_steps_set_the_template_defaults(template, readme):
    steps = section(readme, "4. Create the function and upload the zip")
    match = re.search(r"\((\d+) MB, (\d+) min, (\d+) MB to start", steps)
    assert match, "step 4 gives memory, timeout and ephemeral storage"
    memory, minutes, storage = map(int, match.groups())
    parameters = template["Parameters"]
    assert memory == parameters["MemorySize"]["Default"]
    assert minutes * 60 == parameters["Timeout"]["Default"]
    assert storage == parameters["EphemeralStorage"]["Default"]
    assert "Runtime Python 3.11" in steps and parameters["Runtime"]["Default"] == "python3.11"
    assert "Architecture\n   x86_64" in steps or "Architecture x86_64" in steps


def test_every_mention_of_the_ephemeral_storage_default_agrees(template, readme):
    default = template["Parameters"]["EphemeralStorage"]["Default"]
    mentions = re.findall(r"default (\d+) MB of ephemeral storage", readme)
    mentions += re.findall(r"(\d+) MB \(default\)", readme)
    assert mentions, "the README states the ephemeral storage default"
    assert {int(m) for m in mentions} == {default}
    assert str(default) in template["Parameters"]["EphemeralStorage"]["Description"]


def test_log_retention_in_the_readme_is_the_template_default(template, readme):
    days = re.search(r"keeps the logs (\d+) days \(`LogRetentionInDays`\)", " ".join(readme.split()))
    assert days and int(days.group(1)) == template["Parameters"]["LogRetentionInDays"]["Default"]


def test_zip_name_and_runtime_agree(template, readme):
    code_uri = template["Resources"]["Function"]["Properties"]["CodeUri"]
    zip_name = Path(code_uri).name
    assert f"dist/{zip_name}" in readme
    assert f"dist/{zip_name}" in DEPLOY_README.read_text()
    version = re.search(r"py(\d\.\d+)-", zip_name).group(1)
    assert template["Parameters"]["Runtime"]["Default"] == f"python{version}"
    assert f"Python {version}" in section(readme, "Two commands")


def test_deploy_readme_numbers_are_the_templates(template):
    text = " ".join(DEPLOY_README.read_text().split())
    resources = template["Resources"]
    queue = resources["WorkQueue"]["Properties"]
    assert int(re.search(r"visibility timeout is (\d+) s", text).group(1)) == queue["VisibilityTimeout"]
    assert "6 × the largest allowed function timeout" in text
    assert int(re.search(r"in batches of (\d+)", text).group(1)) == (
        resources["WorkQueueEventSourceMapping"]["Properties"]["BatchSize"])
    assert int(re.search(r"fails (\d+) times", text).group(1)) == queue["RedrivePolicy"]["maxReceiveCount"]
    assert int(re.search(r"kept (\d+) days", text).group(1)) * 86400 == (
        resources["FailureQueue"]["Properties"]["MessageRetentionPeriod"])
    retries = {"once": 1, "twice": 2}[re.search(r"are retried (once|twice)", text).group(1)]
    assert retries == resources["Function"]["Properties"]["EventInvokeConfig"]["MaximumRetryAttempts"]
    for parameter in ("MemorySize", "Timeout", "EphemeralStorage"):
        label = {"MemorySize": "memory", "Timeout": "timeout", "EphemeralStorage": "ephemeral storage"}[parameter]
        stated = re.search(rf"{label} (\d+)", text)
        assert stated and int(stated.group(1)) == template["Parameters"][parameter]["Default"], parameter


# ------------------------------------------------------------------------------------------------
# Environment variables: README table == what gcs_sync/config.py reads, with its defaults
# ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def variables_table(readme) -> list[tuple[set[str], str]]:
    rows = table(section(readme, "Environment variables"))
    return [(set(re.findall(r"`([A-Z][A-Z0-9_<>]*)`", row["variable"])), row["meaning"]) for row in rows]


def _documented(variables_table) -> set[str]:
    return set().union(*(names for names, _ in variables_table))


def _meaning(variables_table, name: str) -> str:
    found = [meaning for names, meaning in variables_table if name in names]
    assert found, f"{name} is not in the README's configuration table"
    return found[0]


def _covered(name: str, documented: set[str]) -> bool:
    if name in documented:
        return True
    return any(d.endswith("_<X>") and name.startswith(d[: -len("<X>")]) for d in documented)


class _Recording(dict):
    """An environment that remembers every variable asked for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.asked.add(key)
        return super().__contains__(key)


def _read_by_config(tmp_path) -> set[str]:
    source = CONFIG.read_text()
    names = set(re.findall(r"""env(?:iron)?\.get\(\s*["']([A-Z][A-Z0-9_]+)["']""", source))
    names |= set(re.findall(r"""\(\s*env(?:iron)?\s*,\s*["']([A-Z][A-Z0-9_]+)["']""", source))
    names |= set(re.findall(r"""env(?:iron)?\[\s*["']([A-Z][A-Z0-9_]+)["']\s*\]""", source))
    for environ in (
        {"GCS_DESTINATIONS": "gs://bucket-a"},
        {"GCS_BUCKET_NAME_A": "bucket-a", "AWS_LAMBDA_FUNCTION_NAME": "f",
         "GOOGLE_APPLICATION_CREDENTIALS": "gcp-credentials.json", "LAMBDA_TASK_ROOT": str(tmp_path)},
    ):
        recording = _Recording(environ)
        try:
            Settings.from_environ(recording, code_dir=str(tmp_path))
        except Exception:  # noqa: BLE001 - only which variables were read matters here
            pass
        names |= recording.asked
    return names


def test_every_variable_config_reads_is_in_the_readme_table(variables_table, tmp_path):
    read = _read_by_config(tmp_path)
    assert {"GCS_DESTINATIONS", "OBJECT_CONCURRENCY", "LOG_LEVEL"} <= read  # the scan works
    documented = _documented(variables_table)
    missing = sorted(name for name in read if not _covered(name, documented))
    assert not missing, f"gcs_sync/config.py reads these, the README's table does not name them: {missing}"


def test_the_contracts_variables_are_in_the_readme_table(variables_table):
    documented = _documented(variables_table)
    for name in ("GCS_DESTINATIONS", "GCS_BUCKET_NAME_<X>", "GCP_PROJECT_ID_<X>",
                 "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "GCS_API_ENDPOINT",
                 "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL", "SOURCE_BUCKETS",
                 "S3_BUCKET_NAME", "FANOUT", "PRIMARY_DESTINATION", "SLICE_QUEUE_URL", "SLICE_MB",
                 "SLICE_THRESHOLD_MB"):
        assert name in documented, name


def _settings(tmp_path, **environ) -> Settings:
    return Settings.from_environ({"GCS_DESTINATIONS": "gs://bucket-a", **environ}, code_dir=str(tmp_path))


def test_readme_defaults_are_configs_defaults(variables_table, tmp_path):
    defaults = _settings(tmp_path)
    mib = 1024 * 1024
    threshold, chunk = re.findall(r"default (\d+)", _meaning(variables_table, "STREAM_THRESHOLD_MB"))[:2]
    assert int(threshold) * mib == defaults.stream_threshold
    assert int(chunk) * mib == defaults.stream_chunk
    assert int(re.search(r"`(\d+)` \(default\)", _meaning(variables_table, "S3_READ_PARTS")).group(1)) == (
        defaults.s3_read_parts)
    level = re.search(r"`([A-Z]+)` \(default\)|else `([A-Z]+)`", _meaning(variables_table, "LOG_LEVEL"))
    assert (level.group(1) or level.group(2)) == defaults.log_level
    for name, attribute in (("MIRROR_DELETES", "mirror_deletes"),
                            ("ALLOW_SERVICE_ACCOUNT_KEY", "allow_service_account_key")):
        assert "default off" in _meaning(variables_table, name)
        assert getattr(defaults, attribute) is False
    memory = re.search(r"\(default (\d+) outside Lambda\)",
                       _meaning(variables_table, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"))
    assert int(memory.group(1)) == defaults.memory_mb


OBJECT_CONCURRENCY_RULE = re.compile(r"memory MB / (\d+), between (\d+) and (\d+)")


def test_object_concurrency_default_is_the_rule_the_docs_state(variables_table, template, readme, tmp_path):
    stated = {
        "README configuration table": _meaning(variables_table, "OBJECT_CONCURRENCY"),
        "README function settings": section(readme, "Function settings and their defaults"),
        "template": " ".join(template["Parameters"]["ObjectConcurrency"]["Description"].split()),
    }
    rules = set()
    for where, text in stated.items():
        match = OBJECT_CONCURRENCY_RULE.search(text)
        assert match, f"{where} does not state OBJECT_CONCURRENCY's default rule"
        rules.add(tuple(map(int, match.groups())))
    assert len(rules) == 1, rules
    divisor, low, high = rules.pop()
    for memory in (128, 512, 1024, 1769, 3008, 10240):
        settings = _settings(tmp_path, AWS_LAMBDA_FUNCTION_MEMORY_SIZE=str(memory))
        assert settings.object_concurrency == max(low, min(high, memory // divisor)), memory


def test_stream_threshold_in_the_template_is_configs(template, tmp_path):
    description = " ".join(template["Parameters"]["EphemeralStorage"]["Description"].split())
    stated = re.search(r"STREAM_THRESHOLD_MB \((\d+) MiB\)", description)
    assert stated and int(stated.group(1)) * 1024 * 1024 == _settings(tmp_path).stream_threshold


# ------------------------------------------------------------------------------------------------
# IAM policies: README JSON == the template's role policies
# ------------------------------------------------------------------------------------------------

SUBSTITUTIONS = {
    "${AWS::Partition}": "aws",
    "${AWS::Region}": "REGION",
    "${AWS::AccountId}": "ACCOUNT_ID",
    "${SourceBucketName}": "SOURCE_BUCKET",
    "${FunctionLogGroup}": "/aws/lambda/FUNCTION_NAME",
}
REFERENCES = {
    ("Fn::GetAtt", "FailureQueue.Arn"): "arn:aws:sqs:REGION:ACCOUNT_ID:FAILURE_QUEUE",
    ("Fn::GetAtt", "WorkQueue.Arn"): "arn:aws:sqs:REGION:ACCOUNT_ID:WORK_QUEUE",
    ("Ref", "SourceBucketKmsKeyArn"): "arn:aws:kms:REGION:ACCOUNT_ID:key/KEY_ID",
}
_NO_VALUE = object()


def resolve(value, conditions: dict[str, bool]):
    """The template value with conditions decided, substitutions made and AWS::NoValue dropped."""
    if isinstance(value, dict) and len(value) == 1:
        (key, argument), = value.items()
        if key == "Fn::If":
            name, when_true, when_false = argument
            return resolve(when_true if conditions[name] else when_false, conditions)
        if key == "Ref" and argument == "AWS::NoValue":
            return _NO_VALUE
        if key == "Fn::Sub":
            for placeholder, replacement in SUBSTITUTIONS.items():
                argument = argument.replace(placeholder, replacement)
            assert "${" not in argument, f"no substitution for {argument}"
            return argument
        if key in ("Fn::GetAtt", "Ref"):
            name = ".".join(argument) if isinstance(argument, list) else argument
            return REFERENCES[(key, name)]
    if isinstance(value, dict):
        resolved = {k: resolve(v, conditions) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}
    if isinstance(value, list):
        return [v for v in (resolve(item, conditions) for item in value) if v is not _NO_VALUE]
    return value


def normalized(statements: list[dict]) -> dict[str, dict]:
    """Statements by Sid, with Action and Resource as sorted lists."""
    result = {}
    for statement in statements:
        statement = dict(statement)
        for key in ("Action", "Resource"):
            if isinstance(statement.get(key), str):
                statement[key] = [statement[key]]
            statement[key] = sorted(statement[key])
        result[statement["Sid"]] = statement
    return result


@pytest.fixture(scope="module")
def readme_policies(readme) -> dict[str, dict]:
    policies = {}
    for before, body in code_blocks(section(readme, "2. AWS: the execution role"), "json"):
        names = re.findall(r"the policy\s+`([a-z-]+)`", before)
        assert names, f"a policy JSON block without its name before it: {body[:80]}"
        policy = json.loads(body)
        assert policy["Version"] == "2012-10-17"
        policies[names[-1]] = policy
    return policies


def _template_policies(template, **conditions) -> dict[str, list[dict]]:
    decided = {"HasKmsKey": False, "UseQueue": False, **conditions}
    policies = resolve(template["Resources"]["FunctionRole"]["Properties"]["Policies"], decided)
    return {p["PolicyName"]: p["PolicyDocument"]["Statement"] for p in policies}


def test_readme_policies_are_the_templates(template, readme_policies):
    every = _template_policies(template, HasKmsKey=True, UseQueue=True)
    plain = _template_policies(template)
    # The source-reading policy without KMS is read-source-bucket as pasted by most users; the
    # KMS statement the template adds to it for SSE-KMS buckets is its own block in the README.
    assert normalized(readme_policies["read-source-bucket"]["Statement"]) == normalized(plain["read-source-bucket"])
    kms_only = [s for s in every["read-source-bucket"] if s not in plain["read-source-bucket"]]
    assert kms_only, "the template has a KMS statement"
    assert normalized(readme_policies["decrypt-source-objects"]["Statement"]) == normalized(kms_only)
    for name in ("report-failures", "read-work-queue"):
        assert normalized(readme_policies[name]["Statement"]) == normalized(every[name]), name
    assert set(readme_policies) == set(every) | {"decrypt-source-objects"}


def test_readme_attaches_no_managed_policy_as_the_template(template, readme):
    """AWSLambdaBasicExecutionRole may write to every log group: the role has an inline policy on
    its own log group instead, and the README's by-hand role attaches no managed policy either."""
    assert "ManagedPolicyArns" not in template["Resources"]["FunctionRole"]["Properties"]
    step = section(readme, "2. AWS: the execution role")
    assert not re.search(r"attach the managed\s+policy", step)
    assert "aws logs create-log-group --log-group-name /aws/lambda/" in step


def test_function_is_created_before_its_trigger(readme):
    steps = [m.group(1) for m in re.finditer(r"^### (\d)\. ", section(readme, "A first real copy"), re.M)]
    assert steps == [str(n) for n in range(1, len(steps) + 1)]
    text = section(readme, "A first real copy")
    create = text.index("Create function")
    trigger = text.index("Add trigger")
    google = text.index("### 1. Google Cloud")
    aws = text.index("### 2. AWS")
    build = text.index("./build.sh --credentials")
    test = text.index("events/doctor.json")
    assert google < aws < build < create < test < trigger


# ------------------------------------------------------------------------------------------------
# Google side: README commands == deploy/gcp-setup.sh
# ------------------------------------------------------------------------------------------------

def _shell_commands(script: str) -> list[str]:
    joined = script.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.skipif(BASH is None, reason="bash is needed to run gcp-setup.sh")
def test_readme_google_commands_are_what_gcp_setup_runs(readme):
    step = section(readme, "1. Google Cloud: pool, provider, service account")
    blocks = [body for _, body in code_blocks(step, "sh")]
    assert len(blocks) == 2, "one block of values, one of commands"
    values, lookups = {}, []
    for line in _shell_commands(blocks[0]):
        name, _, value = line.partition("=")
        if value.startswith("$("):
            lookups.append(shlex.split(value[2:-1]))
        else:
            values[name] = value
    values["PROJECT_NUMBER"] = "987654321098"
    bucket = re.search(r"buckets add-iam-policy-binding (gs://\S+)", blocks[1]).group(1)

    def expand(word: str) -> str:
        for name in sorted(values, key=len, reverse=True):
            word = word.replace(f"${name}", values[name])
        assert "$" not in word, word
        return word

    readme_commands = [[expand(w) for w in shlex.split(line)] for line in _shell_commands(blocks[1])]
    readme_lookups = [[expand(w) for w in words] for words in lookups]

    result = subprocess.run(
        [BASH, str(SETUP), "--dry-run", "--project", values["PROJECT_ID"],
         "--aws-account-id", values["AWS_ACCOUNT_ID"], "--aws-role-name", values["AWS_ROLE_NAME"],
         "--bucket", bucket],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    lines = result.stdout.splitlines()
    script_commands = [shlex.split(line) for line in lines if line.startswith("gcloud ")]
    script_lookups = [shlex.split(line.lstrip("# ")) for line in lines
                      if line.lstrip("# ").startswith("gcloud projects describe")]
    # Without --project-number the script prints PROJECT_NUMBER where the number goes.
    script_commands = [[w.replace("PROJECT_NUMBER", values["PROJECT_NUMBER"]) for w in c] for c in script_commands]
    assert readme_commands == script_commands
    assert readme_lookups == script_lookups


def test_readme_names_the_roles_gcp_setup_asks_for(readme):
    def roles(text: str) -> set[str]:
        return set(re.findall(r"roles/[a-zA-Z.]+[a-zA-Z]", text))

    help_text = SETUP.read_text()
    permissions = help_text[help_text.index("Permissions of the person running it"):]
    permissions = permissions[: permissions.index("EOF")]
    who = section(readme, "1. Google Cloud: pool, provider, service account")
    who = who[who.index("**Who can run it.**"): who.index("**The values.**")]
    assert roles(permissions) and roles(who) == roles(permissions)


# ------------------------------------------------------------------------------------------------
# Structure: contents, links, the places kept for sections still to come
# ------------------------------------------------------------------------------------------------

def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_internal_link_leads_to_a_heading(readme):
    outside_code = re.sub(r"^```.*?^```", "", readme, flags=re.M | re.S)
    slugs = {_slug(h) for h in re.findall(r"^#+ (.+)$", outside_code, re.M)}
    links = set(re.findall(r"\]\(#([^)]+)\)", readme))
    assert links, "the README links to its sections"
    assert not links - slugs, f"links to no heading: {sorted(links - slugs)}"


def test_readme_leads_with_the_two_commands_then_the_first_copy(readme):
    headings = re.findall(r"^## (.+)$", re.sub(r"^```.*?^```", "", readme, flags=re.M | re.S), re.M)
    assert headings[:4] == ["Two commands", "Contents", "A first real copy", "Building the deployment zip"]
    order = ["Configuration", "Operating it", "How it works", "Development"]
    assert [h for h in headings if h in order] == order
    two = section(readme, "Two commands")
    assert "./demo.sh" in two and "./test.sh" in two and "Python 3.11" in two
    for platform in ("macOS", "Linux"):
        assert platform in two


def test_places_kept_for_sections_to_come(readme):
    for heading, words in (("How a copy is proven", ("checksums", "proof")),
                           ("One upload for many destinations", ("FANOUT", "PRIMARY_DESTINATION")),
                           ("Objects larger than one invocation", ("SLICE_QUEUE_URL", "SLICE_MB",
                                                                   "SLICE_THRESHOLD_MB"))):
        text = section(readme, heading)
        assert all(word in text for word in words), heading


def test_command_line_documents_every_command(readme):
    from gcs_sync import cli

    text = section(readme, "The command line")
    commands = set(re.findall(r"add_parser\(\s*\"([a-z-]+)\"", Path(cli.__file__).read_text()))
    assert {"doctor", "sync", "copy"} <= commands
    for command in commands:
        assert f"-m gcs_sync {command}" in text, command
    assert "GCS_API_ENDPOINT" in text and "AWS_ENDPOINT_URL_S3" in text  # the local servers


def test_every_visibility_timeout_and_timeout_limit_in_the_readme_is_the_templates(template, readme):
    text = " ".join(readme.split())
    visibility = re.findall(r"visibility timeout[^.|]*?(\d{3,}) s", text)
    assert visibility and {int(v) for v in visibility} == {
        template["Resources"]["WorkQueue"]["Properties"]["VisibilityTimeout"]}
    limits = re.findall(r"up to (\d+) s for large objects", text)
    assert limits and {int(v) for v in limits} == {template["Parameters"]["Timeout"]["MaxValue"]}


# ------------------------------------------------------------------------------------------------
# The overview and the facts stated once: each against its source
# ------------------------------------------------------------------------------------------------

BUILD = ROOT / "build.sh"
METRICS = ROOT / "gcs_sync" / "metrics.py"


def _flat(text: str) -> str:
    return " ".join(text.split())


def _top(readme: str) -> str:
    return readme[: readme.index("## Two commands")]


def _versions(text: str) -> list[str]:
    return re.findall(r"3\.\d+", text)


@pytest.mark.skipif(BASH is None, reason="bash runs build.sh")
def test_python_versions_are_what_build_sh_accepts_and_the_template_allows(template, readme):
    source = re.search(r"^SUPPORTED_PYTHONS=\(([^)]*)\)", BUILD.read_text(), re.M)
    assert source, "build.sh lists SUPPORTED_PYTHONS"
    accepted = source.group(1).split()
    # What build.sh really does: its refusal of another version lists the ones it accepts ...
    refused = subprocess.run([BASH, str(BUILD), "--python", "3.99"], capture_output=True, text=True,
                             timeout=60, cwd=ROOT)
    assert refused.returncode != 0 and "3.99 is not supported" in refused.stderr, refused.stderr
    assert _versions(refused.stderr.split("only")[0].split("for Python")[-1]) == accepted
    # ... and so does its --help.
    help_text = subprocess.run([BASH, str(BUILD), "--help"], capture_output=True, text=True, check=True,
                               timeout=60, cwd=ROOT).stdout
    python_option = _flat(help_text[help_text.index("--python X.Y"): help_text.index("--out DIR")])
    assert _versions(python_option.split("3.11):")[-1]) == accepted

    stated = re.search(r"\*\*Python versions:\*\* `--python` accepts ([^(]+) \(default (3\.\d+)\)",
                       _flat(section(readme, "Building the deployment zip")))
    assert stated, "the README states which versions --python accepts"
    assert _versions(stated.group(1)) == accepted
    runtime = template["Parameters"]["Runtime"]
    assert f"python{stated.group(2)}" == runtime["Default"]
    assert runtime["AllowedValues"] == [f"python{v}" for v in accepted]
    row = _row({r["setting"]: r for r in table(section(readme, "Function settings and their defaults"))},
               "runtime")
    assert [stated.group(2)] + _versions(row["when to change it"]) == accepted


def test_one_visibility_timeout_rule_the_templates_and_the_doctors(template, readme):
    from gcs_sync.doctor.aws_checks import LAMBDA_MAX_TIMEOUT
    from gcs_sync.doctor.catalogue import SLICE_QUEUE

    rule_section = section(readme, "The work queue's visibility timeout")
    rule = _flat(rule_section)
    stated = re.search(r"a visibility timeout of (\d+) s, which is (\d+) × the longest timeout Lambda allows "
                       r"\((\d+) s\)", rule)
    assert stated, "the rule states the value and where it comes from"
    value, factor, longest = map(int, stated.groups())
    queue = template["Resources"]["WorkQueue"]["Properties"]
    assert value == queue["VisibilityTimeout"] == factor * longest
    assert longest == template["Parameters"]["Timeout"]["MaxValue"] == LAMBDA_MAX_TIMEOUT
    floor = re.search(r"must never be below (\d+) s", rule)
    assert floor and int(floor.group(1)) == LAMBDA_MAX_TIMEOUT  # what the doctor refuses
    assert f"`{SLICE_QUEUE}` check fails a queue below {LAMBDA_MAX_TIMEOUT} s" in rule
    # Everywhere else the value only, never a second rule.
    rest = _flat(readme.replace(rule_section, ""))
    mentions = re.findall(r"visibility timeout[^.|]*?(\d{3,}) s", rest)
    assert len(mentions) >= 2 and {int(m) for m in mentions} == {value}, mentions
    assert not re.search(r"visibility timeout (?:of )?at least", rest)
    assert rest.count("(#the-work-queues-visibility-timeout)") >= 2


def _written_metrics() -> dict[str, str]:
    """Metric name -> unit, as gcs_sync/metrics.py writes them (``"Name": (value, "Unit")``)."""
    source = METRICS.read_text()
    found = dict(re.findall(r'"([A-Z][A-Za-z0-9]+)": \(.*?,\s*"(Count|Bytes|Milliseconds|Seconds)"\)', source, re.S))
    assert {"ObjectsCopied", "CopiesProven", "CopiesWithoutS3Proof", "SlicesCopied"} <= set(found)  # the scan works
    return found


def _readme_metrics(readme: str) -> dict[str, str]:
    """Metric name -> unit, from the README's metrics table."""
    stated: dict[str, str] = {}
    for row in table(section(readme, "Logs and metrics")):
        names = re.findall(r"`([A-Za-z0-9]+)`", row["metric"])
        units = [unit.strip() for unit in row["unit"].split(",")]
        assert len(units) in (1, len(names)), row
        for name, unit in zip(names, units * len(names) if len(units) == 1 else units):
            stated[name] = unit
    return stated


def test_the_metrics_table_is_what_metrics_py_writes(readme):
    written, stated = _written_metrics(), _readme_metrics(readme)
    missing = sorted(set(written) - set(stated))
    assert not missing, f"metrics.py writes these, the README's table does not list them: {missing}"
    # The contract's ReplicationLatency is listed whether or not this tree writes it yet.
    invented = sorted(set(stated) - set(written) - {"ReplicationLatency"})
    assert not invented, f"the README lists metrics metrics.py does not write: {invented}"
    for name, unit in written.items():
        assert stated[name] == unit, (name, stated[name], unit)
    assert stated["ReplicationLatency"] == written.get("ReplicationLatency", "Milliseconds")
    latency = next(r for r in table(section(readme, "Logs and metrics")) if "`ReplicationLatency`" in r["metric"])
    assert "`Destination`" in latency["dimensions"] and "`eventTime`" in latency["counts"]


def test_the_proofs_named_are_the_codes(readme):
    from gcs_sync.proof import PROOFS

    top = _flat(_top(readme))
    named = re.search(r"each result names that proof: (.+?)\(see", top)
    assert named, "the overview names the proofs"
    assert re.findall(r"`([a-z0-9-]+)`", named.group(1)) == list(PROOFS)
    row = next(r for r in table(section(readme, "Logs and metrics")) if "`CopiesProven`" in r["metric"])
    assert re.findall(r"`([a-z0-9-]+)`", row["counts"]) == list(PROOFS)


def test_the_overview_describes_todays_copy(readme, tmp_path):
    top = _flat(_top(readme))
    for claim in ("uploaded once, to the primary destination", "`objects.rewrite`", "`FANOUT=copy`, the default",
                  "sliced", "`ReplicationLatency`", "redriven",
                  "an audit (`check`)", "a health check (`doctor`)", "a record from the failure queue"):
        assert claim in top, claim
    assert _settings(tmp_path, GCS_DESTINATIONS="gs://bucket-a gs://bucket-b").fanout == "copy"
    from gcs_sync.staging import IN_MEMORY_MAX

    sizes = (f"held in memory (up to {IN_MEMORY_MAX // (1024 * 1024)} MiB) or staged under `/tmp` "
             f"(up to {_settings(tmp_path).stream_threshold // (1024 * 1024)} MiB), large ones streamed")
    assert sizes in top, sizes


def test_the_events_table_lists_every_shape_the_function_accepts(readme):
    from gcs_sync.events import ACCEPTED_SHAPES

    rows = " ".join(row["shape"] for row in table(section(readme, "Events the function accepts")))
    for request in re.findall(r"\{'([a-z_]+)':", ACCEPTED_SHAPES):
        assert f'{{"{request}":' in rows, request
    assert "`s3:TestEvent` is skipped" in rows
    assert '"requestPayload": ORIGINAL_EVENT' in rows  # a failure record (the contract's 8th shape)
    assert "slice tasks" in rows


def test_the_copy_path_stages_streams_and_slices(readme, tmp_path):
    path = section(readme, "The copy path")
    diagram = code_blocks("```\n" + path.split("```", 1)[1], "")[0][1]
    threshold = _settings(tmp_path).stream_threshold // (1024 * 1024)
    from gcs_sync.staging import IN_MEMORY_MAX

    for step in (f"up to {IN_MEMORY_MAX // (1024 * 1024)} MiB              kept in memory",
                 f"under {threshold} MiB", "staged in a private dir under /tmp", f"{threshold} MiB and up",
                 "streamed", "sliced", "work queue", "primary destination", "server-side copy (objects.rewrite)",
                 "FANOUT=upload"):
        assert step in diagram, step


def test_the_throughput_figure_is_the_one_the_function_plans_with(template, readme):
    from gcs_sync.budget import ASSUMED_THROUGHPUT, TIME_SHARE

    text = _flat(readme)
    rate = ASSUMED_THROUGHPUT / 1e6
    assert {float(r) for r in re.findall(r"(\d+) MB/s assumed", text)} == {rate}
    assert len(re.findall(r"(\d+) MB/s assumed", text)) >= 3
    sizing = _flat(section(readme, "Sizing"))
    longest = template["Parameters"]["Timeout"]["MaxValue"]
    default = template["Parameters"]["Timeout"]["Default"]
    stated = re.search(r"At (\d+) MB/s one invocation \(at most (\d+) s\) copies about (\d+) GB at best, and an "
                       r"object that needs more than (\d+) % of the time left is sliced: from about (\d+) GB with "
                       r"the full \d+ s, about (\d+) GB with the default (\d+) s", sizing)
    assert stated, "Sizing states what one invocation copies at the assumed rate"
    at, limit, best, share, sliced_max, sliced_default, timeout = map(int, stated.groups())
    assert (at, limit, timeout, share) == (rate, longest, default, round(TIME_SHARE * 100))
    assert best == round(limit * rate / 1000)
    assert sliced_max == int(TIME_SHARE * limit * rate / 1000)
    assert sliced_default == round(TIME_SHARE * default * rate / 1000)
    one = re.search(r"100 GB takes about (\d+) minutes for one container", sizing)
    assert one and int(one.group(1)) == round(100e9 / (rate * 1e6) / 60)
    assert "stated" not in sizing and "80 MB/s" not in text


def test_the_memory_examples_follow_the_default_fanout(readme, tmp_path):
    from gcs_sync.streaming import QUEUE_DEPTH
    from gcs_sync.transfer import STREAM_MEMORY_SHARE

    sizing = _flat(section(readme, "Sizing"))
    defaults = _settings(tmp_path, AWS_LAMBDA_FUNCTION_MEMORY_SIZE="1024")
    mib = 1024 * 1024
    staged = re.search(r"at the default (\d+) MB \((\d+) at once\) that is (\d+) × (\d+) MiB = (\d+) MiB at most", sizing)
    assert staged, "Sizing gives the staged objects' memory at the default setting"
    memory, at_once, times, size, total = map(int, staged.groups())
    assert memory == defaults.memory_mb and at_once == times == defaults.object_concurrency
    assert size * mib == defaults.stream_threshold and total == times * size
    streamed = re.search(r"`STREAM_CHUNK_MB` × \(1 \+ (\d+) × the destinations it is uploaded to\): (\d+) MiB "
                         r"under `FANOUT=copy`", sizing)
    assert streamed and int(streamed.group(1)) == QUEUE_DEPTH + 1
    assert int(streamed.group(2)) * mib == defaults.stream_chunk * (1 + (QUEUE_DEPTH + 1))
    assert f"{round(STREAM_MEMORY_SHARE * 100)} % of the memory setting" in sizing
    assert not re.search(r"× \d+ destinations =", sizing)  # FANOUT=copy uploads once


def test_the_models_the_zip_keeps_are_the_services_the_function_calls(readme):
    from gcs_sync.aws import AWS_SERVICES

    match = re.search(r"keeps the \w+ the\s+function\s+calls\s+\(([A-Z0-9,\s]+):\s+`AWS_SERVICES`\s+in\s+`gcs_sync/aws\.py`\)", readme)
    assert match, "the README's build section no longer names the service models the zip keeps"
    assert [s.strip().lower() for s in match.group(1).split(",")] == list(AWS_SERVICES)


def test_the_development_layout_names_every_module(readme):
    block = code_blocks("```\n" + section(readme, "Development").split("```", 1)[1], "")[0][1]
    package = Path(__file__).resolve().parents[2] / "gcs_sync"
    modules = sorted(p.name for p in package.glob("*.py") if not p.name.startswith("__"))
    assert [m for m in modules if not re.search(rf"\b{re.escape(m)}\b", block)] == []
    assert "doctor/" in block
