/* Result shapes (plain objects; byte offsets into the UTF-8 text). */
export interface Match { rule_id: string; category: string; severity: string; start: number; end: number; view: string; encoding?: string; decoded?: string; quoted: boolean }
export interface ClassifierVerdict { score: number | null; windows: number; status: string; language_unsupported: boolean; error?: string }
export interface Verdict { decision: 'allow' | 'flag' | 'block'; score: number; signature_score: number; classifier: ClassifierVerdict | null; matches: Match[]; matches_truncated: boolean; flags: Record<string, unknown>; truncated: boolean; input_bytes: number; elapsed_us: number }
export interface Finding { entity: string; start: number; end: number; strategy: string; replacement: string }
export interface OutputResult { text: string; findings: Finding[]; canary_leaked: boolean; elapsed_us: number }
export interface RawDetection { payload: string; marks: number; confidence: number }
export type Text = string | Buffer
/**
 * Which binding artifact the generated loader actually loaded: `'native'` for
 * a native addon, otherwise the `platformArchABI` of the WASI flavor. Every
 * flavor napi-rs can build is listed, because `NAPI_RS_NATIVE_LIBRARY_PATH`
 * can point the loader at a WASI artifact this package does not build itself.
 */
export declare const __napiBindingTarget: 'native' | 'wasm32-wasi' | 'wasm32-wasip1'

/** The firewall: immutable and thread-safe. */
export declare class Firewall {
  /** `new Firewall(policy?, key?)`. Throws `policy_invalid`, `key_invalid`, `model_integrity`, ... */
  constructor(policy?: Policy | undefined | null, key?: Buffer | undefined | null)
  /** True when the classifier is loaded. */
  get hasClassifier(): boolean
  scanPrompt(text: Text, signal?: AbortSignal | undefined | null): Promise<string>
  scanPromptSync(text: Text): string
  scanPrompts(texts: Array<Text>, signal?: AbortSignal | undefined | null): Promise<string>
  scanPromptsSync(texts: Array<Text>): string
  scanConversation(turns: Array<Text>, signal?: AbortSignal | undefined | null): Promise<string>
  scanConversationSync(turns: Array<Text>): string
  scanOutput(text: Text, signal?: AbortSignal | undefined | null): Promise<string>
  scanOutputSync(text: Text): string
  restore(text: Text, signal?: AbortSignal | undefined | null): Promise<string>
  restoreSync(text: Text): string
  watermark(text: Text, payload: bigint | number, signal?: AbortSignal | undefined | null): Promise<string>
  watermarkSync(text: Text, payload: bigint | number): string
  detectWatermark(text: Text, signal?: AbortSignal | undefined | null): Promise<string>
  detectWatermarkSync(text: Text): string
  stripWatermark(text: Text, signal?: AbortSignal | undefined | null): Promise<string>
  stripWatermarkSync(text: Text): string
  /** A new canary token for a system prompt. */
  newCanary(): string
  streamRedactor(): StreamRedactor
  streamWatermarker(payload: bigint | number): StreamWatermarker
  /** An SSE stream: redacts when `redact`, watermarks with `payload` when given. */
  sseStream(redact: boolean, payload?: bigint | number | undefined | null): SseStream
}

/** A policy (TOML or JSON; same meaning in Rust, Python and Node). */
export declare class Policy {
  /** The built-in default policy. */
  static default(): Policy
  /** Parses TOML. Throws `policy_invalid` naming the field. */
  static fromToml(s: string): Policy
  /** Parses JSON. Throws `policy_invalid` naming the field. */
  static fromJson(s: string): Policy
  /** Loads a `.toml` or `.json` file. Throws `policy_invalid` or `io`. */
  static fromFile(path: string): Policy
  /** The policy as JSON. */
  toJson(): string
}

/**
 * Redaction and watermarking of one `text/event-stream` response (see the core's `sse`
 * module).
 */
export declare class SseStream {
  /** Adds a chunk; returns the events that can be sent now. */
  push(chunk: Text): string
  /**
   * Ends the stream; returns the rest. Throws `input_invalid` if a Buffer stream ended inside
   * a UTF-8 character.
   */
  finish(): string
  /** Findings so far as JSON text (vallum.js parses it). */
  get findingsJson(): string
  /** True once a canary token was seen. */
  get canaryLeaked(): boolean
  /** Bytes of input held back. */
  get pendingBytes(): number
}

/** Streaming redaction of one response. */
export declare class StreamRedactor {
  /** Adds a chunk; returns the redacted text that is safe to send now. */
  push(chunk: Text): string
  /** Ends the stream; returns the rest, redacted. */
  finish(): string
  /** Findings so far as JSON text (vallum.js parses it). */
  get findingsJson(): string
  /** True once a canary token was seen. */
  get canaryLeaked(): boolean
}

/** Streaming watermarking of one response. */
export declare class StreamWatermarker {
  /** Watermarks the next chunk. */
  push(chunk: Text): string
  /** Ends the stream. */
  finish(): string
}
