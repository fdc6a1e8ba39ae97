'use strict'
/**
 * Express integration for Vallum: prompt scanning of request bodies, redaction and watermarking
 * of responses (whole JSON / text bodies and streams: SSE, chunked text).
 *
 *     const express = require('express')
 *     const { Firewall, Policy } = require('vallum')
 *     const { vallum, callerFromHeader, errorHandler } = require('vallum/express')
 *
 *     const firewall = new Firewall(Policy.fromFile('vallum.toml'))
 *     const app = express()
 *     app.use('/v1', express.json(), vallum({ firewall, callerId: callerFromHeader('x-api-key') }))
 *     app.post('/v1/chat', (req, res) => { ...req.vallum.decision...; res.json({ answer }) })
 *     app.use(errorHandler())   // body-parser errors -> problem JSON, without echoing the body
 *
 * Requests (`scanRequests`, methods POST/PUT/PATCH): the `fields` of `req.body` are scanned with
 * `await firewall.scanPrompts(texts)` (off the event loop). `req.body` is what a body parser
 * left: a JSON value (express.json()), a string (express.text(): parsed as JSON when it is JSON,
 * else scanned whole as the field `(body)`) or a Buffer (express.raw(): same, when it is UTF-8
 * text). With no body parser before the middleware, a JSON request body is read (up to
 * `maxBodyBytes`) and parsed here, and left in `req.body` (later express.json() calls skip it).
 * The worst decision wins: `block` is answered with `blockStatus` (403) and an
 * `application/problem+json` document {type, title, status, detail, rule_ids, categories} that
 * never contains prompt text or matched values; a body that cannot be parsed gets 400, one too
 * large 413. Otherwise `req.vallum = { decision, verdict, verdicts, fields, rule_ids, categories }`
 * and `next()`.
 *
 * Field paths: dotted keys (`a.b`), `[*]` every item of an array (or value of an object), `[N]`
 * one index (negative counts from the end). A selected array or object contributes every string
 * inside it, so `messages[*].content` covers both string content and content-part arrays.
 *
 * Responses (`redactResponses`, `watermarkResponses`; not for HEAD, 1xx, 204, 205, 206, 304 or
 * bodies with a Content-Encoding):
 *  - res.json(obj) and res.send(obj / JSON string / Buffer) with a JSON content type: every string
 *    value (and every integer of 9+ digits) is redacted with scanOutput; strings of at least
 *    `watermarkMinWords` words are then watermarked with the caller's payload. Express computes
 *    Content-Length and ETag on the transformed body. Bodies whose strings add up to
 *    `asyncMinBytes` or more are transformed with the async methods (off the event loop); the
 *    response then goes out a moment after res.json() returns.
 *  - res.send(text) with text/plain or text/markdown: redacted, then watermarked when long enough;
 *    text/html (what Express gives a string sent without a type): redacted only (a mark inside a
 *    tag or attribute could change the page).
 *  - res.write()/res.end() (streams, res.sendFile, piped responses): text/event-stream,
 *    text/plain, text/markdown and text/html go through one firewall.streamRedactor() and one
 *    firewall.streamWatermarker(payload) per response (html: no watermark): each chunk is pushed
 *    and what is safe is written; a secret split across writes is never let through. Both are
 *    flushed by res.end(). Content-Length, ETag and digests are dropped (set again when the whole
 *    body came in one res.end() before the headers went out). Event streams go through one
 *    firewall.sseStream({payload}) instead: `data:` values and the JSON delta fields of the
 *    policy's `sse.text_fields` (OpenAI, Anthropic, Gemini, TGI formats by default) are redacted
 *    as one text across events, so a value split over many events is caught and the JSON stays
 *    valid; events keep their order and number, and an event with nothing to change is written
 *    byte for byte. JSON written with res.write()/res.end() is buffered and transformed whole at
 *    res.end().
 *  Put compression middleware *before* this one (app.use(compression()) first) so that Vallum
 *  sees the plain text.
 *
 * Events, passed as an object to `onEvent(ev)` and, with `log: true` or a `logger`, written as
 * one JSON line each: {event, source: 'middleware', method, path, caller, ...}. `caller` is the
 * u64 payload (a BigInt in `ev`, a bare integer in the JSON line) or null. Events:
 * `prompt_blocked` / `prompt_flagged` (decision, score, rule_ids, categories, fields),
 * `request_rejected` (reason: invalid_json | too_large | invalid_encoding | ...), `redaction`
 * (entities: {entity: count}, count), `canary_leak` (entities, count) and
 * `classifier_unavailable` (error; at most once a minute per middleware). Prompt text, matched
 * text and redacted values are never part of an event.
 */

const crypto = require('node:crypto')
const net = require('node:net')

const DEFAULT_FIELDS = Object.freeze(['prompt', 'messages[*].content', 'input'])
const PROBLEM_CONTENT_TYPE = 'application/problem+json'
const PROBLEM_BLOCKED = 'urn:vallum:problem:prompt-blocked'
const PROBLEM_INVALID_BODY = 'urn:vallum:problem:invalid-body'
const PROBLEM_BODY_TOO_LARGE = 'urn:vallum:problem:body-too-large'
const PROBLEM_UNSUPPORTED = 'urn:vallum:problem:unsupported-body'

const RANK = { allow: 0, flag: 1, block: 2 }
const SCANNED_METHODS = new Set(['POST', 'PUT', 'PATCH'])
const NO_BODY_STATUS = new Set([204, 205, 206, 304])
const DROP_ON_CHANGE = ['content-length', 'content-md5', 'digest', 'content-digest', 'repr-digest', 'etag']
const CLASSIFIER_EVENT_INTERVAL_MS = 60_000
const NUMERIC_PII_MIN = 1e8
const U64 = (1n << 64n) - 1n

