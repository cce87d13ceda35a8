/**
 * A restricted pickle reader: a small VM for the opcodes a torch state_dict uses (protocols 2–5),
 * that never executes anything. Globals resolve only through an explicit allow-list of safe
 * TypeScript stand-ins; any other global or opcode is refused with an AttnscopeError.
 */
import { AttnscopeError, quote } from '../core/errors.js';

/** A value on the pickle stack. `T` is the caller's own object type (e.g. a tensor reference). */
export type PickleValue<T> =
  | null
  | boolean
  | number
  | bigint
  | string
  | T
  | PickleValue<T>[]
  | Map<PickleValue<T>, PickleValue<T>>
  | PickleCallable<T>;

/** A safe stand-in for an allowed Python callable (invoked by REDUCE). */
export class PickleCallable<T> {
  constructor(
    readonly qualname: string,
    readonly call: (args: PickleValue<T>[]) => PickleValue<T>,
  ) {}
}

export interface PickleOptions<T> {
  /** File name for error messages. */
  label: string;
  /** The only globals that may be loaded, keyed `module.name`. */
  globals: ReadonlyMap<string, PickleValue<T>>;
  /** Reason given when refusing a global, e.g. 'only tensor rebuilding is allowed'. */
  refusal: string;
  /** Resolves a BINPERSID persistent id. */
  persistentLoad?: (pid: PickleValue<T>) => PickleValue<T>;
}

const OP = {
  PROTO: 0x80, FRAME: 0x95, STOP: 0x2e, MARK: 0x28, POP: 0x30, POP_MARK: 0x31, DUP: 0x32,
  NONE: 0x4e, NEWTRUE: 0x88, NEWFALSE: 0x89,
  BININT: 0x4a, BININT1: 0x4b, BININT2: 0x4d, LONG1: 0x8a, LONG4: 0x8b, BINFLOAT: 0x47,
  SHORT_BINUNICODE: 0x8c, BINUNICODE: 0x58, BINUNICODE8: 0x8d,
  EMPTY_DICT: 0x7d, EMPTY_LIST: 0x5d, EMPTY_TUPLE: 0x29, DICT: 0x64, LIST: 0x6c,
  TUPLE: 0x74, TUPLE1: 0x85, TUPLE2: 0x86, TUPLE3: 0x87,
  SETITEM: 0x73, SETITEMS: 0x75, APPEND: 0x61, APPENDS: 0x65, BUILD: 0x62,
  BINPUT: 0x71, LONG_BINPUT: 0x72, MEMOIZE: 0x94, BINGET: 0x68, LONG_BINGET: 0x6a,
  GLOBAL: 0x63, STACK_GLOBAL: 0x93, REDUCE: 0x52, BINPERSID: 0x51,
} as const;

const utf8 = new TextDecoder('utf-8');

class Reader {
  pos = 0;
  private readonly view: DataView;
  constructor(
    private readonly bytes: Uint8Array,
    private readonly fail: (why: string) => never,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  take(n: number): Uint8Array {
    if (!Number.isSafeInteger(n) || n < 0 || this.pos + n > this.bytes.length) this.fail('unexpected end of data');
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  u8(): number {
    return this.take(1)[0]!;
  }
  u16(): number {
    return this.view.getUint16(this.skip(2), true);
  }
  u32(): number {
    return this.view.getUint32(this.skip(4), true);
  }
  i32(): number {
    return this.view.getInt32(this.skip(4), true);
  }
  u64(): number {
    return Number(this.view.getBigUint64(this.skip(8), true));
  }
  f64be(): number {
    return this.view.getFloat64(this.skip(8), false);
  }
  line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) this.fail('unterminated line');
    const text = utf8.decode(this.bytes.subarray(this.pos, end));
    this.pos = end + 1;
    return text;
  }
  private skip(n: number): number {
    this.take(n);
    return this.pos - n;
  }
}

