'use strict'
// Entry point of the `vallum` npm package: a thin layer over the napi-rs addon (index.js).
// It parses the engine's JSON results, turns watermark payloads into BigInts, copies the
// engine's stable error code into `error.code`, and points the classifier at the model bundled
// in this package and at the ONNX Runtime library of the `onnxruntime-node` dependency.

const fs = require('node:fs')
const path = require('node:path')
const native = require('./index.js')

const CODES = new Set([
  'policy_invalid', 'rule_invalid', 'key_invalid', 'input_invalid', 'io', 'model_integrity',
  'runtime_missing', 'model_signature', 'classifier_failed', 'internal',
])

/** Base class of errors raised by the engine; `code` is one of ERROR_CODES. */
class VallumError extends Error {}

function fixError (e) {
  if (e && typeof e.message === 'string') {
    const m = /^([a-z_]+): /.exec(e.message)
    if (m && CODES.has(m[1])) {
      e.code = m[1]
      Object.setPrototypeOf(e, VallumError.prototype)
      e.name = 'VallumError'
    }
  }
  return e
}

function guard (fn) {
  try { return fn() } catch (e) { throw fixError(e) }
}

async function guardAsync (fn, opts) {
  const signal = opts && opts.signal
  if (signal && signal.aborted) {
    const e = new Error('the operation was aborted')
    e.name = 'AbortError'
    e.code = 'ABORT_ERR'
    throw e
  }
  try { return await fn(signal) } catch (e) { throw fixError(e) }
}

function bundledModelDir () {
  const d = path.join(__dirname, 'model')
  return fs.existsSync(path.join(d, 'MANIFEST')) ? d : null
}

function onnxruntimeLibrary () {
  let pkg
  try { pkg = path.dirname(require.resolve('onnxruntime-node/package.json')) } catch { return null }
  const arch = process.arch === 'arm64' ? 'arm64' : 'x64'
  for (const napi of ['napi-v6', 'napi-v3']) {
    const dir = path.join(pkg, 'bin', napi, process.platform, arch)
    if (!fs.existsSync(dir)) continue
    const lib = fs.readdirSync(dir).filter((f) => /^libonnxruntime\.so|^libonnxruntime.*\.dylib$|^onnxruntime\.dll$/.test(f)).sort()[0]
    if (lib) return path.join(dir, lib)
  }
  return null
}

const Policy = {
  default: () => native.Policy.default(),
  fromJson: (s) => guard(() => native.Policy.fromJson(s)),
  fromToml: (s) => guard(() => native.Policy.fromToml(s)),
  fromFile: (p) => guard(() => native.Policy.fromFile(p))
}

function withDefaults (policy) {
  const p = policy || native.Policy.default()
  const doc = JSON.parse(p.toJson())
  const cl = doc.classifier || (doc.classifier = {})
  let changed = false
  if (cl.enabled !== false) {
    if (!cl.model_dir && bundledModelDir()) { cl.model_dir = bundledModelDir(); changed = true }
    if (!cl.runtime_path && onnxruntimeLibrary()) { cl.runtime_path = onnxruntimeLibrary(); changed = true }
  }
  return changed ? native.Policy.fromJson(JSON.stringify(doc)) : p
}

function toDetection (d) {
  return d === null ? null : { payload: BigInt(d.payload), marks: d.marks, confidence: d.confidence }
}

class StreamRedactor {
  constructor (inner) { this._inner = inner }
  push (chunk) { return guard(() => this._inner.push(chunk)) }
  finish () { return guard(() => this._inner.finish()) }
  get findings () { return JSON.parse(this._inner.findingsJson) }
  get canaryLeaked () { return this._inner.canaryLeaked }
}

class StreamWatermarker {
  constructor (inner) { this._inner = inner }
  push (chunk) { return guard(() => this._inner.push(chunk)) }
  finish () { return this._inner.finish() }
}

class SseStream {
  constructor (inner) { this._inner = inner }
  push (chunk) { return guard(() => this._inner.push(chunk)) }
  finish () { return guard(() => this._inner.finish()) }
  get findings () { return JSON.parse(this._inner.findingsJson) }
  get canaryLeaked () { return this._inner.canaryLeaked }
  get pendingBytes () { return this._inner.pendingBytes }
}

class Firewall {
  /** @param {object} [policy] a Policy; @param {Buffer} [key] secret key (>= 16 bytes) */
  constructor (policy, key) {
    this._fw = guard(() => new native.Firewall(withDefaults(policy), key))
  }

  get hasClassifier () { return this._fw.hasClassifier }

  scanPrompt (text, opts) { return guardAsync(async (signal) => JSON.parse(await this._fw.scanPrompt(text, signal)), opts) }
  scanPromptSync (text) { return guard(() => JSON.parse(this._fw.scanPromptSync(text))) }
  scanPrompts (texts, opts) { return guardAsync(async (signal) => JSON.parse(await this._fw.scanPrompts(texts, signal)), opts) }
  scanPromptsSync (texts) { return guard(() => JSON.parse(this._fw.scanPromptsSync(texts))) }
  scanConversation (turns, opts) { return guardAsync(async (signal) => JSON.parse(await this._fw.scanConversation(turns, signal)), opts) }
  scanConversationSync (turns) { return guard(() => JSON.parse(this._fw.scanConversationSync(turns))) }
  scanOutput (text, opts) { return guardAsync(async (signal) => JSON.parse(await this._fw.scanOutput(text, signal)), opts) }
  scanOutputSync (text) { return guard(() => JSON.parse(this._fw.scanOutputSync(text))) }
  restore (text, opts) { return guardAsync(async (signal) => JSON.parse(await this._fw.restore(text, signal)), opts) }
  restoreSync (text) { return guard(() => JSON.parse(this._fw.restoreSync(text))) }
  watermark (text, payload, opts) { return guardAsync(async (signal) => JSON.parse(await this._fw.watermark(text, payload, signal)), opts) }
  watermarkSync (text, payload) { return guard(() => JSON.parse(this._fw.watermarkSync(text, payload))) }
  detectWatermark (text, opts) { return guardAsync(async (signal) => toDetection(JSON.parse(await this._fw.detectWatermark(text, signal))), opts) }
  detectWatermarkSync (text) { return guard(() => toDetection(JSON.parse(this._fw.detectWatermarkSync(text)))) }
  stripWatermark (text, opts) { return guardAsync(async (signal) => JSON.parse(await this._fw.stripWatermark(text, signal)), opts) }
  stripWatermarkSync (text) { return guard(() => JSON.parse(this._fw.stripWatermarkSync(text))) }
  newCanary () { return this._fw.newCanary() }
  streamRedactor () { return new StreamRedactor(this._fw.streamRedactor()) }
  streamWatermarker (payload) { return new StreamWatermarker(guard(() => this._fw.streamWatermarker(payload))) }
  /** @param {{payload?: number|bigint|null, redact?: boolean}} [opts] */
  sseStream (opts = {}) {
    const { payload = null, redact = true } = opts
    return new SseStream(guard(() => this._fw.sseStream(redact !== false, payload === null ? undefined : payload)))
  }
}

module.exports = { VallumError, Policy, Firewall, StreamRedactor, StreamWatermarker, SseStream, bundledModelDir, onnxruntimeLibrary, ERROR_CODES: [...CODES] }