// --------------------------------------------------------------------------------------------
// Field paths

const ALL = Symbol('all')
const PATH_RE = /^(?:[^.[\]]+|\[(?:\*|-?\d+)\])(?:\.[^.[\]]+|\[(?:\*|-?\d+)\])*$/
const STEP_RE = /\[(\*|-?\d+)\]|([^.[\]]+)/g

/** Parses `messages[*].content` into steps: string key, integer index or the wildcard. */
function parseFieldPath (path) {
  if (typeof path !== 'string' || !PATH_RE.test(path)) {
    throw new TypeError(`invalid field path ${JSON.stringify(path)} (expected e.g. 'messages[*].content')`)
  }
  const steps = []
  for (const m of path.matchAll(STEP_RE)) {
    if (m[1] !== undefined) steps.push(m[1] === '*' ? ALL : Number.parseInt(m[1], 10))
    else steps.push(m[2])
  }
  return steps
}

function join (label, step) {
  if (typeof step === 'number') return `${label}[${step}]`
  return label ? `${label}.${step}` : String(step)
}

function isPlainObject (o) {
  return o !== null && typeof o === 'object' && !Array.isArray(o) && !Buffer.isBuffer(o)
}

/**
 * Returns [[concretePath, text], ...] for every string selected by the parsed paths. A selected
 * array or object contributes every string inside it; a string selected twice counts once.
 * Iterative: deeply nested JSON cannot exhaust the stack.
 */
function extractFields (body, parsedPaths) {
  const out = []
  const seen = new Set()
  for (const steps of parsedPaths) {
    const stack = [[body, 0, '']]
    while (stack.length) {
      const [obj, i, label] = stack.pop()
      if (i === steps.length) {
        leaves(obj, label, out, seen)
        continue
      }
      const step = steps[i]
      const children = []
      if (step === ALL) {
        if (Array.isArray(obj)) obj.forEach((v, k) => children.push([v, `${label}[${k}]`]))
        else if (isPlainObject(obj)) for (const k of Object.keys(obj)) children.push([obj[k], join(label, k)])
      } else if (typeof step === 'number') {
        if (Array.isArray(obj) && step >= -obj.length && step < obj.length) {
          const idx = step < 0 ? step + obj.length : step
          children.push([obj[idx], `${label}[${idx}]`])
        }
      } else if (isPlainObject(obj) && Object.prototype.hasOwnProperty.call(obj, step)) {
        children.push([obj[step], join(label, step)])
      }
      for (let c = children.length - 1; c >= 0; c--) stack.push([children[c][0], i + 1, children[c][1]])
    }
  }
  return out
}

function leaves (obj, label, out, seen) {
  const stack = [[obj, label]]
  while (stack.length) {
    const [o, lab] = stack.pop()
    if (typeof o === 'string') {
      if (!seen.has(lab)) {
        seen.add(lab)
        out.push([lab, o])
      }
    } else if (Array.isArray(o)) {
      for (let k = o.length - 1; k >= 0; k--) stack.push([o[k], `${lab}[${k}]`])
    } else if (isPlainObject(o)) {
      const keys = Object.keys(o)
      for (let k = keys.length - 1; k >= 0; k--) stack.push([o[keys[k]], join(lab, keys[k])])
    }
  }
}

// --------------------------------------------------------------------------------------------
// Callers

function hash64 (data, key) {
  const h = key ? crypto.createHmac('sha256', key) : crypto.createHash('sha256')
  return h.update(data).digest().readBigUInt64BE(0)
}

function headerValue (req, lname) {
  const headers = req && req.headers
  if (!headers) return undefined
  let v = headers[lname]
  if (v === undefined) {
    for (const k of Object.keys(headers)) {
      if (k.toLowerCase() === lname) { v = headers[k]; break }
    }
  }
  if (Array.isArray(v)) v = v.join(', ')
  return v
}

/**
 * Caller id = first 8 bytes (big-endian) of SHA-256 of the value of header `name` (e.g. an API
 * key header), as a BigInt; null when the header is absent. With `{ key }` (string or Buffer) an
 * HMAC-SHA256 is used instead, so that a payload read from a leaked text cannot be matched
 * against guessed header values.
 */
function callerFromHeader (name, { key } = {}) {
  if (typeof name !== 'string' || !name) throw new TypeError('callerFromHeader(name): a header name')
  const lname = name.toLowerCase()
  return function caller (req) {
    const v = headerValue(req, lname)
    if (v === undefined || v === null) return null
    return hash64(Buffer.from(String(v), 'utf8'), key)
  }
}

/**
 * Caller id = first 8 bytes of SHA-256 (HMAC-SHA256 with `{ key }`) of the client address
 * (`req.ip`, which honours Express's 'trust proxy' setting; IPv4-mapped IPv6 addresses are
 * written as IPv4), as a BigInt; null when unknown.
 */
function callerFromIp ({ key } = {}) {
  return function caller (req) {
    let ip = (req && (req.ip || (req.socket && req.socket.remoteAddress))) || null
    if (!ip) return null
    ip = String(ip)
    const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)
    if (m) ip = m[1]
    else if (net.isIPv6(ip)) ip = ip.toLowerCase()
    return hash64(Buffer.from(ip, 'utf8'), key)
  }
}

function toPayload (v) {
  if (v === null || v === undefined) return null
  if (typeof v === 'bigint') return BigInt.asUintN(64, v)
  if (typeof v === 'number' && Number.isSafeInteger(v)) return BigInt.asUintN(64, BigInt(v))
  if (typeof v === 'string' && /^\d+$/.test(v)) return BigInt(v) & U64
  return null
}

// --------------------------------------------------------------------------------------------
// Verdicts, problems, events

