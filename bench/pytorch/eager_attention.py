#!/usr/bin/env python3
"""PyTorch eager reference for `npm run bench:long` (bench/long.ts): one forward pass with every
layer's attention probabilities returned, as Hugging Face transformers computes it with
`attn_implementation="eager"` and `output_attentions=True`, timed, with the peak resident memory.

THIS IS NOT TRANSFORMERS ITSELF (transformers is not installed on the benchmark machine: no PyPI).
It mirrors, op for op, the eager forward of transformers 4.40 (the version the test fixtures were
made with) for the base models that return attentions:

- BertModel (bert-base): embeddings word + token type + position, LayerNorm; per layer
  BertSelfAttention (query/key/value Linear, transpose_for_scores, matmul(q, kᵀ) / sqrt(head size),
  + the extended attention mask (zeros for one unpadded sequence), softmax, matmul with v),
  BertSelfOutput (dense, LayerNorm of the residual sum), BertIntermediate (dense, exact GELU),
  BertOutput (dense, LayerNorm); the pooler (dense + tanh of the first token).
- GPT2Model (gpt2-small): wte + wpe; per block ln_1, GPT2Attention (Conv1D c_attn = addmm, split
  heads, matmul(q, kᵀ) / full([], sqrt(head size)), torch.where with the registered causal `bias`
  buffer [1, 1, n_positions, n_positions] and finfo.min, softmax, matmul with v, merge heads, c_proj),
  ln_2, MLP (c_fc, gelu_new, c_proj); ln_f; use_cache=True keeps each layer's (k, v) as presents.
- LlamaModel / Qwen2Model (Llama-3.2-1B and Qwen2.5-0.5B shapes): embed_tokens; the 4-D causal mask
  [1, 1, n, n] of finfo.min above the diagonal (_update_causal_mask); per layer RMSNorm (float32,
  pow(2).mean, rsqrt), q/k/v_proj (with bias for Qwen2), rotary embeddings (cos/sin from inv_freq,
  rotate_half), the key/value cache update (use_cache=True: DynamicCache holds k and v), repeat_kv
  (expand + reshape: a copy), matmul(q, kᵀ) / sqrt(head_dim), + causal_mask, softmax(dim=-1,
  dtype=float32).to(q.dtype), matmul with v, o_proj; post-attention RMSNorm, MLP down(silu(gate) · up);
  final norm. (Llama-3.2's "llama3" rope_scaling changes only inv_freq's values, not the cost; it is
  left out.)

Dropout is the identity (eval mode), as in transformers' inference. No language-model head: like
`attnscope trace` by default, the run returns attentions (and the last hidden state), not logits.
Weights are random (normal, std 0.02; norms 1), float32. The forward runs under torch.no_grad().

Usage (prints one JSON line):
  python3 bench/pytorch/eager_attention.py --config '<config.json as JSON>' --tokens N [--runs R] [--threads T]
"""
import argparse
import json
import math
import os
import time

import torch
from torch import nn
import torch.nn.functional as F


