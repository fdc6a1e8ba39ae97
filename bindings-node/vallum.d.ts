// Types of the `vallum` package entry point (vallum.js). Result shapes come from index.d.ts,
// which `napi build` generates from the Rust sources.
import type { Policy as NativePolicy, Verdict, OutputResult, Finding } from './index'
export type { Verdict, OutputResult, Finding, Match, ClassifierVerdict } from './index'

/** Errors thrown by Vallum carry one of these stable codes (same as Python and Rust). */
export type ErrorCode = 'policy_invalid' | 'rule_invalid' | 'key_invalid' | 'input_invalid' | 'io' | 'model_integrity' | 'runtime_missing' | 'model_signature' | 'classifier_failed' | 'internal'
export declare class VallumError extends Error { code: ErrorCode }
export declare const ERROR_CODES: ErrorCode[]

export type Text = string | Buffer
export interface CallOptions { signal?: AbortSignal }
export interface Detection { payload: bigint; marks: number; confidence: number }

export declare const Policy: {
  default(): NativePolicy
  fromJson(s: string): NativePolicy
  fromToml(s: string): NativePolicy
  fromFile(path: string): NativePolicy
}

export declare class StreamRedactor {
  push(chunk: Text): string
  finish(): string
  readonly findings: Finding[]
  readonly canaryLeaked: boolean
}

export declare class StreamWatermarker {
  push(chunk: Text): string
  finish(): string
}

/** Redaction and watermarking of one `text/event-stream` response: `data:` values and the JSON
 * delta fields of `sse.text_fields` are redacted as one text stream across events; events keep
 * their order and number. */
export declare class SseStream {
  push(chunk: Text): string
  finish(): string
  readonly findings: Finding[]
  readonly canaryLeaked: boolean
  readonly pendingBytes: number
}

export interface SseStreamOptions {
  /** Watermark payload (u64); null or absent: no watermark. */
  payload?: number | bigint | null
  /** Redact (default true). */
  redact?: boolean
}

export declare class Firewall {
  constructor(policy?: NativePolicy, key?: Buffer)
  readonly hasClassifier: boolean
  scanPrompt(text: Text, opts?: CallOptions): Promise<Verdict>
  scanPromptSync(text: Text): Verdict
  scanPrompts(texts: Text[], opts?: CallOptions): Promise<Verdict[]>
  scanPromptsSync(texts: Text[]): Verdict[]
  scanConversation(turns: Text[], opts?: CallOptions): Promise<Verdict>
  scanConversationSync(turns: Text[]): Verdict
  scanOutput(text: Text, opts?: CallOptions): Promise<OutputResult>
  scanOutputSync(text: Text): OutputResult
  restore(text: Text, opts?: CallOptions): Promise<string>
  restoreSync(text: Text): string
  watermark(text: Text, payload: number | bigint, opts?: CallOptions): Promise<string>
  watermarkSync(text: Text, payload: number | bigint): string
  detectWatermark(text: Text, opts?: CallOptions): Promise<Detection | null>
  detectWatermarkSync(text: Text): Detection | null
  stripWatermark(text: Text, opts?: CallOptions): Promise<string>
  stripWatermarkSync(text: Text): string
  newCanary(): string
  streamRedactor(): StreamRedactor
  streamWatermarker(payload: number | bigint): StreamWatermarker
  sseStream(opts?: SseStreamOptions): SseStream
}

export declare function bundledModelDir(): string | null
export declare function onnxruntimeLibrary(): string | null
