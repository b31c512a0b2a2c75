#!/usr/bin/env bash
# Build the AWS Lambda deployment zip of gcs-sync: one reproducible zip for the Lambda Python
# runtime on x86_64, holding lambda_function.py, gcs_sync/ and every dependency (boto3 included).
#
#   ./build.sh [--python 3.11] [--out DIR] [--credentials FILE] [--no-docker]
#
# The last line of stdout is the absolute path of the zip; progress goes to stderr.
# Run ./build.sh --help for the details.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ./build.sh [options]

Builds dist/gcs-sync-lambda-pyX.Y-x86_64.zip for the AWS Lambda pythonX.Y runtime on x86_64 and
prints its absolute path as the last line of stdout (progress goes to stderr).

Options:
  --python X.Y        Lambda Python version to build for (default: $PYTHON_VERSION, else 3.11):
                      3.11, 3.12, 3.13 or 3.14, the versions for which every pinned dependency
                      has x86_64 Linux wheels and AWS Lambda has a runtime.
  --out DIR           Where to write the zip (default: $OUT_DIR, else dist/ in the project).
  --credentials FILE  Include this Workload Identity Federation credential configuration in the
                      zip as gcp-credentials.json, after checking it with gcs_sync's own checker.
                      A service-account key is refused unless ALLOW_SERVICE_ACCOUNT_KEY=true.
  --no-docker         Build on this machine even when a Docker engine is available.
  -h, --help          Show this help.

With a working Docker engine the build runs in Dockerfile.build (python:X.Y, linux/amd64);
otherwise, or with --no-docker, it runs here with pip's cross-platform wheel install
(--platform manylinux2014_x86_64 --only-binary=:all:), which works from Linux and macOS alike.

awscrt (needed only for S3's CRC64NVME checksums) goes under lazy/ in the zip, outside the import
path: on the path, botocore would import it at every cold start. The function adds lazy/ to
sys.path only when an object needs it.

Environment: PYTHON_VERSION, OUT_DIR, PYTHON (interpreter that runs pip here; default python3),
SOURCE_DATE_EPOCH (timestamp of the zip entries; default 1980-01-01), ALLOW_SERVICE_ACCOUNT_KEY,
GCS_SYNC_BUILD_CACHE (a directory: builds here keep the installed and compiled dependencies there,
keyed by requirements.txt, build.sh and the Python version, and reuse them; default: no cache).
EOF
}

log() { printf 'build.sh: %s\n' "$*" >&2; }
die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
OUT_DIR=${OUT_DIR:-$ROOT/dist}
PYTHON=${PYTHON:-python3}
USE_DOCKER=auto
CREDENTIALS=""
# Where the code lives in Lambda; recorded in the .pyc files instead of the build's temp path.
TASK_ROOT=/var/task

