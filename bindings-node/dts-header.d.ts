/* Result shapes (plain objects; byte offsets into the UTF-8 text). */
export interface Match { rule_id: string; category: string; severity: string; start: number; end: number; view: string; encoding?: string; decoded?: string; quoted: boolean }
export interface ClassifierVerdict { score: number | null; windows: number; status: string; language_unsupported: boolean; error?: string }
export interface Verdict { decision: 'allow' | 'flag' | 'block'; score: number; signature_score: number; classifier: ClassifierVerdict | null; matches: Match[]; matches_truncated: boolean; flags: Record<string, unknown>; truncated: boolean; input_bytes: number; elapsed_us: number }
export interface Finding { entity: string; start: number; end: number; strategy: string; replacement: string }
export interface OutputResult { text: string; findings: Finding[]; canary_leaked: boolean; elapsed_us: number }
export interface RawDetection { payload: string; marks: number; confidence: number }
export type Text = string | Buffer
