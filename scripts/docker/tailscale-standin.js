#!/usr/bin/env node
// A STAND-IN for Tailscale's container image (containerboot + tailscaled + the tailscale CLI),
// for agent-army's local Docker tests only: this machine reaches no container registry and no
// tailnet. It is NOT Tailscale and joins no network. It behaves like it where agent-army relies
// on it:
//   containerboot (the entrypoint): reads TS_HOSTNAME, TS_AUTHKEY (file:PATH or the key),
//     TS_AUTH_ONCE, TS_STATE_DIR, TS_SOCKET, TS_SERVE_CONFIG, TS_USERSPACE. With no node state
//     it needs the auth key and "logs in" (writes a node identity to TS_STATE_DIR); with
//     state it keeps its identity and never reads the key again. Then it answers the local
//     API on TS_SOCKET and serves TS_SERVE_CONFIG.
//   serve: each `Web` entry's `/` handler is proxied from the `TCP` port (plain HTTP here: no
//     certificate without a tailnet), adding X-Forwarded-For/-Proto/-Host as `tailscale serve`
//     does. A connection from loopback (a test's `docker exec` into this container) is taken
//     as coming from the stand-in's one tailnet peer, 100.64.0.1: a real serve never forwards
//     a loopback client address.
//   tailscale [--socket=PATH] up | status [--json] | serve status [--json] | version
// Every line it prints starts with "tailscale-standin:" or says STAND-IN.
'use strict';
const fs = require('fs');
const http = require('http');
const net = require('net');
const path = require('path');
const crypto = require('crypto');

const VERSION = '1.82.5-standin';
const PEER = '100.64.0.1';
const say = (m) => console.log(`tailscale-standin: ${m}`);
const die = (m, code = 1) => { console.error(`tailscale-standin: ${m}`); process.exit(code); };

const env = process.env;
const socketPath = (args) => {
  const a = args.find((x) => x.startsWith('--socket='));
  return a ? a.slice('--socket='.length) : (env.TS_SOCKET || '/tmp/tailscaled.sock');
};
const stateDir = () => env.TS_STATE_DIR || '/var/lib/tailscale';
const stateFile = () => path.join(stateDir(), 'tailscaled.state');

function readState() {
  try { return JSON.parse(fs.readFileSync(stateFile(), 'utf8')); } catch { return null; }
}

function authKey() {
  const v = env.TS_AUTHKEY || env.TS_AUTH_KEY || '';
  if (v.startsWith('file:')) {
    try { return fs.readFileSync(v.slice(5), 'utf8').trim(); } catch (e) { die(`cannot read the auth key ${v.slice(5)}: ${e.code}`); }
  }
  return v.trim();
}

// "Log in": a node identity derived from the host name, written to the state directory.
function login(hostname, tailnet) {
  const key = authKey();
  if (!key) die('no node state and no auth key (TS_AUTHKEY): cannot log in', 1);
  const h = crypto.createHash('sha256').update(hostname).digest();
  const state = {
    standin: true,
    NodeID: 'nStandin' + h.toString('hex').slice(0, 8) + 'CNTRL',
    PublicKey: 'nodekey:' + crypto.randomBytes(32).toString('hex'),
    HostName: hostname,
    Tailnet: tailnet,
    IPv4: `100.${64 + (h[0] % 64)}.${h[1]}.${1 + (h[2] % 254)}`,
    IPv6: `fd7a:115c:a1e0::${h.readUInt16BE(3).toString(16)}`,
    Created: new Date().toISOString(),
    AuthKeySha256: crypto.createHash('sha256').update(key).digest('hex').slice(0, 12),
  };
  fs.mkdirSync(stateDir(), { recursive: true, mode: 0o700 });
  fs.writeFileSync(stateFile(), JSON.stringify(state, null, 2), { mode: 0o600 });
  say(`STAND-IN logged in as ${hostname} (${state.IPv4}) with auth key sha256:${state.AuthKeySha256}…; no tailnet was contacted`);
  return state;
}