while [[ $# -gt 0 ]]; do
  case $1 in
    --python) [[ $# -ge 2 ]] || die "--python needs a version, e.g. --python 3.12"; PYTHON_VERSION=$2; shift 2 ;;
    --python=*) PYTHON_VERSION=${1#*=}; shift ;;
    --out) [[ $# -ge 2 ]] || die "--out needs a directory"; OUT_DIR=$2; shift 2 ;;
    --out=*) OUT_DIR=${1#*=}; shift ;;
    --credentials) [[ $# -ge 2 ]] || die "--credentials needs a file"; CREDENTIALS=$2; shift 2 ;;
    --credentials=*) CREDENTIALS=${1#*=}; shift ;;
    --no-docker) USE_DOCKER=no; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

[[ $PYTHON_VERSION =~ ^3\.[0-9]+$ ]] || die "Python version must look like 3.11, got '$PYTHON_VERSION'"
# Every pin in requirements.txt has a manylinux x86_64 wheel for these (checked with
# `pip install --dry-run --platform manylinux2014_x86_64 --python-version X.Y --only-binary=:all:
# --no-deps -r requirements.txt`: 3.10 lacks pycparser 3.12, 3.9 lacks boto3 1.44), and each is an
# AWS Lambda runtime. Re-check when the pins change.
SUPPORTED_PYTHONS=(3.11 3.12 3.13 3.14)
supported=" ${SUPPORTED_PYTHONS[*]} "
if [[ $supported != *" $PYTHON_VERSION "* ]]; then
  listed=$(printf '%s, ' "${SUPPORTED_PYTHONS[@]}")
  die "Python $PYTHON_VERSION is not supported: the pinned dependencies (requirements.txt) have Lambda x86_64 wheels for Python ${listed%, } only; use --python with one of them (default 3.11)"
fi
PY_TAG=${PYTHON_VERSION/./}   # 3.11 -> 311
ZIP_NAME="gcs-sync-lambda-py${PYTHON_VERSION}-x86_64.zip"

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
ZIP_PATH="$OUT_DIR/$ZIP_NAME"

if [[ -n $CREDENTIALS ]]; then
  [[ -f $CREDENTIALS && -r $CREDENTIALS ]] || die "--credentials: cannot read '$CREDENTIALS'"
  CREDENTIALS="$(cd "$(dirname "$CREDENTIALS")" && pwd)/$(basename "$CREDENTIALS")"
fi

WORK=""
cleanup() { if [[ -n $WORK ]]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The packaging step, shared by the host and the Docker builds: `helper COMMAND ARGS...`.
#   prune TREE             strip what pip leaves that the runtime does not need; move awscrt
#                          under TREE/lazy/, off the import path
#   stage ROOT TREE        copy lambda_function.py and gcs_sync/*.py into TREE
#   check-credentials FILE ALLOW ROOT [TREE]
#                          judge FILE with gcs_sync's own checker (exit 2: refused, 3: checker
#                          not importable with ROOT, this Python's packages and TREE on sys.path)
#   zip TREE ZIP           write TREE as a reproducible zip, refused unless it holds a working
#                          function (lambda_function.py, gcs_sync, boto3, google-cloud-storage...)
helper() {
  "$PYTHON" -I - "$@" <<'PY'
import json
import os
import re
import shutil
import stat
import sys
import time
import zipfile

MiB = 1024 * 1024
MAX_ZIPPED = 50 * MiB       # Lambda: 52428800 bytes zipped for a direct (console / API) upload
MAX_UNZIPPED = 250 * MiB    # Lambda: 262144000 bytes unzipped, layers included
# Left by pip, needed by nothing at run time and not reproducible (RECORD lists hashes and
# paths; INSTALLER/REQUESTED/direct_url.json describe the install). METADATA and
# entry_points.txt stay: importlib.metadata.version() and opentelemetry's entry points read them.
PIP_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def say(message):
    print(f"build.sh: {message}", file=sys.stderr)


def tree_size(root):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)


# Imported only when an object needs it (CRC64NVME), from lazy/ beside lambda_function.py: on the
# import path, botocore imports awscrt at import time (+60..100 ms on every cold start).
LAZY_DIR = "lazy"
LAZY_TOP = ("awscrt",)


def is_lazy(name):
    """Whether a top-level entry of the tree belongs under lazy/: the package, its extension
    module (_awscrt.abi3.so) and its dist-info."""
    for top in LAZY_TOP:
        if name == top or (name.startswith(f"_{top}") and name.endswith(".so")) or \
                (name.startswith(f"{top}-") and name.endswith(".dist-info")):
            return True
    return False


def aws_services(runtime_py):
    """The AWS services the function calls: ``AWS_SERVICES`` in gcs_sync/aws.py, read without
    importing it (the build may run where boto3 is not installed)."""
    import ast
    with open(runtime_py, encoding="utf-8") as handle:
        module = ast.parse(handle.read(), runtime_py)
    for node in module.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["AWS_SERVICES"]:
            return " ".join(ast.literal_eval(node.value))
    sys.exit(f"build.sh: error: {runtime_py} defines no AWS_SERVICES: the services whose models the zip keeps")


def without_documentation(value):
    """A model without its documentation strings (read only for docstrings, on request): the S3
    model parses in 4 ms instead of 9."""
    if isinstance(value, dict):
        return {k: without_documentation(v) for k, v in value.items()
                if not (k in ("documentation", "documentationUrl") and isinstance(v, str))}
    if isinstance(value, list):
        return [without_documentation(v) for v in value]
    return value


def prune_models(tree, services):
    """Keep botocore's and boto3's data for ``services`` only, uncompressed, compact and without
    documentation strings, and endpoints.json's entries for them only. The first client parses endpoints.json whole (1.2 MB, every service) and
    its own model, decompressing it first: ~25 ms of every cold start (bench/cold_start.py). A model
    dropped here cannot be loaded: a client for another service fails with UnknownServiceError."""
    data = os.path.join(tree, "botocore", "data")
    if not os.path.isdir(data):
        sys.exit(f"build.sh: error: {data} is missing: botocore was not installed")
    missing = [s for s in services if not os.path.isdir(os.path.join(data, s))]
    if missing:
        sys.exit(f"build.sh: error: botocore has no model for {', '.join(missing)} (AWS_SERVICES in gcs_sync/aws.py)")
    resources = os.path.join(tree, "boto3", "data")
    for root in (data, resources):
        for name in os.listdir(root) if os.path.isdir(root) else ():
            if os.path.isdir(os.path.join(root, name)) and name not in services:
                shutil.rmtree(os.path.join(root, name))
    import gzip
    for dirpath, _, filenames in os.walk(data):
        if dirpath == data:
            continue
        for f in filenames:
            path = os.path.join(dirpath, f)
            if f.startswith("examples-"):  # documentation only
                os.remove(path)
            elif f.endswith((".json", ".json.gz")):
                with (gzip.open if f.endswith(".gz") else open)(path, "rb") as handle:
                    model = json.loads(handle.read())
                if f.startswith("service-2."):  # elsewhere (endpoint rules, context params) required
                    for section in ("operations", "shapes"):
                        model[section] = without_documentation(model.get(section, {}))
                os.remove(path)
                with open(path[:-3] if f.endswith(".gz") else path, "w", encoding="utf-8") as plain:
                    json.dump(model, plain, separators=(",", ":"))
    endpoints = os.path.join(data, "endpoints.json")
    with open(endpoints, encoding="utf-8") as handle:
        table = json.load(handle)
    for partition in table["partitions"]:
        partition["services"] = {k: v for k, v in partition["services"].items() if k in services}
    with open(endpoints, "w", encoding="utf-8") as handle:
        json.dump(table, handle, separators=(",", ":"))
    return f"botocore's data for {', '.join(services)} only (uncompressed, no documentation; endpoints.json cut to them)"


def prune(tree, *services):
    if not os.path.isdir(tree):
        sys.exit(f"build.sh: error: the build tree {tree} is gone")
    before = tree_size(tree)
    removed = []
    for name in ("bin", "__pycache__"):  # console scripts with this host's shebang; pip's pyc
        path = os.path.join(tree, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
            removed.append(name + "/")
    for dirpath, dirnames, filenames in os.walk(tree):
        for d in list(dirnames):
            if d in ("__pycache__", "tests"):
                shutil.rmtree(os.path.join(dirpath, d))
                dirnames.remove(d)
                removed.append(os.path.relpath(os.path.join(dirpath, d), tree) + "/")
        if dirpath.endswith(".dist-info"):
            for f in filenames:
                if f in PIP_FILES:
                    os.remove(os.path.join(dirpath, f))
    if services:
        removed.append(prune_models(tree, services))
    moved = sorted(name for name in os.listdir(tree) if is_lazy(name))
    if moved:
        os.makedirs(os.path.join(tree, LAZY_DIR))
        for name in moved:
            os.rename(os.path.join(tree, name), os.path.join(tree, LAZY_DIR, name))
    after = tree_size(tree)
    say(f"dependencies: removed {', '.join(removed) or 'nothing'} and pip's own files from *.dist-info "
        f"({(before - after) / MiB:.1f} MiB); moved {', '.join(moved) or 'nothing'} under {LAZY_DIR}/ "
        f"(imported only when needed); {after / MiB:.1f} MiB")


def stage(root, tree):
    if not os.path.isdir(tree):
        sys.exit(f"build.sh: error: the build tree {tree} is gone")
    for name in ("lambda_function.py", "gcs_sync"):
        if os.path.exists(os.path.join(tree, name)):
            sys.exit(f"build.sh: error: a dependency installed {name}, which is the function's own")
    shutil.copyfile(os.path.join(root, "lambda_function.py"), os.path.join(tree, "lambda_function.py"))
    src = os.path.join(root, "gcs_sync")
    count = 0
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "tests"))
        for f in sorted(filenames):
            if f.endswith(".py"):
                dest = os.path.join(tree, "gcs_sync", os.path.relpath(os.path.join(dirpath, f), src))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copyfile(os.path.join(dirpath, f), dest)
                count += 1
    if not os.path.isfile(os.path.join(tree, "gcs_sync", "__init__.py")):
        sys.exit("build.sh: error: gcs_sync/__init__.py is missing")
    say(f"staged lambda_function.py and {count} gcs_sync modules; tree: {tree_size(tree) / MiB:.1f} MiB")


def allowed(value):
    value = value.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    sys.stderr.write(f"build.sh: error: ALLOW_SERVICE_ACCOUNT_KEY: {value!r} is not true or false\n")
    sys.exit(2)


AUDIENCE = re.compile(r"//iam\.googleapis\.com/projects/([^/]+)/locations/global/"
                      r"workloadIdentityPools/([^/]+)/providers/([^/]+)")


def audience_problems(audience):
    """Google's STS takes only the project NUMBER in the audience; a project ID fails at the first
    token exchange, in Lambda, with an unhelpful error."""
    match = AUDIENCE.fullmatch(audience) if isinstance(audience, str) else None
    if not match or match.group(1).isdigit():
        return []  # the shape itself is gcs_sync's checker's to judge
    project = match.group(1)
    fixed = audience.replace(f"/projects/{project}/", "/projects/PROJECT_NUMBER/", 1)
    return [f"audience names the project ID {project!r}, but Google expects the project number there: "
            f"find it with `gcloud projects describe {project} --format='value(projectNumber)'` and "
            f"write the audience as {fixed} (or regenerate the file with `gcloud iam "
            f"workload-identity-pools create-cred-config` naming projects/PROJECT_NUMBER)"]


def check_credentials(path, allow, root, tree=None):
    sys.path.insert(0, root)
    if tree:
        sys.path.append(tree)
    sys.dont_write_bytecode = True
    allow_key = allowed(allow)
    try:
        from gcs_sync.auth import config_problems
        from gcs_sync.config import Settings
    except ImportError as exc:
        say(f"cannot import gcs_sync's credential checker yet ({exc})")
        sys.exit(3)

    def refuse(problems):
        sys.stderr.write(f"build.sh: error: refusing --credentials {path}:\n")
        for problem in problems:
            sys.stderr.write(f"  - {problem}\n")
        sys.exit(2)

    try:
        with open(path, encoding="utf-8") as handle:
            info = json.load(handle)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        refuse([f"not a readable JSON file ({exc})"])
    if not isinstance(info, dict):
        refuse(["not a JSON object"])
    # Judged as the function will judge it in Lambda; only the file itself matters here.
    settings = Settings(destinations=(), aws_region="x", aws_keys_present=True,
                        allow_service_account_key=allow_key, in_lambda=True)
    problems = config_problems(info, settings)
    if info.get("type") == "external_account":
        problems += [p for p in audience_problems(info.get("audience"))
                     if not any("project number" in q for q in problems)]
    if info.get("type") == "service_account" and not allow_key and \
            not any("ALLOW_SERVICE_ACCOUNT_KEY" in problem for problem in problems):
        problems.append("build.sh includes a service-account key only with ALLOW_SERVICE_ACCOUNT_KEY=true "
                        "set for the build (and on the function)")
    if problems:
        refuse(problems)
    # Parse it the way google-auth will (no network): catches a missing token_url, a broken key...
    try:
        if info.get("type") == "service_account":
            from google.oauth2 import service_account
            service_account.Credentials.from_service_account_info(info)
        else:
            import google.auth.aws
            google.auth.aws.Credentials.from_info(info)
    except ImportError as exc:
        say(f"cannot import google-auth yet ({exc})")
        sys.exit(3)
    except Exception as exc:  # whatever google-auth raises for a malformed file
        refuse([f"google-auth cannot load it: {exc}"])
    kind = "service-account key (ALLOW_SERVICE_ACCOUNT_KEY=true)" if info.get("type") == "service_account" \
        else "Workload Identity Federation configuration"
    say(f"credentials: {path} is a valid {kind}")


def zip_epoch():
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return (1980, 1, 1, 0, 0, 0)
    try:
        epoch = int(raw)
    except ValueError:
        sys.exit(f"build.sh: error: SOURCE_DATE_EPOCH: {raw!r} is not an integer")
    return max(time.gmtime(epoch)[:6], (1980, 1, 1, 0, 0, 0))


# What a zip must hold to be a working function: the handler, the package, and the dependencies
# it imports at its first invocation (each named by a file that its import needs).
REQUIRED = {
    "lambda_function.py": "the handler module (lambda_function.lambda_handler)",
    "gcs_sync/__init__.py": "the gcs_sync package",
    "boto3/__init__.py": "boto3",
    "botocore/__init__.py": "botocore",
    "google/cloud/storage/__init__.py": "google-cloud-storage",
    "google/auth/__init__.py": "google-auth",
}


def zip_problems(names):
    """Why a zip holding these entry names cannot be a working function (empty: it can)."""
    if not names:
        return ["nothing was written (0 entries): the build tree is empty or gone"]
    present = set(names)
    problems = [f"{name} is missing: no {what}" for name, what in REQUIRED.items() if name not in present]
    for name in sorted(n for n in present if "/" not in n.rstrip("/")):
        if is_lazy(name.rstrip("/")):
            problems.append(f"{name.rstrip('/')} is at the top of the zip, on the import path: it belongs "
                            f"under {LAZY_DIR}/ (botocore would import it at every cold start)")
    return problems


def write_zip(tree, zip_path):
    if not os.path.isdir(tree):
        sys.exit(f"build.sh: error: nothing to zip: the build tree {tree} is gone")
    date_time = zip_epoch()
    entries = []
    for dirpath, dirnames, filenames in os.walk(tree):
        rel = os.path.relpath(dirpath, tree).replace(os.sep, "/")
        prefix = "" if rel == "." else rel + "/"
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                sys.exit(f"build.sh: error: symlink in the tree: {prefix}{d}")
            entries.append((prefix + d + "/", None))
        for f in filenames:
            path = os.path.join(dirpath, f)
            if os.path.islink(path):
                sys.exit(f"build.sh: error: symlink in the tree: {prefix}{f}")
            entries.append((prefix + f, path))
    entries.sort()
    unzipped = 0
    tmp = f"{zip_path}.{os.getpid()}.tmp"
    try:
        with zipfile.ZipFile(tmp, "w", allowZip64=False) as zf:
            for name, path in entries:
                info = zipfile.ZipInfo(name, date_time=date_time)
                info.create_system = 3  # Unix, so external_attr carries the permissions
                if path is None:
                    info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
                    zf.writestr(info, b"", compress_type=zipfile.ZIP_STORED)
                    continue
                executable = os.stat(path).st_mode & 0o100
                info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
                with open(path, "rb") as handle:
                    data = handle.read()
                unzipped += len(data)
                # Level 6: 2.5x faster than 9 here, for a zip 0.4% larger.
                zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
        # Judged from what was written, read back: the tree may have changed under the build.
        with zipfile.ZipFile(tmp) as zf:
            problems = zip_problems(zf.namelist())
        if problems:
            sys.exit("build.sh: error: the zip cannot be a working function, so it is not written:\n"
                     + "".join(f"  - {problem}\n" for problem in problems).rstrip("\n"))
        size = os.path.getsize(tmp)
        if size >= MAX_ZIPPED:
            sys.exit(f"build.sh: error: the zip is {size / MiB:.1f} MiB; Lambda takes at most 50 MiB by direct upload")
        if unzipped >= MAX_UNZIPPED:
            sys.exit(f"build.sh: error: the tree is {unzipped / MiB:.1f} MiB unzipped; Lambda takes at most 250 MiB")
        os.replace(tmp, zip_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    say(f"wrote {len(entries)} entries: {size / MiB:.1f} MiB zipped, {unzipped / MiB:.1f} MiB unzipped")


command, args = sys.argv[1], sys.argv[2:]
if command == "prune":
    prune(*args)
elif command == "aws-services":
    print(aws_services(*args))
elif command == "stage":
    stage(*args)
elif command == "check-credentials":
    check_credentials(*args)
elif command == "zip":
    write_zip(*args)
else:
    sys.exit(f"build.sh: error: unknown helper command {command}")
PY
}

# check_credentials [TREE]: 0 accepted, 3 checker not importable (only without TREE); exits when refused.
check_credentials() {
  local rc=0
  helper check-credentials "$CREDENTIALS" "${ALLOW_SERVICE_ACCOUNT_KEY:-}" "$ROOT" "$@" || rc=$?
  case $rc in
    0|3) return "$rc" ;;
    *) die "credential configuration refused (see above)" ;;
  esac
}

# A Python of the target version, to compile the .pyc files; empty if there is none here.
find_target_python() {
  local candidate
  for candidate in "$PYTHON" "python$PYTHON_VERSION"; do
    if "$candidate" -c "import sys; sys.exit(sys.implementation.cache_tag != 'cpython-$PY_TAG')" >/dev/null 2>&1; then
      command -v "$candidate"
      return 0
    fi
  done
  return 0
}

# compile TREE [PATH...]: .pyc (unchecked-hash) for PATHs of TREE (default: all of it), recorded
# as under $TASK_ROOT, with the target version's Python.
compile() {
  local tree=$1
  shift
  PYTHONHASHSEED=0 "$target_python" -I -m compileall -q -j 0 --invalidation-mode unchecked-hash \
    -s "$tree" -p "$TASK_ROOT" "${@:-$tree}" >&2 || die "compileall failed"
}

# The installed, pruned and compiled dependencies depend only on these (the exact Python that
# compiles them included); a cache entry is one such tree.
deps_key() {
  "$PYTHON" -I -c 'import hashlib, sys
h = hashlib.sha256()
for path in sys.argv[1:3]:
    with open(path, "rb") as handle:
        h.update(handle.read())
h.update(" ".join(sys.argv[3:]).encode())
print(h.hexdigest()[:24])' "$ROOT/requirements.txt" "${BASH_SOURCE[0]}" "$PYTHON_VERSION" "$AWS_SERVICES" \
    "$( [[ -z $target_python ]] || "$target_python" -c 'import sys; print(sys.version)')"
}

install_deps() {
  local tree=$1
  log "installing requirements.txt for cp$PY_TAG manylinux2014_x86_64 into a fresh tree"
  PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-input \
    --platform manylinux2014_x86_64 --implementation cp --python-version "$PYTHON_VERSION" \
    --only-binary=:all: --require-hashes --no-deps --no-compile \
    --target "$tree" -r "$ROOT/requirements.txt" >&2
  helper prune "$tree" $AWS_SERVICES
  if [[ -n $target_python ]]; then
    log "compiling the dependencies' .pyc (unchecked-hash) with $target_python"
    compile "$tree"
  fi
}

target_python=""
AWS_SERVICES=""   # the services whose botocore models the zip keeps (AWS_SERVICES in gcs_sync/aws.py)

build_on_host() {
  local checked=0 tree rc=0 cache="${GCS_SYNC_BUILD_CACHE:-}" entry="" saving
  if [[ -n $CREDENTIALS ]]; then   # fail fast, before downloading anything
    check_credentials && checked=1 || rc=$?
    [[ $rc -eq 0 || $rc -eq 3 ]] || exit "$rc"
  fi

  WORK=$(mktemp -d "${TMPDIR:-/tmp}/gcs-sync-build.XXXXXX")
  tree="$WORK/tree"
  AWS_SERVICES=$(helper aws-services "$ROOT/gcs_sync/aws.py") || exit 1
  target_python=$(find_target_python)
  if [[ -z $target_python ]]; then
    log "WARNING: no Python $PYTHON_VERSION here ($PYTHON is $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')); the zip has no .pyc, so every cold start compiles the sources (~1 s slower). Use Docker, a python$PYTHON_VERSION on PATH, or PYTHON=python$PYTHON_VERSION to get them."
  fi
  if [[ -n $cache ]]; then
    mkdir -p "$cache"
    entry="$(cd "$cache" && pwd)/deps-$(deps_key)"
  fi
  if [[ -n $entry && -d $entry ]]; then
    log "reusing the dependencies installed earlier ($entry)"
    cp -R "$entry" "$tree"
  else
    install_deps "$tree"
    if [[ -n $entry ]]; then
      saving="$entry.$$.tmp"
      rm -rf "$saving"
      cp -R "$tree" "$saving"
      "$PYTHON" -I -c 'import os, sys; os.rename(sys.argv[1], sys.argv[2])' "$saving" "$entry" 2>/dev/null \
        || rm -rf "$saving"
    fi
  fi

  helper stage "$ROOT" "$tree"

  if [[ -n $CREDENTIALS ]]; then
    if [[ $checked -eq 0 ]]; then
      rc=0
      check_credentials "$tree" || rc=$?
      [[ $rc -eq 0 ]] || die "cannot check --credentials: gcs_sync's checker needs google-auth; run from a virtualenv with requirements.txt installed"
    fi
    cp "$CREDENTIALS" "$tree/gcp-credentials.json"
    chmod 0644 "$tree/gcp-credentials.json"
  fi

  if [[ -n $target_python ]]; then
    log "compiling the function's .pyc"
    compile "$tree" "$tree/lambda_function.py" "$tree/gcs_sync"
  fi

  helper zip "$tree" "$ZIP_PATH"
}

build_in_docker() {
  local context args
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/gcs-sync-build.XXXXXX")
  context="$WORK/credentials"   # the named build context "credentials": empty, or the one file
  mkdir -p "$context"
  if [[ -n $CREDENTIALS ]]; then
    cp "$CREDENTIALS" "$context/gcp-credentials.json"
  fi
  args=(--platform linux/amd64 --file "$ROOT/Dockerfile.build"
    --build-arg "PYTHON_VERSION=$PYTHON_VERSION"
    --build-arg "ALLOW_SERVICE_ACCOUNT_KEY=${ALLOW_SERVICE_ACCOUNT_KEY:-}"
    --build-context "credentials=$context"
    --output "type=local,dest=$OUT_DIR")
  if [[ -n ${SOURCE_DATE_EPOCH:-} ]]; then
    args+=(--build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH")
  fi
  log "building in Docker: python:$PYTHON_VERSION, linux/amd64 (Dockerfile.build)"
  docker build "${args[@]}" "$ROOT" >&2 \
    || die "the Docker build failed (see above); ./build.sh --no-docker builds without Docker"
  [[ -f $ZIP_PATH ]] || die "the Docker build did not produce $ZIP_NAME"
}

# credentials_warning: a zip without --credentials cannot reach Google; said last, where it is seen.
credentials_warning() {
  if [[ -z $CREDENTIALS ]]; then
    log "WARNING: the zip holds no credential configuration, so the function cannot sign in to Google (unless GOOGLE_APPLICATION_CREDENTIALS names a file it gets another way, e.g. from a layer). Make one with deploy/gcp-setup.sh, then build again with ./build.sh --credentials gcp-credentials.json, and deploy that zip before any trigger sends the function events."
  fi
}

start=$SECONDS
if [[ $USE_DOCKER != no ]] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  build_in_docker
else
  if [[ $USE_DOCKER != no ]]; then
    log "no working Docker engine: building on this machine with pip's cross-platform install"
  fi
  build_on_host
fi

if [[ -n $CREDENTIALS ]]; then
  if grep -Eq '"type"[[:space:]]*:[[:space:]]*"service_account"' "$CREDENTIALS"; then
    log "the zip holds a service-account key: set ALLOW_SERVICE_ACCOUNT_KEY=true on the function as well as GOOGLE_APPLICATION_CREDENTIALS=gcp-credentials.json, or it refuses the key at run time"
  else
    log "set GOOGLE_APPLICATION_CREDENTIALS=gcp-credentials.json on the function"
  fi
fi
log "done in $((SECONDS - start)) s"
credentials_warning
printf '%s\n' "$ZIP_PATH"
