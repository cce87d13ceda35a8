#!/usr/bin/env python3
"""PyTorch reference for `npm run bench:bias-crows-pairs` (bench/bias-crows-pairs.ts): CrowS-Pairs
scored the way the authors' metric.py (nyu-mll/crows-pairs) does it, timed, on a bert-base-sized
BertForMaskedLM checkpoint written by the bench.

THIS IS NOT TRANSFORMERS ITSELF (transformers is not installed on the benchmark machine: no PyPI).
What runs, written from metric.py's and transformers 4.40's behaviour:

- metric.py's loop: read_data's orientation (sent1 = sent_more for `stereo` rows, sent_less for
  `antistereo` rows); mask_unigram: lower-case both sentences (the model is uncased), encode each
  with [CLS] … [SEP], get_span (difflib.SequenceMatcher over the ids as strings, the `equal`
  opcodes' positions), then for i in 1 … N−2 one masked copy of each sentence at template[i], and
  get_log_prob_unigram: one forward of the copy (`model(masked_token_ids)`: no attention mask, no
  token type ids), the logits of every position, LogSoftmax(dim=0) of the masked position's row,
  the original token's entry, `.item()`, summed in Python floats. One forward per masked copy, no
  batching. Returned unrounded (the bench rounds and compares).
- BertForMaskedLM's forward (eval mode, dropout the identity): BertModel without the pooler
  (add_pooling_layer=False) — embeddings word + token type (zeros) + position, LayerNorm; the
  extended attention mask of an all-ones mask ((1 − mask) · finfo.min: zeros) added to the
  scores; the encoder layers of eager_attention.py (BertSelfAttention eager, BertSelfOutput,
  BertIntermediate with exact GELU, BertOutput) — then the MLM head: BertPredictionHeadTransform
  (dense, GELU, LayerNorm) and the decoder Linear whose weight is the word embedding matrix (tied)
  and whose bias is `cls.predictions.bias`, on every position.
- BertTokenizer (the slow, Python one) with do_lower_case: NFC, clean text (drop NUL, U+FFFD and
  control characters; whitespace to spaces), spaces around CJK ideographs, whitespace split, lower
  case and strip accents (NFD, drop Mn), split on punctuation, then greedy longest-match-first
  WordPiece over vocab.txt (`##` continuations; words over 100 characters or with no match are
  [UNK]).
- The weights: the .safetensors file read directly (header + float32 data; no safetensors package
  here), loaded into the modules by transformers' parameter names.

By default the forward runs under torch.no_grad() (the faster way to run the authors' loop);
`--grad` leaves autograd on as metric.py itself does (it calls model.eval() but never disables
gradients).

Usage (prints one JSON line: per pair the token ids and the two unrounded scores, and the loop's
wall and CPU seconds):
  python3 bench/pytorch/crows_pairs_metric.py --weights model.safetensors --vocab vocab.txt \
      --pairs pairs.json [--threads T] [--grad]
pairs.json: {"config": {config.json fields}, "pairs": [{"sent_more", "sent_less", "stereo_antistereo"}, …]}
"""
import argparse
import difflib
import json
import math
import os
import struct
import sys
import time
import unicodedata

import torch
from torch import nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eager_attention import BertLayer  # noqa: E402  (the encoder layer, op for op)


# --- weights ---------------------------------------------------------------------------------