function worst (verdicts) {
  let w = null
  for (const v of verdicts) {
    if (!v) continue
    if (w === null) { w = v; continue }
    const a = RANK[v.decision] || 0
    const b = RANK[w.decision] || 0
    if (a > b || (a === b && v.score > w.score)) w = v
  }
  return w
}

function ruleIds (verdicts) {
  const s = new Set()
  for (const v of verdicts) for (const m of (v && v.matches) || []) s.add(m.rule_id)
  return [...s].sort()
}

function categories (verdicts) {
  const s = new Set()
  for (const v of verdicts) for (const m of (v && v.matches) || []) s.add(m.category)
  return [...s].sort()
}

function problem (status, type, title, detail, extra) {
  return Object.assign({ type, title, status, detail, rule_ids: [], categories: [] }, extra || {})
}

function sendProblem (res, doc, headers) {
  // Straight to the Node response methods: no Vallum wrappers are installed yet on this path.
  const body = JSON.stringify(doc)
  res.statusCode = doc.status
  res.setHeader('Content-Type', PROBLEM_CONTENT_TYPE)
  res.setHeader('Content-Length', Buffer.byteLength(body))
  res.setHeader('Cache-Control', 'no-store')
  for (const [k, v] of Object.entries(headers || {})) res.setHeader(k, v)
  res.end(body)
}

const BIGINT_TAG = '\u0000vallum-bigint:'

/** JSON with BigInts written as bare integers (what a JSON reader in any language expects). */
function eventJson (ev) {
  const s = JSON.stringify(ev, (_k, v) => (typeof v === 'bigint' ? BIGINT_TAG + v.toString() : v))
  return s.replace(/"\\u0000vallum-bigint:(\d+)"/g, '$1')
}

class Events {
  constructor (source, onEvent, logger) {
    this.source = source
    this.onEvent = typeof onEvent === 'function' ? onEvent : null
    this.logger = typeof logger === 'function' ? logger : null
    this.classifierLast = null
  }

  get active () {
    return this.onEvent !== null || this.logger !== null
  }

  emit (event, req, caller, fields) {
    if (!this.active) return
    const ev = Object.assign({
      event,
      source: this.source,
      method: (req && req.method) || null,
      path: requestPath(req),
      caller: caller === undefined ? null : caller
    }, fields || {})
    if (this.logger) {
      try {
        this.logger(eventJson(ev))
      } catch (_) { /* a broken logger must not break the request */ }
    }
    if (this.onEvent) {
      try {
        const r = this.onEvent(Object.assign({}, ev))
        if (r && typeof r.then === 'function') r.then(null, () => {})
      } catch (_) { /* a broken callback must not break the request */ }
    }
  }

  verdicts (req, caller, result) {
    if (!this.active) return
    const unavailable = result.verdicts.find((v) => v && v.classifier && v.classifier.status === 'unavailable')
    if (unavailable) {
      const now = Date.now()
      if (this.classifierLast === null || now - this.classifierLast >= CLASSIFIER_EVENT_INTERVAL_MS) {
        this.classifierLast = now
        this.emit('classifier_unavailable', req, caller, {
          error: String(unavailable.classifier.error || 'unavailable')
        })
      }
    }
    const d = result.decision
    if (d === 'block' || d === 'flag') {
      const bad = result.fields.filter((_, i) => result.verdicts[i] && result.verdicts[i].decision === d)
      this.emit(d === 'block' ? 'prompt_blocked' : 'prompt_flagged', req, caller, {
        decision: d,
        score: Math.round(Number(result.verdict.score) * 1e4) / 1e4,
        rule_ids: result.rule_ids,
        categories: result.categories,
        fields: bad
      })
    }
  }

  findings (req, caller, entities, canary) {
    const keys = Object.keys(entities).sort()
    if (!keys.length && !canary) return
    const counts = {}
    let count = 0
    for (const k of keys) { counts[k] = entities[k]; count += entities[k] }
    if (canary) this.emit('canary_leak', req, caller, { entities: counts, count })
    if (keys.length) this.emit('redaction', req, caller, { entities: counts, count })
  }
}

function requestPath (req) {
  if (!req) return null
  const u = req.originalUrl || req.url || ''
  const q = u.indexOf('?')
  return q >= 0 ? u.slice(0, q) : u // the query string may carry data: never logged
}

// --------------------------------------------------------------------------------------------
// Content types

function mediaType (ct) {
  if (Array.isArray(ct)) ct = ct[0]
  if (ct === undefined || ct === null) return { mt: '', charset: null }
  const parts = String(ct).split(';')
  const mt = parts[0].trim().toLowerCase()
  let charset = null
  for (const p of parts.slice(1)) {
    const eq = p.indexOf('=')
    if (eq < 0) continue
    if (p.slice(0, eq).trim().toLowerCase() === 'charset') {
      charset = p.slice(eq + 1).trim().replace(/^"|"$/g, '').toLowerCase() || null
    }
  }
  return { mt, charset }
}

function isJsonType (mt) {
  return mt === 'application/json' || (mt.startsWith('application/') && mt.endsWith('+json'))
}

function isUtf8 (charset) {
  return charset === null || charset === 'utf-8' || charset === 'utf8'
}

function decoderFor (charset) {
  try {
    return new TextDecoder(isUtf8(charset) ? 'utf-8' : charset)
  } catch (_) {
    return new TextDecoder('utf-8') // unknown label: read as UTF-8, as an HTTP client may
  }
}

/**
 * What to do with a response: null (pass it through) or {json, sse, watermark}.
 * `wmAllowed` is the middleware's watermark switch.
 */
