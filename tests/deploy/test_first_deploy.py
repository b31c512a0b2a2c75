"""The first deployment as deploy/README.md tells it, and build.sh's warning about a zip without
credentials: the steps in an order that gives a working function from the first event.

The README's commands are read as a shell would read them: the Google side is run in --dry-run
with the README's own arguments, and the stack's parameters are checked against the template.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_README = ROOT / "deploy" / "README.md"
SETUP = ROOT / "deploy" / "gcp-setup.sh"
BUILD = ROOT / "build.sh"
BASH = shutil.which("bash") or "/bin/bash"


def _section(heading: str) -> str:
    text = DEPLOY_README.read_text(encoding="utf-8")
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def _commands(heading: str) -> list[list[str]]:
    """The commands of the section's first sh block, continuation lines joined, comments dropped."""
    block = re.search(r"^```sh\n(.*?)^```", _section(heading), re.M | re.S).group(1)
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _index(commands: list[list[str]], *words: str) -> int:
    found = [i for i, c in enumerate(commands) if all(w in c for w in words)]
    assert found, f"no command with {words}"
    return found[0]


def _option(command: list[str], name: str) -> list[str]:
    return [command[i + 1] for i, w in enumerate(command[:-1]) if w == name]


def _overrides(command: list[str]) -> dict[str, str]:
    value, = _option(command, "--parameter-overrides")
    return dict(pair.split("=", 1) for pair in shlex.split(value))


FIRST = "First deploy, a new source bucket"
EXISTING = "First deploy, an existing source bucket"


@pytest.mark.parametrize("heading", [FIRST, EXISTING])
def test_credentials_are_in_the_zip_before_the_stack_creates_a_trigger(template, heading):
    commands = _commands(heading)
    google = _index(commands, "deploy/gcp-setup.sh") if heading == FIRST else None
    build = _index(commands, "./build.sh", "--credentials")
    deploy = _index(commands, "sam", "deploy")
    if google is not None:
        assert google < build
    assert build < deploy
    assert _option(commands[build], "--credentials") == ["gcp-credentials.json"]
    # The stack loads what build.sh put in the zip.
    assert template["Parameters"]["CredentialConfigPath"]["Default"] == "gcp-credentials.json"
    assert not any("./build.sh" in c and "--credentials" not in c for c in commands)


@pytest.mark.parametrize("heading", [FIRST, EXISTING])
def test_the_stack_is_deployed_for_the_role_google_trusts(template, heading):
    first = _commands(FIRST)
    google = first[_index(first, "deploy/gcp-setup.sh")]
    commands = _commands(heading)
    deploy = commands[_index(commands, "sam", "deploy")]
    overrides = _overrides(deploy)
    assert set(overrides) <= set(template["Parameters"]), set(overrides) - set(template["Parameters"])
    required = {name for name, p in template["Parameters"].items() if "Default" not in p}
    assert required <= set(overrides)
    assert [overrides["RoleName"]] == _option(google, "--aws-role-name")
    assert _option(deploy, "--capabilities") == ["CAPABILITY_NAMED_IAM"]  # a named role needs it
    assert _option(deploy, "--template-file") == ["deploy/template.yaml"]
    # Every destination bucket is one the Google side grants.
    granted = {b.removeprefix("gs://").split("/")[0] for b in _option(google, "--bucket")}
    destinations = {d.removeprefix("gs://").split("/")[0] for d in overrides["GcsDestinations"].split()}
    assert destinations <= granted
    for name, value in overrides.items():
        pattern = template["Parameters"][name].get("AllowedPattern")
        if pattern:
            assert re.fullmatch(pattern, value), (name, value)
        allowed = template["Parameters"][name].get("AllowedValues")
        if allowed:
            assert value in allowed, (name, value)
    if heading == EXISTING:
        assert overrides["SourceBucketExists"] == "true"
    else:
        assert overrides.get("SourceBucketExists", "false") == "false"


def test_the_readmes_google_command_runs(tmp_path):
    first = _commands(FIRST)
    google = first[_index(first, "deploy/gcp-setup.sh")]
    result = subprocess.run([BASH, str(ROOT / google[0]), *google[1:], "--dry-run"], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path, env={"PATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "create-cred-config" in result.stdout and "--output-file=gcp-credentials.json" in result.stdout


def test_an_existing_bucket_sends_events_only_after_the_doctor_and_is_backfilled():
    commands = _commands(EXISTING)
    deploy = _index(commands, "sam", "deploy")
    doctor = _index(commands, '{"doctor": {}}')
    notify = _index(commands, "put-bucket-notification-configuration")
    sync = next(i for i, c in enumerate(commands) if any('"sync"' in w for w in c))
    assert deploy < doctor < notify < sync
    # The bucket's configuration is read first: put-... replaces all of it.
    assert _index(commands, "get-bucket-notification-configuration") < notify
    assert "EventBridgeConfiguration" in _section(EXISTING)


def test_every_variable_the_template_sets_is_named_for_the_hand_path(template):
    variables = template["Resources"]["Function"]["Properties"]["Environment"]["Variables"]
    table = _section("Variables the function needs")
    named = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", table, re.M))
    assert named == set(variables)
    assert "SLICE_QUEUE_URL" in named


# ------------------------------------------------------------------------------------------------
# build.sh: the warning about a zip without credentials
# ------------------------------------------------------------------------------------------------

def _function(name: str) -> str:
    match = re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", BUILD.read_text(), re.M | re.S)
    assert match, f"build.sh has no function {name}"
    return match.group(0)


def _warn(credentials: str) -> subprocess.CompletedProcess:
    log = re.search(r"^log\(\) \{.*\}$", BUILD.read_text(), re.M).group(0)  # build.sh's own one-liner
    script = log + "\n" + _function("credentials_warning") + f"CREDENTIALS={shlex.quote(credentials)}\ncredentials_warning\n"
    return subprocess.run([BASH, "-c", script], capture_output=True, text=True, timeout=60)


def test_build_warns_when_the_zip_holds_no_credentials():
    result = _warn("")
    assert result.returncode == 0 and result.stdout == ""  # stdout is the zip's path only
    assert result.stderr.startswith("build.sh: WARNING: the zip holds no credential configuration")
    assert "./build.sh --credentials gcp-credentials.json" in result.stderr
    assert "deploy/gcp-setup.sh" in result.stderr


def test_build_does_not_warn_with_credentials():
    result = _warn("/somewhere/gcp-credentials.json")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_warning_is_the_last_thing_build_sh_says():
    """Called after the build's last progress line and just before the zip's path is printed,
    so it is not lost among pip's and the packaging step's lines."""
    lines = [line.strip() for line in BUILD.read_text().splitlines() if line.strip()]
    assert lines[-3:] == ['log "done in $((SECONDS - start)) s"', "credentials_warning",
                          "printf '%s\\n' \"$ZIP_PATH\""]
