'use strict';
/* Legion Node.js language worker (docs/runtimes.md).
 *
 * Started by legion-init in a placeholder sandbox as
 *
 *     node /opt/legion/runtime/node/worker.js
 *
 * with the control channel on fd 3 (LEGION_CONTROL_FD). It loads what every
 * function needs, says `op=ready phase=placeholder` and waits for
 * `op=specialize`. Then it applies the app's env, changes to /code, loads the
 * handler ("file.js:export", default "index.js:handler"), says
 * `op=ready phase=specialized` and serves HTTP/1.1 on the listening socket
 * that came with specialize (or LEGION_LISTEN_FD).
 *
 * CommonJS, Node 18+, no npm packages. Node cannot receive SCM_RIGHTS through
 * its public API, so the channel is opened as a libuv IPC pipe (the kind
 * child_process uses for handle passing), which accepts a descriptor that
 * arrives with a frame; without that binding, only LEGION_LISTEN_FD works. */
const T_START = process.hrtime.bigint();

const http = require('http');
const net = require('net');
const fs = require('fs');
const path = require('path');
const url = require('url');
// Loaded now so that functions find them ready.
require('util');
require('events');
require('stream');
require('crypto');
require('zlib');
require('os');
require('querystring');
require('string_decoder');
require('buffer');
require('child_process');
require('timers/promises');

const PROTO_MAX = 1 << 20;
const SEND_MAX = PROTO_MAX - 64; // init appends via=worker
const FIELD_MAX = 64 * 1024;
const MAX_BODY = Number(process.env.LEGION_MAX_BODY || 64 * 1024 * 1024);
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const HOP = new Set(['content-length', 'transfer-encoding', 'keep-alive', 'connection']);

function log(msg) {
  process.stderr.write(`legion: ${msg}\n`);
}

function msSince(t) {
  return Number(process.hrtime.bigint() - t) / 1e6;
}

class SpecializeError extends Error {
  constructor(type, message, extra) {
    super(message);
    this.type = type;
    this.exception = extra && extra.exception;
    this.traceback = extra && extra.traceback;
  }
}

class ResponseError extends Error {}

/* ---- control channel --------------------------------------------------- */

function clean(v) {
  let s = String(v);
  if (s.includes('\0')) s = s.split('\0').join('\\0');
  if (s.length > FIELD_MAX) s = s.slice(0, FIELD_MAX - 40) + '\n[... cut by the legion worker]';
  return s;
}

function encode(op, fields) {
  const parts = [Buffer.from(`op=${clean(op)}\0`)];
  for (const [k, v] of fields) {
    if (v === undefined || v === null) continue;
    parts.push(Buffer.from(`${k}=${clean(v)}\0`));
  }
  const payload = Buffer.concat(parts);
  if (payload.length > SEND_MAX) throw new Error(`frame of ${payload.length} bytes is too large`);
  const hdr = Buffer.alloc(4);
  hdr.writeUInt32LE(payload.length, 0);
  return Buffer.concat([hdr, payload]);
}

function parsePayload(p) {
  if (p.length === 0 || p[p.length - 1] !== 0) throw new Error('payload does not end in NUL');
  const fields = [];
  let start = 0;
  for (let i = 0; i < p.length; i++) {
    if (p[i] !== 0) continue;
    const raw = p.toString('utf8', start, i);
    const eq = raw.indexOf('=');
    if (eq <= 0) throw new Error('malformed field');
    fields.push([raw.slice(0, eq), raw.slice(eq + 1)]);
    start = i + 1;
  }
  if (fields[0][0] !== 'op') throw new Error('first field is not op=');
  return fields;
}

class Frame {
  constructor(fields, handles) {
    this.fields = fields;
    this.handles = handles;
  }
  get op() { return this.fields[0][1]; }
  get(key) {
    for (const [k, v] of this.fields) if (k === key) return v;
    return undefined;
  }
  getAll(key) { return this.fields.filter(([k]) => k === key).map(([, v]) => v); }
  closeHandles() {
    for (const h of this.handles) try { h.close(); } catch (e) { /* gone */ }
    this.handles = [];
  }
}

