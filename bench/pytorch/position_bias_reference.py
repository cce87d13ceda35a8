#!/usr/bin/env python3
"""PyTorch reference for position biases at long lengths (issue 13): writes
test/fixtures/position-bias-long.json, read by test/position-bias-pytorch.test.ts.

The fixtures' own references (reference.json, made by Hugging Face transformers) hold short inputs
(≤ 80 tokens), which reach neither ALiBi's bfloat16 rounding past position 256 (Falcon) nor T5's
saturated relative buckets past relative_attention_max_distance. This script runs the tiny fixture
checkpoints (test/fixtures/{falcon-alibi,bloom,t5,mt5,umt5}) in PyTorch eager at long lengths and
stores selected rows of their attention probabilities.

THIS IS NOT TRANSFORMERS ITSELF (transformers is not installed here: no PyPI). It is a mirror, written
for this file, of the eager forward of transformers 4.40 (the version the fixtures were made with),
op for op where the position bias is concerned:

- Falcon (alibi=True, new_decoder_architecture=False, multi_query=False, parallel_attn=False):
  build_alibi_tensor — slopes 2^(-8/p)^(1…p) in float32 (+ the odd powers of 2^(-4/p) for heads
  beyond the closest power of two p), positions (cumsum(mask) − 1) · mask as int64, then
  `slopes[..., None].bfloat16() * positions` (torch promotes the int64 positions to bfloat16 and
  rounds the product to bfloat16), `.to(float32)`; in FalconAttention: scores = q @ kᵀ, then
  (scores + alibi) *= 1/√head_dim, + the causal mask (finfo.min above the diagonal), softmax(float32).
  FalconLinear is x @ Wᵀ + b; LayerNorm; GELU (erf); residuals as FalconDecoderLayer.
- BLOOM: the same slopes and positions in float32 (`slopes[..., None] * positions`, float32);
  BloomAttention: alibi.baddbmm(q, kᵀ, beta=1, alpha=1/√head_dim), masked_fill(causal, finfo.min),
  softmax(float32); word_embeddings_layernorm; bloom_gelu_forward (tanh form); residuals as BloomBlock.
- T5 / mT5 / umT5: compute_bias — relative_position = key − query (int64), _relative_position_bucket
  (bidirectional in the encoder: half the buckets per sign; unidirectional in the decoder:
  −min(rel, 0); max_exact = buckets // 2; beyond it max_exact +
  trunc(log(rel.float() / max_exact) / log(max_distance / max_exact) · (buckets − max_exact)) in
  float32, capped at buckets − 1), the relative_attention_bias embedding → [1, heads, q, k];
  scores = q @ kᵀ (no scaling) + bias + mask ((1 − causal) · finfo.min in the decoder),
  softmax(scores.float()). T5/mT5: the bias of block 0 reused by every layer of its stack; umT5: each
  layer's own. T5LayerNorm (float32 variance, rsqrt, no mean, no bias); DenseReluDense (relu) or
  gated (gelu_new(wi_0) · wi_1); cross-attention with no position bias.

The mirror is checked against transformers' own outputs first: each fixture's reference.json
attentions (every input, layer, head) are recomputed and the largest difference is recorded in the
output ("check_vs_transformers"); the script stops if it exceeds 1e-5.

Stored: the middle and last rows (the encoder's first too) of every layer and head, whole up to 256
keys, else in windows (column_windows), each probability as the shortest decimal of its float32, with
each row's largest |score| (the tolerance of a float32 probability grows with it); ~400 KB.
Safetensors are read by crows_pairs_metric.read_safetensors (our own reader, F32). Dropout is the
identity (eval), batch 1, no padding, torch.no_grad(). Run with one thread; about 15 s here.

Usage: python3 bench/pytorch/position_bias_reference.py [--out test/fixtures/position-bias-long.json]
"""
import argparse
import datetime
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crows_pairs_metric import read_safetensors  # noqa: E402  (F32 .safetensors, read by our own code)

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
FIXTURES = os.path.join(ROOT, 'test', 'fixtures')


def load(fixture):
    with open(os.path.join(FIXTURES, fixture, 'config.json')) as f:
        config = json.load(f)
    return config, read_safetensors(os.path.join(FIXTURES, fixture, 'model.safetensors'))