function statusJson(state, serving) {
  const suffix = state ? state.Tailnet : '';
  const self = state ? {
    ID: state.NodeID, PublicKey: state.PublicKey, HostName: state.HostName,
    DNSName: `${state.HostName}.${suffix}.`, OS: 'linux', UserID: 1,
    TailscaleIPs: [state.IPv4, state.IPv6], AllowedIPs: [`${state.IPv4}/32`, `${state.IPv6}/128`],
    Addrs: [], CurAddr: '', Relay: 'standin', RxBytes: 0, TxBytes: 0, Created: state.Created,
    LastWrite: '0001-01-01T00:00:00Z', LastSeen: '0001-01-01T00:00:00Z',
    LastHandshake: '0001-01-01T00:00:00Z', Online: true, ExitNode: false, ExitNodeOption: false,
    Active: false, Tags: ['tag:agent-army'], InNetworkMap: true, InMagicSock: false, InEngine: false,
  } : null;
  return {
    Version: VERSION,
    TUN: env.TS_USERSPACE === 'false',
    BackendState: state ? 'Running' : 'NeedsLogin',
    HaveNodeKey: !!state,
    AuthURL: '',
    TailscaleIPs: state ? [state.IPv4, state.IPv6] : null,
    Self: self,
    Health: ['STAND-IN: this is not Tailscale; no tailnet is reachable from this machine'],
    MagicDNSSuffix: suffix,
    CurrentTailnet: state ? { Name: suffix, MagicDNSSuffix: suffix, MagicDNSEnabled: true } : null,
    Peer: {},
    User: { '1': { ID: 1, LoginName: 'standin@example.com', DisplayName: 'Stand-in' } },
    ClientVersion: null,
    Serving: serving,
  };
}

