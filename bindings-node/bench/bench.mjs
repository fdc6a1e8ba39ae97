// Overhead of the Node binding and of vallum/express, on loopback.
//
// Run from bindings-node/ (about 20-40 s):
//
//     node bench/bench.mjs [--requests 500]
//
// Part 1 - per-call cost of Firewall.scanPromptSync / await scanPrompt on a tiny prompt next to
// a no-op JS call (sync) and an awaited no-op async function, with the classifier off and on;
// "engine" is the verdict's own elapsed_us, "binding" = wall time per call - engine.
//
// Part 2 - latency of POST /v1/chat (small JSON prompt in, short JSON answer out) on a real
// Express server on 127.0.0.1, N sequential keep-alive requests (node:http), p50/p99, for the
// bare app (express.json() only) and the same app behind vallum() with the classifier off
// ({"classifier": {"enabled": false}}) and on (the default policy). "added" is the difference to
// the bare app's percentile. Client and server share this process (one event loop), like a
// gateway calling itself; the numbers are per request, end to end.
import { createRequire } from 'node:module'
import http from 'node:http'

const require = createRequire(import.meta.url)
const express = require('express')
const { Firewall, Policy } = require('../vallum.js')
const { vallum, callerFromHeader } = require('../express.js')

const KEY = '00112233445566778899aabbccddeeff'
const PROMPT = 'Summarise this article about renewable energy in three bullet points.'
const ANSWER = 'Solar and wind keep getting cheaper; storage smooths supply; grids need upgrades.'
const TINY = 'hi there'

const argv = process.argv.slice(2)
const requestsArg = argv.indexOf('--requests')
const N = requestsArg >= 0 ? Number(argv[requestsArg + 1]) : 500
const WARMUP = 100

function firewall (classifier) {
  const doc = { key_hex: KEY }
  if (!classifier) doc.classifier = { enabled: false }
  return new Firewall(Policy.fromJson(JSON.stringify(doc)))
}

function nowNs () {
  return process.hrtime.bigint()
}

/** Best of 5 runs, microseconds per call. */
function perCallSync (fn, n) {
  let best = Infinity
  for (let r = 0; r < 5; r++) {
    const t0 = nowNs()
    for (let i = 0; i < n; i++) fn()
    best = Math.min(best, Number(nowNs() - t0) / n / 1e3)
  }
  return best
}

async function perCallAsync (fn, n) {
  let best = Infinity
  for (let r = 0; r < 5; r++) {
    const t0 = nowNs()
    for (let i = 0; i < n; i++) await fn()
    best = Math.min(best, Number(nowNs() - t0) / n / 1e3)
  }
  return best
}

function mean (xs) {
  return xs.reduce((a, b) => a + b, 0) / xs.length
}

async function benchBinding () {
  const rows = []
  let sink = 0
  const noop = (t) => { sink += t.length }
  rows.push(['no-op JS call (sync)', perCallSync(() => noop(TINY), 1_000_000), null])
  const noopAsync = async (t) => { sink += t.length }
  rows.push(['await no-op async function', await perCallAsync(() => noopAsync(TINY), 200_000), null])
  for (const clf of [false, true]) {
    const fw = firewall(clf)
    const label = `classifier ${clf ? 'on' : 'off'}`
    if (clf && !fw.hasClassifier) {
      rows.push([`scanPromptSync('${TINY}'), ${label}`, NaN, null])
      rows.push([`await scanPrompt('${TINY}'), ${label}`, NaN, null])
      continue
    }
    fw.scanPromptSync(TINY)
    await fw.scanPrompt(TINY)
    const n = clf ? 300 : 20_000
    const engine = mean(Array.from({ length: Math.min(n, 2000) }, () => fw.scanPromptSync(TINY).elapsed_us))
    rows.push([`scanPromptSync('${TINY}'), ${label}`, perCallSync(() => fw.scanPromptSync(TINY), n), engine])
    rows.push([`await scanPrompt('${TINY}'), ${label}`, await perCallAsync(() => fw.scanPrompt(TINY), clf ? 300 : 5_000), engine])
  }
  const fw = firewall(false)
  rows.push(["scanOutputSync('hello world')", perCallSync(() => fw.scanOutputSync('hello world'), 20_000), mean(Array.from({ length: 2000 }, () => fw.scanOutputSync('hello world').elapsed_us))])
  if (sink < 0) console.log(sink)
  return rows
}

function makeApp (fw) {
  const app = express()
  app.disable('x-powered-by')
  if (fw) {
    app.use('/v1', express.json(), vallum({ firewall: fw, callerId: callerFromHeader('x-api-key') }))
  } else {
    app.use('/v1', express.json())
  }
  app.post('/v1/chat', (req, res) => res.json({ answer: ANSWER }))
  return app
}