function classify (status, ct, ce, wmAllowed) {
  if (status < 200 || NO_BODY_STATUS.has(status)) return null
  if (ce !== undefined && ce !== null && String(ce).trim().toLowerCase() !== 'identity') return null
  const { mt, charset } = mediaType(ct)
  if (isJsonType(mt)) return { json: true, sse: false, watermark: wmAllowed, mt, charset }
  if (mt === 'text/event-stream') return { json: false, sse: true, watermark: wmAllowed, mt, charset }
  if (mt === 'text/plain' || mt === 'text/markdown') return { json: false, sse: false, watermark: wmAllowed, mt, charset }
  if (mt === 'text/html') return { json: false, sse: false, watermark: false, mt, charset }
  return null
}

// --------------------------------------------------------------------------------------------
// Middleware

function countFindings (findings, into) {
  let canary = false
  for (const f of findings || []) {
    into[f.entity] = (into[f.entity] || 0) + 1
    if (f.entity === 'canary') canary = true
  }
  return canary
}

function wordsAtLeast (s, n) {
  if (n <= 0) return true
  if (s.length < 2 * n - 1) return false
  let count = 0
  const re = /\S+/g
  while (re.exec(s) !== null) {
    if (++count >= n) return true
  }
  return false
}

/**
 * The middleware factory. Options:
 *  firewall            a vallum Firewall (required)
 *  fields              field paths of the JSON body to scan (default prompt, messages[*].content, input)
 *  blockStatus         HTTP status of a blocked request (403)
 *  scanRequests        scan request bodies (true)
 *  redactResponses     redact JSON / text / stream responses (true)
 *  watermarkResponses  watermark them with callerId(req) (true)
 *  watermarkMinWords   strings shorter than this many words are not watermarked (30)
 *  callerId            (req) => BigInt | number | null, the watermark payload and the event's
 *                      caller (default callerFromIp())
 *  defaultPayload      payload when callerId gives null (0n)
 *  maxBodyBytes        limit when the middleware reads the request body itself (16 MiB)
 *  asyncMinBytes       whole bodies with this many string bytes or more are transformed off the
 *                      event loop (64 KiB)
 *  onEvent             (ev) => void, called for each event
 *  log / logger        log: true writes events as JSON lines to stderr; logger(line) overrides
 */
function vallum (options = {}) {
  const {
    firewall,
    fields = DEFAULT_FIELDS,
    blockStatus = 403,
    scanRequests = true,
    redactResponses = true,
    watermarkResponses = true,
    watermarkMinWords = 30,
    callerId = callerFromIp(),
    defaultPayload = 0n,
    maxBodyBytes = 16 * 1024 * 1024,
    asyncMinBytes = 64 * 1024,
    onEvent,
    log = false,
    logger
  } = options
  if (!firewall || typeof firewall.scanPrompts !== 'function') {
    throw new TypeError('vallum({ firewall }): a vallum Firewall is required')
  }
  if (!Array.isArray(fields)) throw new TypeError('vallum({ fields }): an array of field paths')
  const parsedPaths = fields.map(parseFieldPath)
  if (!Number.isInteger(blockStatus) || blockStatus < 400 || blockStatus > 599) {
    throw new RangeError('vallum({ blockStatus }): an HTTP error status (400..599)')
  }
  if (callerId !== null && callerId !== undefined && typeof callerId !== 'function') {
    throw new TypeError('vallum({ callerId }): a function (req) => BigInt | number | null')
  }
  const fallbackPayload = toPayload(defaultPayload) ?? 0n
  const lineLogger = typeof logger === 'function'
    ? logger
    : (log ? (line) => process.stderr.write(line + '\n') : null)
  const events = new Events('middleware', onEvent, lineLogger)
  const cfg = {
    firewall,
    redact: !!redactResponses,
    watermark: !!watermarkResponses,
    minWords: watermarkMinWords,
    asyncMinBytes,
    events
  }

  function callerOf (req) {
    if (!callerId) return null
    try {
      return toPayload(callerId(req))
    } catch (_) {
      return null
    }
  }

  async function handle (req, res, next) {
    const caller = callerOf(req)
    if (scanRequests && SCANNED_METHODS.has(req.method)) {
      const body = await requestBody(req, res, caller)
      if (body === STOP) return
      let result = { decision: 'allow', verdict: null, verdicts: [], fields: [], rule_ids: [], categories: [] }
      if (body !== NONE) {
        const selected = body.whole !== undefined ? [['(body)', body.whole]] : extractFields(body.value, parsedPaths)
        if (selected.length) {
          const verdicts = Array.from(await firewall.scanPrompts(selected.map((s) => s[1])))
          const w = worst(verdicts)
          result = {
            decision: w ? w.decision : 'allow',
            verdict: w,
            verdicts,
            fields: selected.map((s) => s[0]),
            rule_ids: ruleIds(verdicts),
            categories: categories(verdicts)
          }
        }
      }
      req.vallum = result
      events.verdicts(req, caller, result)
      if (result.decision === 'block') {
        if (res.headersSent) return
        sendProblem(res, problem(blockStatus, PROBLEM_BLOCKED, 'Prompt blocked',
          'The request was blocked by the prompt-injection firewall.',
          { rule_ids: result.rule_ids, categories: result.categories }))
        return
      }
    }
    if ((cfg.redact || cfg.watermark) && req.method !== 'HEAD') {
      wrapResponse(req, res, cfg, caller, caller ?? fallbackPayload)
    }
    next()
  }

  const STOP = Symbol('stop')
  const NONE = Symbol('none')

  function reject (req, res, caller, status, type, title, detail, reason) {
    events.emit('request_rejected', req, caller, { reason })
    if (!res.headersSent) sendProblem(res, problem(status, type, title, detail))
    return STOP
  }

  function invalidJson (req, res, caller) {
    return reject(req, res, caller, 400, PROBLEM_INVALID_BODY, 'Invalid request body',
      'The request body is not valid JSON.', 'invalid_json')
  }

  /** {value} (a parsed JSON value), {whole} (a text scanned whole), NONE or STOP (answered). */
  async function requestBody (req, res, caller) {
    const { mt } = mediaType(req.headers['content-type'])
    let b = req.body
    if (b === undefined && !req._body && isJsonType(mt) && hasBody(req)) {
      const raw = await readBody(req, maxBodyBytes)
      if (raw === TOO_LARGE) {
        return reject(req, res, caller, 413, PROBLEM_BODY_TOO_LARGE, 'Request body too large',
          `The request body exceeds ${maxBodyBytes} bytes.`, 'too_large')
      }
      if (raw === ABORTED) return STOP
      let text
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(raw)
      } catch (_) {
        return reject(req, res, caller, 400, PROBLEM_INVALID_BODY, 'Invalid request body',
          'The request body is not valid UTF-8.', 'invalid_encoding')
      }
      if (!text.trim()) {
        req._body = true
        req.body = {}
        return NONE
      }
      try {
        b = JSON.parse(text)
      } catch (_) {
        return invalidJson(req, res, caller)
      }
      req._body = true // express.json() after us leaves it alone
      req.body = b
      return { value: b }
    }
    if (b === undefined || b === null) return NONE
    if (Buffer.isBuffer(b)) {
      if (!b.length) return NONE
      let text
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(b)
      } catch (_) {
        if (isJsonType(mt)) {
          return reject(req, res, caller, 400, PROBLEM_INVALID_BODY, 'Invalid request body',
            'The request body is not valid UTF-8.', 'invalid_encoding')
        }
        return NONE // binary upload
      }
      if (!isJsonType(mt) && !mt.startsWith('text/') && mt !== '') return NONE
      b = text
    }
    if (typeof b === 'string') {
      if (!b.trim()) return NONE
      try {
        return { value: JSON.parse(b) }
      } catch (_) {
        if (isJsonType(mt)) return invalidJson(req, res, caller)
        return { whole: b }
      }
    }
    return { value: b }
  }

  const middleware = function vallumMiddleware (req, res, next) {
    handle(req, res, next).catch(next)
  }
  middleware.firewall = firewall
  return middleware
}

