// The live notebook page: cells bound to the shared Yjs document (CodeMirror 6 editors through
// y-codemirror.next, so everyone's cursors show), outputs, runs, presence and what the
// connection may do. The server enforces every right; the page only reflects them.
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
import { RoomProvider, Status } from './provider';
import { renderOutputs, renderMarkdown } from './outputs';
import { el, Me, api } from './util';
import { mountSharePanel } from './share';
import { mountChat } from './chat';

type Caps = Set<string>;

interface CellView {
  map: Y.Map<any>;
  root: HTMLElement;
  /** Where a prompt of `input()` asks us (and only us, who ran the cell) for an answer. */
  stdin: HTMLElement;
  lockButton: HTMLElement;
  presence: HTMLElement;
  /** The cell's editor, made when the cell first comes near the screen or is used. */
  editor: () => EditorView;
  hasEditor: () => boolean;
  outputs: HTMLElement;
  prompt: HTMLElement;
  status: HTMLElement;
  rendered: HTMLElement;
  editable: Compartment;
  language: Compartment;
  type: string;
  unobserve: () => void;
}

export interface NotebookOptions {
  /** The notebook by its path in our own space, or … */
  path?: string;
  /** … by its id (one shared with us from someone else's space). */
  fileId?: string;
  me: Me;
}

