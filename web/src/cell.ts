// A cell's view: its DOM, its editor (a CodeMirror 6 editor bound to the cell's source through
// y-codemirror.next, so everyone's cursors show; made only when the cell comes near the screen
// or is used), its outputs, and its run and lock as `state` shows them. It listens to its cell's
// model: outputs are drawn again only when they change, never because someone typed.
import * as Y from 'yjs';
import { EditorState, Compartment, Extension } from '@codemirror/state';
import {
  EditorView,
  keymap,
  drawSelection,
  highlightActiveLine,
  lineNumbers,
} from '@codemirror/view';
import { defaultKeymap } from '@codemirror/commands';
import { syntaxHighlighting, defaultHighlightStyle, bracketMatching } from '@codemirror/language';
import { python } from '@codemirror/lang-python';
import { markdown } from '@codemirror/lang-markdown';
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next';
import type { Awareness } from 'y-protocols/awareness';
import type { Commands } from './commands';
import type { CellModel, ExecutionEntry, LockEntry, OutputsChange } from './model';
import { OutputArea, renderMarkdown } from './outputs';
import { el } from './util';

/** Makes editors for cells within a screen or so of the viewport (a thousand editors made at
 * once would keep a big notebook from being usable for seconds). */
export class LazyEditors {
  private makers = new WeakMap<Element, () => void>();
  private observer = new IntersectionObserver(
    (entries) => {
      for (const entry of entries) if (entry.isIntersecting) this.makers.get(entry.target)?.();
    },
    { rootMargin: '800px 0px' },
  );

  watch(root: Element, make: () => void) {
    this.makers.set(root, make);
    this.observer.observe(root);
  }

  forget(root: Element) {
    this.observer.unobserve(root);
  }
}

/** What a cell view needs from its page. */
export interface CellViewHost {
  awareness: Awareness;
  commands: Commands;
  lazy: LazyEditors;
  can(capability: string): boolean;
  /** The cell's type or source was replaced: the page makes its view again. */
  rebuild(cell: CellModel): void;
}

const editableExt = (on: boolean): Extension => [
  EditorView.editable.of(on),
  EditorState.readOnly.of(!on),
];

export class CellView {
  readonly root: HTMLElement;
  /** Where a prompt of `input()` asks us (and only us, who ran the cell) for an answer. */
  readonly stdin: HTMLElement;
  /** The people whose cursor is in this cell. */
  readonly presence: HTMLElement;
  private prompt: HTMLElement;
  private status: HTMLElement;
  private lockButton: HTMLElement;
  private editorHost: HTMLElement;
  private rendered: HTMLElement;
  private placeholder: HTMLElement;
  private outputs: OutputArea;
  private editable = new Compartment();
  private made: EditorView | null = null;
  /** Another person holds this cell: we may not type in it. */
  private heldByOther = false;
  /** What the cell last showed of its run and lock. */
  private painted: string | null = null;
  /** Output changes waiting for the next frame (streams write many times a frame). */
  private pendingOutputs: Set<unknown> | 'all' | null = null;
  private disconnect: () => void;

  constructor(
    readonly cell: CellModel,
    private host: CellViewHost,
  ) {
    const { commands } = host;
    const type = cell.type;
    this.prompt = el('div', { class: 'prompt' }, '');
    this.presence = el('div', { class: 'presence' });
    this.status = el('div', { class: 'run-status' }, '');
    const runButton = el('button', { class: 'run', title: 'Run (Shift+Enter)' }, '▶');
    const deleteButton = el('button', { class: 'delete', title: 'Delete cell (D D)' }, '✕');
    this.lockButton = el('button', { class: 'lock', title: 'Hold this cell: others cannot change it until you let go' }, 'hold');
    this.lockButton.addEventListener('click', () => {
      void commands.toggleLock(cell, this.lockButton.dataset.held === 'true');
    });
    const upButton = el('button', { class: 'move-up', title: 'Move up' }, '↑');
    const downButton = el('button', { class: 'move-down', title: 'Move down' }, '↓');
    upButton.addEventListener('click', () => commands.moveCell(cell, -1));
    downButton.addEventListener('click', () => commands.moveCell(cell, 1));
    const typeSelect = el(
      'select',
      { class: 'cell-type', 'aria-label': 'Cell type' },
      ...['code', 'markdown', 'raw'].map((t) => el('option', { value: t }, t)),
    ) as HTMLSelectElement;
    typeSelect.value = cell.typeName;
    typeSelect.addEventListener('change', () => {
      if (!commands.setType(cell, typeSelect.value)) typeSelect.value = cell.typeName;
    });
    this.editorHost = el('div', { class: 'editor' });
    this.rendered = el('div', { class: 'markdown rendered', hidden: '' });
    this.outputs = new OutputArea(el('div', { class: 'outputs' }));
    this.stdin = el('div', { class: 'stdin' });
    this.root = el(
      'section',
      { class: `cell cell-${cell.typeName}`, 'data-cell-id': cell.id },
      el('div', { class: 'gutter' }, this.prompt, runButton, this.presence),
      el('div', { class: 'body' }, this.editorHost, this.rendered, this.outputs.node, this.stdin, this.status),
      el('div', { class: 'tools' }, typeSelect, this.lockButton, upButton, downButton, deleteButton),
    );
    // Until the editor exists, the source shows as plain text.
    this.placeholder = el('pre', { class: 'source-placeholder' }, cell.source.toString());
    this.editorHost.append(this.placeholder);
    cell.source.observe(this.follow);
    this.placeholder.addEventListener('mousedown', () => this.editor().focus());
    host.lazy.watch(this.root, () => this.editor());
    this.root.tabIndex = -1;
    this.root.addEventListener('keydown', (event) => commands.commandKey(event, cell, this.root));
    this.rendered.addEventListener('dblclick', () => {
      if (host.can('edit')) this.showEditor();
    });
    if (type === 'markdown' && cell.source.length > 0) this.renderMarkdownCell();
    runButton.addEventListener('click', () => void commands.run(cell));
    deleteButton.addEventListener('click', () => commands.deleteCell(cell));
    this.disconnect = cell.changed.connect((change) => {
      switch (change.kind) {
        case 'type':
        case 'source':
          host.rebuild(cell);
          break;
        case 'executionCount':
          this.paintPrompt();
          break;
        case 'outputs':
          this.queueOutputs(change.changed);
          break;
      }
    });
    this.paintPrompt();
    this.outputs.render(cell.outputs(), 'all');
  }

