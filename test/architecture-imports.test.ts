/**
 * The shape of the source tree, read from the import statements of src/**\/*.ts (parsed by the
 * TypeScript compiler's own pre-processor, type-only imports included):
 * - no import cycles;
 * - the browser-safe parts (core, graph, models, analysis, views, the engine core, generation)
 *   reach nothing that needs Node (node:* or bare built-ins, native bindings), directly or
 *   through the files they import;
 * - a model family file never imports another family file (only shared building blocks);
 *   the registry imports them all.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
const SRC = join(ROOT, 'src');

/** Packages that only run in Node (native bindings, or built on Node's own modules). */
const NODE_ONLY_PACKAGES = new Set(['onnxruntime-node', 'tokenizers', '@resvg/resvg-js', 'playwright-core', 'esbuild']);

/** Browser-safe parts, as paths relative to src/ (a folder, or one file). */
const BROWSER_SAFE = ['core', 'graph', 'models', 'analysis', 'views', 'engine/model.ts', 'engine/assemble.ts', 'engine/scores.ts', 'generation', 'bias'];
/** Files inside the browser-safe parts that exist to bring Node in (rasterising with resvg, reading the bundle or the bias data from disk, the bias results cache). */
const NODE_EXCEPTIONS = new Set(['views/png.ts', 'views/html/bundle-node.ts', 'bias/data-files.ts', 'bias/results-cache.ts']);

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(path);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [path] : [];
  });
}

interface Graph {
  /** src-relative file → src-relative files it imports. */
  local: Map<string, string[]>;
  /** src-relative file → packages and built-ins it imports. */
  external: Map<string, string[]>;
}

function packageName(spec: string): string {
  const parts = spec.split('/');
  return spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

function importGraph(): Graph {
  const local = new Map<string, string[]>();
  const external = new Map<string, string[]>();
  for (const file of sourceFiles(SRC)) {
    const rel = relative(SRC, file);
    const info = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    const locals: string[] = [];
    const externals: string[] = [];
    for (const { fileName: spec } of info.importedFiles) {
      if (spec.startsWith('.')) {
        // ESM imports name the compiled file: './x.js' is './x.ts' here.
        const target = relative(SRC, resolve(dirname(file), spec.replace(/\.js$/, '.ts')));
        locals.push(target);
      } else {
        externals.push(spec);
      }
    }
    local.set(rel, locals);
    external.set(rel, externals);
  }
  return { local, external };
}

function isNodeOnly(spec: string): boolean {
  if (spec.startsWith('node:')) return true;
  const name = packageName(spec);
  return builtinModules.includes(name) || NODE_ONLY_PACKAGES.has(name);
}

/** Every import cycle's files, one per strongly connected component (Tarjan). */
function cycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const indices = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    indices.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!indices.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, indices.get(w)!));
      }
    }
    if (low.get(v) === indices.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!indices.has(v)) visit(v);
  return found;
}

/** The chain of imports from `from` to a file importing a Node-only module (or one `bad` picks), or null. */
function nodePath(g: Graph, from: string, bad: (spec: string) => boolean = isNodeOnly): string[] | null {
  const seen = new Set<string>([from]);
  const queue: string[][] = [[from]];
  while (queue.length > 0) {
    const path = queue.shift()!;
    const file = path[path.length - 1]!;
    const found = (g.external.get(file) ?? []).find(bad);
    if (found) return [...path, found];
    for (const next of g.local.get(file) ?? []) {
      if (seen.has(next)) continue;
      seen.add(next);
      queue.push([...path, next]);
    }
  }
  return null;
}

const inPart = (file: string, part: string): boolean => (part.endsWith('.ts') ? file === part : file.startsWith(`${part}/`));

describe('the import graph of src/', () => {
  const g = importGraph();

  it('resolves every relative import to a source file', () => {
    const missing = [...g.local].flatMap(([file, targets]) => targets.filter((t) => !g.local.has(t)).map((t) => `${file} → ${t}`));
    expect(missing).toEqual([]);
  });

  it('has no import cycles', () => {
    expect(cycles(g.local)).toEqual([]);
  });

  it('keeps the browser-safe parts free of Node, directly and through what they import', () => {
    const files = [...g.local.keys()].filter((f) => BROWSER_SAFE.some((p) => inPart(f, p)) && !NODE_EXCEPTIONS.has(f));
    expect(files).toContain('engine/model.ts');
    expect(files).toContain('engine/assemble.ts');
    expect(files.some((f) => f.startsWith('generation/'))).toBe(true);
    const offenders = files.flatMap((f) => {
      const path = nodePath(g, f);
      return path ? [path.join(' → ')] : [];
    });
    expect(offenders).toEqual([]);
  });

  it("keeps the server's analysis worker threads off the native bindings (each thread loads analysis-worker.ts)", () => {
    // Native bindings are not safe to load in several threads, and onnxruntime-node's cost ~0.2 s CPU a task there.
    expect(nodePath(g, 'server/analysis-worker.ts', (spec) => NODE_ONLY_PACKAGES.has(packageName(spec)))).toBeNull();
  });

  it('never lets a model family file import another family file', () => {
    // The families are what the registry imports, less the shared blocks it also uses.
    const registry = 'models/registry.ts';
    const families = new Set((g.local.get(registry) ?? []).filter((f) => f.startsWith('models/') && f !== 'models/architecture.ts'));
    expect(families.size).toBeGreaterThanOrEqual(8);
    const offenders = [...g.local]
      .filter(([file]) => file.startsWith('models/') && file !== registry)
      .flatMap(([file, targets]) => targets.filter((t) => families.has(t)).map((t) => `${file} → ${t}`));
    expect(offenders).toEqual([]);
  });
});