def linear(x, w, b=None):
    """nn.Linear (F.linear)."""
    return F.linear(x, w, b)


def falcon_linear(x, w, b):
    """FalconLinear: the matmul and the bias added separately."""
    return x @ w.T + b


# --- ALiBi (transformers' build_alibi_tensor, BLOOM and Falcon) -------------------------------------

def alibi_slopes(heads):
    p = 2 ** math.floor(math.log2(heads))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(p) - 3))), dtype=torch.float32)
    slopes = torch.pow(base, torch.arange(1, 1 + p, dtype=torch.int32))
    if p != heads:
        extra = torch.tensor(2 ** (-(2 ** -(math.log2(2 * p) - 3))), dtype=torch.float32)
        rest = min(p, heads - p)
        slopes = torch.cat([slopes, torch.pow(extra, torch.arange(1, 1 + 2 * rest, 2, dtype=torch.int32))])
    return slopes


def alibi(heads, n, bfloat16):
    mask = torch.ones(1, n, dtype=torch.int64)
    positions = ((mask.cumsum(dim=-1) - 1) * mask)[:, None, :]  # int64 [1, 1, n]
    slopes = alibi_slopes(heads)[..., None]
    out = (slopes.bfloat16() * positions) if bfloat16 else (slopes * positions)
    return out.reshape(heads, 1, n).to(torch.float32)


def row_magnitude(logits, hidden):
    """[heads, q]: the largest |score| each row feeds the softmax, over the keys it sees (`hidden`: True
    where masked). A score's float32 rounding is relative to it, so the tolerance of a probability is."""
    return logits.masked_fill(hidden, 0.0).abs().amax(-1)[0]


def causal_mask(n):
    """[1, 1, n, n]: 0 on and below the diagonal, finfo(float32).min above (the additive 4-D mask)."""
    m = torch.full((n, n), torch.finfo(torch.float32).min)
    return torch.triu(m, diagonal=1)[None, None]


def layer_norm(w, name, x, eps):
    return F.layer_norm(x, (x.shape[-1],), w[name + '.weight'], w[name + '.bias'], eps)