class Control {
  constructor(fd, onFrame, onEnd) {
    this.pipe = null;
    try {
      // process.binding() is deprecated but kept for exactly this kind of
      // use; pipe_wrap is on its allow list in Node 18 and 20.
      const pw = process.binding('pipe_wrap');
      const pipe = new pw.Pipe(pw.constants.IPC);
      if (pipe.open(fd) === 0) this.pipe = pipe;
    } catch (e) {
      this.pipe = null;
    }
    state.canReceiveFds = this.pipe !== null;
    this.sock = this.pipe
      ? new net.Socket({ handle: this.pipe, readable: true, writable: true })
      : new net.Socket({ fd, readable: true, writable: true });
    this.buf = Buffer.alloc(0);
    this.handles = [];
    this.sock.on('data', (chunk) => this.onData(chunk));
    this.sock.on('end', onEnd);
    this.sock.on('error', (e) => { log(`control channel: ${e.message}`); onEnd(); });
    this.onFrame = onFrame;
  }

  onData(chunk) {
    if (this.pipe && this.pipe.pendingHandle) {
      this.handles.push(this.pipe.pendingHandle);
      this.pipe.pendingHandle = null;
    }
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    while (this.buf.length >= 4) {
      const n = this.buf.readUInt32LE(0);
      if (n === 0 || n > PROTO_MAX) {
        log(`control channel: bad frame length ${n}`);
        process.exit(1);
      }
      if (this.buf.length < 4 + n) break;
      const payload = this.buf.subarray(4, 4 + n);
      this.buf = this.buf.subarray(4 + n);
      let fields;
      try {
        fields = parsePayload(payload);
      } catch (e) {
        log(`control channel: ${e.message}`);
        process.exit(1);
      }
      // Descriptors arrive with the first byte of their frame, so those
      // received so far belong to the oldest frame not yet handled.
      const handles = this.handles;
      this.handles = [];
      this.onFrame(new Frame(fields, handles));
    }
  }

  send(op, fields, cb) {
    this.sock.write(encode(op, fields), cb);
  }
}

/* ---- requests and responses ---------------------------------------------- */

class Request {
  constructor(nreq, body) {
    this.method = nreq.method;
    this.url = nreq.url;
    const q = this.url.indexOf('?');
    let p = q < 0 ? this.url : this.url.slice(0, q);
    this.rawQuery = q < 0 ? '' : this.url.slice(q + 1);
    if (!p.startsWith('/') && p.includes('://')) {
      try { p = new URL(p).pathname; } catch (e) { /* keep it */ }
    }
    const hash = p.indexOf('#');
    if (hash >= 0) p = p.slice(0, hash);
    if (p.includes('%')) {
      try { p = decodeURIComponent(p); } catch (e) { /* malformed escape: raw */ }
    }
    this.path = p;
    this.query = {};
    this.queryAll = {};
    if (this.rawQuery) {
      for (const [k, v] of new URLSearchParams(this.rawQuery)) {
        if (k in this.queryAll) this.queryAll[k].push(v);
        else { this.queryAll[k] = [v]; this.query[k] = v; }
      }
    }
    this.headers = nreq.headers; // lower-case names, repeated values joined by ", "
    this.httpVersion = nreq.httpVersion;
    this.body = body;
  }
  json() { return this.body.length ? JSON.parse(this.body.toString('utf8')) : null; }
  text() { return this.body.toString('utf8'); }
}

function headerItems(h) {
  if (h === undefined || h === null) return [];
  let items;
  if (Array.isArray(h)) items = h;
  else if (typeof h === 'object') items = Object.entries(h);
  else throw new ResponseError(`response headers must be an object, not ${typeof h}`);
  const out = [];
  for (const item of items) {
    if (!Array.isArray(item) || item.length !== 2) throw new ResponseError('response header is not a [name, value] pair');
    const [k, v] = item;
    if (typeof k !== 'string' || !TOKEN.test(k)) throw new ResponseError(`invalid response header name ${JSON.stringify(k)}`);
    for (const one of Array.isArray(v) ? v : [v]) {
      if (typeof one !== 'string' && typeof one !== 'number') throw new ResponseError(`response header ${k}: value is not a string`);
      const s = String(one);
      if (/[\r\n\0]/.test(s)) throw new ResponseError(`response header ${k} contains a line break`);
      out.push([k, s]);
    }
  }
  return out;
}