const TOO_LARGE = Symbol('too_large')
const ABORTED = Symbol('aborted')

function hasBody (req) {
  const len = req.headers['content-length']
  if (len !== undefined) return Number(len) > 0
  return req.headers['transfer-encoding'] !== undefined
}

function readBody (req, limit) {
  return new Promise((resolve) => {
    const declared = Number(req.headers['content-length'])
    if (Number.isFinite(declared) && declared > limit) {
      resolve(TOO_LARGE)
      req.resume()
      return
    }
    const chunks = []
    let size = 0
    let done = false
    const finish = (v) => {
      if (done) return
      done = true
      req.removeListener('data', onData)
      req.removeListener('end', onEnd)
      req.removeListener('error', onErr)
      req.removeListener('aborted', onErr)
      resolve(v)
    }
    const onData = (c) => {
      size += c.length
      if (size > limit) {
        finish(TOO_LARGE)
        req.resume()
        return
      }
      chunks.push(c)
    }
    const onEnd = () => finish(Buffer.concat(chunks))
    const onErr = () => finish(ABORTED)
    req.on('data', onData)
    req.on('end', onEnd)
    req.on('error', onErr)
    req.on('aborted', onErr)
  })
}

// --------------------------------------------------------------------------------------------
// Response transformation

/** Clones a value into plain JSON data (toJSON, replacer and undefined handled as res.json does). */
function jsonClone (value, replacer) {
  const s = JSON.stringify(value, replacer)
  return s === undefined ? undefined : JSON.parse(s)
}

/** Every string slot of a JSON value: [container, key] pairs (the root sits in a 1-array). */
function stringSlots (root) {
  const slots = []
  const numbers = []
  let bytes = 0
  const stack = [[root, 0]]
  while (stack.length) {
    const [c, k] = stack.pop()
    const v = c[k]
    if (typeof v === 'string') {
      if (v) {
        slots.push([c, k])
        bytes += v.length
      }
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push([v, i])
    } else if (v !== null && typeof v === 'object') {
      const keys = Object.keys(v)
      for (let i = keys.length - 1; i >= 0; i--) stack.push([v, keys[i]])
    } else if (typeof v === 'number' && Number.isInteger(v) && Math.abs(v) >= NUMERIC_PII_MIN) {
      numbers.push([c, k])
    }
  }
  return { slots, numbers, bytes }
}

/**
 * Redacts (and watermarks) one text; sync or async. Returns the new text and adds to `acc`
 * ({entities, canary}).
 */
function transformTextSync (cfg, text, payload, acc, watermark) {
  let out = text
  if (cfg.redact) {
    const r = cfg.firewall.scanOutputSync(out)
    if (r.findings && r.findings.length) {
      if (countFindings(r.findings, acc.entities)) acc.canary = true
      out = r.text
    }
    if (r.canary_leaked) acc.canary = true
  }
  if (watermark && wordsAtLeast(out, cfg.minWords)) out = cfg.firewall.watermarkSync(out, payload)
  return out
}

async function transformTextAsync (cfg, text, payload, acc, watermark) {
  let out = text
  if (cfg.redact) {
    const r = await cfg.firewall.scanOutput(out)
    if (r.findings && r.findings.length) {
      if (countFindings(r.findings, acc.entities)) acc.canary = true
      out = r.text
    }
    if (r.canary_leaked) acc.canary = true
  }
  if (watermark && wordsAtLeast(out, cfg.minWords)) out = await cfg.firewall.watermark(out, payload)
  return out
}

/**
 * Transforms a JSON data tree in place. Returns true when something changed, or a Promise of
 * that when the strings are large (async methods, off the event loop).
 */
