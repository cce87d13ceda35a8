/**
 * The final hidden state a prediction head reads. The heads work position by position, so a
 * graph extension that wants the logits of some positions only can cut this value to those
 * positions before the head (a vocabulary-wide product) instead of cutting the logits after it.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { BuildContext } from './architecture.js';

type Nodes = BuildContext['g']['graphNodes'];

/** Whether value `from` is an input, directly or through other nodes, of the node that makes `to`. */
function reaches(nodes: Nodes, from: string, to: string): boolean {
  const seen = new Set([from]);
  for (const n of nodes) {
    if (!n.inputs.some((i) => seen.has(i))) continue;
    for (const o of n.outputs) seen.add(o);
    if (n.outputs.includes(to)) return true;
  }
  return false;
}

/**
 * The value the `last_hidden_state` tap reads (the graph must be built with taps asking for
 * `lastHiddenState`) when the `logits` output is computed from it (the nodes are in topological
 * order); undefined where there is no such tap or the head does not read it.
 */
export function headInput(g: BuildContext['g']): string | undefined {
  const hidden = g.graphNodes.find((n) => n.opType === 'Identity' && n.outputs[0] === 'last_hidden_state')?.inputs[0];
  return hidden !== undefined && reaches(g.graphNodes, hidden, 'logits') ? hidden : undefined;
}
