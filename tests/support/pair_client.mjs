#!/usr/bin/env node
// pair_client.mjs: act like a brand-new browser opening the OpenClaw Control UI, so that the
// gateway files a *pending device pairing request* that a test can then see with
// `openclaw devices list --json` and approve with `openclaw devices approve <requestId> --json`.
//
// Usage (tested with Node 24 and openclaw 2026.9.6; it uses Node's global WebSocket and node:crypto only, no npm packages):
//
//   node pair_client.mjs <ws-url> <token> [--wait SECONDS] [--origin ORIGIN]
//   node pair_client.mjs ws://127.0.0.1:18800 abc123 --origin https://dev-agent-pm.tail12345.ts.net
//   node pair_client.mjs ws://127.0.0.1:18800 abc123 --origin https://dev-agent-pm.tail12345.ts.net --wait 60
//
// --origin must be same-origin with the Host header the gateway sees. Behind serve_proxy.py
// started with `--host X.ts.net` (like real `tailscale serve`, which passes the MagicDNS name),
// use `--origin https://X.ts.net`: the gateway accepts a same-origin browser only when that host
// is *.ts.net / *.local / a private IP, or is listed in gateway.controlUi.allowedOrigins. A
// loopback Host/Origin over a forwarded (proxied) connection is refused with
// CONTROL_UI_ORIGIN_NOT_ALLOWED. Without --origin it sends the http(s) form of <ws-url>.
// --wait N: after the request is filed, keep reconnecting once a second with the same key (the
// page "retries automatically") until approved or N seconds pass; the retries reuse the same
// pending request as long as key/role/scopes are unchanged. After approval the gateway first
// answers PROTOCOL_MISMATCH ("Control UI updated; reload") because no client.buildId was sent;
// the script then retries with details.gatewayBuildId, as a reloaded page would.
//
// What it does:
//   1. Makes a fresh Ed25519 key pair (a new "browser profile"). deviceId = sha256(raw public key),
//      hex, as the gateway derives it.
//   2. Opens the WebSocket with an Origin header (see --origin above), waits for the
//      `connect.challenge` event, and
//      sends `connect` as the Control UI does: client id "openclaw-control-ui", mode "webchat",
//      role "operator", the Control UI's default scopes, auth.token = <token>, and the device
//      block signed over the v3 payload
//      "v3|deviceId|clientId|mode|role|scopes,csv|signedAt|token|nonce|platform|deviceFamily".
//   3. Over a remote (forwarded) connection the gateway answers with "pairing required"
//      (details.code PAIRING_REQUIRED, details.requestId) and closes with 1008; the pending request
//      now exists.
//
// Output (stdout, one JSON line each): first
//   {"event":"pending","deviceId":"<hex>","requestId":"<id or null>","error":{...}}
// and, with --wait, once a retry succeeds after approval
//   {"event":"paired","deviceId":"<hex>","scopes":[...]}
// Exit codes: 0 = pending request created (no --wait) or paired (--wait); 2 = --wait timed out
// while still pending; 1 = anything else (bad token, origin refused, protocol error...; the
// gateway's error is printed to stderr). Each connect attempt times out after 15 s.
import crypto from "node:crypto";

const args = process.argv.slice(2);
const positional = [];
let waitSeconds = 0;
let origin = null;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--wait") waitSeconds = Number(args[++i]);
  else if (args[i] === "--origin") origin = args[++i];
  else positional.push(args[i]);
}
const [url, token] = positional;
if (!url || !token || !Number.isFinite(waitSeconds)) {
  console.error("usage: node pair_client.mjs <ws-url> <token> [--wait SECONDS] [--origin ORIGIN]");
  process.exit(1);
}
if (!origin) {
  const u = new URL(url);
  origin = `${u.protocol === "wss:" ? "https:" : "http:"}//${u.host}`;
}

const { publicKey, privateKey } = crypto.generateKeyPairSync("ed25519");
const rawPub = publicKey.export({ format: "der", type: "spki" }).subarray(-32);
const deviceId = crypto.createHash("sha256").update(rawPub).digest("hex");
const publicKeyB64u = rawPub.toString("base64url");

