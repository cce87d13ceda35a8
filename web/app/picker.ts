/**
 * The model picker: a button opening a searchable list of the server's models (↑ ↓ Enter, Esc),
 * where a Hub id typed and entered is picked as it is (the server downloads it). The app has one
 * for model A and, in compare mode, one for model B (test ids prefixed `b-`).
 */
import type { ModelEntry } from '../../src/server/protocol.js';
import { h, replaceChildren } from '../dom.js';

export interface PickerSource {
  models(): readonly ModelEntry[];
  hubDownloads(): boolean;
}

export class ModelPicker {
  readonly el: HTMLElement;
  private current = '';
  private readonly button: HTMLButtonElement;
  private readonly search: HTMLInputElement;
  private readonly list: HTMLUListElement;
  private readonly hint: HTMLParagraphElement;
  private readonly panel: HTMLDivElement;

  constructor(
    private readonly source: PickerSource,
    private readonly onPick: (id: string) => void,
    /** Prefix of the test ids ('' for A, 'b-' for B). */
    private readonly prefix = '',
    label = 'Pick a model (/)',
  ) {
    const p = prefix;
    this.button = h('button', { type: 'button', class: 'picker-button', testid: `${p}model-button`, 'aria-haspopup': 'listbox', title: label });
    this.search = h('input', { type: 'search', class: 'picker-search', testid: `${p}model-search`, placeholder: 'Search models, or type a Hub id (org/name) and press Enter', 'aria-label': 'search models', autocomplete: 'off', spellcheck: false });
    this.list = h('ul', { class: 'picker-list', testid: `${p}model-list`, role: 'listbox' });
    this.hint = h('p', { class: 'picker-hint muted', testid: `${p}picker-hint` });
    this.panel = h('div', { class: 'picker-panel', testid: `${p}model-panel`, hidden: true }, this.search, this.list, this.hint);
    this.el = h('div', { class: 'picker' }, this.button, this.panel);
    this.button.addEventListener('click', () => this.open(this.panel.hidden));
    this.search.addEventListener('input', () => this.renderList());
    this.search.addEventListener('keydown', (e) => this.searchKey(e));
    this.list.addEventListener('keydown', (e) => this.listKey(e));
    document.addEventListener('click', (e) => {
      if (e.isTrusted && !this.panel.hidden && !this.el.contains(e.target as Node)) this.open(false);
    });
  }

  get isOpen(): boolean {
    return !this.panel.hidden;
  }

  /** Shows `id` as the current model. */
  show(id: string): void {
    this.current = id;
    const entry = this.source.models().find((m) => m.id === id);
    replaceChildren(this.button, h('span', { class: 'picker-model', testid: `${this.prefix}model-current` }, entry?.label ?? id), h('span', { class: 'caret' }, '▾'));
    this.button.title = `${id} · pick a model${this.prefix ? '' : ' (/)'}`;
  }

  open(open: boolean): void {
    this.panel.hidden = !open;
    this.button.setAttribute('aria-expanded', String(open));
    if (open) {
      this.search.value = '';
      this.renderList();
      this.search.focus();
    }
  }

  focusButton(): void {
    this.button.focus();
  }

  private filtered(): ModelEntry[] {
    const words = this.search.value.toLowerCase().split(/\s+/).filter(Boolean);
    return this.source.models().filter((m) => {
      const hay = `${m.label} ${m.id} ${m.modelType ?? ''} ${m.origin}`.toLowerCase();
      return words.every((w) => hay.includes(w));
    });
  }

  renderList(): void {
    const shown = this.filtered();
    const all = this.source.models();
    const origin: Record<ModelEntry['origin'], string> = { default: 'embedded', folder: 'folder', 'hf-cache': 'HF cache', hub: 'Hub' };
    replaceChildren(
      this.list,
      ...shown.slice(0, 200).map((m) => {
        const b = h(
          'button',
          { type: 'button', class: `picker-item${m.id === this.current ? ' current' : ''}`, testid: `${this.prefix}model-item`, 'data-id': m.id, role: 'option', 'aria-selected': m.id === this.current ? 'true' : 'false', title: m.id },
          h('span', { class: 'picker-label' }, m.label),
          h('span', { class: 'picker-tags' }, m.modelType ? h('span', { class: 'tag' }, m.modelType) : null, h('span', { class: 'tag muted' }, origin[m.origin]), m.loaded ? h('span', { class: 'tag loaded', title: 'in memory' }, '●') : null),
        );
        b.addEventListener('click', () => this.pick(m.id));
        return h('li', {}, b);
      }),
    );
    const q = this.search.value.trim();
    this.hint.textContent =
      shown.length === 0 && q
        ? this.source.hubDownloads()
          ? `No model matches. Enter loads “${q}” from the Hugging Face Hub (downloaded once into its cache).`
          : `No model matches, and the server is offline (HF_HUB_OFFLINE): only cached Hub models can be used.`
        : `${shown.length} of ${all.length} models · ↑↓ Enter to pick · a Hub id (org/name) + Enter downloads it`;
  }

  private searchKey(e: KeyboardEvent): void {
    const items = [...this.list.querySelectorAll<HTMLButtonElement>('.picker-item')];
    const at = items.indexOf(document.activeElement as HTMLButtonElement);
    if (e.key === 'ArrowDown' && items.length) {
      e.preventDefault();
      items[Math.min(items.length - 1, at + 1)]!.focus();
    } else if (e.key === 'Enter') {
      e.preventDefault();
      const q = this.search.value.trim();
      const first = this.filtered()[0];
      if (first) this.pick(first.id);
      else if (q) this.pick(q);
    } else if (e.key === 'Escape') {
      this.open(false);
      this.button.focus();
    }
  }

  /** ↑ ↓ move through the list (↑ from the first item goes back to the search), Esc closes it. */
  private listKey(e: KeyboardEvent): void {
    const items = [...this.list.querySelectorAll<HTMLButtonElement>('.picker-item')];
    const at = items.indexOf(document.activeElement as HTMLButtonElement);
    if (e.key === 'ArrowDown') items[Math.min(items.length - 1, at + 1)]?.focus();
    else if (e.key === 'ArrowUp') (at <= 0 ? this.search : items[at - 1]!).focus();
    else if (e.key === 'Escape') {
      this.open(false);
      this.button.focus();
    } else return;
    e.preventDefault();
    e.stopPropagation();
  }

  private pick(id: string): void {
    this.open(false);
    if (id === this.current) return;
    this.show(id);
    this.onPick(id);
  }
}
