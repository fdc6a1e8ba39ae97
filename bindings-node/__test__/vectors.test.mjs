// The shared JSON vectors of testdata/vectors (same expectations as cargo test and pytest).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)
const { Firewall, Policy } = require('../vallum.js')
const dir = new URL('../../testdata/vectors/', import.meta.url)
const load = (name) => JSON.parse(readFileSync(new URL(name, dir), 'utf8'))
const ORDER = { allow: 0, flag: 1, block: 2 }
const fwFor = (c) => new Firewall(c.policy ? Policy.fromJson(JSON.stringify(c.policy)) : undefined)

for (const c of load('prompts.json').cases) {
  test(`prompt: ${c.name}`, () => {
    const fw = fwFor(c)
    const conv = c.kind === 'conversation'
    const text = conv ? c.input.join('\n') : c.input
    const v = conv ? fw.scanConversationSync(c.input) : fw.scanPromptSync(text)
    const e = c.expect
    const bytes = Buffer.from(text, 'utf8')
    const ids = v.matches.map((m) => m.rule_id)
    const cats = v.matches.map((m) => m.category)
    if (e.decision) assert.equal(v.decision, e.decision, JSON.stringify(v))
    if (e.min_decision) assert.ok(ORDER[v.decision] >= ORDER[e.min_decision], JSON.stringify(v))
    if (e.max_decision) assert.ok(ORDER[v.decision] <= ORDER[e.max_decision], JSON.stringify(v))
    for (const r of e.rule_ids || []) assert.ok(ids.includes(r), r)
    for (const k of e.categories || []) assert.ok(cats.includes(k), k)
    if (e.no_matches) assert.deepEqual(v.matches, [])
    for (const [k, want] of Object.entries(e.flags || {})) assert.deepEqual(v.flags[k], want)
    for (const k of e.flag_nonzero || []) assert.ok(v.flags[k] > 0, k)
    for (const enc of e.encodings || []) assert.ok(v.flags.encodings.includes(enc), enc)
    if (e.decoded_contains) assert.ok(v.matches.some((m) => m.decoded && m.decoded.includes(e.decoded_contains)))
    if (e.quoted) assert.ok(v.matches.some((m) => m.quoted))
    for (const t of e.match_texts || []) assert.ok(v.matches.some((m) => bytes.subarray(m.start, m.end).toString('utf8') === t), t)
    for (const m of v.matches) assert.ok(m.start >= 0 && m.start < m.end && m.end <= bytes.length)
  })
}

for (const c of load('outputs.json').cases) {
  test(`output: ${c.name}`, () => {
    const fw = fwFor(c)
    const text = c.input_parts.join('')
    const r = fw.scanOutputSync(text)
    assert.equal(r.text, c.expect.text)
    assert.deepEqual(r.findings.map((f) => [f.entity, f.start, f.end]), c.expect.findings.map((f) => [f.entity, f.start, f.end]))
    assert.equal(r.canary_leaked, Boolean(c.expect.canary_leaked))
    if (c.expect.restores) assert.equal(fw.restoreSync(r.text), text)
  })
}

const wm = load('watermark.json')
for (const c of wm.cases) {
  test(`watermark: ${c.name}`, () => {
    const fw = new Firewall(undefined, Buffer.from(wm.key_hex, 'hex'))
    const payload = BigInt(c.payload_decimal)
    const marked = fw.watermarkSync(c.input, payload)
    assert.equal(fw.stripWatermarkSync(marked), c.stripped ?? c.input)
    const d = fw.detectWatermarkSync(marked)
    if ('detect' in c && c.detect === null) assert.equal(d, null)
    else assert.equal(d.payload, payload)
    if (c.embedded_sha256) assert.equal(createHash('sha256').update(marked, 'utf8').digest('hex'), c.embedded_sha256)
  })
}

for (const c of load('policies.json').cases) {
  test(`policy: ${c.name}`, () => {
    const run = () => {
      const p = Policy.fromJson(c.json)
      if (c.build) new Firewall(p) // eslint-disable-line no-new
    }
    if (c.ok) return run()
    assert.throws(run, (err) => {
      assert.equal(err.code, c.error_code)
      if (c.error_path) assert.ok(err.message.split(': ').slice(1).join(': ').startsWith(c.error_path), err.message)
      return true
    })
  })
}

// The joined choices[0].delta.content strings of an OpenAI-style event stream.
const openaiContents = (stream) => stream.split('\n\n')
  .filter((e) => e.startsWith('data: ') && e.slice(6) !== '[DONE]')
  .map((e) => JSON.parse(e.slice(6)).choices[0].delta.content).join('')

const sse = load('sse.json')
for (const c of sse.cases) {
  for (const asBuffer of [false, true]) {
    test(`sse (${asBuffer ? 'Buffer' : 'string'}): ${c.name}`, () => {
      const policy = c.policy ? Policy.fromJson(JSON.stringify(c.policy)) : undefined
      const fw = new Firewall(policy, Buffer.from(sse.key_hex, 'hex'))
      const payload = c.payload_decimal === undefined ? null : BigInt(c.payload_decimal)
      const s = fw.sseStream({ payload, redact: c.redact })
      const outs = c.chunks.map((ch) => s.push(asBuffer ? Buffer.from(ch, 'utf8') : ch))
      outs.push(s.finish())
      const whole = outs.join('')
      if (c.expect_chunks) assert.deepEqual(outs, c.expect)
      else if (c.expect_sha256) assert.equal(createHash('sha256').update(whole, 'utf8').digest('hex'), c.expect_sha256)
      else assert.equal(whole, c.expect)
      if (c.watermark_detect) {
        const joined = openaiContents(whole)
        assert.equal(fw.detectWatermarkSync(joined).payload, payload)
        assert.equal(fw.stripWatermarkSync(joined), openaiContents(c.chunks.join('')))
      }
    })
  }
}
