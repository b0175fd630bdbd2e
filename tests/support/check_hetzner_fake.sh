#!/usr/bin/env bash
# Self-check of tests/support/hetzner_fake.py behind a validating Prism proxy (prism.sh).
# Starts both on free loopback ports, drives a full lifecycle with curl through Prism (so every
# response of the fake is validated against the Hetzner OpenAPI spec), asserts results, stops
# both by PID. Exit 0 = all passed. Needs python3, curl and Prism (see prism.sh for install).
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="$(mktemp -d)"
FAKE_PID=""; PRISM_PID=""
cleanup() {
  [[ -n "$PRISM_PID" ]] && kill "$PRISM_PID" 2>/dev/null
  [[ -n "$FAKE_PID" ]] && kill "$FAKE_PID" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

PASS=0; FAIL=0
ok()   { PASS=$((PASS + 1)); echo "ok   - $*"; }
bad()  { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# j FILE EXPR: evaluate a Python expression over the parsed JSON `d` of FILE, print the result
j() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); r=eval(sys.argv[2]); print(json.dumps(r) if not isinstance(r,str) else r)' "$1" "$2"; }
# check DESC FILE EXPR: assert the Python expression is truthy
check() { if [[ "$(j "$2" "bool($3)" 2>&1)" == "true" ]]; then ok "$1"; else bad "$1 [$3] on $(head -c 600 "$2")"; fi; }

PRISM_CMD="$("$HERE/prism.sh" --which)" || { echo "Prism is not installed; see $HERE/prism.sh"; exit 1; }
FAKE_PORT="$(free_port)"; PRISM_PORT="$(free_port)"
python3 "$HERE/hetzner_fake.py" --port "$FAKE_PORT" --seed 7 > "$WORK/fake.out" 2> "$WORK/fake.err" &
FAKE_PID=$!
"$HERE/prism.sh" "$FAKE_PORT" "$PRISM_PORT" > "$WORK/prism.log" 2>&1 &
PRISM_PID=$!
for _ in $(seq 1 100); do grep -q "^READY $FAKE_PORT" "$WORK/fake.out" 2>/dev/null && break; sleep 0.1; done
grep -q "^READY $FAKE_PORT" "$WORK/fake.out" || { echo "fake did not start"; cat "$WORK/fake.err"; exit 1; }
for _ in $(seq 1 120); do curl -s -o /dev/null "http://127.0.0.1:$PRISM_PORT/" && break; sleep 0.5; done
curl -s -o /dev/null "http://127.0.0.1:$PRISM_PORT/" || { echo "prism did not start"; tail -5 "$WORK/prism.log"; exit 1; }
echo "# fake pid $FAKE_PID port $FAKE_PORT; prism ($PRISM_CMD) pid $PRISM_PID port $PRISM_PORT"

P="http://127.0.0.1:$PRISM_PORT"      # API through Prism: no /v1 prefix
F="http://127.0.0.1:$FAKE_PORT"       # fake directly: API under /v1, control under /__fake
N=0
# api METHOD PATH [JSON]: call through Prism; sets $B (body file), $HD (headers file), $CODE.
# Any Error-severity sl-violations header means the fake broke the spec: counted as a failure.
api() {
  N=$((N + 1)); B="$WORK/b$N.json"; HD="$WORK/h$N.txt"
  local args=(-s -X "$1" -H "Authorization: Bearer test-token" -D "$HD" -o "$B" -w '%{http_code}')
  [[ $# -ge 3 ]] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
  CODE="$(curl "${args[@]}" "$P$2")"
  if grep -qi '^sl-violations:.*"severity":"Error"' "$HD"; then
    bad "spec violation on $1 $2: $(grep -i '^sl-violations' "$HD" | head -c 800)"
  fi
}
expect() { if [[ "$CODE" == "$1" ]]; then ok "$2 -> $CODE"; else bad "$2: want $1 got $CODE $(head -c 400 "$B")"; fi; }

# ---------- ssh key ----------
PUB='ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ+z8LbIfHJrAvvOKMMiALrl0/QtY1T8Ugw3jOviaVD1 agent@army'
FP='fa:40:d7:82:20:aa:08:52:17:ab:ec:c6:81:70:34:ed'   # ssh-keygen -l -E md5 of that key
api POST /ssh_keys "{\"name\":\"aa-key\",\"public_key\":\"$PUB\",\"labels\":{\"agent-army/project\":\"demo\"}}"
expect 201 "create ssh key"; check "ssh key md5 fingerprint" "$B" "d['ssh_key']['fingerprint']=='$FP'"
KEY_ID="$(j "$B" "d['ssh_key']['id']")"
api POST /ssh_keys "{\"name\":\"aa-key\",\"public_key\":\"$PUB\"}"
expect 409 "duplicate ssh key name"; check "uniqueness_error code" "$B" "d['error']['code']=='uniqueness_error'"
api GET "/ssh_keys?fingerprint=$FP"; expect 200 "list ssh keys by fingerprint"
check "one key by fingerprint" "$B" "len(d['ssh_keys'])==1 and d['meta']['pagination']['total_entries']==1"
api GET "/ssh_keys/$KEY_ID"; expect 200 "get ssh key"

# ---------- firewall ----------
api POST /firewalls '{"name":"aa-fw","labels":{"agent-army/project":"demo"}}'
expect 201 "create firewall without rules"; check "no rules, no actions" "$B" "d['firewall']['rules']==[] and d['actions']==[]"
FW="$(j "$B" "d['firewall']['id']")"

# ---------- servers ----------
ACTS=()
SIDS=()
for a in 1 2 3; do
  api POST /servers "{\"name\":\"aa-demo-$a\",\"server_type\":\"cx22\",\"image\":\"ubuntu-24.04\",\"location\":\"fsn1\",
    \"ssh_keys\":[\"aa-key\"],\"firewalls\":[{\"firewall\":$FW}],\"user_data\":\"#cloud-config\\n\",
    \"public_net\":{\"enable_ipv4\":true,\"enable_ipv6\":false},\"start_after_create\":true,
    \"labels\":{\"agent-army/project\":\"demo\",\"agent-army/stack\":\"s1\",\"agent-army/agent\":\"a$a\"}}"
  expect 201 "create server aa-demo-$a"
  check "server $a initializing, action running, no root password" "$B" \
    "d['server']['status']=='initializing' and d['action']['status']=='running' and d['action']['command']=='create_server' and d['root_password'] is None and d['server']['public_net']['ipv6'] is None"
  ACTS+=("$(j "$B" "d['action']['id']")"); SIDS+=("$(j "$B" "d['server']['id']")")
done
api POST /servers '{"name":"aa-demo-1","server_type":"cx22","image":"ubuntu-24.04"}'
expect 409 "duplicate server name"; check "uniqueness_error" "$B" "d['error']['code']=='uniqueness_error'"
api POST /servers '{"name":"aa-pw","server_type":"cx22","image":"ubuntu-24.04","location":"sin"}'
expect 422 "cx22 in sin"; check "unsupported location for server type" "$B" "d['error']['code']=='invalid_input'"
BIG="$(python3 -c 'print("x"*32769)')"
api POST /servers "{\"name\":\"aa-big\",\"server_type\":\"cx22\",\"image\":\"ubuntu-24.04\",\"user_data\":\"$BIG\"}"
expect 422 "user_data over 32 KiB"
api GET "/servers?label_selector=agent-army/project=demo,agent-army/stack=s1"
expect 200 "list by label_selector k=v,k2=v2"; check "3 servers" "$B" "len(d['servers'])==3"
api GET "/servers?label_selector=agent-army/agent%3D%3Da2"; check "k==v selects 1" "$B" "[s['name'] for s in d['servers']]==['aa-demo-2']"
api GET "/servers?label_selector=agent-army/agent"; check "existence form selects 3" "$B" "len(d['servers'])==3"
api GET "/servers?label_selector=agent-army/agent%20in%20(a1,a3)"; check "in (..) selects 2" "$B" "len(d['servers'])==2"
api GET "/servers?label_selector=!agent-army/agent"; check "!k selects 0" "$B" "d['servers']==[]"
api GET "/servers?name=aa-demo-3"; check "name filter" "$B" "len(d['servers'])==1"
api GET "/firewalls/$FW"; expect 200 "get firewall"
check "firewall applied to 3 servers" "$B" "sorted(e['server']['id'] for e in d['firewall']['applied_to'])==sorted([${SIDS[*]/%/,}])"
IDQ="id=${ACTS[0]}&id=${ACTS[1]}&id=${ACTS[2]}"
api GET "/actions?$IDQ"; expect 200 "poll 3 actions in one call"; check "still running after 1 poll" "$B" "all(a['status']=='running' for a in d['actions']) and len(d['actions'])==3"
api GET "/actions?$IDQ"; check "success after 2 polls" "$B" "all(a['status']=='success' and a['finished'] for a in d['actions'])"
api GET "/servers/${SIDS[0]}"; expect 200 "get server"; check "server running" "$B" "d['server']['status']=='running'"
api GET "/actions/${ACTS[0]}"; expect 200 "get action"

# ---------- firewall actions ----------
api POST "/firewalls/$FW/actions/set_rules" '{"rules":[{"direction":"in","protocol":"tcp","port":"22","source_ips":["0.0.0.0/0","::/0"],"description":"ssh"}]}'
expect 201 "set_rules"; check "set_firewall_rules + 3 apply_firewall" "$B" "[a['command'] for a in d['actions']].count('apply_firewall')==3"
api POST "/firewalls/$FW/actions/remove_from_resources" "{\"remove_from\":[{\"type\":\"server\",\"server\":{\"id\":${SIDS[2]}}}]}"
expect 201 "remove_from_resources"
api POST "/firewalls/$FW/actions/apply_to_resources" "{\"apply_to\":[{\"type\":\"server\",\"server\":{\"id\":${SIDS[2]}}}]}"
expect 201 "apply_to_resources"
api POST "/firewalls/$FW/actions/apply_to_resources" "{\"apply_to\":[{\"type\":\"server\",\"server\":{\"id\":${SIDS[2]}}}]}"
expect 422 "apply twice"; check "firewall_already_applied" "$B" "d['error']['code']=='firewall_already_applied'"
api DELETE "/firewalls/$FW"; expect 422 "delete applied firewall"; check "resource_in_use" "$B" "d['error']['code']=='resource_in_use'"
api GET "/firewalls?label_selector=agent-army/project%3Ddemo"; check "list firewalls" "$B" "len(d['firewalls'])==1 and d['firewalls'][0]['rules'][0]['port']=='22'"

# ---------- Prism rejects malformed requests (never reach the fake) ----------
curl -s -X POST "$F/__fake/reset" > /dev/null
api POST /servers '{"name":"aa-bad","image":"ubuntu-24.04"}'
expect 422 "Prism: POST /servers without server_type"
check "Prism problem+json names server_type" "$B" "d['title']=='Invalid request' and any('server_type' in v['message'] for v in d['validation'])"
api POST /servers '{"name":"aa-bad","image":"ubuntu-24.04","server_type":"cx22","ssh_keys":[1]}'
expect 422 "Prism: ssh_keys with an integer item"
api GET /actions; expect 422 "Prism: GET /actions without id"
N=$((N + 1)); CODE="$(curl -s -o "$WORK/b$N.json" -w '%{http_code}' "$P/servers")"; B="$WORK/b$N.json"
expect 401 "Prism: no Authorization header"
curl -s "$F/__fake/requests" > "$WORK/log.json"; check "nothing forwarded to the fake" "$WORK/log.json" "d==[]"

# ---------- injected errors and rate-limit headers ----------
curl -s -X POST -d '{"status":429,"count":1}' "$F/__fake/inject" > /dev/null
api GET /servers; expect 429 "injected 429"; check "rate_limit_exceeded" "$B" "d['error']['code']=='rate_limit_exceeded'"
if grep -qi '^ratelimit-remaining: 0' "$HD"; then ok "429 carries RateLimit-Remaining: 0"; else bad "429 headers: $(cat "$HD")"; fi
curl -s -X POST -d '{"status":503,"count":1}' "$F/__fake/inject" > /dev/null
api GET /servers; expect 503 "injected 503"; check "unavailable" "$B" "d['error']['code']=='unavailable'"
api GET /servers; expect 200 "normal again"
if grep -qi '^ratelimit-limit: 3600' "$HD" && grep -qi '^ratelimit-reset: [0-9]' "$HD"; then ok "RateLimit headers forwarded"; else bad "headers: $(cat "$HD")"; fi

# ---------- pagination (60 servers, created on the fake directly for speed) ----------
for i in $(seq 1 57); do
  curl -s -o /dev/null -H 'Authorization: Bearer t' -d "{\"name\":\"aa-page-$i\",\"server_type\":\"cpx11\",\"image\":\"debian-12\",\"labels\":{\"page\":\"yes\"}}" "$F/v1/servers"
done
api GET "/servers?per_page=25&page=1"; expect 200 "page 1 of 60"
check "page 1 meta" "$B" "len(d['servers'])==25 and d['meta']['pagination']=={'page':1,'per_page':25,'previous_page':None,'next_page':2,'last_page':3,'total_entries':60}"
api GET "/servers?per_page=25&page=3"; check "page 3 has 10" "$B" "len(d['servers'])==10 and d['meta']['pagination']['next_page'] is None and d['meta']['pagination']['previous_page']==2"
api GET "/servers?label_selector=page%3Dyes&per_page=50&page=2"; check "selector + per_page 50 page 2 has 7" "$B" "len(d['servers'])==7 and d['meta']['pagination']['total_entries']==57"
api GET "/servers"; check "default per_page 25" "$B" "d['meta']['pagination']['per_page']==25 and len(d['servers'])==25"
curl -s -H 'Authorization: Bearer t' "$F/v1/servers?label_selector=page&per_page=50" > "$WORK/p1.json"
curl -s -H 'Authorization: Bearer t' "$F/v1/servers?label_selector=page&per_page=50&page=2" > "$WORK/p2.json"
for sid in $(j "$WORK/p1.json" "' '.join(str(s['id']) for s in d['servers'])") $(j "$WORK/p2.json" "' '.join(str(s['id']) for s in d['servers'])"); do
  curl -s -o /dev/null -X DELETE -H 'Authorization: Bearer t' "$F/v1/servers/$sid"
done
curl -s -X POST "$F/__fake/complete_actions" > /dev/null

# ---------- teardown through Prism ----------
DACTS=()
for sid in "${SIDS[@]}"; do
  api DELETE "/servers/$sid"; expect 200 "delete server $sid"
  check "delete_server action" "$B" "d['action']['command']=='delete_server' and d['action']['status']=='running'"
  DACTS+=("$(j "$B" "d['action']['id']")")
done
api GET "/servers?label_selector=agent-army/project=demo"; check "servers deleting" "$B" "[s['status'] for s in d['servers']]==['deleting']*3"
IDQ="id=${DACTS[0]}&id=${DACTS[1]}&id=${DACTS[2]}"
api GET "/actions?$IDQ"; api GET "/actions?$IDQ"; check "delete actions done" "$B" "all(a['status']=='success' for a in d['actions'])"
api GET "/servers"; check "no servers left" "$B" "d['servers']==[] and d['meta']['pagination']['total_entries']==0"
api GET "/servers/${SIDS[0]}"; expect 404 "deleted server is gone"; check "not_found" "$B" "d['error']['code']=='not_found'"
api GET "/firewalls/$FW"; check "firewall applied_to emptied" "$B" "d['firewall']['applied_to']==[]"
api DELETE "/firewalls/$FW"; expect 204 "delete firewall"
api DELETE "/ssh_keys/$KEY_ID"; expect 204 "delete ssh key"
curl -s "$F/__fake/state" > "$WORK/state.json"; check "state empty" "$WORK/state.json" "d['servers']==[] and d['firewalls']==[] and d['ssh_keys']==[]"
curl -s "$F/__fake/requests" > "$WORK/log.json"; check "request log records bodies" "$WORK/log.json" "any(r['method']=='DELETE' and r['path']=='/v1/ssh_keys/$KEY_ID' for r in d) and all({'method','path','query','body'}<=set(r) for r in d)"
N=$((N + 1)); CODE="$(curl -s -o "$WORK/b$N.json" -w '%{http_code}' "$F/v1/servers")"; B="$WORK/b$N.json"
expect 401 "fake itself: no token"; check "unauthorized body" "$B" "d['error']['code']=='unauthorized'"

echo "$PASS passed, $FAIL failed"
[[ "$FAIL" == 0 ]]