/** Little-endian two's-complement integer (LONG1/LONG4); a number when it is a safe integer. */
function decodeLong(bytes: Uint8Array): number | bigint {
  if (bytes.length === 0) return 0;
  let value = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]!);
  if (bytes[bytes.length - 1]! & 0x80) value -= 1n << BigInt(8 * bytes.length);
  const asNumber = Number(value);
  return Number.isSafeInteger(asNumber) ? asNumber : value;
}

/** Names of opcodes that are refused, for clearer errors (they build arbitrary objects, or are unneeded). */
const refusedOps = new Map<number, string>([
  [0x69, 'INST'], [0x6f, 'OBJ'], [0x81, 'NEWOBJ'], [0x92, 'NEWOBJ_EX'], [0x50, 'PERSID'],
  [0x82, 'EXT1'], [0x83, 'EXT2'], [0x84, 'EXT4'], [0x49, 'INT'], [0x4c, 'LONG'], [0x46, 'FLOAT'],
  [0x53, 'STRING'], [0x54, 'BINSTRING'], [0x55, 'SHORT_BINSTRING'], [0x56, 'UNICODE'],
  [0x42, 'BINBYTES'], [0x43, 'SHORT_BINBYTES'], [0x8e, 'BINBYTES8'], [0x96, 'BYTEARRAY8'],
  [0x97, 'NEXT_BUFFER'], [0x98, 'READONLY_BUFFER'], [0x67, 'GET'], [0x70, 'PUT'],
  [0x8f, 'EMPTY_SET'], [0x90, 'ADDITEMS'], [0x91, 'FROZENSET'],
]);