const CLIENT = { id: "openclaw-control-ui", mode: "webchat", platform: "Linux x86_64", deviceFamily: "desktop" };
const ROLE = "operator";
const SCOPES = ["operator.admin", "operator.read", "operator.write", "operator.approvals", "operator.questions", "operator.pairing"];
const norm = (s) => (s ?? "").trim().toLowerCase();

function attempt() {
  return new Promise((resolve) => {
    let done = false;
    const finish = (r) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try { ws.close(); } catch {}
      resolve(r);
    };
    const timer = setTimeout(() => finish({ kind: "error", error: { message: "timeout waiting for gateway" } }), 15000);
    // Node's WebSocket (undici) accepts a non-standard options object with extra headers.
    const ws = new WebSocket(url, { headers: { Origin: origin, "User-Agent": "Mozilla/5.0 pair_client.mjs" } });
    ws.onerror = (e) => finish({ kind: "error", error: { message: `websocket error: ${e.message ?? e.type}` } });
    ws.onclose = (e) => finish({ kind: "error", error: { message: `closed ${e.code} ${e.reason}` } });
    ws.onmessage = (msg) => {
      let frame;
      try { frame = JSON.parse(String(msg.data)); } catch { return; }
      if (frame.type === "event" && frame.event === "connect.challenge") {
        const { nonce, ts } = frame.payload;
        const payload = ["v3", deviceId, CLIENT.id, CLIENT.mode, ROLE, SCOPES.join(","), String(ts), token, nonce,
          norm(CLIENT.platform), norm(CLIENT.deviceFamily)].join("|");
        const signature = crypto.sign(null, Buffer.from(payload, "utf8"), privateKey).toString("base64url");
        ws.send(JSON.stringify({
          type: "req", id: crypto.randomUUID(), method: "connect",
          params: {
            minProtocol: 4, maxProtocol: 4,
            client: { ...CLIENT, version: "control-ui", ...(buildId ? { buildId } : {}), instanceId: crypto.randomUUID() },
            role: ROLE, scopes: SCOPES, caps: [], commands: [], permissions: {},
            auth: { token }, locale: "en-US", userAgent: "Mozilla/5.0 pair_client.mjs",
            device: { id: deviceId, publicKey: publicKeyB64u, signature, signedAt: ts, nonce },
          },
        }));
      } else if (frame.type === "res") {
        if (frame.ok) finish({ kind: "paired", payload: frame.payload });
        else finish({ kind: "rejected", error: frame.error });
      }
    };
  });
}

const isPairingRequired = (err) =>
  /PAIRING_REQUIRED/i.test(err?.details?.code ?? "") || /pairing required/i.test(err?.message ?? "");
const requestIdOf = (err) => err?.details?.requestId ?? err?.details?.pairing?.requestId ?? null;

let buildId; // Control UI build id; learned from the gateway if it asks for a "reload"
const deadline = Date.now() + waitSeconds * 1000;
let reported = false;
for (;;) {
  const r = await attempt();
  if (r.kind === "paired") {
    console.log(JSON.stringify({ event: "paired", deviceId, scopes: r.payload?.auth?.scopes ?? null }));
    process.exit(0);
  }
  if (r.kind === "rejected" && r.error?.details?.code === "PROTOCOL_MISMATCH" && r.error.details.gatewayBuildId
      && buildId !== r.error.details.gatewayBuildId) {
    // Checked only once the device is paired: a real browser reloads the page and comes back with
    // the gateway's current Control UI build id; do the same and retry at once.
    buildId = r.error.details.gatewayBuildId;
    continue;
  }
  if (r.kind === "rejected" && isPairingRequired(r.error)) {
    if (!reported) {
      console.log(JSON.stringify({ event: "pending", deviceId, requestId: requestIdOf(r.error), error: r.error }));
      reported = true;
    }
    if (waitSeconds <= 0) process.exit(0);
    if (Date.now() >= deadline) process.exit(2);
    await new Promise((res) => setTimeout(res, 1000));
    continue;
  }
  console.error(JSON.stringify({ event: "failed", deviceId, error: r.error }));
  process.exit(1);
}