def fused_heads(fused, heads):
    """query_key_value's output [1, n, heads · 3 · d] as (q, k, v), each [heads, n, d] (a view per head and part)."""
    n = fused.shape[1]
    fused = fused.view(1, n, heads, 3, fused.shape[-1] // (3 * heads))
    return [fused[..., i, :].transpose(1, 2)[0] for i in range(3)]


def falcon(config, w, ids):
    heads, eps, n = config['num_attention_heads'], config['layer_norm_epsilon'], len(ids)
    hd = config['hidden_size'] // heads
    p = 'transformer.'
    h = F.embedding(torch.tensor([ids]), w[p + 'word_embeddings.weight'])
    bias = alibi(heads, n, bfloat16=True)
    mask = causal_mask(n)
    probs = []
    for l in range(config['num_hidden_layers']):
        q_ = f'{p}h.{l}.'
        x = layer_norm(w, q_ + 'input_layernorm', h, eps)
        q, k, v = fused_heads(falcon_linear(x, w[q_ + 'self_attention.query_key_value.weight'], w[q_ + 'self_attention.query_key_value.bias']), heads)
        scores = (q @ k.transpose(-1, -2)).view(1, heads, n, n)
        logits = scores + bias.view(1, heads, 1, -1)
        logits *= 1.0 / math.sqrt(hd)
        a = F.softmax(logits + mask, dim=-1, dtype=torch.float32)
        probs.append((a[0], row_magnitude(logits, mask < 0)))
        out = (a @ v).flatten(0, 1).view(1, heads, n, hd).permute(0, 2, 1, 3).reshape(1, n, heads * hd)
        out = falcon_linear(out, w[q_ + 'self_attention.dense.weight'], w[q_ + 'self_attention.dense.bias'])
        residual = h + out
        y = layer_norm(w, q_ + 'post_attention_layernorm', residual, eps)
        y = F.gelu(falcon_linear(y, w[q_ + 'mlp.dense_h_to_4h.weight'], w[q_ + 'mlp.dense_h_to_4h.bias']))
        y = falcon_linear(y, w[q_ + 'mlp.dense_4h_to_h.weight'], w[q_ + 'mlp.dense_4h_to_h.bias'])
        h = y + residual
    return {'self': probs}


def bloom_gelu(x):
    return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


def bloom(config, w, ids):
    heads, eps, n = config['n_head'], config['layer_norm_epsilon'], len(ids)
    hd = config['hidden_size'] // heads
    p = 'transformer.'
    h = layer_norm(w, p + 'word_embeddings_layernorm', F.embedding(torch.tensor([ids]), w[p + 'word_embeddings.weight']), eps)
    bias = alibi(heads, n, bfloat16=False)  # [heads, 1, n]
    masked = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)[None, None]
    probs = []
    for l in range(config['n_layer']):
        q_ = f'{p}h.{l}.'
        x = layer_norm(w, q_ + 'input_layernorm', h, eps)
        fused = linear(x, w[q_ + 'self_attention.query_key_value.weight'], w[q_ + 'self_attention.query_key_value.bias'])
        fused = fused.view(1, n, heads, 3, hd)
        q = fused[..., 0, :].transpose(1, 2).reshape(heads, n, hd)
        k = fused[..., 1, :].permute(0, 2, 3, 1).reshape(heads, hd, n)
        v = fused[..., 2, :].transpose(1, 2).reshape(heads, n, hd)
        scores = bias.baddbmm(batch1=q, batch2=k, beta=1.0, alpha=1.0 / math.sqrt(hd)).view(1, heads, n, n)
        magnitude = row_magnitude(scores, masked)
        scores = scores.masked_fill(masked, torch.finfo(torch.float32).min)
        a = F.softmax(scores, dim=-1, dtype=torch.float32)
        probs.append((a[0], magnitude))
        ctx = torch.bmm(a.view(heads, n, n), v).view(1, heads, n, hd).permute(0, 2, 1, 3).reshape(1, n, heads * hd)
        attn = linear(ctx, w[q_ + 'self_attention.dense.weight'], w[q_ + 'self_attention.dense.bias']) + h
        y = layer_norm(w, q_ + 'post_attention_layernorm', attn, eps)
        y = bloom_gelu(linear(y, w[q_ + 'mlp.dense_h_to_4h.weight'], w[q_ + 'mlp.dense_h_to_4h.bias']))
        h = linear(y, w[q_ + 'mlp.dense_4h_to_h.weight'], w[q_ + 'mlp.dense_4h_to_h.bias']) + attn
    return {'self': probs}


# --- T5 / mT5 / umT5 ------------------------------------------------------------------------------

def relative_bucket(rel, bidirectional, num_buckets, max_distance):
    buckets = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (rel > 0).to(torch.long) * num_buckets
        rel = torch.abs(rel)
    else:
        rel = -torch.min(rel, torch.zeros_like(rel))
    max_exact = num_buckets // 2
    small = rel < max_exact
    large = torch.log(rel.float() / max_exact) / math.log(max_distance / max_exact)
    large = large * (num_buckets - max_exact)
    large = max_exact + large.to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(small, rel, large)


def relative_bias(table, q, k, bidirectional, config):
    rel = torch.arange(k, dtype=torch.long)[None, :] - torch.arange(q, dtype=torch.long)[:, None]
    b = relative_bucket(rel, bidirectional, config['relative_attention_num_buckets'], config['relative_attention_max_distance'])
    return F.embedding(b, table).permute(2, 0, 1)[None]  # [1, heads, q, k]


def t5_norm(x, weight, eps):
    variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def t5_attention(w, p, x, kv, heads, hd, bias):
    nq, nk = x.shape[1], kv.shape[1]
    q = linear(x, w[p + 'q.weight']).view(1, nq, heads, hd).transpose(1, 2)
    k = linear(kv, w[p + 'k.weight']).view(1, nk, heads, hd).transpose(1, 2)
    v = linear(kv, w[p + 'v.weight']).view(1, nk, heads, hd).transpose(1, 2)
    scores = torch.matmul(q, k.transpose(3, 2)) + bias
    a = F.softmax(scores.float(), dim=-1).type_as(scores)
    out = torch.matmul(a, v).transpose(1, 2).contiguous().view(1, nq, heads * hd)
    return linear(out, w[p + 'o.weight']), (a[0], row_magnitude(scores, scores < torch.finfo(torch.float32).min / 2))