function transformTree (cfg, root, payload, acc, watermark) {
  const { slots, numbers, bytes } = stringSlots(root)
  let changed = false
  if (cfg.redact) {
    for (const [c, k] of numbers) {
      const s = String(c[k])
      const r = cfg.firewall.scanOutputSync(s)
      if (r.findings && r.findings.length) {
        if (countFindings(r.findings, acc.entities)) acc.canary = true
        c[k] = r.text
        changed = true
      }
    }
  }
  if (bytes >= cfg.asyncMinBytes) {
    return Promise.all(slots.map(async ([c, k]) => {
      const v = c[k]
      const nv = await transformTextAsync(cfg, v, payload, acc, watermark)
      if (nv !== v) {
        c[k] = nv
        changed = true
      }
    })).then(() => changed)
  }
  for (const [c, k] of slots) {
    const v = c[k]
    const nv = transformTextSync(cfg, v, payload, acc, watermark)
    if (nv !== v) {
      c[k] = nv
      changed = true
    }
  }
  return changed
}

function wrapResponse (req, res, cfg, caller, payload) {
  const orig = {
    json: res.json,
    send: res.send,
    write: res.write,
    end: res.end,
    writeHead: res.writeHead
  }
  const st = {
    depth: 0, // > 0: inside an original method called by a wrapper: pass everything through
    mode: undefined, // undefined: undecided; 'pass'; 'done' (sent whole); 'buffer' (JSON); 'stream'
    kind: null,
    decoder: null,
    redactor: null,
    wm: null,
    buf: [],
    wrote: false,
    ended: false
  }
  const app = req.app

  function passthrough (fn, self, args) {
    st.depth++
    try {
      return fn.apply(self, args)
    } finally {
      st.depth--
    }
  }

  function emitFindings (acc) {
    cfg.events.findings(req, caller, acc.entities, acc.canary)
  }

  function fail (err) {
    // Scanning does not fail on any text; this is a broken firewall object. Never send the
    // untransformed body.
    if (!res.headersSent) {
      try {
        st.mode = 'done'
        sendProblem(res, problem(500, 'urn:vallum:problem:internal', 'Internal error',
          'The response could not be checked by the output firewall.'))
        return
      } catch (_) { /* fall through */ }
    }
    res.destroy(err)
  }

  // -- whole bodies (res.json / res.send) --

  /** The tree is already plain data (the replacer ran in jsonClone): spaces and escape only. */
  function stringifyLikeExpress (data) {
    const spaces = app && app.get ? app.get('json spaces') : undefined
    const escape = app && app.get ? app.get('json escape') : false
    let s = JSON.stringify(data, null, spaces)
    if (escape && typeof s === 'string') {
      s = s.replace(/[<>&]/g, (c) => (c === '<' ? '\\u003c' : c === '>' ? '\\u003e' : '\\u0026'))
    }
    return s
  }

  function sendJsonData (data, original, isString) {
    const acc = { entities: {}, canary: false }
    const root = [data]
    const finish = (changed) => {
      emitFindings(acc)
      if (changed && res.get('ETag')) res.removeHeader('ETag')
      if (!changed) return passthrough(isString ? orig.send : orig.json, res, [original])
      if (!res.get('Content-Type')) res.set('Content-Type', 'application/json')
      return passthrough(orig.send, res, [stringifyLikeExpress(root[0])])
    }
    const r = transformTree(cfg, root, payload, acc, cfg.watermark)
    if (r === true || r === false) return finish(r)
    st.mode = 'done'
    r.then((changed) => {
      if (res.destroyed || res.writableEnded) return
      finish(changed)
    }).catch(fail)
    return res
  }

  function sendText (text, original, kind) {
    const acc = { entities: {}, canary: false }
    const finish = (nt) => {
      emitFindings(acc)
      if (nt === text) return passthrough(orig.send, res, [original])
      if (res.get('ETag')) res.removeHeader('ETag')
      return passthrough(orig.send, res, [nt]) // a string: Express sets charset=utf-8
    }
    if (text.length >= cfg.asyncMinBytes) {
      st.mode = 'done'
      transformTextAsync(cfg, text, payload, acc, kind.watermark).then((nt) => {
        if (res.destroyed || res.writableEnded) return
        finish(nt)
      }).catch(fail)
      return res
    }
    return finish(transformTextSync(cfg, text, payload, acc, kind.watermark))
  }

  res.json = function vallumJson (obj) {
    if (st.depth > 0 || st.mode !== undefined) return orig.json.apply(this, arguments)
    let val = obj
    if (arguments.length === 2) {
      if (typeof arguments[1] === 'number') this.statusCode = arguments[1]
      else { this.statusCode = arguments[0]; val = arguments[1] }
    }
    const kind = classify(this.statusCode, this.get('Content-Type') || 'application/json', this.get('Content-Encoding'), cfg.watermark)
    if (!kind) {
      st.mode = 'done'
      return passthrough(orig.json, this, [val])
    }
    const data = jsonClone(val, app && app.get ? app.get('json replacer') : undefined)
    if (data === undefined) return passthrough(orig.json, this, [val])
    st.mode = 'done'
    return sendJsonData(data, val, false)
  }

  res.send = function vallumSend (body) {
    if (st.depth > 0 || st.mode !== undefined) return orig.send.apply(this, arguments)
    let chunk = body
    if (arguments.length === 2) {
      if (typeof arguments[0] !== 'number' && typeof arguments[1] === 'number') this.statusCode = arguments[1]
      else { this.statusCode = arguments[0]; chunk = arguments[1] }
    }
    if (chunk !== null && typeof chunk === 'object' && !Buffer.isBuffer(chunk)) return this.json(chunk)
    if (typeof chunk !== 'string' && !Buffer.isBuffer(chunk)) {
      st.mode = 'done'
      return passthrough(orig.send, this, [chunk]) // numbers, booleans, null, undefined
    }
    const ct = this.get('Content-Type') || (typeof chunk === 'string' ? 'text/html' : undefined)
    const kind = classify(this.statusCode, ct, this.get('Content-Encoding'), cfg.watermark)
    if (!kind || this.req.method === 'HEAD') {
      st.mode = 'done'
      return passthrough(orig.send, this, [chunk])
    }
    st.mode = 'done'
    let text = chunk
    if (Buffer.isBuffer(chunk)) {
      text = decoderFor(kind.json ? null : kind.charset).decode(chunk)
      if (!kind.json && !isUtf8(kind.charset)) {
        // The output is UTF-8 (replacements and marks may not exist in the original charset).
        this.set('Content-Type', `${kind.mt}; charset=utf-8`)
      }
    }
    if (kind.json) {
      let data
      try {
        data = JSON.parse(text)
      } catch (_) {
        return sendText(text, chunk, Object.assign({}, kind, { watermark: false }))
      }
      return sendJsonData(data, chunk, true)
    }
    return sendText(text, chunk, kind)
  }

  // -- streams (res.write / res.end / res.writeHead) --

  function startStream (kind) {
    st.kind = kind
    if (kind.json) {
      st.mode = 'buffer'
      return
    }
    st.mode = 'stream'
    st.decoder = decoderFor(kind.sse ? null : kind.charset)
    if (kind.sse) {
      // Redacts and watermarks: pushStream treats it as the redactor.
      st.redactor = cfg.firewall.sseStream({ payload: kind.watermark ? payload : null, redact: cfg.redact })
      return
    }
    st.redactor = cfg.redact ? cfg.firewall.streamRedactor() : null
    if (kind.watermark) st.wm = cfg.firewall.streamWatermarker(payload)
  }

  function fixStoredHeaders (kind) {
    for (const h of DROP_ON_CHANGE) res.removeHeader(h)
    if (!kind.json && !isUtf8(kind.charset || 'unspecified')) {
      res.setHeader('Content-Type', `${kind.mt}; charset=utf-8`)
    }
  }

  /** Decides from the stored headers (the first write/end, or flushHeaders without arguments). */
  function decideStored () {
    if (st.mode !== undefined) return
    if (res.headersSent) {
      st.mode = 'pass'
      return
    }
    const kind = classify(res.statusCode, res.getHeader('content-type'), res.getHeader('content-encoding'), cfg.watermark)
    if (!kind) {
      st.mode = 'pass'
      return
    }
    fixStoredHeaders(kind)
    startStream(kind)
  }

  res.writeHead = function vallumWriteHead (statusCode, reason, headers) {
    if (st.depth > 0 || st.mode !== undefined) return orig.writeHead.apply(this, arguments)
    let args = Array.from(arguments)
    let hIdx = -1
    if (typeof reason === 'string') hIdx = args.length > 2 ? 2 : -1
    else if (args.length > 1) hIdx = 1
    const h = hIdx >= 0 ? args[hIdx] : undefined
    const lookup = (name) => {
      if (h) {
        if (Array.isArray(h)) {
          const pairs = h.length && Array.isArray(h[0]) ? h : chunkPairs(h)
          for (const [k, v] of pairs) if (String(k).toLowerCase() === name) return v
        } else if (typeof h === 'object') {
          for (const k of Object.keys(h)) if (k.toLowerCase() === name) return h[k]
        }
      }
      return this.getHeader(name)
    }
    const kind = classify(statusCode, lookup('content-type'), lookup('content-encoding'), cfg.watermark)
    if (!kind) {
      st.mode = 'pass'
      return orig.writeHead.apply(this, args)
    }
    fixStoredHeaders(kind)
    if (h) {
      const drop = (k) => DROP_ON_CHANGE.includes(String(k).toLowerCase())
      const fixCt = (k, v) => {
        if (String(k).toLowerCase() === 'content-type' && !kind.json && !isUtf8(kind.charset || 'unspecified')) {
          return `${kind.mt}; charset=utf-8`
        }
        return v
      }
      let nh
      if (Array.isArray(h)) {
        if (h.length && Array.isArray(h[0])) {
          nh = h.filter(([k]) => !drop(k)).map(([k, v]) => [k, fixCt(k, v)])
        } else {
          nh = []
          for (const [k, v] of chunkPairs(h)) if (!drop(k)) nh.push(k, fixCt(k, v))
        }
      } else {
        nh = {}
        for (const k of Object.keys(h)) if (!drop(k)) nh[k] = fixCt(k, h[k])
      }
      args = args.slice()
      args[hIdx] = nh
    }
    startStream(kind)
    return orig.writeHead.apply(this, args)
  }

  function toBuffer (chunk, encoding) {
    if (chunk === undefined || chunk === null) return null
    if (Buffer.isBuffer(chunk)) return chunk
    if (typeof chunk === 'string') return Buffer.from(chunk, typeof encoding === 'string' ? encoding : 'utf8')
    if (ArrayBuffer.isView(chunk)) return Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    return Buffer.from(String(chunk), 'utf8')
  }

  function pushStream (bytes, final) {
    let text = bytes && bytes.length ? st.decoder.decode(bytes, { stream: !final }) : (final ? st.decoder.decode() : '')
    if (st.redactor && text) text = st.redactor.push(text)
    if (st.wm && text) text = st.wm.push(text)
    if (final) {
      let tail = st.redactor ? st.redactor.finish() : ''
      if (st.wm) tail = (tail ? st.wm.push(tail) : '') + st.wm.finish()
      text += tail
    }
    return text
  }

  function streamFindings () {
    if (!st.redactor) return
    const acc = { entities: {}, canary: false }
    const findings = st.redactor.findings
    if (countFindings(findings, acc.entities)) acc.canary = true
    if (st.redactor.canaryLeaked || st.redactor.canary_leaked) acc.canary = true
    emitFindings(acc)
  }

  res.write = function vallumWrite (chunk, encoding, cb) {
    if (st.depth > 0) return orig.write.apply(this, arguments)
    decideStored()
    if (st.mode === 'pass' || st.mode === 'done' || st.ended) return orig.write.apply(this, arguments)
    if (typeof encoding === 'function') { cb = encoding; encoding = undefined }
    const bytes = toBuffer(chunk, encoding)
    st.wrote = true
    if (st.mode === 'buffer') {
      if (bytes) st.buf.push(bytes)
      if (typeof cb === 'function') process.nextTick(cb)
      return true
    }
    let out
    try {
      out = pushStream(bytes, false)
    } catch (err) {
      fail(err)
      return false
    }
    if (out) return passthrough(orig.write, this, [out, 'utf8', cb])
    if (!this.headersSent) passthrough(this.flushHeaders, this, []) // the stream has started
    if (typeof cb === 'function') process.nextTick(cb)
    return true
  }

  res.end = function vallumEnd (chunk, encoding, cb) {
    if (st.depth > 0) return orig.end.apply(this, arguments)
    if (typeof chunk === 'function') { cb = chunk; chunk = undefined; encoding = undefined }
    if (typeof encoding === 'function') { cb = encoding; encoding = undefined }
    decideStored()
    if (st.mode === 'pass' || st.mode === 'done' || st.ended) return orig.end.apply(this, arguments)
    st.ended = true
    const bytes = toBuffer(chunk, encoding)
    if (st.mode === 'buffer') {
      if (bytes) st.buf.push(bytes)
      const raw = Buffer.concat(st.buf)
      st.buf = []
      const text = decoderFor(null).decode(raw)
      const acc = { entities: {}, canary: false }
      const done = (out) => {
        emitFindings(acc)
        if (out === null) return passthrough(orig.end, this, [raw, cb])
        const body = Buffer.from(out, 'utf8')
        if (!this.headersSent) this.setHeader('Content-Length', body.length)
        return passthrough(orig.end, this, [body, cb])
      }
      let data
      try {
        data = JSON.parse(text)
      } catch (_) {
        data = undefined
      }
      if (data === undefined) {
        // Not JSON after all: redacted as text (no watermark: the client expects JSON).
        if (!text) return done(null)
        const r = transformTextSync(cfg, text, payload, acc, false)
        return done(r === text ? null : r)
      }
      const root = [data]
      let r
      try {
        r = transformTree(cfg, root, payload, acc, cfg.watermark)
      } catch (err) {
        fail(err)
        return this
      }
      if (r === true || r === false) return done(r ? JSON.stringify(root[0]) : null)
      r.then((changed) => {
        if (this.destroyed) return
        done(changed ? JSON.stringify(root[0]) : null)
      }).catch(fail)
      return this
    }
    // stream
    let out
    try {
      out = pushStream(bytes, true)
    } catch (err) {
      fail(err)
      return this
    }
    streamFindings()
    if (!this.headersSent) this.setHeader('Content-Length', Buffer.byteLength(out, 'utf8'))
    return passthrough(orig.end, this, [out, 'utf8', cb])
  }
}