function listen (app) {
  return new Promise((resolve) => {
    const server = app.listen(0, '127.0.0.1', () => resolve(server))
  })
}

function percentile (sorted, p) {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]
}

const ROUNDS = 5

/** One keep-alive POST with node:http (leaner than fetch, so the client adds less noise). */
function request (agent, port, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/v1/chat', method: 'POST', agent, headers }, (res) => {
      const chunks = []
      res.on('data', (c) => chunks.push(c))
      res.on('end', () => resolve([res.statusCode, Buffer.concat(chunks).toString('utf8')]))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

/**
 * All apps listen at once; after a warm-up, ROUNDS rounds of N/ROUNDS sequential requests per
 * app, interleaved, so that JIT warm-up and machine drift do not favour one app.
 */
async function latencies (apps, n) {
  const body = JSON.stringify({ messages: [{ role: 'user', content: PROMPT }] })
  const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-api-key': 'bench-key' }
  const live = []
  for (const app of apps) {
    const server = await listen(app)
    live.push({ server, port: server.address().port, agent: new http.Agent({ keepAlive: true, maxSockets: 1 }), times: [] })
  }
  try {
    const per = Math.max(1, Math.round(n / ROUNDS))
    for (let round = -1; round < ROUNDS; round++) {
      for (const s of live) {
        for (let i = 0; i < (round < 0 ? WARMUP : per); i++) {
          const t0 = nowNs()
          const [status, text] = await request(s.agent, s.port, body, headers)
          const us = Number(nowNs() - t0) / 1e3
          if (status !== 200) throw new Error(`status ${status}: ${text}`)
          if (round >= 0) s.times.push(us)
        }
      }
    }
  } finally {
    for (const s of live) {
      s.agent.destroy()
      s.server.closeAllConnections?.()
      await new Promise((resolve) => s.server.close(resolve))
    }
  }
  return live.map((s) => {
    const t = s.times.sort((a, b) => a - b)
    return { p50: percentile(t, 50), p99: percentile(t, 99) }
  })
}

async function benchMiddleware () {
  const configs = [['express.json() only (bare)', makeApp(null)]]
  for (const clf of [false, true]) {
    const fw = firewall(clf)
    const label = `vallum(), classifier ${clf ? 'on' : 'off'}`
    configs.push(clf && !fw.hasClassifier ? [label + ' (unavailable)', null] : [label, makeApp(fw)])
  }
  const usable = configs.filter(([, app]) => app)
  const results = await latencies(usable.map(([, app]) => app), N)
  const bare = results[0]
  return configs.map(([label, app]) => {
    if (!app) return [label, null, null]
    const r = results[usable.findIndex(([l]) => l === label)]
    return [label, r, label.startsWith('express.json') ? null : { p50: r.p50 - bare.p50, p99: r.p99 - bare.p99 }]
  })
}

function fmt (x, w = 10) {
  if (x === null || x === undefined) return ''.padStart(w)
  if (Number.isNaN(x)) return 'n/a'.padStart(w)
  return (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(3)).padStart(w)
}

const started = Date.now()
console.log(`node ${process.version}, ${process.platform}/${process.arch}, ${require('node:os').cpus().length} CPUs`)
console.log()
console.log('Part 1 - per call (best of 5 runs)')
const rows1 = await benchBinding()
console.log(`${'call'.padEnd(46)} ${'wall µs'.padStart(10)} ${'engine µs'.padStart(10)} ${'binding µs'.padStart(10)}`)
for (const [name, wall, engine] of rows1) {
  console.log(`${name.padEnd(46)} ${fmt(wall)} ${fmt(engine)} ${engine === null ? fmt(null) : fmt(wall - engine)}`)
}
console.log()
console.log(`Part 2 - POST /v1/chat on 127.0.0.1, ${N} sequential keep-alive requests per app (node:http client; ${WARMUP} warm-up each, ${ROUNDS} interleaved rounds)`)
const rows2 = await benchMiddleware()
console.log(`${'app'.padEnd(46)} ${'p50 µs'.padStart(10)} ${'p99 µs'.padStart(10)} ${'added p50'.padStart(10)} ${'added p99'.padStart(10)}`)
for (const [name, r, added] of rows2) {
  if (!r) {
    console.log(`${name.padEnd(46)} ${fmt(NaN)} ${fmt(NaN)}`)
    continue
  }
  console.log(`${name.padEnd(46)} ${fmt(r.p50)} ${fmt(r.p99)} ${added ? fmt(added.p50) : fmt(null)} ${added ? fmt(added.p99) : fmt(null)}`)
}
console.log()
console.log(`done in ${((Date.now() - started) / 1000).toFixed(1)} s`)