function normalize(r) {
  let status = 200;
  let headers = [];
  let body;
  if (r !== null && typeof r === 'object' && !Buffer.isBuffer(r) && !ArrayBuffer.isView(r) &&
      !(r instanceof ArrayBuffer) && !Array.isArray(r) && ('status' in r || 'body' in r)) {
    if (r.status !== undefined) status = r.status;
    if (!Number.isInteger(status) || status < 200 || status > 599) {
      throw new ResponseError(`response status must be an integer from 200 to 599, not ${JSON.stringify(status)}`);
    }
    headers = headerItems(r.headers);
    body = r.body;
  } else if (r === undefined || r === null) {
    return { status: 204, headers: [], body: Buffer.alloc(0) };
  } else {
    body = r;
  }
  let data;
  let ctype;
  if (body === undefined || body === null) data = Buffer.alloc(0);
  else if (typeof body === 'string') { data = Buffer.from(body, 'utf8'); ctype = 'text/plain; charset=utf-8'; }
  else if (Buffer.isBuffer(body)) { data = body; ctype = 'application/octet-stream'; }
  else if (ArrayBuffer.isView(body)) { data = Buffer.from(body.buffer, body.byteOffset, body.byteLength); ctype = 'application/octet-stream'; }
  else if (body instanceof ArrayBuffer) { data = Buffer.from(body); ctype = 'application/octet-stream'; }
  else {
    let s;
    try { s = JSON.stringify(body); } catch (e) { throw new ResponseError(`response body is not JSON-serializable: ${e.message}`); }
    if (s === undefined) throw new ResponseError('response body is not JSON-serializable');
    data = Buffer.from(s, 'utf8');
    ctype = 'application/json';
  }
  if (ctype && !headers.some(([k]) => k.toLowerCase() === 'content-type')) headers.push(['Content-Type', ctype]);
  return { status, headers, body: data };
}

function errorBody(code, message) {
  return Buffer.from(JSON.stringify({ error: { code, message } }));
}

function writeResponse(res, out, close) {
  res.statusCode = out.status;
  const grouped = new Map();
  for (const [k, v] of out.headers) {
    const lk = k.toLowerCase();
    if (HOP.has(lk)) {
      if (lk === 'connection' && v.toLowerCase() === 'close') close = true;
      continue;
    }
    const g = grouped.get(lk);
    if (g) g.values.push(v);
    else grouped.set(lk, { name: k, values: [v] });
  }
  for (const { name, values } of grouped.values()) res.setHeader(name, values.length === 1 ? values[0] : values);
  if (close) res.setHeader('Connection', 'close');
  if (out.status === 204 || out.status === 304) {
    res.end();
  } else {
    res.setHeader('Content-Length', out.body.length);
    res.end(out.body);
  }
}

/* ---- the server ----------------------------------------------------------- */

const state = { handler: null, server: null, inflight: 0, draining: false, specialized: false, canReceiveFds: false };

function report(req, err) {
  const text = err && err.stack ? err.stack : String(err);
  process.stderr.write(`legion: function error in ${req.method} ${req.path}:\n${text}\n`);
}

async function dispatch(nreq, res, body) {
  state.inflight++;
  const req = new Request(nreq, body);
  let out;
  try {
    out = normalize(await state.handler(req));
  } catch (e) {
    report(req, e);
    const invalid = e instanceof ResponseError;
    const name = (e && e.constructor && e.constructor.name) || typeof e;
    out = {
      status: 500,
      headers: [['Content-Type', 'application/json']],
      body: errorBody(invalid ? 'InvalidResponse' : 'FunctionError', invalid
        ? `the function returned an invalid response: ${e.message} (traceback in the app's logs)`
        : `the function raised ${name} (traceback in the app's logs)`),
    };
  }
  try {
    writeResponse(res, out, state.draining);
  } catch (e) {
    report(req, e);
    if (!res.headersSent) {
      try {
        res.removeHeader('Content-Type');
        writeResponse(res, { status: 500, headers: [['Content-Type', 'application/json']],
          body: errorBody('InvalidResponse', 'the function returned an invalid response') }, true);
      } catch (e2) { res.destroy(); }
    } else {
      res.destroy();
    }
  } finally {
    state.inflight--;
    if (state.draining && state.inflight === 0) process.exit(0);
  }
}

function tooLarge(res) {
  writeResponse(res, { status: 413, headers: [['Content-Type', 'application/json']],
    body: errorBody('BadRequest', `request body larger than ${MAX_BODY} bytes`) }, true);
}

