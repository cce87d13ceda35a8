/** Hugging Face activation names (`hidden_act`) as graph operations. */
import { AttnscopeError } from '../core/errors.js';
import type { GraphBuilder, Value } from '../graph/builder.js';

export function activation(g: GraphBuilder, name: string, x: Value): Value {
  switch (name) {
    case 'gelu':
    case 'gelu_python':
      return g.gelu(x, 'none');
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
    case 'gelu_fast':
      return g.gelu(x, 'tanh');
    case 'quick_gelu':
      return g.mul(x, g.sigmoid(g.mul(x, g.scalar(1.702))));
    case 'relu':
      return g.relu(x);
    case 'silu':
    case 'swish':
      return g.silu(x);
    case 'tanh':
      return g.tanh(x);
    default:
      throw new AttnscopeError(`unsupported activation function '${name}'`);
  }
}