def t5_ff(config, w, p, x):
    if config.get('is_gated_act') or config.get('feed_forward_proj', 'relu').startswith('gated'):
        y = gelu_new(linear(x, w[p + 'wi_0.weight'])) * linear(x, w[p + 'wi_1.weight'])
    else:
        y = F.relu(linear(x, w[p + 'wi.weight']))
    return linear(y, w[p + 'wo.weight'])


def t5(config, w, ids, decoder_ids, per_layer_bias):
    heads, hd = config['num_heads'], config['d_kv']
    eps = config['layer_norm_epsilon']
    emb = w['shared.weight']
    n, m = len(ids), len(decoder_ids)

    def stack(name, h, layers, causal, enc_out):
        probs = []
        mask = causal_mask(h.shape[1]) if causal else 0.0
        bias = None
        for l in range(layers):
            p = f'{name}.block.{l}.layer.'
            table = w.get(p + '0.SelfAttention.relative_attention_bias.weight')
            if l == 0 or per_layer_bias:
                bias = relative_bias(table, h.shape[1], h.shape[1], not causal, config) + mask
            x = t5_norm(h, w[p + '0.layer_norm.weight'], eps)
            out, a = t5_attention(w, p + '0.SelfAttention.', x, x, heads, hd, bias)
            probs.append(a)
            h = h + out
            if enc_out is not None:
                out, _ = t5_attention(w, p + '1.EncDecAttention.', t5_norm(h, w[p + '1.layer_norm.weight'], eps), enc_out, heads, hd, torch.zeros(1, heads, h.shape[1], enc_out.shape[1]))
                h = h + out
            ff = f'{p}{2 if enc_out is not None else 1}.'
            h = h + t5_ff(config, w, ff + 'DenseReluDense.', t5_norm(h, w[ff + 'layer_norm.weight'], eps))
        return h, probs

    h, enc_probs = stack('encoder', F.embedding(torch.tensor([ids]), emb), config['num_layers'], False, None)
    enc_out = t5_norm(h, w['encoder.final_layer_norm.weight'], eps)
    _, dec_probs = stack('decoder', F.embedding(torch.tensor([decoder_ids]), emb), config.get('num_decoder_layers', config['num_layers']), True, enc_out)
    return {'encoder': enc_probs, 'decoder': dec_probs}


def run(fixture, config, w, ids, decoder_ids=None):
    with torch.no_grad():
        if fixture == 'falcon-alibi':
            return falcon(config, w, ids)
        if fixture == 'bloom':
            return bloom(config, w, ids)
        return t5(config, w, ids, decoder_ids, per_layer_bias=config['model_type'] == 'umt5')


# --- what is stored ---------------------------------------------------------------------------------