def status_kb(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    return 0


def init_random(module, seed):
    """Normal(0, 0.02) for every weight matrix and embedding, zeros for biases, ones for norms."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith('bias'):
                p.zero_()
            elif p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)  # in place: no transient copy in the peak RSS


# --- BERT (transformers.models.bert.modeling_bert, eager) ----------------------------------------

class BertSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads = c['num_attention_heads']
        self.head_size = c['hidden_size'] // self.heads
        self.query = nn.Linear(c['hidden_size'], c['hidden_size'])
        self.key = nn.Linear(c['hidden_size'], c['hidden_size'])
        self.value = nn.Linear(c['hidden_size'], c['hidden_size'])

    def transpose_for_scores(self, x):
        return x.view(x.size()[:-1] + (self.heads, self.head_size)).permute(0, 2, 1, 3)

    def forward(self, h, mask):
        q = self.transpose_for_scores(self.query(h))
        k = self.transpose_for_scores(self.key(h))
        v = self.transpose_for_scores(self.value(h))
        scores = torch.matmul(q, k.transpose(-1, -2))
        scores = scores / math.sqrt(self.head_size)
        scores = scores + mask
        probs = nn.functional.softmax(scores, dim=-1)
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        context = context.view(context.size()[:-2] + (self.heads * self.head_size,))
        return context, probs


class BertLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, eps = c['hidden_size'], c.get('layer_norm_eps', 1e-12)
        self.attention = BertSelfAttention(c)
        self.attn_dense = nn.Linear(d, d)
        self.attn_norm = nn.LayerNorm(d, eps=eps)
        self.intermediate = nn.Linear(d, c['intermediate_size'])
        self.output = nn.Linear(c['intermediate_size'], d)
        self.out_norm = nn.LayerNorm(d, eps=eps)

    def forward(self, h, mask):
        context, probs = self.attention(h, mask)
        a = self.attn_norm(self.attn_dense(context) + h)
        i = F.gelu(self.intermediate(a))
        return self.out_norm(self.output(i) + a), probs


class BertModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c['hidden_size']
        self.word = nn.Embedding(c['vocab_size'], d)
        self.position = nn.Embedding(c['max_position_embeddings'], d)
        self.token_type = nn.Embedding(c.get('type_vocab_size', 2), d)
        self.norm = nn.LayerNorm(d, eps=c.get('layer_norm_eps', 1e-12))
        self.layers = nn.ModuleList(BertLayer(c) for _ in range(c['num_hidden_layers']))
        self.pooler = nn.Linear(d, d)

    def forward(self, ids):
        n = ids.shape[1]
        types = torch.zeros_like(ids)
        positions = torch.arange(n).unsqueeze(0)
        h = self.norm(self.word(ids) + self.token_type(types) + self.position(positions))
        # get_extended_attention_mask of an all-ones attention_mask: (1 − mask) · finfo.min = zeros.
        mask = (1.0 - torch.ones(1, 1, 1, n)) * torch.finfo(torch.float32).min
        attentions = []
        for layer in self.layers:
            h, probs = layer(h, mask)
            attentions.append(probs)
        pooled = torch.tanh(self.pooler(h[:, 0]))
        return h, pooled, tuple(attentions)


# --- GPT-2 (transformers.models.gpt2.modeling_gpt2, eager) -----------------------------------

class Conv1D(nn.Module):
    """transformers.pytorch_utils.Conv1D: x @ W + b with W stored [in, out], as addmm."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(size_out)


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GPT2Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c['n_embd']
        self.heads = c['n_head']
        self.head_dim = d // self.heads
        max_positions = c['n_positions']
        self.register_buffer('bias', torch.tril(torch.ones((max_positions, max_positions), dtype=torch.bool)).view(1, 1, max_positions, max_positions), persistent=False)
        self.c_attn = Conv1D(3 * d, d)
        self.c_proj = Conv1D(d, d)

    def split(self, x):
        return x.view(x.size()[:-1] + (self.heads, self.head_dim)).permute(0, 2, 1, 3)

    def forward(self, h):
        q, k, v = self.c_attn(h).split(self.heads * self.head_dim, dim=2)
        q, k, v = self.split(q), self.split(k), self.split(v)
        present = (k, v)
        w = torch.matmul(q, k.transpose(-1, -2))
        w = w / torch.full([], v.size(-1) ** 0.5, dtype=w.dtype)
        ql, kl = q.size(-2), k.size(-2)
        causal = self.bias[:, :, kl - ql: kl, :kl]
        mask_value = torch.full([], torch.finfo(w.dtype).min, dtype=w.dtype)
        w = torch.where(causal, w.to(w.dtype), mask_value)
        w = nn.functional.softmax(w, dim=-1)
        w = w.type(v.dtype)
        out = torch.matmul(w, v)
        out = out.permute(0, 2, 1, 3).contiguous()
        out = out.view(out.size()[:-2] + (self.heads * self.head_dim,))
        return self.c_proj(out), present, w


class GPT2Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, eps = c['n_embd'], c.get('layer_norm_epsilon', 1e-5)
        inner = c.get('n_inner') or 4 * d
        self.ln_1 = nn.LayerNorm(d, eps=eps)
        self.attn = GPT2Attention(c)
        self.ln_2 = nn.LayerNorm(d, eps=eps)
        self.c_fc = Conv1D(inner, d)
        self.c_proj = Conv1D(d, inner)

    def forward(self, h):
        a, present, w = self.attn(self.ln_1(h))
        h = a + h
        m = self.c_proj(gelu_new(self.c_fc(self.ln_2(h))))
        return h + m, present, w


class GPT2Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c['vocab_size'], c['n_embd'])
        self.wpe = nn.Embedding(c['n_positions'], c['n_embd'])
        self.h = nn.ModuleList(GPT2Block(c) for _ in range(c['n_layer']))
        self.ln_f = nn.LayerNorm(c['n_embd'], eps=c.get('layer_norm_epsilon', 1e-5))

    def forward(self, ids):
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        h = self.wte(ids) + self.wpe(positions)
        presents, attentions = [], []
        for block in self.h:
            h, present, w = block(h)
            presents.append(present)
            attentions.append(w)
        return self.ln_f(h), tuple(presents), tuple(attentions)


# --- Llama / Qwen2 (transformers.models.llama.modeling_llama, qwen2.modeling_qwen2, eager) ------

class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.to(torch.float32)
        variance = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        return self.weight * x.to(dtype)


class RotaryEmbedding(nn.Module):
    def __init__(self, dim, base):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        self.register_buffer('inv_freq', inv_freq, persistent=False)

    @torch.no_grad()
    def forward(self, x, position_ids):
        inv = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
        pos = position_ids[:, None, :].float()
        freqs = (inv @ pos).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin):
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def repeat_kv(x, n_rep):
    b, kv, s, d = x.shape
    if n_rep == 1:
        return x
    x = x[:, :, None, :, :].expand(b, kv, n_rep, s, d)
    return x.reshape(b, kv * n_rep, s, d)


