/**
 * A minimal protocol-buffers writer: just the wire format ONNX's ModelProto needs
 * (varints, length-delimited fields, fixed32 floats). Messages are built as lists of
 * chunks so multi-hundred-megabyte weight payloads are copied once, at the end.
 */

const textEncoder = new TextEncoder();

export class ProtoMessage {
  private readonly parts: Uint8Array[] = [];
  private scratch: number[] = [];
  byteLength = 0;

  private flushScratch(): void {
    if (this.scratch.length > 0) {
      const bytes = Uint8Array.from(this.scratch);
      this.parts.push(bytes);
      this.byteLength += bytes.length;
      this.scratch = [];
    }
  }

  private pushVarint(value: number | bigint): void {
    let v = BigInt.asUintN(64, BigInt(value));
    if (v < 0x80n) {
      this.scratch.push(Number(v));
      return;
    }
    while (v >= 0x80n) {
      this.scratch.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.scratch.push(Number(v));
  }

  private tag(field: number, wireType: number): void {
    this.pushVarint((field << 3) | wireType);
  }

  varint(field: number, value: number | bigint): this {
    this.tag(field, 0);
    this.pushVarint(value);
    return this;
  }

  float(field: number, value: number): this {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    this.scratch.push(...b);
    return this;
  }

  bytes(field: number, data: Uint8Array): this {
    this.tag(field, 2);
    this.pushVarint(data.length);
    this.flushScratch();
    this.parts.push(data);
    this.byteLength += data.length;
    return this;
  }

  string(field: number, value: string): this {
    return this.bytes(field, textEncoder.encode(value));
  }

  message(field: number, child: ProtoMessage): this {
    child.flushScratch();
    this.tag(field, 2);
    this.pushVarint(child.byteLength);
    this.flushScratch();
    for (const part of child.parts) this.parts.push(part);
    this.byteLength += child.byteLength;
    return this;
  }

  /** Concatenates every chunk into one buffer. */
  finish(): Uint8Array {
    this.flushScratch();
    const out = new Uint8Array(this.byteLength);
    let offset = 0;
    for (const part of this.parts) {
      out.set(part, offset);
      offset += part.length;
    }
    return out;
  }
}