// --- the daemon -------------------------------------------------------------------------
function containerboot() {
  const hostname = env.TS_HOSTNAME || require('os').hostname();
  const tailnet = env.AGENT_ARMY_TAILNET || 'standin.ts.net';
  say('STAND-IN for tailscale/containerboot: not Tailscale, joins no tailnet (agent-army tests)');
  say(`uid ${process.getuid()}, TS_USERSPACE=${env.TS_USERSPACE || ''}, state in ${stateDir()}`);
  let state = readState();
  if (state && state.HostName === hostname) {
    say(`node state found: keeping identity ${state.NodeID} (the auth key is not used again)`);
  } else {
    state = login(hostname, tailnet);
  }
  const serving = [];
  const servers = [];
  if (env.TS_SERVE_CONFIG) {
    let cfg;
    try {
      cfg = JSON.parse(fs.readFileSync(env.TS_SERVE_CONFIG, 'utf8').split('${TS_CERT_DOMAIN}').join(`${hostname}.${tailnet}`));
    } catch (e) { die(`cannot read the serve config ${env.TS_SERVE_CONFIG}: ${e.message}`); }
    for (const [hostPort, web] of Object.entries(cfg.Web || {})) {
      const port = Number(hostPort.split(':').pop());
      const target = web.Handlers && web.Handlers['/'] && web.Handlers['/'].Proxy;
      if (!target || !(cfg.TCP && cfg.TCP[String(port)])) continue;
      servers.push(serve(port, hostPort.split(':')[0], new URL(target)));
      serving.push({ port, host: hostPort, proxy: target, tls: false });
    }
  }
  const sock = socketPath([]);
  try { fs.unlinkSync(sock); } catch { }
  const api = http.createServer((req, res) => {
    if (req.url.startsWith('/localapi/v0/status')) {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(statusJson(readState(), serving), null, 2));
    } else {
      res.statusCode = 404; res.end('not in the stand-in\n');
    }
  });
  api.listen(sock, () => { fs.chmodSync(sock, 0o600); say(`local API on ${sock}`); });
  const stop = () => { say('stopping'); api.close(); servers.forEach((s) => s.close()); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

function serve(port, host, target) {
  const server = http.createServer((req, res) => {
    let peer = req.socket.remoteAddress || PEER;
    if (peer.startsWith('::ffff:')) peer = peer.slice(7);
    if (peer === '127.0.0.1' || peer === '::1') peer = PEER;
    const headers = { ...req.headers };
    headers['x-forwarded-for'] = peer;
    headers['x-forwarded-proto'] = 'https';
    headers['x-forwarded-host'] = host;
    headers.host = target.host;
    const up = http.request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on('error', (e) => { res.statusCode = 502; res.end(`tailscale-standin: upstream ${target.href}: ${e.code}\n`); });
    req.pipe(up);
  });
  // WebSockets (the UI): a raw tunnel after the same headers.
  server.on('upgrade', (req, sock, head) => {
    const up = net.connect(Number(target.port), target.hostname, () => {
      let peer = req.socket.remoteAddress || PEER;
      if (peer === '127.0.0.1' || peer === '::1' || peer === '::ffff:127.0.0.1') peer = PEER;
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (const [k, v] of Object.entries(req.headers)) if (!k.startsWith('x-forwarded-')) lines.push(`${k}: ${v}`);
      lines.push(`x-forwarded-for: ${peer}`, 'x-forwarded-proto: https', `x-forwarded-host: ${host}`);
      up.write(lines.join('\r\n') + '\r\n\r\n');
      up.write(head);
      up.pipe(sock); sock.pipe(up);
    });
    up.on('error', () => sock.destroy());
  });
  server.listen(port, '0.0.0.0', () => say(`STAND-IN serve: http (not https) on :${port} for ${host} -> ${target.href}`));
  server.on('error', (e) => die(`serve on :${port}: ${e.message}`));
  return server;
}

// --- the CLI ----------------------------------------------------------------------------
function localStatus(args, cb) {
  const req = http.request({ socketPath: socketPath(args), path: '/localapi/v0/status' }, (res) => {
    let body = '';
    res.on('data', (d) => { body += d; });
    res.on('end', () => cb(JSON.parse(body)));
  });
  req.on('error', (e) => die(`failed to connect to local tailscaled (${socketPath(args)}): ${e.code}`, 1));
  req.end();
}

function cli(args) {
  const rest = args.filter((a) => !a.startsWith('--socket='));
  const cmd = rest[0];
  const json = rest.includes('--json');
  switch (cmd) {
    case 'version':
      console.log(VERSION); break;
    case 'status':
      localStatus(args, (s) => {
        if (json) { console.log(JSON.stringify(s, null, 2)); return; }
        if (s.BackendState !== 'Running') die(`Logged out. (${s.BackendState})`, 1);
        console.log(`${s.TailscaleIPs[0]}  ${s.Self.HostName}  standin@  linux  -   (STAND-IN, not Tailscale)`);
      });
      break;
    case 'up': {
      const flag = (n) => { const a = rest.find((x) => x.startsWith(`--${n}=`)); return a && a.slice(n.length + 3); };
      if (flag('auth-key')) env.TS_AUTHKEY = flag('auth-key');
      const st = readState();
      if (st) { say(`already logged in as ${st.HostName}`); break; }
      login(flag('hostname') || env.TS_HOSTNAME || require('os').hostname(), env.AGENT_ARMY_TAILNET || 'standin.ts.net');
      break;
    }
    case 'serve':
      if (rest[1] === 'status') {
        localStatus(args, (s) => console.log(json ? JSON.stringify({ Web: s.Serving }, null, 2) : (s.Serving || []).map((x) => `https://${x.host} -> ${x.proxy} (STAND-IN: plain http)`).join('\n')));
      } else {
        die('serve: the stand-in serves TS_SERVE_CONFIG only (set it on the container)', 2);
      }
      break;
    default:
      die(`\`${cmd || ''}\` is not implemented by the stand-in (up, status, serve status, version)`, 2);
  }
}

const self = path.basename(process.argv[1] || '');
if (self === 'containerboot' || process.argv[2] === 'containerboot') containerboot();
else cli(process.argv.slice(2));