function onRequest(nreq, res) {
  nreq.on('error', () => { /* the client went away */ });
  if (Number(nreq.headers['content-length'] || 0) > MAX_BODY) {
    tooLarge(res);
    nreq.resume();
    return;
  }
  const chunks = [];
  let size = 0;
  nreq.on('data', (c) => {
    size += c.length;
    if (size <= MAX_BODY) chunks.push(c);
  });
  nreq.on('end', () => {
    if (size > MAX_BODY) tooLarge(res);
    else dispatch(nreq, res, chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
  });
}

function drainAndExit() {
  if (!state.server) process.exit(0);
  state.draining = true;
  state.server.close();
  if (typeof state.server.closeIdleConnections === 'function') state.server.closeIdleConnections();
  if (state.inflight === 0) process.exit(0);
}

/* ---- specialization ------------------------------------------------------- */

async function loadHandler(workdir, entrypoint) {
  const colon = entrypoint.lastIndexOf(':');
  const file = (colon < 0 ? entrypoint : entrypoint.slice(0, colon)).trim();
  const name = (colon < 0 ? 'handler' : entrypoint.slice(colon + 1)).trim();
  if (!file || !name || !/^[A-Za-z_$][A-Za-z0-9_$]*(\.[A-Za-z_$][A-Za-z0-9_$]*)*$/.test(name)) {
    throw new SpecializeError('InvalidEntrypoint', `entrypoint \`${entrypoint}\` is not \`file.js:export\` (e.g. \`index.js:handler\`)`);
  }
  const full = path.resolve(workdir, file);
  let st = null;
  try { st = fs.statSync(full); } catch (e) { /* missing */ }
  if (!st || !st.isFile()) {
    throw new SpecializeError('EntrypointNotFound', `entrypoint \`${entrypoint}\`: no file \`${file}\` in ${workdir}`,
      { exception: 'ENOENT' });
  }
  let mod;
  try {
    if (full.endsWith('.mjs')) {
      mod = await import(url.pathToFileURL(full).href);
    } else {
      try {
        mod = require(full);
      } catch (e) {
        if (!e || e.code !== 'ERR_REQUIRE_ESM') throw e;
        mod = await import(url.pathToFileURL(full).href);
      }
    }
  } catch (e) {
    const ename = (e && e.name) || typeof e;
    throw new SpecializeError('ImportError', `loading \`${file}\` failed: ${ename}: ${e && e.message}`,
      { exception: ename, traceback: e && e.stack ? e.stack : String(e) });
  }
  let fn = mod;
  for (const part of name.split('.')) {
    let next = fn === null || fn === undefined ? undefined : fn[part];
    // An ES module's CommonJS-style exports sit under default.
    if (next === undefined && fn === mod && mod && mod.default && typeof mod.default === 'object') next = mod.default[part];
    fn = next;
  }
  if (fn === undefined) {
    throw new SpecializeError('HandlerNotFound', `\`${file}\` does not export \`${name}\``, { exception: 'TypeError' });
  }
  if (typeof fn !== 'function') {
    throw new SpecializeError('HandlerNotFound', `\`${name}\` in \`${file}\` is a ${typeof fn}, not a function`,
      { exception: 'TypeError' });
  }
  return fn;
}

function listenFd(frame) {
  if (frame.handles.length) {
    const h = frame.handles.shift();
    frame.closeHandles();
    state.listenHandle = h; // owns the fd: keep it alive, never close it
    return h.fd;
  }
  const v = process.env.LEGION_LISTEN_FD;
  if (v) {
    const fd = Number(v);
    try { fs.fstatSync(fd); } catch (e) {
      throw new SpecializeError('ListenError', `LEGION_LISTEN_FD=${v} is not an open descriptor: ${e.message}`);
    }
    return fd;
  }
  throw new SpecializeError('ListenError', 'no listening socket: specialize carried no fd and LEGION_LISTEN_FD is unset' +
    (state.canReceiveFds ? '' : ' (this Node.js cannot receive descriptors: pass the socket as LEGION_LISTEN_FD)'));
}

async function specialize(frame) {
  const t0 = process.hrtime.bigint();
  const fd = listenFd(frame);
  for (const item of frame.getAll('env')) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new SpecializeError('InvalidEnv', `env field \`${item}\` is not K=V`);
    process.env[item.slice(0, eq)] = item.slice(eq + 1);
  }
  const workdir = frame.get('workdir') || '/code';
  try {
    process.chdir(workdir);
  } catch (e) {
    throw new SpecializeError('EntrypointNotFound', `working directory ${workdir}: ${e.code || e.message}`);
  }
  state.handler = await loadHandler(process.cwd(), frame.get('entrypoint') || 'index.js:handler');
  const server = http.createServer(onRequest);
  server.keepAliveTimeout = 0; // the host decides when a connection ends
  server.requestTimeout = 0;
  server.headersTimeout = 60000;
  await new Promise((resolve, reject) => {
    const onErr = (e) => reject(new SpecializeError('ListenError', `serve on fd ${fd}: ${e.message}`));
    server.once('error', onErr);
    server.listen({ fd }, () => { server.removeListener('error', onErr); resolve(); });
  });
  server.on('error', (e) => log(`server: ${e.message}`));
  state.server = server;
  return msSince(t0);
}

