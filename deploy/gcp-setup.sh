#!/usr/bin/env bash
# The Google Cloud side of gcs-sync: lets the Lambda function's IAM role act as a Google service
# account through Workload Identity Federation (no key anywhere), gives that service account
# write access to the destination buckets, and writes the credential configuration file that
# goes into the Lambda zip. Run ./deploy/gcp-setup.sh --help for the arguments.
set -euo pipefail

PROG=gcp-setup.sh

usage() {
  local text
  IFS= read -r -d '' text <<'EOF' || true
Usage: deploy/gcp-setup.sh --project PROJECT_ID --aws-account-id ID --aws-role-name NAME
                           --bucket gs://BUCKET [--bucket gs://BUCKET ...] [options]

Sets up Google Cloud so that the gcs-sync Lambda function, running as the IAM role NAME in the
AWS account ID, can write to the given Cloud Storage buckets with no service-account key:

  1. enables the APIs that Workload Identity Federation needs
  2. creates a workload identity pool and an AWS provider in it that accepts only that role
  3. creates a service account and lets that role (and nothing else) impersonate it
  4. creates (or updates) the custom role gcsSyncWriter in PROJECT_ID, holding exactly the
     permissions the function uses, and grants it to the service account on each destination
     bucket
  5. adds a lifecycle rule deleting abandoned slice temporaries (.gcs-sync-slices/, 2 days) to
     each destination bucket, merged with the rules it already has
  6. writes the credential configuration file (it holds no secret) for ./build.sh --credentials

Required:
  --project PROJECT_ID        Google Cloud project that holds the pool and the service account.
  --aws-account-id ID         The 12-digit AWS account the function runs in.
  --aws-role-name NAME        The function's execution role NAME, not its ARN (the template's
                              RoleName output). Only this role is accepted by the provider.
  --bucket gs://BUCKET        A destination bucket; repeat for each one. Buckets may live in other
                              projects (you need permission to change their IAM policy; see
                              --bucket-role). A gs://BUCKET/PREFIX/ is accepted; the grant covers
                              the whole bucket.

Optional:
  --project-number NUMBER     The project's number. Looked up with
                              'gcloud projects describe PROJECT_ID' when not given; a --dry-run
                              without it prints PROJECT_NUMBER as a placeholder.
  --pool ID                   Workload identity pool ID (default: gcs-sync-pool).
  --provider ID               Provider ID inside the pool, 4-32 of a-z 0-9 - (default: aws-lambda).
  --service-account NAME      Service account name, 6-30 characters (default: gcs-sync).
  --output FILE               Where to write the credential configuration
                              (default: gcp-credentials.json).
  --role-id ID                ID of the custom role created in PROJECT_ID, 3-64 of A-Z a-z 0-9 _ .
                              (default: gcsSyncWriter).
  --holds                     Destinations use holds=source (S3 Object Lock carried over): the
                              custom role also gets storage.objects.update (temporary holds) and
                              storage.objects.setRetention (retention dates).
  --bucket-role ROLE          Grant ROLE on the buckets instead of the custom role, which is then
                              not created: e.g. roles/storage.objectUser for buckets in other
                              projects (a project's custom role can be granted only on that
                              project's buckets). Storage Object User also holds the permissions
                              to restore soft-deleted objects and to manage folders, managed
                              folders and XML multipart uploads, and lacks storage.buckets.get
                              (the doctor's bucket checks then report it).
  --no-lifecycle              Leave the buckets' lifecycle rules alone (remove abandoned slice
                              temporaries yourself).
  --prefix-condition          For a --bucket gs://BUCKET/PREFIX/, grant the role under an IAM
                              condition: objects under PREFIX and .gcs-sync-slices/ only (and the
                              bucket itself: its settings and listing). Needs uniform bucket-level
                              access on the bucket. Give every destination of the bucket; one at
                              its root grants the whole bucket. A changed prefix adds a binding:
                              remove the old one with remove-iam-policy-binding.
  --dry-run                   Print the gcloud commands, one per line and quoted so they can be
                              pasted into a shell, and run nothing (gcloud is not needed).
  -h, --help                  Show this help.

Permissions of the person running it (or simply Owner, roles/owner):
  in PROJECT_ID               Service Usage Admin (roles/serviceusage.serviceUsageAdmin),
                              Workload Identity Pool Admin (roles/iam.workloadIdentityPoolAdmin),
                              Service Account Admin (roles/iam.serviceAccountAdmin),
                              Role Administrator (roles/iam.roleAdmin) for the custom role,
                              Browser (roles/browser) to look up the project number
  on each destination bucket  Storage Admin (roles/storage.admin), to change its IAM policy and
                              its lifecycle rules

Re-running is safe: a pool, provider or service account that already exists is left as it is
(change an existing provider with 'gcloud iam workload-identity-pools providers update-aws'); an
existing custom role is updated to exactly the permissions below; a bucket that already has the
lifecycle rule is left as it is.

The custom role's permissions, each for what the function does with it:
  storage.objects.create   uploads; the target of a server-side copy (rewrite) and of a compose;
                           the slice temporaries of large objects
  storage.objects.delete   replacing an existing object (Cloud Storage needs it to overwrite);
                           removing slice temporaries and a copy that failed its proof;
                           MIRROR_DELETES
  storage.objects.get      a destination copy's metadata (ordering, check, the doctor); the source
                           of a server-side copy and of a compose
  storage.objects.list     the slices of a plan; sync and check list the destination
  storage.buckets.get      the doctor reads each bucket's settings (retention, default key,
                           lifecycle rules)
  with --holds: storage.objects.update (set and release temporary holds) and
                storage.objects.setRetention (the copy's retention)
Not included: storage.objects.setIamPolicy / getIamPolicy (object ACLs), restore, anything on
buckets beyond reading their settings. testIamPermissions, used by the doctor, needs none.
EOF
  printf '%s' "$text"
}

