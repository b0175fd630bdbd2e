#!/usr/bin/env bash
# Start Stoplight Prism as a validating proxy in front of the Hetzner fake (hetzner_fake.py).
#
#   tests/support/prism.sh FAKE_PORT PRISM_PORT      # runs in the foreground (exec), so $! of
#                                                    # `prism.sh ... &` is Prism's own PID
#   tests/support/prism.sh --which                   # print the prism command that would run
#
# This script installs nothing. Install Prism once (about 15 s, ~90 MB, 185 npm packages):
#   npm install --prefix "$REPO/.tools/prism" @stoplight/prism-cli     # gives prism 5.x
# Lookup order: $PRISM_BIN, $REPO/.tools/prism/node_modules/.bin/prism, `prism` on PATH,
# then `npx --no-install prism` (npx may fork: stop it by process group then).
# Spec: $HETZNER_SPEC, else $REPO/tests/fixtures/hetzner/cloud.spec.json.
#
# How the proxy behaves (Prism 5.14, verified by check_hetzner_fake.sh):
# * URL prefix: the spec's server is https://api.hetzner.cloud/v1 and its paths are /servers,
#   /actions, ... Prism matches requests WITHOUT /v1 (a /v1/servers request gets a Prism 404
#   NO_PATH_MATCHED_ERROR) and appends the request path to the upstream URL. So the upstream is
#   http://127.0.0.1:FAKE_PORT/v1 and clients use base URL http://127.0.0.1:PRISM_PORT
#   (direct to the fake the base URL is http://127.0.0.1:FAKE_PORT/v1).
# * Request violation (missing required field, wrong type, non-integer path id, missing
#   Authorization: Bearer, missing ?id= on GET /actions): Prism answers itself, nothing is
#   forwarded: 422 (401 for auth) Content-Type application/problem+json, body
#   {"type":"https://stoplight.io/prism/errors#UNPROCESSABLE_ENTITY","title":"Invalid request",
#    "status":422,"detail":...,"validation":[{"location":["body","server_type"],
#    "severity":"Error","code":"required|type|...","message":...}]}
# * Response violation (fake answered a shape that breaks the spec): with --errors Prism
#   replaces the answer by 500 application/problem+json, type ...#VIOLATIONS, the same
#   "validation" list with location ["response","body",...], and a `sl-violations` header
#   carrying that list as JSON.
# * A valid answer is forwarded with the fake's status, body and headers (RateLimit-*, Link).
# * Every 4xx/5xx answer carries `sl-violations: [{"location":["response"],"severity":"Warning",
#   "message":"Unable to match the returned status code with those defined in the document:
#   200,4xx,5xx"}]`: the spec writes its error ranges as lowercase "4xx"/"5xx", which Prism does
#   not treat as ranges, so error bodies are not validated. Severity Warning = harmless.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
SPEC="${HETZNER_SPEC:-$REPO/tests/fixtures/hetzner/cloud.spec.json}"

find_prism() {
  if [[ -n "${PRISM_BIN:-}" ]]; then echo "$PRISM_BIN"
  elif [[ -x "$REPO/.tools/prism/node_modules/.bin/prism" ]]; then echo "$REPO/.tools/prism/node_modules/.bin/prism"
  elif command -v prism >/dev/null 2>&1; then command -v prism
  elif command -v npx >/dev/null 2>&1 && npx --no-install prism --version >/dev/null 2>&1; then echo "npx --no-install prism"
  else return 1
  fi
}

if [[ "${1:-}" == "--which" ]]; then
  find_prism || { echo "prism not found" >&2; exit 127; }
  exit 0
fi
if [[ $# -ne 2 ]]; then
  sed -n '2,9p' "$0" >&2
  exit 2
fi
FAKE_PORT="$1"; PRISM_PORT="$2"
PRISM="$(find_prism)" || {
  echo "prism not found: npm install --prefix '$REPO/.tools/prism' @stoplight/prism-cli" >&2
  exit 127
}
[[ -r "$SPEC" ]] || { echo "spec not readable: $SPEC" >&2; exit 2; }
# shellcheck disable=SC2086  # PRISM may be "npx --no-install prism"
exec $PRISM proxy "$SPEC" "http://127.0.0.1:$FAKE_PORT/v1" --errors --host 127.0.0.1 --port "$PRISM_PORT"