export async function mountNotebook(root: HTMLElement, options: NotebookOptions) {
  const { me } = options;
  // Shared with us by id: it lives in someone else's space (no session of ours names it).
  const shared = options.fileId !== undefined;
  let path = options.path ?? '';
  let session: { fileId: string; sessionId: string | null };
  if (options.fileId !== undefined) {
    const info = await api('GET', `/api/notebooks/${encodeURIComponent(options.fileId)}`);
    path = info.path;
    session = { fileId: info.file_id, sessionId: null };
  } else {
    session = await api('PUT', `/api/collaboration/session/${encodeURIComponent(path)}`, {
      format: 'json',
      type: 'notebook',
    });
  }
  const doc = new Y.Doc();
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const query = session.sessionId ? `?sessionId=${session.sessionId}` : '';
  const url = `${scheme}://${location.host}/api/collaboration/room/json:notebook:${session.fileId}${query}`;
  const provider = new RoomProvider(url, doc);
  provider.awareness.setLocalStateField('user', me.identity);
  // What we may do arrives from the server when we join (and again whenever it changes).
  let caps: Caps = new Set();

  // The page's frame: header (name, kernel, people, save), banner, cells.
  const title = el('h1', { class: 'nb-title' }, path.split('/').pop() ?? path);
  const kernel = el('span', { class: 'kernel-status', 'data-status': 'none' }, 'no kernel');
  const people = el('ul', { class: 'people', 'aria-label': 'People here' });
  const saved = el('span', { class: 'save-state' }, '');
  const connection = el('span', { class: 'connection' }, 'connecting…');
  const saveButton = el('button', { class: 'save', title: 'Save (Ctrl+S)' }, 'Save');
  const runAllButton = el('button', { class: 'run-all' }, 'Run all');
  const interruptButton = el('button', { class: 'interrupt' }, 'Interrupt');
  const restartButton = el('button', { class: 'restart' }, 'Restart');
  const addButton = el('button', { class: 'add-cell' }, '+ Cell');
  const shareButton = el('button', { class: 'share', hidden: '' }, 'Share');
  const checkpointButton = el('button', { class: 'checkpoint', hidden: '', title: 'Keep a copy of the saved notebook to come back to' }, 'Checkpoint');
  const revertButton = el('button', { class: 'revert', hidden: '', title: 'Go back to the checkpoint' }, 'Revert');
  const banner = el('div', { class: 'banner', role: 'status', hidden: '' });
  const cellsBox = el('main', { class: 'cells' });
  const sharePanel = el('section', { class: 'share-panel panel', hidden: '' });
  const chatPanel = el('section', { class: 'chat panel' });
  const side = el('aside', { class: 'side' }, sharePanel, chatPanel);
  const header = el(
    'header',
    { class: 'nb-header' },
    el('a', { href: '/', class: 'home', title: 'Files' }, 'Quire'),
    title,
    kernel,
    connection,
    saved,
    el('span', { class: 'spacer' }),
    addButton,
    runAllButton,
    interruptButton,
    restartButton,
    saveButton,
    checkpointButton,
    revertButton,
    shareButton,
    people,
  );
  root.replaceChildren(header, banner, el('div', { class: 'workspace' }, cellsBox, side));
  const chat = mountChat(chatPanel, provider);
  let share: { refresh: () => Promise<void> } | null = null;
  shareButton.addEventListener('click', () => {
    sharePanel.hidden = !sharePanel.hidden;
    if (!sharePanel.hidden) {
      if (!share) share = mountSharePanel(sharePanel, session.fileId);
      else void share.refresh();
    }
  });

  const cells = doc.getArray<Y.Map<any>>('cells');
  const state = doc.getMap<any>('state');
  const views = new Map<Y.Map<any>, CellView>();
  // What each cell last showed of its run and lock, and the cells others hold.
  const painted = new WeakMap<CellView, string>();
  const lockedByOthers = new Set<string>();
  // Editors are made for cells within a screen or so of the viewport.
  const editors = new WeakMap<Element, () => EditorView>();
  const lazy = new IntersectionObserver(
    (entries) => {
      for (const entry of entries) if (entry.isIntersecting) editors.get(entry.target)?.();
    },
    { rootMargin: '800px 0px' },
  );
  let synced = false;

  const can = (cap: string) => caps.has(cap);
  const showBanner = (text: string, kind = 'info') => {
    banner.textContent = text;
    banner.dataset.kind = kind;
    banner.hidden = !text;
  };
  const reflectCaps = () => {
    const canEdit = can('edit');
    const canRun = can('execute');
    document.body.classList.toggle('read-only', !canEdit);
    document.body.classList.toggle('can-run', canRun);
    addButton.hidden = !canEdit;
    saveButton.hidden = !can('save');
    shareButton.hidden = !can('manage');
    // Checkpoints live beside the file: for those working in its folder, not for link guests.
    checkpointButton.hidden = !can('save') || Boolean(me.guest) || shared;
    revertButton.hidden = checkpointButton.hidden || !hasCheckpoint;
    if (!can('manage')) sharePanel.hidden = true;
    chat.setCanPost(canEdit);
    for (const b of [runAllButton, interruptButton, restartButton]) b.hidden = !canRun;
    for (const view of views.values()) {
      if (!view.hasEditor()) continue;
      view.editor().dispatch({
        effects: view.editable.reconfigure(
          editableExt(canEdit && !lockedByOthers.has(cellId(view.map))),
        ),
      });
    }
    if (!canEdit && banner.dataset.kind !== 'error') {
      showBanner('You are watching this notebook: you can see every change, but not make any.');
    } else if (banner.dataset.kind === 'info') {
      showBanner('');
    }
  };

  const editableExt = (on: boolean): Extension => [
    EditorView.editable.of(on),
    EditorState.readOnly.of(!on),
  ];

  const cellId = (map: Y.Map<any>) => String(map.get('id') ?? '');
  const indexOf = (map: Y.Map<any>) => cells.toArray().indexOf(map);

  async function run(map: Y.Map<any>) {
    if (!can('execute') || map.get('cell_type') !== 'code') return;
    const answer = await provider.request({ type: 'execute', cell_id: cellId(map) });
    if (answer.status !== 'queued') showBanner(answer.reason ?? 'the run was refused', 'error');
  }

  function focusCell(index: number) {
    const map = cells.get(Math.max(0, Math.min(index, cells.length - 1)));
    const view = map && views.get(map);
    if (view) {
      view.editor().focus();
      view.root.scrollIntoView({ block: 'nearest' });
    }
  }

  function insertCell(at: number, type = 'code') {
    if (!can('edit')) return;
    const map = new Y.Map<any>();
    doc.transact(() => {
      map.set('id', crypto.randomUUID().replace(/-/g, '').slice(0, 8));
      map.set('cell_type', type);
      map.set('source', new Y.Text());
      map.set('metadata', new Y.Map());
      if (type === 'code') {
        map.set('execution_count', null);
        map.set('outputs', new Y.Array());
      }
      cells.insert(at, [map]);
    });
    queueMicrotask(() => focusCell(at));
  }

  /** Moves a cell (a copy keeps its id, source, outputs and metadata). */
  function moveCell(map: Y.Map<any>, by: number) {
    const from = indexOf(map);
    const to = from + by;
    if (!can('edit') || from < 0 || to < 0 || to >= cells.length) return;
    doc.transact(() => {
      const copy = map.clone();
      cells.delete(from, 1);
      cells.insert(to, [copy]);
    });
    queueMicrotask(() => views.get(cells.get(to))?.root.focus());
  }

  /** Jupyter's command mode: keys on a selected cell (not in its editor). */
  let lastD = 0;
  function commandKey(event: KeyboardEvent, map: Y.Map<any>, rootEl: HTMLElement) {
    if (event.target !== rootEl || event.ctrlKey || event.metaKey || event.altKey) return;
    const at = indexOf(map);
    const select = (index: number) => {
      const next = cells.get(Math.max(0, Math.min(index, cells.length - 1)));
      views.get(next)?.root.focus();
    };
    const setType = (type: string) => {
      if (can('edit') && map.get('cell_type') !== type) {
        doc.transact(() => {
          map.set('cell_type', type);
          if (type === 'code' && !(map.get('outputs') instanceof Y.Array)) {
            map.set('outputs', new Y.Array());
            map.set('execution_count', null);
          }
        });
      }
    };
    let handled = true;
    switch (event.key) {
      case 'Enter':
        if (event.shiftKey) {
          void run(map);
          select(at + 1);
        } else {
          views.get(map)?.rendered.setAttribute('hidden', '');
          views.get(map)?.editor().focus();
        }
        break;
      case 'ArrowUp':
      case 'k':
        select(at - 1);
        break;
      case 'ArrowDown':
      case 'j':
        select(at + 1);
        break;
      case 'a':
        insertCell(at);
        break;
      case 'b':
        insertCell(at + 1);
        break;
      case 'd':
        if (Date.now() - lastD < 800) {
          if (can('edit')) cells.delete(at, 1);
          select(at);
          lastD = 0;
        } else lastD = Date.now();
        break;
      case 'm':
        setType('markdown');
        break;
      case 'y':
        setType('code');
        break;
      case 'r':
        setType('raw');
        break;
      default:
        handled = false;
    }
    if (handled) event.preventDefault();
  }

  function makeView(map: Y.Map<any>): CellView {
    const type = String(map.get('cell_type') ?? 'code');
    let text = map.get('source');
    if (!(text instanceof Y.Text)) {
      // Another client wrote a plain string: the editor needs a shared text.
      text = new Y.Text(typeof text === 'string' ? text : '');
    }
    const editable = new Compartment();
    const language = new Compartment();
    const prompt = el('div', { class: 'prompt' }, '');
    const presence = el('div', { class: 'presence' });
    const status = el('div', { class: 'run-status' }, '');
    const runButton = el('button', { class: 'run', title: 'Run (Shift+Enter)' }, '▶');
    const deleteButton = el('button', { class: 'delete', title: 'Delete cell (D D)' }, '✕');
    const lockButton = el('button', { class: 'lock', title: 'Hold this cell: others cannot change it until you let go' }, 'hold');
    lockButton.addEventListener('click', async () => {
      const mine = lockButton.dataset.held === 'true';
      const answer = await provider.request({ type: mine ? 'unlock' : 'lock', cell_id: cellId(map) });
      if (answer.status !== 'ok') showBanner(answer.reason ?? 'refused', 'error');
    });
    const upButton = el('button', { class: 'move-up', title: 'Move up' }, '↑');
    const downButton = el('button', { class: 'move-down', title: 'Move down' }, '↓');
    upButton.addEventListener('click', () => moveCell(map, -1));
    downButton.addEventListener('click', () => moveCell(map, 1));
    const typeSelect = el(
      'select',
      { class: 'cell-type', 'aria-label': 'Cell type' },
      ...['code', 'markdown', 'raw'].map((t) => el('option', { value: t }, t)),
    ) as HTMLSelectElement;
    typeSelect.value = type;
    const editorHost = el('div', { class: 'editor' });
    const rendered = el('div', { class: 'markdown rendered', hidden: '' });
    const outputs = el('div', { class: 'outputs' });
    const stdin = el('div', { class: 'stdin' });
    const rootEl = el(
      'section',
      { class: `cell cell-${type}`, 'data-cell-id': cellId(map) },
      el('div', { class: 'gutter' }, prompt, runButton, presence),
      el('div', { class: 'body' }, editorHost, rendered, outputs, stdin, status),
      el('div', { class: 'tools' }, typeSelect, lockButton, upButton, downButton, deleteButton),
    );
    const runKeys = keymap.of([
      {
        key: 'Shift-Enter',
        run: () => {
          void run(map);
          const next = indexOf(map) + 1;
          if (next >= cells.length) insertCell(next);
          else focusCell(next);
          renderMarkdownCell();
          return true;
        },
      },
      {
        key: 'Mod-Enter',
        run: () => {
          void run(map);
          renderMarkdownCell();
          return true;
        },
      },
      {
        key: 'Escape',
        run: (view) => {
          view.contentDOM.blur();
          rootEl.focus();
          renderMarkdownCell();
          return true;
        },
      },
    ]);
    // Until the editor exists, the source shows as plain text (a thousand editors made at
    // once would keep a big notebook from being usable for seconds).
    const placeholder = el('pre', { class: 'source-placeholder' }, text.toString());
    editorHost.append(placeholder);
    const follow = () => {
      placeholder.textContent = text.toString();
    };
    text.observe(follow);
    let made: EditorView | null = null;
    const editor = (): EditorView => {
      if (made) return made;
      text.unobserve(follow);
      placeholder.remove();
      made = makeEditor();
      lazy.unobserve(rootEl);
      return made;
    };
    placeholder.addEventListener('mousedown', () => {
      editor().focus();
    });
    const makeEditor = () => new EditorView({
      parent: editorHost,
      state: EditorState.create({
        doc: text.toString(),
        extensions: [
          runKeys,
          keymap.of([...yUndoManagerKeymap, ...defaultKeymap]),
          lineNumbers(),
          drawSelection(),
          highlightActiveLine(),
          bracketMatching(),
          syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
          language.of(type === 'markdown' ? markdown() : type === 'code' ? python() : []),
          editable.of(editableExt(can('edit') && !lockedByOthers.has(cellId(map)))),
          yCollab(text, provider.awareness, { undoManager: new Y.UndoManager(text) }),
          EditorView.lineWrapping,
        ],
      }),
    });
    lazy.observe(rootEl);
    editors.set(rootEl, editor);
    rootEl.tabIndex = -1;
    rootEl.addEventListener('keydown', (event) => commandKey(event, map, rootEl));
    const renderMarkdownCell = () => {
      if (map.get('cell_type') !== 'markdown') return;
      renderMarkdown(rendered, text.toString());
      rendered.hidden = false;
      editorHost.hidden = true;
    };
    rendered.addEventListener('dblclick', () => {
      if (!can('edit')) return;
      rendered.hidden = true;
      editorHost.hidden = false;
      editor().focus();
    });
    if (type === 'markdown' && text.length > 0) renderMarkdownCell();
    runButton.addEventListener('click', () => void run(map));
    deleteButton.addEventListener('click', () => {
      const at = indexOf(map);
      if (can('edit') && at >= 0) cells.delete(at, 1);
    });
    typeSelect.addEventListener('change', () => {
      if (!can('edit')) {
        typeSelect.value = String(map.get('cell_type'));
        return;
      }
      doc.transact(() => {
        map.set('cell_type', typeSelect.value);
        if (typeSelect.value === 'code' && !(map.get('outputs') instanceof Y.Array)) {
          map.set('outputs', new Y.Array());
          map.set('execution_count', null);
        }
      });
    });
    const paintOutputs = () => {
      renderOutputs(outputs, map.get('outputs'));
      const count = map.get('execution_count');
      prompt.textContent = map.get('cell_type') === 'code' ? `[${count ?? ' '}]:` : '';
    };
    let pending = false;
    const observer = (events: Y.YEvent<any>[]) => {
      if (events.some((e) => e.target === map && (e as Y.YMapEvent<any>).keysChanged.has('cell_type'))) {
        // A type change rebuilds the cell.
        rebuild(map);
        return;
      }
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        paintOutputs();
      });
    };
    map.observeDeep(observer);
    paintOutputs();
    return {
      map,
      root: rootEl,
      stdin,
      lockButton,
      presence,
      editor,
      hasEditor: () => made !== null,
      outputs,
      prompt,
      status,
      rendered,
      editable,
      language,
      type,
      unobserve: () => {
        map.unobserveDeep(observer);
        text.unobserve(follow);
        lazy.unobserve(rootEl);
        made?.destroy();
      },
    };
  }

  function destroy(view: CellView) {
    view.unobserve();
    view.root.remove();
  }

  function rebuild(map: Y.Map<any>) {
    const old = views.get(map);
    if (old) destroy(old);
    views.delete(map);
    layout();
  }

  /** Puts one view per cell in the document's order, making and dropping views as needed. */
  function layout() {
    const present = new Set<Y.Map<any>>();
    let previous: HTMLElement | null = null;
    for (const map of cells.toArray()) {
      if (!(map instanceof Y.Map)) continue;
      present.add(map);
      let view = views.get(map);
      if (!view) {
        view = makeView(map);
        views.set(map, view);
      }
      const expectedNext: Element | null = previous ? previous.nextElementSibling : cellsBox.firstElementChild;
      if (expectedNext !== view.root) {
        if (previous) previous.after(view.root);
        else cellsBox.prepend(view.root);
      }
      previous = view.root;
    }
    for (const [map, view] of views) {
      if (!present.has(map)) {
        destroy(view);
        views.delete(map);
      }
    }
    paintState();
  }

  /** Server-written state: kernel status, each cell's run, locks, the save marker. */
  function paintState() {
    const k = state.get('kernel');
    const status = k && typeof k === 'object' ? String(k.status ?? 'unknown') : 'none';
    kernel.dataset.status = status;
    kernel.textContent = k ? `${k.name ?? 'kernel'}: ${status}` : 'no kernel';
    const executions = state.get('executions');
    const runs = executions instanceof Y.Map ? executions.toJSON() : executions ?? {};
    const locksValue = state.get('locks');
    const locks = locksValue instanceof Y.Map ? locksValue.toJSON() : locksValue ?? {};
    for (const view of views.values()) {
      const id = cellId(view.map);
      const run = runs[id];
      const lock = locks[id];
      // (The server writes `state` after every save: only cells whose run or lock changed are
      // touched, or a big notebook would be laid out again each time.)
      const parts: string[] = [];
      if (run && (run.status === 'queued' || run.status === 'running')) {
        parts.push(`${run.status}, started by ${run.by?.name ?? 'someone'}`);
      } else if (run?.by?.name && run.status) {
        parts.push(`ran by ${run.by.name} (${run.status})`);
      }
      const holder = lock?.edit?.by;
      const heldByOther = Boolean(holder && holder.username !== me.identity.username);
      const heldByMe = Boolean(holder && holder.username === me.identity.username);
      if (heldByOther) parts.push(`${holder.name} is editing`);
      if (heldByOther) lockedByOthers.add(id);
      else lockedByOthers.delete(id);
      const key = `${parts.join(' · ')}|${run?.status ?? ''}|${heldByMe}|${heldByOther}`;
      const previous = painted.get(view);
      if (previous === key) continue;
      painted.set(view, key);
      const lockChanged = previous?.split('|')[3] !== String(heldByOther);
      view.lockButton.dataset.held = String(heldByMe);
      view.lockButton.textContent = heldByMe ? 'release' : 'hold';
      view.lockButton.toggleAttribute('disabled', heldByOther);
      view.root.classList.toggle('locked', heldByOther);
      if (view.hasEditor() && lockChanged) {
        view.editor().dispatch({
          effects: view.editable.reconfigure(editableExt(can('edit') && !heldByOther)),
        });
      }
      view.status.textContent = parts.join(' · ');
      if (run?.status !== 'running') view.stdin.replaceChildren();
      view.root.dataset.run = run?.status ?? '';
    }
    saved.textContent = state.get('dirty') ? 'unsaved changes' : '';
  }

  // Which cell each source text belongs to, made again after the cell list changes (awareness
  // changes with every cursor move: not a walk over every cell each time).
  let cellsBySource: Map<unknown, Y.Map<any>> | null = null;
  cells.observe(() => {
    cellsBySource = null;
  });

  /** The cell a person's cursor is in (y-codemirror's `cursor` field), if any. */
  function cellOf(state: any): Y.Map<any> | null {
    const anchor = state?.cursor?.anchor;
    if (!anchor) return null;
    try {
      const position = Y.createAbsolutePositionFromRelativePosition(
        Y.createRelativePositionFromJSON(anchor),
        doc,
      );
      if (!cellsBySource) {
        cellsBySource = new Map(cells.toArray().map((map) => [map.get('source'), map]));
      }
      return cellsBySource.get(position?.type) ?? null;
    } catch {
      return null;
    }
  }

  let following: string | null = null;
  // The cells showing someone's presence (cleared on each repaint: not every cell).
  let marked: HTMLElement[] = [];
  function paintPeople() {
    const items: HTMLElement[] = [];
    const seen = new Set<string>();
    for (const box of marked) box.replaceChildren();
    marked = [];
    for (const [client, value] of provider.awareness.getStates()) {
      const user = value?.user;
      if (!user) continue;
      const key = user.username ?? String(client);
      const cell = client === doc.clientID ? null : cellOf(value);
      if (cell) {
        const dot = el('span', { class: 'presence-dot', title: `${user.display_name ?? user.name} is here` }, user.initials ?? '?');
        dot.style.background = user.color ?? '#888';
        const box = views.get(cell)?.presence;
        if (box) {
          box.append(dot);
          marked.push(box);
        }
        if (following === key) views.get(cell)?.root.scrollIntoView({ block: 'center', behavior: 'smooth' });
      }
      if (seen.has(key)) continue;
      seen.add(key);
      const self = client === doc.clientID;
      const badge = el(
        'li',
        { class: `person${following === key ? ' following' : ''}`, title: self ? `${user.display_name ?? user.name} (you)` : `${user.display_name ?? user.name}: click to follow` },
        user.initials ?? '?',
      );
      badge.style.background = user.color ?? '#888';
      if (!self) {
        badge.addEventListener('click', () => {
          following = following === key ? null : key;
          paintPeople();
        });
      }
      items.push(badge);
    }
    people.replaceChildren(...items);
  }

  cells.observe(() => layout());
  state.observeDeep(() => paintState());
  provider.awareness.on('change', paintPeople);
  paintPeople();
  provider.onStatus = (status: Status) => {
    switch (status.kind) {
      case 'connecting':
        connection.textContent = synced ? 'reconnecting…' : 'connecting…';
        break;
      case 'synced':
        synced = true;
        connection.textContent = '';
        if (banner.dataset.kind === 'warning') showBanner('');
        layout();
        reflectCaps();
        // An empty notebook opens with one empty code cell to type in, as in Jupyter.
        if (cells.length === 0 && can('edit')) insertCell(0);
        break;
      case 'disconnected':
        connection.textContent = 'offline';
        showBanner('Connection lost: reconnecting… Your edits are kept and will be sent.', 'warning');
        break;
      case 'closed':
        document.body.classList.add('read-only');
        caps = new Set();
        reflectCaps();
        showBanner(
          status.code === 4403
            ? 'Your access to this notebook was revoked.'
            : status.code === 4404
              ? 'This notebook no longer exists.'
              : `The server closed this notebook: ${status.reason || status.code}`,
          'error',
        );
        document.body.dataset.closed = String(status.code);
        break;
    }
  };
  provider.onRaw = (message) => {
    chat.onRaw(message);
    switch (message.type) {
      case 'permissions':
        caps = new Set(message.capabilities ?? []);
        reflectCaps();
        break;
      case 'refused':
        // Our copy now holds a change the room refused: start again from the room's.
        sessionStorage.setItem('quire-refused', String(message.reason ?? 'refused'));
        provider.close();
        location.reload();
        break;
      case 'input_request': {
        const map = cells.toArray().find((m) => cellId(m) === message.cell_id);
        const view = map && views.get(map);
        if (!view) break;
        const field = el('input', {
          class: 'stdin-input',
          type: message.password ? 'password' : 'text',
          'aria-label': message.prompt || 'input',
        }) as HTMLInputElement;
        const form = el('form', { class: 'stdin-form' }, el('label', {}, message.prompt ?? ''), field);
        form.addEventListener('submit', async (event) => {
          event.preventDefault();
          const answer = await provider.request({ type: 'input_reply', cell_id: message.cell_id, value: field.value });
          if (answer.status === 'ok') view.stdin.replaceChildren();
          else showBanner(answer.reason ?? 'the answer was refused', 'error');
        });
        view.stdin.replaceChildren(form);
        field.focus();
        break;
      }
      case 'conflict':
        showBanner('This page has fallen out of step with the server: reload it.', 'error');
        break;
    }
  };

  const checkpoints = `/api/contents/${path.split('/').map(encodeURIComponent).join('/')}/checkpoints`;
  let hasCheckpoint = false;
  const showCheckpoint = (model: any) => {
    hasCheckpoint = Boolean(model);
    revertButton.hidden = checkpointButton.hidden || !hasCheckpoint;
    if (model) revertButton.title = `Go back to the checkpoint of ${new Date(model.last_modified).toLocaleString()}`;
  };
  if (!me.guest && !shared) {
    api('GET', checkpoints).then((list) => showCheckpoint(list?.[0]), () => {});
  }
  checkpointButton.addEventListener('click', async () => {
    const answer = await provider.save();
    if (answer.status === 'failed') return showBanner('Not saved, so no checkpoint was made.', 'error');
    try {
      showCheckpoint(await api('POST', checkpoints));
      saved.textContent = 'checkpoint made';
    } catch (e) {
      showBanner(`No checkpoint: ${e instanceof Error ? e.message : e}`, 'error');
    }
  });
  revertButton.addEventListener('click', async () => {
    if (!confirm('Go back to the checkpoint? Everyone in the notebook sees it.')) return;
    try {
      await api('POST', `${checkpoints}/checkpoint`);
      saved.textContent = 'reverted to the checkpoint';
    } catch (e) {
      showBanner(`Not reverted: ${e instanceof Error ? e.message : e}`, 'error');
    }
  });
  saveButton.addEventListener('click', async () => {
    const answer = await provider.save();
    saved.textContent = answer.status === 'success' ? 'saved' : `not saved: ${answer.status}`;
  });
  runAllButton.addEventListener('click', () => {
    for (const map of cells.toArray()) void run(map);
  });
  interruptButton.addEventListener('click', () => void provider.request({ type: 'interrupt' }));
  restartButton.addEventListener('click', () => void provider.request({ type: 'restart' }));
  addButton.addEventListener('click', () => insertCell(cells.length));
  document.addEventListener('keydown', (event) => {
    if ((event.ctrlKey || event.metaKey) && event.key === 's') {
      event.preventDefault();
      if (can('save')) saveButton.click();
    }
  });
  reflectCaps();
  const refused = sessionStorage.getItem('quire-refused');
  if (refused) {
    sessionStorage.removeItem('quire-refused');
    showBanner(`Your last change was not applied (${refused}); the page shows the notebook as it is.`, 'error');
  }
  return { provider, doc };
}
