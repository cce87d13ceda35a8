/**
 * CSV as Python's csv module reads and writes it with the default ("excel") dialect: fields
 * separated by commas, quoted with '"' when they hold a comma, a quote or a line break, a quote
 * inside a quoted field doubled. Line ends: \n or \r\n.
 */
import { AttnscopeError } from '../../core/errors.js';

/** The rows of a CSV text; `what` names the file in errors (an unterminated quote). */
export function parseCsv(text: string, what = 'CSV'): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  let i = 0;
  const n = text.length;
  let line = 1;
  let quoteLine = 0;
  let rowHasContent = false;
  while (i < n) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i += 2;
          continue;
        }
        quoted = false;
        i++;
        continue;
      }
      if (c === '\n') line++;
      field += c;
      i++;
      continue;
    }
    if (c === '"' && field === '') {
      quoted = true;
      quoteLine = line;
      rowHasContent = true;
      i++;
    } else if (c === ',') {
      row.push(field);
      field = '';
      rowHasContent = true;
      i++;
    } else if (c === '\r' || c === '\n') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      i++;
      line++;
      if (rowHasContent || field !== '') {
        row.push(field);
        rows.push(row);
      }
      row = [];
      field = '';
      rowHasContent = false;
    } else {
      field += c;
      rowHasContent = true;
      i++;
    }
  }
  if (quoted) throw new AttnscopeError(`${what}: a quoted field opened on line ${quoteLine} is never closed`);
  if (rowHasContent || field !== '') {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

/** Rows of a CSV with a header, as objects keyed by the header's names; `required` columns must exist. */
export function csvRecords(text: string, what: string, required: readonly string[]): Record<string, string>[] {
  const [header, ...rows] = parseCsv(text, what);
  if (!header) throw new AttnscopeError(`${what}: empty file (expected a header with ${required.join(', ')})`);
  const missing = required.filter((c) => !header.includes(c));
  if (missing.length > 0) throw new AttnscopeError(`${what}: no column ${missing.join(', ')} in the header (it has ${header.join(', ')})`);
  return rows.map((r) => Object.fromEntries(header.map((h, k) => [h, r[k] ?? ''])));
}

/** One CSV line (no line end) with QUOTE_MINIMAL quoting. */
export function csvLine(fields: readonly (string | number)[]): string {
  return fields.map((f) => {
    const s = typeof f === 'number' ? pyFloatRepr(f) : f;
    return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  }).join(',');
}

/** A number as Python's repr writes it: integers as themselves, other floats shortest round-trip (1.0, -45.123, 1e-05). */
export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  const s = String(x);
  const m = /^(-?[\d.]+)e([+-])(\d+)$/.exec(s);
  if (m) {
    const mant = m[1]!;
    return `${mant}e${m[2]}${m[3]!.padStart(2, '0')}`;
  }
  // Python switches to exponent form from 1e16 and below 1e-4; JS from 1e21 and below 1e-6.
  const abs = Math.abs(x);
  if (abs !== 0 && (abs >= 1e16 || abs < 1e-4)) {
    const e = x.toExponential();
    const [mant, exp] = e.split('e') as [string, string];
    const sign = exp.startsWith('-') ? '-' : '+';
    return `${mant}e${sign}${exp.replace(/^[+-]/, '').padStart(2, '0')}`;
  }
  return Number.isInteger(x) ? `${s}.0` : s;
}