/** Runs a pickle and returns the value it builds, refusing anything outside the allow-list. */
export function unpickle<T>(bytes: Uint8Array, options: PickleOptions<T>): PickleValue<T> {
  const { label } = options;
  const fail = (why: string): never => {
    throw new AttnscopeError(`${label}: malformed pickle (${why} at byte ${r.pos})`);
  };
  const r = new Reader(bytes, fail);
  let stack: PickleValue<T>[] = [];
  const marks: PickleValue<T>[][] = [];
  const memo = new Map<number, PickleValue<T>>();

  const pop = (): PickleValue<T> => (stack.length > 0 ? stack.pop()! : fail('stack underflow'));
  const top = (): PickleValue<T> => (stack.length > 0 ? stack[stack.length - 1]! : fail('stack underflow'));
  const popMark = (): PickleValue<T>[] => {
    const items = stack;
    stack = marks.pop() ?? fail('missing MARK');
    return items;
  };
  const asDict = (value: PickleValue<T>): Map<PickleValue<T>, PickleValue<T>> =>
    value instanceof Map ? value : fail('SETITEM on a non-dict');
  const asList = (value: PickleValue<T>): PickleValue<T>[] => (Array.isArray(value) ? value : fail('APPEND on a non-list'));
  const loadGlobal = (module: string, name: string): PickleValue<T> => {
    const qualname = `${module}.${name}`;
    const value = options.globals.get(qualname);
    if (value === undefined) {
      throw new AttnscopeError(`${label}: refusing to load pickle global ${quote(qualname)} (${options.refusal})`);
    }
    return value;
  };
  const setItems = (dict: Map<PickleValue<T>, PickleValue<T>>, items: PickleValue<T>[]): void => {
    if (items.length % 2 !== 0) fail('odd number of SETITEMS values');
    for (let i = 0; i < items.length; i += 2) dict.set(items[i]!, items[i + 1]!);
  };
  const memoGet = (index: number): PickleValue<T> => (memo.has(index) ? memo.get(index)! : fail(`memo ${index} unset`));

  for (;;) {
    const at = r.pos;
    const op = r.u8();
    switch (op) {
      case OP.PROTO:
        if (r.u8() > 5) fail('unsupported pickle protocol');
        break;
      case OP.FRAME:
        r.u64();
        break;
      case OP.STOP:
        if (marks.length > 0 || stack.length !== 1) fail('unbalanced stack at STOP');
        return stack[0]!;
      case OP.MARK:
        marks.push(stack);
        stack = [];
        break;
      case OP.POP:
        pop();
        break;
      case OP.POP_MARK:
        popMark();
        break;
      case OP.DUP:
        stack.push(top());
        break;
      case OP.NONE:
        stack.push(null);
        break;
      case OP.NEWTRUE:
        stack.push(true);
        break;
      case OP.NEWFALSE:
        stack.push(false);
        break;
      case OP.BININT:
        stack.push(r.i32());
        break;
      case OP.BININT1:
        stack.push(r.u8());
        break;
      case OP.BININT2:
        stack.push(r.u16());
        break;
      case OP.LONG1:
        stack.push(decodeLong(r.take(r.u8())));
        break;
      case OP.LONG4:
        stack.push(decodeLong(r.take(r.i32())));
        break;
      case OP.BINFLOAT:
        stack.push(r.f64be());
        break;
      case OP.SHORT_BINUNICODE:
        stack.push(utf8.decode(r.take(r.u8())));
        break;
      case OP.BINUNICODE:
        stack.push(utf8.decode(r.take(r.u32())));
        break;
      case OP.BINUNICODE8:
        stack.push(utf8.decode(r.take(r.u64())));
        break;
      case OP.EMPTY_DICT:
        stack.push(new Map());
        break;
      case OP.EMPTY_LIST:
        stack.push([]);
        break;
      case OP.EMPTY_TUPLE:
        stack.push([]);
        break;
      case OP.DICT: {
        const dict = new Map<PickleValue<T>, PickleValue<T>>();
        setItems(dict, popMark());
        stack.push(dict); // after popMark, which replaces `stack`
        break;
      }
      case OP.LIST:
      case OP.TUPLE: {
        const items = popMark(); // before `stack.push`: popMark replaces `stack`
        stack.push(items);
        break;
      }
      case OP.TUPLE1:
        stack.push([pop()]);
        break;
      case OP.TUPLE2: {
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case OP.TUPLE3: {
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case OP.SETITEM: {
        const value = pop();
        const key = pop();
        asDict(top()).set(key, value);
        break;
      }
      case OP.SETITEMS: {
        const items = popMark();
        setItems(asDict(top()), items);
        break;
      }
      case OP.APPEND: {
        const value = pop();
        asList(top()).push(value);
        break;
      }
      case OP.APPENDS: {
        const items = popMark();
        const list = asList(top());
        for (const item of items) list.push(item);
        break;
      }
      case OP.BUILD:
        // Only a dict's instance state (an OrderedDict's `_metadata`) is accepted, and dropped.
        pop();
        if (!(top() instanceof Map)) fail('BUILD is only allowed on a dict');
        break;
      case OP.BINPUT:
        memo.set(r.u8(), top());
        break;
      case OP.LONG_BINPUT:
        memo.set(r.u32(), top());
        break;
      case OP.MEMOIZE:
        memo.set(memo.size, top());
        break;
      case OP.BINGET:
        stack.push(memoGet(r.u8()));
        break;
      case OP.LONG_BINGET:
        stack.push(memoGet(r.u32()));
        break;
      case OP.GLOBAL: {
        const module = r.line();
        stack.push(loadGlobal(module, r.line()));
        break;
      }
      case OP.STACK_GLOBAL: {
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        stack.push(loadGlobal(module as string, name as string));
        break;
      }
      case OP.REDUCE: {
        const args = pop();
        const fn = pop();
        if (!(fn instanceof PickleCallable)) fail('REDUCE on something that is not an allowed callable');
        if (!Array.isArray(args)) fail('REDUCE arguments are not a tuple');
        stack.push((fn as PickleCallable<T>).call(args as PickleValue<T>[]));
        break;
      }
      case OP.BINPERSID: {
        if (!options.persistentLoad) fail('persistent id without a loader');
        stack.push(options.persistentLoad!(pop()));
        break;
      }
      default: {
        const name = refusedOps.get(op);
        throw new AttnscopeError(
          `${label}: refusing pickle opcode 0x${op.toString(16).padStart(2, '0')}${name ? ` (${name})` : ''} at byte ${at} (${options.refusal})`,
        );
      }
    }
  }
}