function chunkPairs (flat) {
  const out = []
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i], flat[i + 1]])
  return out
}

// --------------------------------------------------------------------------------------------
// Error handler for body parsers

const BODY_ERRORS = {
  'entity.parse.failed': [400, PROBLEM_INVALID_BODY, 'Invalid request body', 'The request body is not valid JSON.', 'invalid_json'],
  'entity.verify.failed': [400, PROBLEM_INVALID_BODY, 'Invalid request body', 'The request body failed verification.', 'invalid_body'],
  'request.aborted': [400, PROBLEM_INVALID_BODY, 'Invalid request body', 'The request was aborted.', 'aborted'],
  'request.size.invalid': [400, PROBLEM_INVALID_BODY, 'Invalid request body', 'The request body size does not match Content-Length.', 'invalid_body'],
  'entity.too.large': [413, PROBLEM_BODY_TOO_LARGE, 'Request body too large', 'The request body is too large.', 'too_large'],
  'encoding.unsupported': [415, PROBLEM_UNSUPPORTED, 'Unsupported request body', 'The request body encoding is not supported.', 'unsupported_encoding'],
  'charset.unsupported': [415, PROBLEM_UNSUPPORTED, 'Unsupported request body', 'The request body charset is not supported.', 'unsupported_charset']
}

