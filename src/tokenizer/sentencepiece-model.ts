/**
 * Reads a SentencePiece model file (`*.spm`, `*.model`: a serialized sentencepiece ModelProto)
 * far enough to rebuild its tokenizer: the pieces with their scores and types, the model type,
 * and the normalizer spec (rule name, precompiled charsmap, whitespace handling).
 */
import { AttnscopeError } from '../core/errors.js';

/** sentencepiece_model.proto SentencePiece.Type. */
export type PieceType = 'normal' | 'unknown' | 'control' | 'user_defined' | 'unused' | 'byte';
const PIECE_TYPES: Record<number, PieceType> = { 1: 'normal', 2: 'unknown', 3: 'control', 4: 'user_defined', 5: 'unused', 6: 'byte' };
/** TrainerSpec.ModelType. */
const MODEL_TYPES: Record<number, string> = { 1: 'unigram', 2: 'bpe', 3: 'word', 4: 'char' };

export interface SentencePiece {
  piece: string;
  score: number;
  type: PieceType;
}

export interface SentencePieceModel {
  pieces: SentencePiece[];
  /** 'unigram', 'bpe', 'word' or 'char' (TrainerSpec.model_type; unigram when unset). */
  modelType: string;
  byteFallback: boolean;
  /** TrainerSpec.unk_id (0 when unset) and unk_piece ('<unk>' when unset). */
  unkId: number;
  unkPiece: string;
  normalizer: {
    name: string;
    /** The precompiled normalization rules (empty for 'identity'). */
    precompiledCharsmap: Uint8Array;
    addDummyPrefix: boolean;
    removeExtraWhitespaces: boolean;
    escapeWhitespaces: boolean;
  };
}

/** A protobuf wire-format reader over one message's bytes. */
class Reader {
  pos = 0;
  constructor(private readonly buf: Uint8Array, private readonly what: string) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  private fail(why: string): never {
    throw new AttnscopeError(`${this.what}: not a SentencePiece model (${why} at byte ${this.pos})`);
  }

  varint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) this.fail('truncated varint');
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 128;
    }
    return this.fail('varint longer than 10 bytes');
  }

  bytes(): Uint8Array {
    const n = this.varint();
    if (this.pos + n > this.buf.length) this.fail(`field of ${n} bytes runs past the end`);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  float(): number {
    if (this.pos + 4 > this.buf.length) this.fail('truncated float');
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 4).getFloat32(0, true);
    this.pos += 4;
    return v;
  }

  /** Skips a field of the given wire type. */
  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else this.fail(`unsupported wire type ${wire}`);
    if (this.pos > this.buf.length) this.fail('field runs past the end');
  }

  /** Calls `field(number, wireType)` for each field; it reads the value or returns false to skip it. */
  each(field: (n: number, wire: number) => boolean): void {
    while (!this.done) {
      const key = this.varint();
      const n = Math.floor(key / 8);
      const wire = key % 8;
      if (!field(n, wire)) this.skip(wire);
    }
  }

  sub(): Reader {
    return new Reader(this.bytes(), this.what);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: false });

/** Parses a serialized ModelProto; `what` names the file in errors. */
export function readSentencePieceModel(data: Uint8Array, what: string): SentencePieceModel {
  const normalizer: SentencePieceModel['normalizer'] = {
    name: '', precompiledCharsmap: new Uint8Array(0), addDummyPrefix: true, removeExtraWhitespaces: true, escapeWhitespaces: true,
  };
  const model: SentencePieceModel = { pieces: [], modelType: 'unigram', byteFallback: false, unkId: 0, unkPiece: '<unk>', normalizer };
  const top = new Reader(data, what);
  top.each((n, wire) => {
    if (n === 1 && wire === 2) {
      // ModelProto.pieces: 1 piece, 2 score, 3 type.
      const r = top.sub();
      const p: SentencePiece = { piece: '', score: 0, type: 'normal' };
      r.each((f, w) => {
        if (f === 1 && w === 2) p.piece = utf8.decode(r.bytes());
        else if (f === 2 && w === 5) p.score = r.float();
        else if (f === 3 && w === 0) p.type = PIECE_TYPES[r.varint()] ?? 'normal';
        else return false;
        return true;
      });
      model.pieces.push(p);
    } else if (n === 2 && wire === 2) {
      // TrainerSpec: 3 model_type, 35 byte_fallback, 40 unk_id (int32), 45 unk_piece.
      const r = top.sub();
      r.each((f, w) => {
        if (f === 3 && w === 0) model.modelType = MODEL_TYPES[r.varint()] ?? 'unknown';
        else if (f === 35 && w === 0) model.byteFallback = r.varint() !== 0;
        else if (f === 40 && w === 0) model.unkId = r.varint();
        else if (f === 45 && w === 2) model.unkPiece = utf8.decode(r.bytes());
        else return false;
        return true;
      });
    } else if (n === 3 && wire === 2) {
      // NormalizerSpec: 1 name, 2 precompiled_charsmap, 3 add_dummy_prefix, 4 remove_extra_whitespaces, 5 escape_whitespaces.
      const r = top.sub();
      r.each((f, w) => {
        if (f === 1 && w === 2) normalizer.name = utf8.decode(r.bytes());
        else if (f === 2 && w === 2) normalizer.precompiledCharsmap = r.bytes();
        else if (f === 3 && w === 0) normalizer.addDummyPrefix = r.varint() !== 0;
        else if (f === 4 && w === 0) normalizer.removeExtraWhitespaces = r.varint() !== 0;
        else if (f === 5 && w === 0) normalizer.escapeWhitespaces = r.varint() !== 0;
        else return false;
        return true;
      });
    } else {
      return false;
    }
    return true;
  });
  if (model.pieces.length === 0) throw new AttnscopeError(`${what}: not a SentencePiece model (no pieces)`);
  return model;
}
