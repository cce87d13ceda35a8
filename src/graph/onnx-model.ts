/**
 * Encodes a graph (nodes, initializers, inputs, outputs) as an ONNX ModelProto.
 * Field numbers follow onnx.proto (ModelProto, GraphProto, NodeProto, TensorProto, ...).
 */
import { ProtoMessage } from './protobuf.js';

export type ElemType = 'float32' | 'float16' | 'bfloat16' | 'float64' | 'int64' | 'int32' | 'bool' | 'uint8';

const ELEM_TYPE_CODE: Record<ElemType, number> = {
  float32: 1,
  uint8: 2,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
  bfloat16: 16,
};

export function elemTypeCode(t: ElemType): number {
  return ELEM_TYPE_CODE[t];
}

/** A float attribute that must stay FLOAT even when its value is whole (e.g. alpha = 1). */
export class FloatAttr {
  constructor(readonly value: number) {}
}

/** Whole numbers are INT attributes, other numbers FLOAT; arrays of numbers are INTS. */
export type AttributeValue = number | string | readonly number[] | FloatAttr | InitializerSpec;

export interface NodeSpec {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name: string;
  domain?: string;
  attributes?: Readonly<Record<string, AttributeValue>>;
}

export interface InitializerSpec {
  name: string;
  type: ElemType;
  dims: readonly number[];
  /** Little-endian element bytes, stored in the model. */
  raw?: Uint8Array;
  /** Or: the bytes live in an external file next to the model (location relative to it). */
  external?: { location: string; length: number };
}

export interface ValueInfoSpec {
  name: string;
  type: ElemType;
  /** Numbers are fixed sizes, strings symbolic (dynamic) dimensions; undefined: unknown shape. */
  shape?: readonly (number | string)[];
}

export interface GraphSpec {
  name: string;
  nodes: readonly NodeSpec[];
  initializers: readonly InitializerSpec[];
  inputs: readonly ValueInfoSpec[];
  outputs: readonly ValueInfoSpec[];
  opsetVersion: number;
}

function tensorProto(t: InitializerSpec): ProtoMessage {
  const m = new ProtoMessage();
  for (const d of t.dims) m.varint(1, d);
  m.varint(2, ELEM_TYPE_CODE[t.type]);
  m.string(8, t.name);
  if (t.external) {
    const entry = (key: string, value: string) => new ProtoMessage().string(1, key).string(2, value);
    m.message(13, entry('location', t.external.location));
    m.message(13, entry('offset', '0'));
    m.message(13, entry('length', String(t.external.length)));
    m.varint(14, 1); // data_location = EXTERNAL
  } else {
    m.bytes(9, t.raw ?? new Uint8Array(0));
  }
  return m;
}

function valueInfoProto(v: ValueInfoSpec): ProtoMessage {
  const tensorType = new ProtoMessage().varint(1, ELEM_TYPE_CODE[v.type]);
  if (v.shape) {
    const shape = new ProtoMessage();
    for (const d of v.shape) {
      const dim = new ProtoMessage();
      if (typeof d === 'number') dim.varint(1, d);
      else dim.string(2, d);
      shape.message(1, dim);
    }
    tensorType.message(2, shape);
  }
  const type = new ProtoMessage().message(1, tensorType);
  return new ProtoMessage().string(1, v.name).message(2, type);
}

function isInitializerSpec(v: AttributeValue): v is InitializerSpec {
  return typeof v === 'object' && v !== null && 'raw' in v;
}

function attributeProto(name: string, value: AttributeValue): ProtoMessage {
  const m = new ProtoMessage().string(1, name);
  if (typeof value === 'number') {
    if (Number.isInteger(value)) m.varint(3, value).varint(20, 2);
    else m.float(2, value).varint(20, 1);
  } else if (typeof value === 'string') {
    m.string(4, value).varint(20, 3);
  } else if (value instanceof FloatAttr) {
    m.float(2, value.value).varint(20, 1);
  } else if (isInitializerSpec(value)) {
    m.message(5, tensorProto(value)).varint(20, 4);
  } else {
    for (const v of value) m.varint(8, v);
    m.varint(20, 7);
  }
  return m;
}

function nodeProto(n: NodeSpec): ProtoMessage {
  const m = new ProtoMessage();
  for (const i of n.inputs) m.string(1, i);
  for (const o of n.outputs) m.string(2, o);
  m.string(3, n.name);
  m.string(4, n.opType);
  for (const [k, v] of Object.entries(n.attributes ?? {})) m.message(5, attributeProto(k, v));
  if (n.domain) m.string(7, n.domain);
  return m;
}

/** Encodes the model; initializers with `external` are referenced, not stored. */
export function encodeModel(g: GraphSpec): Uint8Array {
  const graph = new ProtoMessage();
  for (const n of g.nodes) graph.message(1, nodeProto(n));
  graph.string(2, g.name);
  for (const t of g.initializers) graph.message(5, tensorProto(t));
  for (const i of g.inputs) graph.message(11, valueInfoProto(i));
  for (const o of g.outputs) graph.message(12, valueInfoProto(o));

  const model = new ProtoMessage();
  model.varint(1, 10); // ir_version 10 (ONNX 1.16)
  model.string(2, 'attnscope');
  model.string(3, '0.1.0');
  model.message(7, graph);
  model.message(8, new ProtoMessage().string(1, '').varint(2, g.opsetVersion));
  return model.finish();
}