/**
 * Express error middleware that answers body-parser errors (express.json() and friends) with an
 * application/problem+json document instead of the default HTML page, whose message can quote
 * the start of the body. Other errors go on to the next error handler. Register it after the
 * body parser, e.g. at the end of the app: app.use(errorHandler({ onEvent })).
 */
function errorHandler ({ onEvent, log = false, logger } = {}) {
  const lineLogger = typeof logger === 'function'
    ? logger
    : (log ? (line) => process.stderr.write(line + '\n') : null)
  const events = new Events('error_handler', onEvent, lineLogger)
  return function vallumErrorHandler (err, req, res, next) {
    const spec = err && typeof err.type === 'string' ? BODY_ERRORS[err.type] : undefined
    if (!spec || res.headersSent) return next(err)
    const [status, type, title, detail, reason] = spec
    events.emit('request_rejected', req, null, { reason })
    sendProblem(res, problem(status, type, title, detail))
  }
}

module.exports = {
  vallum,
  callerFromHeader,
  callerFromIp,
  errorHandler,
  parseFieldPath,
  extractFields,
  DEFAULT_FIELDS,
  PROBLEM_CONTENT_TYPE,
  PROBLEM_BLOCKED,
  PROBLEM_INVALID_BODY,
  PROBLEM_BODY_TOO_LARGE
}
module.exports.default = vallum