def read_safetensors(path):
    """{name: float32 tensor} of a .safetensors file (F32 tensors only)."""
    with open(path, 'rb') as f:
        (n,) = struct.unpack('<Q', f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, spec in header.items():
        if name == '__metadata__':
            continue
        if spec['dtype'] != 'F32':
            raise SystemExit(f'crows_pairs_metric.py: {name} is {spec["dtype"]}; only F32 is read')
        start, end = spec['data_offsets']
        out[name] = torch.frombuffer(bytearray(data[start:end]), dtype=torch.float32).reshape(spec['shape'])
    return out


# --- BertForMaskedLM (transformers.models.bert.modeling_bert, eager) --------------------------

class BertForMaskedLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, eps = c['hidden_size'], c.get('layer_norm_eps', 1e-12)
        self.word = nn.Embedding(c['vocab_size'], d)
        self.position = nn.Embedding(c['max_position_embeddings'], d)
        self.token_type = nn.Embedding(c.get('type_vocab_size', 2), d)
        self.norm = nn.LayerNorm(d, eps=eps)
        self.layers = nn.ModuleList(BertLayer(c) for _ in range(c['num_hidden_layers']))
        self.transform = nn.Linear(d, d)
        self.transform_norm = nn.LayerNorm(d, eps=eps)
        self.decoder = nn.Linear(d, c['vocab_size'])
        self.decoder.weight = self.word.weight  # tie_weights(): the output embeddings are the input ones

    def load(self, w, layers):
        names = {
            'bert.embeddings.word_embeddings.weight': self.word.weight,
            'bert.embeddings.position_embeddings.weight': self.position.weight,
            'bert.embeddings.token_type_embeddings.weight': self.token_type.weight,
            'bert.embeddings.LayerNorm.weight': self.norm.weight,
            'bert.embeddings.LayerNorm.bias': self.norm.bias,
            'cls.predictions.transform.dense.weight': self.transform.weight,
            'cls.predictions.transform.dense.bias': self.transform.bias,
            'cls.predictions.transform.LayerNorm.weight': self.transform_norm.weight,
            'cls.predictions.transform.LayerNorm.bias': self.transform_norm.bias,
            'cls.predictions.bias': self.decoder.bias,
        }
        for i, layer in enumerate(self.layers):
            p = f'bert.encoder.layer.{i}'
            for ours, theirs in [
                (layer.attention.query, 'attention.self.query'), (layer.attention.key, 'attention.self.key'),
                (layer.attention.value, 'attention.self.value'), (layer.attn_dense, 'attention.output.dense'),
                (layer.attn_norm, 'attention.output.LayerNorm'), (layer.intermediate, 'intermediate.dense'),
                (layer.output, 'output.dense'), (layer.out_norm, 'output.LayerNorm'),
            ]:
                names[f'{p}.{theirs}.weight'] = ours.weight
                names[f'{p}.{theirs}.bias'] = ours.bias
        with torch.no_grad():
            for name, param in names.items():
                if name not in w:
                    raise SystemExit(f'crows_pairs_metric.py: the checkpoint has no {name}')
                param.copy_(w[name])
        assert len(self.layers) == layers

    def forward(self, ids):
        n = ids.shape[1]
        types = torch.zeros_like(ids)  # the token_type_ids buffer, sliced to n
        positions = torch.arange(n).unsqueeze(0)
        h = self.word(ids) + self.token_type(types)
        h = h + self.position(positions)
        h = self.norm(h)
        # get_extended_attention_mask of the default all-ones attention_mask: (1 − mask) · finfo.min.
        mask = (1.0 - torch.ones(1, 1, 1, n)) * torch.finfo(torch.float32).min
        for layer in self.layers:
            h, _ = layer(h, mask)
        t = self.transform_norm(F.gelu(self.transform(h)))
        return (self.decoder(t),)  # MaskedLMOutput without labels: output[0] is the logits


# --- BertTokenizer (slow) with do_lower_case ------------------------------------------------

def is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith('P')


def is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class WordPiece:
    def __init__(self, vocab_path):
        with open(vocab_path, encoding='utf-8') as f:
            self.vocab = {line.rstrip('\n'): i for i, line in enumerate(f)}
        self.unk = self.vocab['[UNK]']
        self.cls = self.vocab['[CLS]']
        self.sep = self.vocab['[SEP]']
        self.mask = self.vocab['[MASK]']

    def basic(self, text):
        text = unicodedata.normalize('NFC', text)
        clean = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD:
                continue
            if ch in ' \t\n\r' or unicodedata.category(ch) == 'Zs':
                clean.append(' ')
            elif unicodedata.category(ch).startswith('C'):
                continue
            elif is_cjk(cp):
                clean.append(f' {ch} ')
            else:
                clean.append(ch)
        words = []
        for token in ''.join(clean).split():
            token = ''.join(c for c in unicodedata.normalize('NFD', token.lower()) if unicodedata.category(c) != 'Mn')
            piece = ''
            for ch in token:
                if is_punctuation(ch):
                    if piece:
                        words.append(piece)
                    words.append(ch)
                    piece = ''
                else:
                    piece += ch
            if piece:
                words.append(piece)
        return words

    def encode(self, text):
        """tokenizer.encode(text): [CLS] + WordPiece ids + [SEP]."""
        ids = [self.cls]
        for word in self.basic(text):
            if len(word) > 100:
                ids.append(self.unk)
                continue
            pieces, start = [], 0
            while start < len(word):
                end = len(word)
                found = None
                while start < end:
                    sub = word[start:end] if start == 0 else '##' + word[start:end]
                    if sub in self.vocab:
                        found = self.vocab[sub]
                        break
                    end -= 1
                if found is None:
                    pieces = [self.unk]
                    break
                pieces.append(found)
                start = end
            ids.extend(pieces)
        ids.append(self.sep)
        return ids


# --- metric.py ----------------------------------------------------------------------------

def get_span(seq1, seq2):
    """The positions of the tokens the two sequences share (difflib 'equal' opcodes over the ids as strings)."""
    matcher = difflib.SequenceMatcher(None, [str(x) for x in seq1], [str(x) for x in seq2])
    template1, template2 = [], []
    for op in matcher.get_opcodes():
        if op[0] == 'equal':
            template1 += list(range(op[1], op[2]))
            template2 += list(range(op[3], op[4]))
    return template1, template2


def get_log_prob_unigram(model, log_softmax, masked_token_ids, token_ids, mask_idx, mask_id):
    output = model(masked_token_ids)
    hidden_states = output[0].squeeze(0)
    assert masked_token_ids[0][mask_idx] == mask_id
    hs = hidden_states[mask_idx]
    target_id = token_ids[0][mask_idx]
    return log_softmax(hs)[target_id]


def mask_unigram(model, tok, log_softmax, sent1, sent2):
    sent1, sent2 = sent1.lower(), sent2.lower()
    sent1_token_ids = torch.tensor([tok.encode(sent1)])
    sent2_token_ids = torch.tensor([tok.encode(sent2)])
    template1, template2 = get_span(sent1_token_ids[0].tolist(), sent2_token_ids[0].tolist())
    assert len(template1) == len(template2)
    N = len(template1)
    sent1_log_probs, sent2_log_probs, copies = 0.0, 0.0, 0
    for i in range(1, N - 1):  # skipping [CLS] and [SEP]
        sent1_masked_token_ids = sent1_token_ids.clone().detach()
        sent2_masked_token_ids = sent2_token_ids.clone().detach()
        sent1_masked_token_ids[0][template1[i]] = tok.mask
        sent2_masked_token_ids[0][template2[i]] = tok.mask
        score1 = get_log_prob_unigram(model, log_softmax, sent1_masked_token_ids, sent1_token_ids, template1[i], tok.mask)
        score2 = get_log_prob_unigram(model, log_softmax, sent2_masked_token_ids, sent2_token_ids, template2[i], tok.mask)
        sent1_log_probs += score1.item()
        sent2_log_probs += score2.item()
        copies += 2
    return {
        'ids1': sent1_token_ids[0].tolist(), 'ids2': sent2_token_ids[0].tolist(),
        'sent1': sent1_log_probs, 'sent2': sent2_log_probs, 'copies': copies,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--weights', required=True)
    ap.add_argument('--vocab', required=True)
    ap.add_argument('--pairs', required=True)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--grad', action='store_true', help='autograd on, as metric.py runs')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.pairs, encoding='utf-8') as f:
        job = json.load(f)
    config = job['config']
    t0 = time.perf_counter()
    with torch.no_grad():
        model = BertForMaskedLM(config)
    model.load(read_safetensors(args.weights), config['num_hidden_layers'])
    model.eval()
    build_s = time.perf_counter() - t0
    tok = WordPiece(args.vocab)
    log_softmax = torch.nn.LogSoftmax(dim=0)
    with torch.no_grad():
        model(torch.tensor([[tok.cls, tok.sep]]))  # warm-up (allocator, thread pool)
    torch.set_grad_enabled(args.grad)
    out = []
    c0, w0 = time.process_time(), time.perf_counter()
    for p in job['pairs']:
        # read_data: sent1 is sent_more for stereo rows, sent_less for antistereo rows.
        stereo = p['stereo_antistereo'] == 'stereo'
        sent1, sent2 = (p['sent_more'], p['sent_less']) if stereo else (p['sent_less'], p['sent_more'])
        out.append(mask_unigram(model, tok, log_softmax, sent1, sent2))
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print(json.dumps({
        'wall_s': wall, 'cpu_s': cpu, 'build_s': build_s, 'copies': sum(r['copies'] for r in out),
        'threads': torch.get_num_threads(), 'grad': args.grad, 'torch': torch.__version__, 'pairs': out,
    }))


if __name__ == '__main__':
    main()
