/**
 * A small strict XML parser for tests (no dependency): elements, attributes, text, comments,
 * <style> CDATA-free content. Throws on anything not well-formed: unbalanced or crossed tags,
 * unquoted or duplicate attributes, a raw `<` or `&` in text or attributes, unknown entities,
 * characters XML 1.0 forbids.
 */
export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  /** Text directly inside this element (entities decoded). */
  text: string;
}

const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
// eslint-disable-next-line no-control-regex
const FORBIDDEN = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/;

function decode(raw: string, where: number): string {
  if (FORBIDDEN.test(raw)) throw new Error(`XML: forbidden character near ${where}`);
  if (raw.includes('<')) throw new Error(`XML: raw '<' near ${where}`);
  return raw.replace(/&([^;]*);|&/g, (m, name: string | undefined) => {
    if (name === undefined) throw new Error(`XML: bare '&' near ${where}`);
    if (name.startsWith('#x')) return String.fromCodePoint(parseInt(name.slice(2), 16));
    if (name.startsWith('#')) return String.fromCodePoint(parseInt(name.slice(1), 10));
    const e = ENTITIES[name];
    if (e === undefined) throw new Error(`XML: unknown entity &${name}; near ${where}`);
    return e;
  });
}

export function parseXml(xml: string): XmlElement {
  let i = 0;
  const root: XmlElement = { name: '#document', attrs: {}, children: [], text: '' };
  const stack: XmlElement[] = [root];
  const NAME = /[A-Za-z_:][\w:.-]*/y;
  while (i < xml.length) {
    const lt = xml.indexOf('<', i);
    const textEnd = lt < 0 ? xml.length : lt;
    if (textEnd > i) {
      const t = decode(xml.slice(i, textEnd), i);
      if (stack.length === 1 && t.trim() !== '') throw new Error(`XML: text outside the root element near ${i}`);
      stack[stack.length - 1]!.text += t;
    }
    if (lt < 0) break;
    i = lt;
    if (xml.startsWith('<!--', i)) {
      const end = xml.indexOf('-->', i);
      if (end < 0) throw new Error('XML: unterminated comment');
      i = end + 3;
      continue;
    }
    if (xml.startsWith('<?', i)) {
      const end = xml.indexOf('?>', i);
      if (end < 0) throw new Error('XML: unterminated processing instruction');
      i = end + 2;
      continue;
    }
    if (xml.startsWith('</', i)) {
      NAME.lastIndex = i + 2;
      const m = NAME.exec(xml);
      if (!m) throw new Error(`XML: bad closing tag near ${i}`);
      const open = stack.pop();
      if (!open || open.name !== m[0] || stack.length === 0) throw new Error(`XML: </${m[0]}> does not close <${open?.name}> near ${i}`);
      i = NAME.lastIndex;
      while (/\s/.test(xml[i] ?? '')) i++;
      if (xml[i] !== '>') throw new Error(`XML: bad closing tag near ${i}`);
      i++;
      continue;
    }
    NAME.lastIndex = i + 1;
    const m = NAME.exec(xml);
    if (!m) throw new Error(`XML: bad tag near ${i}`);
    const el: XmlElement = { name: m[0], attrs: {}, children: [], text: '' };
    i = NAME.lastIndex;
    for (;;) {
      const ws = /\s*/y;
      ws.lastIndex = i;
      ws.exec(xml);
      const hadSpace = ws.lastIndex > i;
      i = ws.lastIndex;
      if (xml.startsWith('/>', i)) {
        i += 2;
        stack[stack.length - 1]!.children.push(el);
        break;
      }
      if (xml[i] === '>') {
        i++;
        stack[stack.length - 1]!.children.push(el);
        stack.push(el);
        break;
      }
      if (!hadSpace) throw new Error(`XML: attributes must be separated by spaces near ${i}`);
      NAME.lastIndex = i;
      const a = NAME.exec(xml);
      if (!a) throw new Error(`XML: bad attribute near ${i}: ${xml.slice(i, i + 30)}`);
      i = NAME.lastIndex;
      if (xml[i] !== '=') throw new Error(`XML: attribute ${a[0]} without a value near ${i}`);
      const q = xml[i + 1];
      if (q !== '"' && q !== "'") throw new Error(`XML: unquoted attribute ${a[0]} near ${i}`);
      const end = xml.indexOf(q, i + 2);
      if (end < 0) throw new Error('XML: unterminated attribute');
      if (a[0] in el.attrs) throw new Error(`XML: duplicate attribute ${a[0]} near ${i}`);
      el.attrs[a[0]] = decode(xml.slice(i + 2, end), i);
      i = end + 1;
    }
    if (stack.length === 1 && root.children.length > 1) throw new Error('XML: more than one root element');
  }
  if (stack.length !== 1) throw new Error(`XML: <${stack[stack.length - 1]!.name}> is never closed`);
  if (root.children.length !== 1) throw new Error('XML: no root element');
  return root.children[0]!;
}

/** Every element in document order (depth first). */
export function allElements(el: XmlElement): XmlElement[] {
  const out: XmlElement[] = [el];
  for (const c of el.children) out.push(...allElements(c));
  return out;
}

/** Elements matching a name and, optionally, a predicate on attributes. */
export function findAll(el: XmlElement, name: string, pred: (attrs: Record<string, string>) => boolean = () => true): XmlElement[] {
  return allElements(el).filter((e) => e.name === name && pred(e.attrs));
}

/** All text under an element. */
export function textOf(el: XmlElement): string {
  return el.text + el.children.map(textOf).join('');
}