class LlamaAttention(nn.Module):
    def __init__(self, c, bias):
        super().__init__()
        d = c['hidden_size']
        self.heads = c['num_attention_heads']
        self.kv_heads = c.get('num_key_value_heads', self.heads)
        self.head_dim = d // self.heads
        self.groups = self.heads // self.kv_heads
        self.q_proj = nn.Linear(d, self.heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d, self.kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d, self.kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.heads * self.head_dim, d, bias=False)
        self.rotary_emb = RotaryEmbedding(self.head_dim, c.get('rope_theta', 10000.0))

    def forward(self, h, mask, position_ids, cache):
        b, n, _ = h.size()
        q = self.q_proj(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = self.rotary_emb(v, position_ids)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        cache.append((k, v))  # DynamicCache.update with an empty past: keeps this layer's k and v
        k = repeat_kv(k, self.groups)
        v = repeat_kv(v, self.groups)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(self.head_dim)
        w = w + mask[:, :, :, : k.shape[-2]]
        w = nn.functional.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(w, v).transpose(1, 2).contiguous().reshape(b, n, -1)
        return self.o_proj(out), w


class LlamaLayer(nn.Module):
    def __init__(self, c, bias):
        super().__init__()
        d, eps = c['hidden_size'], c.get('rms_norm_eps', 1e-6)
        self.input_layernorm = RMSNorm(d, eps)
        self.self_attn = LlamaAttention(c, bias)
        self.post_attention_layernorm = RMSNorm(d, eps)
        self.gate_proj = nn.Linear(d, c['intermediate_size'], bias=False)
        self.up_proj = nn.Linear(d, c['intermediate_size'], bias=False)
        self.down_proj = nn.Linear(c['intermediate_size'], d, bias=False)

    def forward(self, h, mask, position_ids, cache):
        a, w = self.self_attn(self.input_layernorm(h), mask, position_ids, cache)
        h = h + a
        x = self.post_attention_layernorm(h)
        return h + self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)), w


class LlamaModel(nn.Module):
    def __init__(self, c, bias):
        super().__init__()
        self.embed_tokens = nn.Embedding(c['vocab_size'], c['hidden_size'])
        self.layers = nn.ModuleList(LlamaLayer(c, bias) for _ in range(c['num_hidden_layers']))
        self.norm = RMSNorm(c['hidden_size'], c.get('rms_norm_eps', 1e-6))

    def forward(self, ids):
        n = ids.shape[1]
        h = self.embed_tokens(ids)
        position_ids = torch.arange(n).unsqueeze(0)
        # _update_causal_mask (eager, no padding): finfo.min above the diagonal, [1, 1, n, n].
        min_value = torch.finfo(h.dtype).min
        mask = torch.full((n, n), fill_value=min_value, dtype=h.dtype)
        mask = torch.triu(mask, diagonal=1)
        mask = mask[None, None, :, :].expand(1, 1, -1, -1)
        cache, attentions = [], []
        for layer in self.layers:
            h, w = layer(h, mask, position_ids, cache)
            attentions.append(w)
        return self.norm(h), cache, tuple(attentions)


def build(c):
    t = c['model_type']
    if t == 'bert':
        return BertModel(c)
    if t == 'gpt2':
        return GPT2Model(c)
    if t in ('llama', 'qwen2'):
        return LlamaModel(c, bias=(t == 'qwen2'))
    raise SystemExit(f'eager_attention.py: model_type {t!r} is not mirrored (bert, gpt2, llama, qwen2)')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--config', required=True, help='config.json fields as JSON')
    ap.add_argument('--tokens', type=int, required=True)
    ap.add_argument('--runs', type=int, default=1)
    ap.add_argument('--threads', type=int, default=os.cpu_count())
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args()
    config = json.loads(args.config)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    with torch.no_grad():
        model = build(config).eval()
    init_random(model, args.seed)
    build_s = time.perf_counter() - t0
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2 ** 20
    vocab = config['vocab_size']
    ids = torch.tensor([[2 + (i * 7919) % (vocab - 2) for i in range(args.tokens)]], dtype=torch.long)
    with torch.no_grad():
        model(ids[:, :8])  # warm-up (allocator, thread pool)
    rss_weights_mb = status_kb('VmRSS') / 1024
    times = []
    attention_mb = 0.0
    cpu0 = time.process_time()
    for _ in range(args.runs):
        t = time.perf_counter()
        with torch.no_grad():
            out = model(ids)
        times.append(time.perf_counter() - t)
        attentions = out[-1]
        attention_mb = sum(a.numel() * a.element_size() for a in attentions) / 2 ** 20
        del out, attentions
    forward_cpu_s = (time.process_time() - cpu0) / args.runs
    times.sort()
    print(json.dumps({
        'forward_s': times[len(times) // 2],
        'forward_cpu_s': forward_cpu_s,
        'forward_all_s': times,
        'peak_rss_mb': status_kb('VmHWM') / 1024,
        'rss_weights_mb': rss_weights_mb,
        'weights_mb': weights_mb,
        'attention_mb': attention_mb,
        'build_s': build_s,
        'threads': torch.get_num_threads(),
        'torch': torch.__version__,
    }))


if __name__ == '__main__':
    main()