die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  printf "Run '%s --help' for the arguments.\n" "$0" >&2
  exit 2
}
fail() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
note() { printf '%s: %s\n' "$PROG" "$*" >&2; }

PROJECT=""
PROJECT_NUMBER=""
AWS_ACCOUNT_ID=""
AWS_ROLE_NAME=""
BUCKETS=()
POOL=gcs-sync-pool
PROVIDER=aws-lambda
SERVICE_ACCOUNT=gcs-sync
OUTPUT=gcp-credentials.json
DRY_RUN=false
ROLE_ID=gcsSyncWriter
HOLDS=false
BUCKET_ROLE=""
LIFECYCLE=true
PREFIX_CONDITION=false
# Abandoned slice temporaries: deleted 2 days after their creation (a copy takes minutes to hours).
SLICES_PREFIX=.gcs-sync-slices/
SLICES_AGE_DAYS=2

# value OPTION "$@": the value following OPTION, or a clear error when there is none.
value() {
  if [[ $# -lt 2 || -z $2 || $2 == --* ]]; then
    die "$1 needs a value"
  fi
  printf '%s' "$2"
}

while [[ $# -gt 0 ]]; do
  case $1 in
    --project) PROJECT=$(value "$@"); shift 2 ;;
    --project=*) PROJECT=${1#*=}; shift ;;
    --project-number) PROJECT_NUMBER=$(value "$@"); shift 2 ;;
    --project-number=*) PROJECT_NUMBER=${1#*=}; shift ;;
    --aws-account-id) AWS_ACCOUNT_ID=$(value "$@"); shift 2 ;;
    --aws-account-id=*) AWS_ACCOUNT_ID=${1#*=}; shift ;;
    --aws-role-name) AWS_ROLE_NAME=$(value "$@"); shift 2 ;;
    --aws-role-name=*) AWS_ROLE_NAME=${1#*=}; shift ;;
    --bucket) BUCKETS+=("$(value "$@")"); shift 2 ;;
    --bucket=*) BUCKETS+=("${1#*=}"); shift ;;
    --pool) POOL=$(value "$@"); shift 2 ;;
    --pool=*) POOL=${1#*=}; shift ;;
    --provider) PROVIDER=$(value "$@"); shift 2 ;;
    --provider=*) PROVIDER=${1#*=}; shift ;;
    --service-account) SERVICE_ACCOUNT=$(value "$@"); shift 2 ;;
    --service-account=*) SERVICE_ACCOUNT=${1#*=}; shift ;;
    --output) OUTPUT=$(value "$@"); shift 2 ;;
    --output=*) OUTPUT=${1#*=}; shift ;;
    --role-id) ROLE_ID=$(value "$@"); shift 2 ;;
    --role-id=*) ROLE_ID=${1#*=}; shift ;;
    --bucket-role) BUCKET_ROLE=$(value "$@"); shift 2 ;;
    --bucket-role=*) BUCKET_ROLE=${1#*=}; shift ;;
    --holds) HOLDS=true; shift ;;
    --no-lifecycle) LIFECYCLE=false; shift ;;
    --prefix-condition) PREFIX_CONDITION=true; shift ;;
    --dry-run) DRY_RUN=true; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done