  /** The cell's editor, made now if it was not yet. */
  editor(): EditorView {
    if (this.made) return this.made;
    this.cell.source.unobserve(this.follow);
    this.placeholder.remove();
    this.made = this.makeEditor();
    this.host.lazy.forget(this.root);
    return this.made;
  }

  hasEditor(): boolean {
    return this.made !== null;
  }

  /** The editor of a rendered markdown cell, to type in. */
  showEditor() {
    this.rendered.hidden = true;
    this.editorHost.hidden = false;
    this.editor().focus();
  }

  /** Makes the editor follow what we may do (call when rights change). */
  reflectRights() {
    this.made?.dispatch({ effects: this.editable.reconfigure(editableExt(this.mayType())) });
  }

  /** Shows the cell's run and lock (`state.executions` and `state.locks` of this cell). */
  showState(run: ExecutionEntry | undefined, lock: LockEntry | undefined, me: string) {
    const parts: string[] = [];
    if (run && (run.status === 'queued' || run.status === 'running')) {
      parts.push(`${run.status}, started by ${run.by?.name ?? 'someone'}`);
    } else if (run?.by?.name && run.status) {
      parts.push(`ran by ${run.by.name} (${run.status})`);
    }
    const holder = lock?.edit?.by;
    const heldByOther = Boolean(holder && holder.username !== me);
    const heldByMe = Boolean(holder && holder.username === me);
    if (holder && heldByOther) parts.push(`${holder.name} is editing`);
    // (The server writes `state` after every save: a cell whose run and lock are as shown is
    // not touched, or a big notebook would be laid out again each time.)
    const key = `${parts.join(' · ')}|${run?.status ?? ''}|${heldByMe}|${heldByOther}`;
    if (this.painted === key) return;
    this.painted = key;
    const lockChanged = this.heldByOther !== heldByOther;
    this.heldByOther = heldByOther;
    this.lockButton.dataset.held = String(heldByMe);
    this.lockButton.textContent = heldByMe ? 'release' : 'hold';
    this.lockButton.toggleAttribute('disabled', heldByOther);
    this.root.classList.toggle('locked', heldByOther);
    if (lockChanged) this.reflectRights();
    this.status.textContent = parts.join(' · ');
    if (run?.status !== 'running') this.stdin.replaceChildren();
    this.root.dataset.run = run?.status ?? '';
  }

  dispose() {
    this.disconnect();
    this.cell.source.unobserve(this.follow);
    this.host.lazy.forget(this.root);
    this.made?.destroy();
    this.root.remove();
  }

  private mayType(): boolean {
    return this.host.can('edit') && !this.heldByOther;
  }

  private follow = () => {
    this.placeholder.textContent = this.cell.source.toString();
  };

  private queueOutputs(changed: OutputsChange) {
    const first = this.pendingOutputs === null;
    if (changed === 'all' || this.pendingOutputs === 'all') this.pendingOutputs = 'all';
    else {
      this.pendingOutputs ??= new Set();
      for (const item of changed) this.pendingOutputs.add(item);
    }
    if (!first) return;
    requestAnimationFrame(() => {
      const pending = this.pendingOutputs ?? 'all';
      this.pendingOutputs = null;
      this.outputs.render(this.cell.outputs(), pending);
    });
  }

  private paintPrompt() {
    const count = this.cell.executionCount;
    this.prompt.textContent = this.cell.typeName === 'code' ? `[${count ?? ' '}]:` : '';
  }

  private renderMarkdownCell() {
    if (this.cell.typeName !== 'markdown') return;
    renderMarkdown(this.rendered, this.cell.source.toString());
    this.rendered.hidden = false;
    this.editorHost.hidden = true;
  }

  private makeEditor(): EditorView {
    const { cell, host } = this;
    const { commands } = host;
    const runKeys = keymap.of([
      {
        key: 'Shift-Enter',
        run: () => {
          commands.runAndAdvance(cell);
          this.renderMarkdownCell();
          return true;
        },
      },
      {
        key: 'Mod-Enter',
        run: () => {
          void commands.run(cell);
          this.renderMarkdownCell();
          return true;
        },
      },
      {
        key: 'Escape',
        run: (view) => {
          view.contentDOM.blur();
          this.root.focus();
          this.renderMarkdownCell();
          return true;
        },
      },
    ]);
    const type = cell.typeName;
    return new EditorView({
      parent: this.editorHost,
      state: EditorState.create({
        doc: cell.source.toString(),
        extensions: [
          runKeys,
          keymap.of([...yUndoManagerKeymap, ...defaultKeymap]),
          lineNumbers(),
          drawSelection(),
          highlightActiveLine(),
          bracketMatching(),
          syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
          type === 'markdown' ? markdown() : type === 'code' ? python() : [],
          this.editable.of(editableExt(this.mayType())),
          yCollab(cell.source, host.awareness, { undoManager: new Y.UndoManager(cell.source) }),
          EditorView.lineWrapping,
        ],
      }),
    });
  }
}
