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
  4. grants the service account Storage Object Admin on each destination bucket
  5. writes the credential configuration file (it holds no secret) for ./build.sh --credentials

Required:
  --project PROJECT_ID        Google Cloud project that holds the pool and the service account.
  --aws-account-id ID         The 12-digit AWS account the function runs in.
  --aws-role-name NAME        The function's execution role NAME, not its ARN (the template's
                              RoleName output). Only this role is accepted by the provider.
  --bucket gs://BUCKET        A destination bucket; repeat for each one. Buckets may live in other
                              projects (you need permission to change their IAM policy). A
                              gs://BUCKET/PREFIX/ is accepted; the grant covers the whole bucket.

Optional:
  --project-number NUMBER     The project's number. Looked up with
                              'gcloud projects describe PROJECT_ID' when not given; a --dry-run
                              without it prints PROJECT_NUMBER as a placeholder.
  --pool ID                   Workload identity pool ID (default: gcs-sync-pool).
  --provider ID               Provider ID inside the pool, 4-32 of a-z 0-9 - (default: aws-lambda).
  --service-account NAME      Service account name, 6-30 characters (default: gcs-sync).
  --output FILE               Where to write the credential configuration
                              (default: gcp-credentials.json).
  --dry-run                   Print the gcloud commands, one per line and quoted so they can be
                              pasted into a shell, and run nothing (gcloud is not needed).
  -h, --help                  Show this help.

Permissions of the person running it (or simply Owner, roles/owner):
  in PROJECT_ID               Service Usage Admin (roles/serviceusage.serviceUsageAdmin),
                              Workload Identity Pool Admin (roles/iam.workloadIdentityPoolAdmin),
                              Service Account Admin (roles/iam.serviceAccountAdmin),
                              Browser (roles/browser) to look up the project number
  on each destination bucket  Storage Admin (roles/storage.admin), to change its IAM policy

Re-running is safe: a pool, provider or service account that already exists is left as it is
(change an existing provider with 'gcloud iam workload-identity-pools providers update-aws').
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
for bucket in "${BUCKETS[@]}"; do
  if [[ ! $bucket =~ ^gs://([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(/.*)?$ ]]; then
    die "--bucket: '$bucket' is not gs://BUCKET_NAME (a bucket name is 3-63 lowercase letters, digits, '-', '_', '.')"
  fi
  name=${BASH_REMATCH[1]}
  if [[ -n ${BASH_REMATCH[2]} && ${BASH_REMATCH[2]} != / ]]; then
    note "--bucket $bucket: IAM roles are granted per bucket; granting on gs://$name"
  fi
  seen=false
  for known in ${BUCKET_NAMES[@]+"${BUCKET_NAMES[@]}"}; do
    [[ $known == "$name" ]] && seen=true
  done
  [[ $seen == true ]] || BUCKET_NAMES+=("$name")
done

for pair in "--pool:$POOL" "--provider:$PROVIDER"; do
  option=${pair%%:*} id=${pair#*:}
  [[ $id =~ ^[a-z0-9-]{4,32}$ && $id != gcp-* ]] \
    || die "$option: '$id' must be 4-32 of a-z 0-9 - and may not start with 'gcp-'"
done
[[ $SERVICE_ACCOUNT =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] \
  || die "--service-account: '$SERVICE_ACCOUNT' must be 6-30 of a-z 0-9 -, starting with a letter"
[[ -n $OUTPUT ]] || die "--output needs a file name"

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

# 4. Write access to each destination. Storage Object Admin, not Object Creator: overwriting an
#    existing object needs storage.objects.delete as well as storage.objects.create, and Object
#    Creator cannot overwrite.
for name in "${BUCKET_NAMES[@]}"; do
  run_retry gcloud storage buckets add-iam-policy-binding "gs://$name" \
    --member="serviceAccount:$SA_EMAIL" --role=roles/storage.objectAdmin
done

# 5. The credential configuration: where to exchange the AWS identity and whom to impersonate.
run gcloud iam workload-identity-pools create-cred-config "$POOL_PATH/providers/$PROVIDER" \
  --service-account="$SA_EMAIL" --aws --output-file="$OUTPUT"

say ""
say "Next steps:"
say "  1. Build the Lambda zip with the credential configuration inside it (as gcp-credentials.json):"
say "       ./build.sh --credentials $OUTPUT"
say "  2. Deploy with GOOGLE_APPLICATION_CREDENTIALS=gcp-credentials.json (the template's default"
say "     CredentialConfigPath), e.g. sam deploy --guided --template-file deploy/template.yaml"
say "  3. Check the function from the Lambda console with the test event {\"doctor\": {}}."
say "The file $OUTPUT holds no secret: it names the pool provider and the service account only."
say ""
say "With slicing on (SLICE_QUEUE_URL: objects too large for one invocation), slices wait as temporary"
say "objects under .gcs-sync-slices/ in the primary destination's bucket and are deleted once composed;"
say "a lifecycle rule removes those of abandoned copies (this replaces the bucket's lifecycle rules:"
say "merge it into yours if it has some):"
for name in "${BUCKET_NAMES[@]}"; do
  say "  echo '{\"rule\": [{\"action\": {\"type\": \"Delete\"}, \"condition\": {\"age\": 2, \"matchesPrefix\": [\".gcs-sync-slices/\"]}}]}' > slices-lifecycle.json"
  say "  gcloud storage buckets update gs://$name --lifecycle-file=slices-lifecycle.json"
done