/* Run one request through the whole serving path (HTTP parser, Request,
 * normalize, writeResponse) on a private abstract socket, so that the first
 * real request after specialization does not pay for compiling it. */
function warmUp() {
  return new Promise((resolve) => {
    let done = false;
    const finish = (srv) => {
      if (done) return;
      done = true;
      state.handler = null;
      if (srv) srv.close();
      resolve();
    };
    try {
      state.handler = async (req) => ({ status: 200, headers: { 'X-Warm': '1' },
        body: { q: req.query, j: req.json(), p: req.path } });
      const srv = http.createServer(onRequest);
      srv.on('error', () => finish(srv));
      srv.listen(`\0legion-warmup-${process.pid}`, () => {
        const req = http.request({ socketPath: `\0legion-warmup-${process.pid}`, path: '/warm?x=1&x=2', method: 'POST',
          headers: { 'Content-Type': 'application/json', Connection: 'close' } }, (res) => {
          res.resume();
          res.on('end', () => finish(srv));
          res.on('error', () => finish(srv));
        });
        req.on('error', () => finish(srv));
        req.end('{"a":1}');
      });
      setTimeout(() => finish(srv), 1000).unref();
    } catch (e) {
      finish(null);
    }
  });
}

function main() {
  const fd = Number(process.env.LEGION_CONTROL_FD);
  if (!Number.isInteger(fd) || fd < 0) {
    process.stderr.write('legion worker: LEGION_CONTROL_FD is not set (run me under legion-init --worker-control)\n');
    process.exit(2);
  }
  // The channel is opened after the warm-up, so that nothing can be
  // specialized while the warm-up handler is installed.
  warmUp().then(() => serveControl(fd));
}

function serveControl(fd) {
  let busy = false;
  const ctl = new Control(fd, (frame) => {
    if (frame.op !== 'specialize') {
      frame.closeHandles();
      ctl.send('error', [['id', frame.get('id')], ['message', `unknown op \`${frame.op}\``]]);
      return;
    }
    if (busy || state.specialized) {
      frame.closeHandles();
      ctl.send('error', [['id', frame.get('id')], ['phase', 'specialize'], ['type', 'AlreadySpecialized'],
        ['message', 'this instance is already specialized; a sandbox is specialized once']]);
      return;
    }
    busy = true;
    const app = frame.get('app') || '';
    const revision = frame.get('revision') || '';
    specialize(frame).then((ms) => {
      state.specialized = true;
      log(`specialized app=${app} revision=${revision} in ${ms.toFixed(1)} ms`);
      ctl.send('ready', [['id', frame.get('id')], ['phase', 'specialized'], ['app', app],
        ['revision', revision], ['ms', ms.toFixed(1)]]);
    }, (e) => {
      const err = e instanceof SpecializeError ? e
        : new SpecializeError('InternalError', `${e && e.name}: ${e && e.message}`, { traceback: e && e.stack });
      log(`specialize failed: ${err.type}: ${err.message}`);
      if (err.traceback) process.stderr.write(`${err.traceback}\n`);
      const fields = [['id', frame.get('id')], ['phase', 'specialize'], ['type', err.type], ['message', err.message]];
      if (err.exception) fields.push(['exception', err.exception]);
      if (err.traceback) fields.push(['traceback', err.traceback]);
      ctl.send('error', fields, () => process.exit(1));
      setTimeout(() => process.exit(1), 2000);
    });
  }, () => {
    if (!state.specialized && !busy) process.exit(0); // the host went away
  });
  process.on('SIGTERM', drainAndExit);
  ctl.send('ready', [['phase', 'placeholder'], ['runtime', 'node'], ['version', process.versions.node],
    ['ms', msSince(T_START).toFixed(1)]]);
}

main();
