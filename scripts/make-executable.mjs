// Marks the compiled CLI entry point executable: tsc writes files without the x bit, and
// `npx attnscope` (and the bin link npm makes when the package is installed) run it directly.
import { chmodSync } from 'node:fs';

chmodSync(new URL('../dist/src/cli/main.js', import.meta.url), 0o755);