def column_windows(n, row):
    """Every column of rows up to 256 keys; beyond, windows: the first 16 keys, 16 around 256 (bfloat16's
    last exact integer), 16 in the middle, the 32 up to the row, the last 8, and every 64th key between."""
    if n <= 256:
        return [[0, n]]
    spans = [[0, 16], [248, 264], [n // 2 - 8, n // 2 + 8], [max(0, row - 31), row + 1], [n - 8, n]]
    spans += [[c, c + 1] for c in range(64, n, 64)]
    spans = sorted([a, min(b, n)] for a, b in spans if a < min(b, n))
    merged = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged


def rows_of(n, causal, last_only):
    """Causal stacks: the middle and the last row (or the last only); the encoder also its first
    (offsets all ≥ 0)."""
    if last_only:
        return [n - 1]
    return sorted({n // 2, n - 1} | (set() if causal else {0}))


def sample(probs, causal, last_only=False):
    """Per stack: [layer][head] lists of {row, max_score, cols, p} (p: the probabilities in those column spans)."""
    out = []
    for a, magnitude in probs:
        heads, nq, nk = a.shape
        per_head = []
        for hh in range(heads):
            entries = []
            for r in rows_of(nq, causal, last_only):
                cols = column_windows(nk, r)
                vals = torch.cat([a[hh, r, c0:c1] for c0, c1 in cols])
                # The shortest decimal that reads back as the same float32 (numpy's repr): exact, and short.
                entries.append({'row': r, 'max_score': float(str(magnitude[hh, r].numpy())), 'cols': cols, 'p': [float(str(v)) for v in vals.numpy()]})
            per_head.append(entries)
        out.append(per_head)
    return out


def ids_for(n, vocab, salt):
    """Deterministic ids spread over the vocabulary, avoiding the first 5 (special) tokens."""
    return [5 + ((i * 37 + salt * 11) % (vocab - 5)) for i in range(n)]


def check_vs_transformers(fixture, config, w):
    with open(os.path.join(FIXTURES, fixture, 'reference.json')) as f:
        ref = json.load(f)
    worst = 0.0
    for inp in ref['inputs']:
        got = run(fixture, config, w, inp['input_ids'], inp.get('decoder_input_ids'))
        for stack, key in (('self', 'attentions'), ('encoder', 'encoder_attentions'), ('decoder', 'decoder_attentions')):
            if stack not in got:
                continue
            want = inp.get(key)
            if want is None:
                raise SystemExit(f'{fixture}: reference.json has no {key}')
            for l, (a, _) in enumerate(got[stack]):
                worst = max(worst, (a - torch.tensor(want[l])).abs().max().item())
    if worst > 1e-5:
        raise SystemExit(f'{fixture}: this mirror differs from transformers\' reference.json attentions by {worst:.3g} (> 1e-5)')
    return worst


CASES = [
    # fixture, encoder/self lengths, decoder length (encoder-decoder only), config.json overrides
    ('falcon-alibi', [300, 1000, 3000], None, None),
    ('bloom', [300, 1000, 3000], None, None),
    # The same weights read as 16 heads of 2 dims: slopes 2^(-k/2), half of them not powers of two, so
    # Falcon's bfloat16 slopes and bfloat16 products round (with 4 heads every slope is a power of two).
    ('falcon-alibi', [1000], None, {'num_attention_heads': 16, 'num_kv_heads': 16}),
    ('bloom', [1000], None, {'n_head': 16}),
    ('t5', [400], 200, None),
    ('mt5', [300], 200, None),
    ('umt5', [400], 200, None),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--out', default=os.path.join(FIXTURES, 'position-bias-long.json'))
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {
        'script': 'bench/pytorch/position_bias_reference.py',
        'torch_version': torch.__version__,
        'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
        'mirrors': 'transformers 4.40 eager (FalconAttention alibi path, BloomAttention, T5Attention / UMT5Attention); see the script',
        'format': 'cases[]: {fixture, config (overrides of its config.json, if any), input_ids, decoder_input_ids, stacks[stack][layer][head] = [{row, max_score: the largest |score| the row feeds the softmax (mask aside), cols: [[from, to), ...], p: probabilities of those columns in order}]}',
        'check_vs_transformers': {},
        'cases': [],
    }
    for fixture, lengths, dec_len, overrides in CASES:
        config, w = load(fixture)
        if fixture not in result['check_vs_transformers']:
            result['check_vs_transformers'][fixture] = check_vs_transformers(fixture, config, w)
        config.update(overrides or {})
        for n in lengths:
            ids = ids_for(n, config['vocab_size'], 1)
            decoder_ids = [config.get('decoder_start_token_id', 0)] + ids_for(dec_len - 1, config['vocab_size'], 2) if dec_len else None
            probs = run(fixture, config, w, ids, decoder_ids)
            case = {'fixture': fixture, **({'config': overrides} if overrides else {}), 'input_ids': ids}
            if decoder_ids:
                case['decoder_input_ids'] = decoder_ids
            case['stacks'] = {s: sample(a, s != 'encoder', last_only=bool(overrides)) for s, a in probs.items()}
            result['cases'].append(case)
            print(f'{fixture} {n}{"/" + str(dec_len) if dec_len else ""} {overrides or ""}: done', flush=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, separators=(',', ':'))
    print(f'{args.out}: {os.path.getsize(args.out)} bytes; vs transformers: {result["check_vs_transformers"]}')


if __name__ == '__main__':
    main()
