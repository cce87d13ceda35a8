/**
 * Settings onnxruntime-node reads when its native library loads. Imported for its side effect by
 * `onnxruntime-node.ts` *before* `onnxruntime-node` itself, so they are in the process environment
 * before the binding starts:
 *
 * - `ORT_DISABLE_TELEMETRY=1`: since 1.2x the Linux/macOS builds start Microsoft's 1DS telemetry
 *   system in every process; besides the uploader it writes an empty `mat-debug-<pid>.log` and a
 *   `.ses` session file into the temp folder on every run. The variable keeps all of it off.
 *   attnscope promises no telemetry, so it is set unconditionally (a user's `0` is overridden).
 */
process.env['ORT_DISABLE_TELEMETRY'] = '1';

export {};