# ---- validation: every problem names the argument ----------------------------------------------
[[ -n $PROJECT ]] || die "--project is required (the Google Cloud project ID)"
[[ $PROJECT =~ ^([a-z][a-z0-9.-]*:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] \
  || die "--project: '$PROJECT' is not a project ID (6-30 of a-z 0-9 -, starting with a letter)"
if [[ -n $PROJECT_NUMBER && ! $PROJECT_NUMBER =~ ^[0-9]{1,20}$ ]]; then
  die "--project-number: '$PROJECT_NUMBER' is not a project number (digits only)"
fi

[[ -n $AWS_ACCOUNT_ID ]] || die "--aws-account-id is required (the 12-digit AWS account ID)"
[[ $AWS_ACCOUNT_ID =~ ^[0-9]{12}$ ]] \
  || die "--aws-account-id: '$AWS_ACCOUNT_ID' is not an AWS account ID (exactly 12 digits)"

[[ -n $AWS_ROLE_NAME ]] || die "--aws-role-name is required (the Lambda execution role's name)"
if [[ $AWS_ROLE_NAME == arn:* || $AWS_ROLE_NAME == */* ]]; then
  die "--aws-role-name: give the role's name only (the part after the last '/'), not '$AWS_ROLE_NAME'"
fi
[[ $AWS_ROLE_NAME =~ ^[A-Za-z0-9+=,.@_-]{1,64}$ ]] \
  || die "--aws-role-name: '$AWS_ROLE_NAME' is not an IAM role name (1-64 of A-Z a-z 0-9 + = , . @ _ -)"

[[ ${#BUCKETS[@]} -gt 0 ]] || die "--bucket is required: give each destination bucket as --bucket gs://BUCKET"
BUCKET_NAMES=()
BUCKET_OBJECTS=()   # per bucket (--prefix-condition): the CEL test of the objects it may touch, or "" for all
for bucket in "${BUCKETS[@]}"; do
  if [[ ! $bucket =~ ^gs://([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(/(.*))?$ ]]; then
    die "--bucket: '$bucket' is not gs://BUCKET_NAME (a bucket name is 3-63 lowercase letters, digits, '-', '_', '.')"
  fi
  name=${BASH_REMATCH[1]} prefix=${BASH_REMATCH[3]}
  if [[ -n $prefix && $PREFIX_CONDITION == false ]]; then
    note "--bucket $bucket: IAM roles are granted per bucket; granting on gs://$name (--prefix-condition limits it to the prefix)"
  fi
  if [[ $PREFIX_CONDITION == true && $prefix == *[,\"\\]* ]]; then
    die "--bucket $bucket: with --prefix-condition the prefix may not hold a comma, a double quote or a backslash"
  fi
  scope="resource.name.startsWith(\"projects/_/buckets/$name/objects/$prefix\")"
  [[ -n $prefix ]] || scope=""
  index=-1
  for i in ${BUCKET_NAMES[@]+"${!BUCKET_NAMES[@]}"}; do
    [[ ${BUCKET_NAMES[$i]} == "$name" ]] && index=$i
  done
  if [[ $index -lt 0 ]]; then
    BUCKET_NAMES+=("$name")
    BUCKET_OBJECTS+=("$scope")
  elif [[ -z $scope || -z ${BUCKET_OBJECTS[$index]} ]]; then
    BUCKET_OBJECTS[index]=""   # one destination is the whole bucket
  else
    BUCKET_OBJECTS[index]+=" || $scope"
  fi
done

for pair in "--pool:$POOL" "--provider:$PROVIDER"; do
  option=${pair%%:*} id=${pair#*:}
  [[ $id =~ ^[a-z0-9-]{4,32}$ && $id != gcp-* ]] \
    || die "$option: '$id' must be 4-32 of a-z 0-9 - and may not start with 'gcp-'"
done
[[ $SERVICE_ACCOUNT =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] \
  || die "--service-account: '$SERVICE_ACCOUNT' must be 6-30 of a-z 0-9 -, starting with a letter"
[[ -n $OUTPUT ]] || die "--output needs a file name"
[[ $ROLE_ID =~ ^[A-Za-z0-9_.]{3,64}$ ]] \
  || die "--role-id: '$ROLE_ID' must be 3-64 of A-Z a-z 0-9 _ ."
if [[ -n $BUCKET_ROLE ]]; then
  [[ $BUCKET_ROLE =~ ^(roles/[A-Za-z0-9_.]+|(projects|organizations)/[a-z0-9.:-]+/roles/[A-Za-z0-9_.]{3,64})$ ]] \
    || die "--bucket-role: '$BUCKET_ROLE' is not a role name (roles/NAME, projects/ID/roles/ID or organizations/ID/roles/ID)"
  [[ $HOLDS == false ]] \
    || die "--holds adds permissions to the custom role; with --bucket-role, grant a role holding storage.objects.update and storage.objects.setRetention instead"
fi

# The custom role: exactly what the function uses (see --help for the reason of each).
PERMISSIONS=(storage.buckets.get storage.objects.create storage.objects.delete storage.objects.get
  storage.objects.list)
if [[ $HOLDS == true ]]; then
  PERMISSIONS+=(storage.objects.setRetention storage.objects.update)
fi

# ---- running or printing commands --------------------------------------------------------------
# quote WORD: WORD as the shell reads it back; a --flag=VALUE keeps its flag unquoted.
quote() {
  local word=$1 flag=""
  if [[ $word =~ ^(--[a-z0-9-]+=)(.*)$ ]]; then
    flag=${BASH_REMATCH[1]} word=${BASH_REMATCH[2]}
  fi
  if [[ -n $word && $word =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
    printf '%s%s' "$flag" "$word"
  elif [[ $word != *"'"* ]]; then
    printf "%s'%s'" "$flag" "$word"
  elif [[ $word != *[\"\$\`\\!]* ]]; then
    printf '%s"%s"' "$flag" "$word"
  else
    printf "%s'%s'" "$flag" "${word//\'/\'\\\'\'}"
  fi
}

# command_line ARGS...: the command, quoted, on one line.
command_line() {
  local line="" arg
  for arg in "$@"; do
    line+="${line:+ }$(quote "$arg")"
  done
  printf '%s\n' "$line"
}

# run ARGS...: print the command (dry run) or show and run it.
run() {
  if [[ $DRY_RUN == true ]]; then
    command_line "$@"
    return 0
  fi
  printf '+ %s\n' "$(command_line "$@")" >&2
  "$@"
}

# run_create ARGS...: like run, but a resource that already exists is not an error.
run_create() {
  if [[ $DRY_RUN == true ]]; then
    command_line "$@"
    return 0
  fi
  printf '+ %s\n' "$(command_line "$@")" >&2
  local errors status=0
  errors=$(mktemp)
  "$@" 2>"$errors" || status=$?
  if [[ $status -ne 0 ]]; then
    if grep -qiE 'already exists|ALREADY_EXISTS' "$errors"; then
      note "already exists; left as it is"
    else
      cat "$errors" >&2
      rm -f "$errors"
      fail "'$1 ${*:2:4} ...' failed (exit $status)"
    fi
  else
    cat "$errors" >&2
  fi
  rm -f "$errors"
}

# run_retry ARGS...: like run, retried for a minute: a service account just created takes a
# moment to become visible to IAM policy changes.
run_retry() {
  if [[ $DRY_RUN == true ]]; then
    command_line "$@"
    return 0
  fi
  local attempt
  for attempt in 1 2 3 4 5 6; do
    printf '+ %s\n' "$(command_line "$@")" >&2
    if "$@"; then
      return 0
    fi
    [[ $attempt -lt 6 ]] || break
    note "retrying in $((attempt * 3)) s"
    sleep $((attempt * 3))
  done
  fail "'$1 ${*:2:4} ...' kept failing"
}

# say TEXT: a message for the person; a shell comment in a dry run, so the output stays pasteable.
say() {
  if [[ $DRY_RUN == true ]]; then
    printf '#%s\n' "${*:+ $*}"
  else
    printf '%s\n' "$*"
  fi
}

ROLE_TITLE="gcs-sync writer"
ROLE_DESCRIPTION="gcs-sync: write, replace, read and list copies, compose slices, read bucket settings"
SLICES_RULE="{\"action\": {\"type\": \"Delete\"}, \"condition\": {\"age\": $SLICES_AGE_DAYS, \"matchesPrefix\": [\"$SLICES_PREFIX\"]}}"

# create_or_update_role: the custom role with exactly PERMISSIONS; an existing one is updated to them.
create_or_update_role() {
  local permissions args errors status=0
  permissions=$(IFS=,; printf '%s' "${PERMISSIONS[*]}")
  args=(--project="$PROJECT" --title="$ROLE_TITLE" --description="$ROLE_DESCRIPTION"
    --permissions="$permissions" --stage=GA)
  if [[ $DRY_RUN == true ]]; then
    command_line gcloud iam roles create "$ROLE_ID" "${args[@]}"
    say "if the role exists already, it is updated to exactly these permissions instead:"
    say "  $(command_line gcloud iam roles update "$ROLE_ID" "${args[@]}" --quiet)"
    return 0
  fi
  printf '+ %s\n' "$(command_line gcloud iam roles create "$ROLE_ID" "${args[@]}")" >&2
  errors=$(mktemp)
  gcloud iam roles create "$ROLE_ID" "${args[@]}" 2>"$errors" || status=$?
  if [[ $status -ne 0 ]] && grep -qiE 'already exists|ALREADY_EXISTS' "$errors"; then
    rm -f "$errors"
    note "role $ROLE_ID already exists; setting its permissions to exactly these"
    run gcloud iam roles update "$ROLE_ID" "${args[@]}" --quiet
    return 0
  fi
  cat "$errors" >&2
  rm -f "$errors"
  [[ $status -eq 0 ]] || fail "'gcloud iam roles create $ROLE_ID' failed (exit $status)"
}

# merge_lifecycle DESCRIPTION OUT: the lifecycle configuration of the bucket described in the
# JSON file DESCRIPTION (gcloud storage buckets describe --raw --format=json) plus the rule
# deleting abandoned slice temporaries, written to OUT for --lifecycle-file. Exit 0: OUT written;
# 3: the bucket already has such a rule (OUT untouched); 1: the description cannot be read.
merge_lifecycle() {
  python3 -I - "$1" "$2" "$SLICES_PREFIX" "$SLICES_AGE_DAYS" <<'PY'
import json
import sys

path, out, prefix, age = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def refuse(why):
    sys.exit(f"gcp-setup.sh: error: {path}: {why}; its lifecycle rules were not changed")


try:
    with open(path, encoding="utf-8") as handle:
        bucket = json.load(handle)
except (OSError, UnicodeDecodeError, ValueError) as exc:
    refuse(f"not a JSON bucket description ({exc})")
if not isinstance(bucket, dict) or not bucket.get("name"):
    refuse("not a bucket description (no name)")
# The API's field is "lifecycle"; gcloud's standardized output calls it "lifecycle_config".
# Any other field naming a lifecycle would be rules this step does not see: refuse, never drop.
fields = [key for key in bucket if "lifecycle" in key.lower()]
if len(fields) > 1 or (fields and fields[0] not in ("lifecycle", "lifecycle_config")):
    refuse(f"unexpected lifecycle fields {fields}")
config = bucket[fields[0]] if fields else {}
config = config or {}
rules = config.get("rule", []) if isinstance(config, dict) else None
if not isinstance(rules, list) or not all(isinstance(rule, dict) for rule in rules):
    refuse("its lifecycle rules are not a list of rules")


def deletes_slices(rule):
    condition = rule.get("condition") or {}
    return (rule.get("action") or {}).get("type") == "Delete" and prefix in (condition.get("matchesPrefix") or [])


if any(deletes_slices(rule) for rule in rules):
    sys.exit(3)
rules.append({"action": {"type": "Delete"}, "condition": {"age": age, "matchesPrefix": [prefix]}})
with open(out, "w", encoding="utf-8") as handle:
    json.dump({"rule": rules}, handle, indent=2)
    handle.write("\n")
PY
}

# add_slices_rule BUCKET: read the bucket's lifecycle rules, add the slices rule, write them back.
add_slices_rule() {
  local name=$1 description lifecycle status=0
  if [[ $DRY_RUN == true ]]; then
    say "gs://$name: the rule $SLICES_RULE"
    say "is added to the bucket's lifecycle rules, keeping those it has: read them with"
    say "  $(command_line gcloud storage buckets describe "gs://$name" --raw --format=json)"
    say "add the rule to its \"lifecycle\": {\"rule\": [...]} list, save {\"rule\": [...]} as slices-lifecycle.json, then"
    say "  $(command_line gcloud storage buckets update "gs://$name" --lifecycle-file=slices-lifecycle.json)"
    return 0
  fi
  command -v python3 >/dev/null 2>&1 \
    || fail "python3 not found: it merges gs://$name's lifecycle rules; install it, or pass --no-lifecycle and add the rule $SLICES_RULE yourself"
  description=$(mktemp)
  lifecycle=$(mktemp)
  printf '+ %s\n' "$(command_line gcloud storage buckets describe "gs://$name" --raw --format=json)" >&2
  gcloud storage buckets describe "gs://$name" --raw --format=json >"$description" || status=$?
  if [[ $status -eq 0 ]]; then
    merge_lifecycle "$description" "$lifecycle" || status=$?
  else
    note "could not read gs://$name's settings (exit $status)"
    status=1
  fi
  case $status in
    0) run gcloud storage buckets update "gs://$name" --lifecycle-file="$lifecycle" || status=$? ;;
    3) note "gs://$name already deletes $SLICES_PREFIX objects by a lifecycle rule; left as it is"; status=0 ;;
  esac
  rm -f "$description" "$lifecycle"
  [[ $status -eq 0 ]] \
    || fail "gs://$name: the lifecycle rule for $SLICES_PREFIX was not added (see above); fix it and re-run, or pass --no-lifecycle"
}

if [[ $DRY_RUN == false ]]; then
  command -v gcloud >/dev/null 2>&1 \
    || fail "gcloud not found on PATH: install the Google Cloud CLI (https://cloud.google.com/sdk) and sign in with 'gcloud auth login', or use --dry-run to print the commands"
fi

if [[ $DRY_RUN == true ]]; then
  say "gcs-sync: Google Cloud setup for AWS role $AWS_ROLE_NAME in account $AWS_ACCOUNT_ID (dry run: nothing is run)"
fi
if [[ -z $PROJECT_NUMBER ]]; then
  if [[ $DRY_RUN == true ]]; then
    PROJECT_NUMBER=PROJECT_NUMBER
    say "PROJECT_NUMBER is a placeholder: replace it with the number that this prints (or pass --project-number):"
    say "  $(command_line gcloud projects describe "$PROJECT" --format='value(projectNumber)')"
  else
    printf '+ %s\n' "$(command_line gcloud projects describe "$PROJECT" --format='value(projectNumber)')" >&2
    PROJECT_NUMBER=$(gcloud projects describe "$PROJECT" --format='value(projectNumber)')
    [[ $PROJECT_NUMBER =~ ^[0-9]+$ ]] \
      || fail "could not read the number of project '$PROJECT' (got '$PROJECT_NUMBER'); pass --project-number"
  fi
fi

SA_EMAIL="$SERVICE_ACCOUNT@$PROJECT.iam.gserviceaccount.com"
if [[ $PROJECT == *:* ]]; then   # domain-scoped project example.com:name
  SA_EMAIL="$SERVICE_ACCOUNT@${PROJECT#*:}.${PROJECT%%:*}.iam.gserviceaccount.com"
fi
# In Lambda the caller is arn:aws:sts::ACCOUNT:assumed-role/ROLE/FUNCTION_NAME; the provider's
# default AWS mapping (below) keeps it up to the role name.
AWS_ROLE_ATTRIBUTE="arn:aws:sts::$AWS_ACCOUNT_ID:assumed-role/$AWS_ROLE_NAME"
POOL_PATH="projects/$PROJECT_NUMBER/locations/global/workloadIdentityPools/$POOL"
# Google's documented default attribute mapping for AWS providers (written out, because giving
# an attribute condition is easier to read next to an explicit mapping).
ATTRIBUTE_MAPPING="google.subject=assertion.arn,attribute.aws_role=assertion.arn.contains('assumed-role') ? assertion.arn.extract('{account_arn}assumed-role/') + 'assumed-role/' + assertion.arn.extract('assumed-role/{role_name}/') : assertion.arn"
ATTRIBUTE_CONDITION="attribute.aws_role==\"$AWS_ROLE_ATTRIBUTE\""

# 1. APIs used by Workload Identity Federation (IAM, token exchange, impersonation).
run gcloud services enable iam.googleapis.com sts.googleapis.com iamcredentials.googleapis.com \
  cloudresourcemanager.googleapis.com --project="$PROJECT"

# 2. Pool, and an AWS provider in it that accepts only the function's role.
run_create gcloud iam workload-identity-pools create "$POOL" --project="$PROJECT" \
  --location=global --display-name="gcs-sync (AWS Lambda)"
run_create gcloud iam workload-identity-pools providers create-aws "$PROVIDER" \
  --workload-identity-pool="$POOL" --account-id="$AWS_ACCOUNT_ID" --location=global \
  --project="$PROJECT" --display-name="AWS account $AWS_ACCOUNT_ID" \
  --attribute-mapping="$ATTRIBUTE_MAPPING" --attribute-condition="$ATTRIBUTE_CONDITION"

# 3. The service account, which only that role may impersonate.
run_create gcloud iam service-accounts create "$SERVICE_ACCOUNT" --project="$PROJECT" \
  --display-name="gcs-sync (copies from AWS S3)"
run_retry gcloud iam service-accounts add-iam-policy-binding "$SA_EMAIL" --project="$PROJECT" \
  --role=roles/iam.workloadIdentityUser \
  --member="principalSet://iam.googleapis.com/$POOL_PATH/attribute.aws_role/$AWS_ROLE_ATTRIBUTE"

# 4. Write access to each destination: a custom role with exactly the permissions the function
#    uses (not Storage Object Admin, which also sets object ACLs; not Object Creator, which
#    cannot overwrite), or the role given by --bucket-role.
if [[ -z $BUCKET_ROLE ]]; then
  BUCKET_ROLE="projects/$PROJECT/roles/$ROLE_ID"
  create_or_update_role
fi
for i in "${!BUCKET_NAMES[@]}"; do
  name=${BUCKET_NAMES[$i]}
  if [[ $PREFIX_CONDITION == true && -n ${BUCKET_OBJECTS[$i]} ]]; then
    # The bucket itself (its settings, listing) and only the destinations' objects and the
    # slice temporaries. IAM conditions need the bucket's uniform bucket-level access.
    run_retry gcloud storage buckets add-iam-policy-binding "gs://$name" \
      --member="serviceAccount:$SA_EMAIL" --role="$BUCKET_ROLE" \
      --condition="expression=resource.type == \"storage.googleapis.com/Bucket\" || ${BUCKET_OBJECTS[$i]} || resource.name.startsWith(\"projects/_/buckets/$name/objects/$SLICES_PREFIX\"),title=gcs-sync destinations"
  else
    run_retry gcloud storage buckets add-iam-policy-binding "gs://$name" \
      --member="serviceAccount:$SA_EMAIL" --role="$BUCKET_ROLE"
  fi
done

# 5. Abandoned slice temporaries: a lifecycle rule merged with each bucket's own rules.
if [[ $LIFECYCLE == true ]]; then
  for name in "${BUCKET_NAMES[@]}"; do
    add_slices_rule "$name"
  done
fi

# 6. The credential configuration: where to exchange the AWS identity and whom to impersonate.
run gcloud iam workload-identity-pools create-cred-config "$POOL_PATH/providers/$PROVIDER" \
  --service-account="$SA_EMAIL" --aws --output-file="$OUTPUT"

say ""
say "Next steps:"
say "  1. Build the Lambda zip with the credential configuration inside it (as gcp-credentials.json):"
say "       ./build.sh --credentials $OUTPUT"
say "  2. Deploy with GOOGLE_APPLICATION_CREDENTIALS=gcp-credentials.json (the template's default"
say "     CredentialConfigPath) and the role name Google now trusts (deploy/README.md, First deploy):"
say "       sam deploy --template-file deploy/template.yaml --capabilities CAPABILITY_NAMED_IAM --resolve-s3 \\"
say "         --stack-name gcs-sync --parameter-overrides 'RoleName=$AWS_ROLE_NAME SourceBucketName=... GcsDestinations=...'"
say "     (a stack deployed already: its RoleName output is that name; deploy the new zip)"
say "  3. Check the function from the Lambda console with the test event {\"doctor\": {}}."
say "The file $OUTPUT holds no secret: it names the pool provider and the service account only."
say ""
if [[ $LIFECYCLE == false ]]; then
  say "With slicing on (SLICE_QUEUE_URL: objects too large for one invocation), slices wait as temporary"
  say "objects under $SLICES_PREFIX in the primary destination's bucket and are deleted once composed."
  say "Without --no-lifecycle this script adds a lifecycle rule removing those of abandoned copies:"
  say "  $SLICES_RULE"
  say "add it to each bucket's lifecycle rules yourself (keeping the rules it has)."
fi
