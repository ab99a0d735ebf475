// The live notebook page, split as JupyterLab splits a notebook: the model over the shared Yjs
// document (model.ts), a view per cell (cell.ts) with its outputs (outputs.ts), presence
// (presence.ts) and commands (commands.ts). This file makes the page's frame and wires them to
// the room connection and to what the connection may do. The server enforces every right; the
// page only reflects them.
import * as Y from 'yjs';
import { RoomProvider, Status } from './provider';
import { el, Me, api } from './util';
import { mountSharePanel } from './share';
import { mountChat } from './chat';
import { NotebookModel, CellModel, StateChange } from './model';
import { CellView, LazyEditors } from './cell';
import { Commands } from './commands';
import { Presence } from './presence';
import { SaveAnswer, ServerMessage } from './protocol';

type Caps = Set<string>;

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
  const model = new NotebookModel(doc);
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

  const views = new Map<CellModel, CellView>();
  let synced = false;

  const can = (cap: string) => caps.has(cap);
  const showBanner = (text: string, kind = 'info') => {
    banner.textContent = text;
    banner.dataset.kind = kind;
    banner.hidden = !text;
  };
  const commands = new Commands({
    model,
    provider,
    can,
    cellElement: (cell) => views.get(cell)?.root,
    focusEditor: (cell) => views.get(cell)?.editor().focus(),
    showEditor: (cell) => views.get(cell)?.showEditor(),
    fail: (text) => showBanner(text, 'error'),
  });
  const lazy = new LazyEditors();
  const cellHost = { awareness: provider.awareness, commands, lazy, can, rebuild };

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
    for (const view of views.values()) view.reflectRights();
    if (!canEdit && banner.dataset.kind !== 'error') {
      showBanner('You are watching this notebook: you can see every change, but not make any.');
    } else if (banner.dataset.kind === 'info') {
      showBanner('');
    }
  };

  /** A cell's type or source was replaced: its view is made again. */
  function rebuild(cell: CellModel) {
    views.get(cell)?.dispose();
    views.delete(cell);
    layout();
  }

  /** Puts one view per cell in the document's order, making and dropping views as needed. */
  function layout() {
    const present = new Set<CellModel>();
    const runs = model.executions();
    const locks = model.locks();
    let previous: HTMLElement | null = null;
    for (const cell of model.list()) {
      present.add(cell);
      let view = views.get(cell);
      if (!view) {
        view = new CellView(cell, cellHost);
        view.showState(runs[cell.id], locks[cell.id], me.identity.username);
        views.set(cell, view);
      }
      const expectedNext: Element | null = previous ? previous.nextElementSibling : cellsBox.firstElementChild;
      if (expectedNext !== view.root) {
        if (previous) previous.after(view.root);
        else cellsBox.prepend(view.root);
      }
      previous = view.root;
    }
    for (const [cell, view] of views) {
      if (!present.has(cell)) {
        view.dispose();
        views.delete(cell);
      }
    }
  }

  function paintKernel() {
    const k = model.kernel();
    const status = k ? String(k.status ?? 'unknown') : 'none';
    kernel.dataset.status = status;
    kernel.textContent = k ? `${k.name ?? 'kernel'}: ${status}` : 'no kernel';
  }

  function paintSaved() {
    saved.textContent = model.dirty() ? 'unsaved changes' : '';
  }

  /** Server-written state: the kernel, the dirty flag, the runs and locks of the cells named. */
  function paintState(change: StateChange) {
    if (change.kernel) paintKernel();
    if (change.dirty) paintSaved();
    const { cells } = change;
    if (cells !== 'all' && cells.size === 0) return;
    const runs = model.executions();
    const locks = model.locks();
    for (const view of views.values()) {
      const id = view.cell.id;
      if (cells === 'all' || cells.has(id)) view.showState(runs[id], locks[id], me.identity.username);
    }
  }

  new Presence(provider.awareness, model, people, (cell) => views.get(cell));
  model.cellsChanged.connect(() => layout());
  model.stateChanged.connect(paintState);
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
        paintState({ kernel: true, dirty: true, cells: 'all' });
        reflectCaps();
        // An empty notebook opens with one empty code cell to type in, as in Jupyter.
        if (model.length === 0) commands.insertCell(0);
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
  provider.onRaw = (message: ServerMessage) => {
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
        const cell = model.byId(message.cell_id);
        const view = cell && views.get(cell);
        if (!view) break;
        const field = el('input', {
          class: 'stdin-input',
          type: message.password ? 'password' : 'text',
          'aria-label': message.prompt || 'input',
        }) as HTMLInputElement;
        const form = el('form', { class: 'stdin-form' }, el('label', {}, message.prompt ?? ''), field);
        form.addEventListener('submit', async (event) => {
          event.preventDefault();
          const answer = await commands.ask({ type: 'input_reply', cell_id: message.cell_id, value: field.value });
          if (answer) view.stdin.replaceChildren();
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
  const showCheckpoint = (checkpoint: { last_modified: string } | undefined) => {
    hasCheckpoint = Boolean(checkpoint);
    revertButton.hidden = checkpointButton.hidden || !hasCheckpoint;
    if (checkpoint) revertButton.title = `Go back to the checkpoint of ${new Date(checkpoint.last_modified).toLocaleString()}`;
  };
  /** Saves now: the server's status, or why there is none. */
  const saveNow = (): Promise<SaveAnswer['status'] | string> =>
    provider.save().then(
      (answer) => answer.status,
      (e: Error) => `no answer (${e.message})`,
    );
  if (!me.guest && !shared) {
    api('GET', checkpoints).then((list) => showCheckpoint(list?.[0]), () => {});
  }
  checkpointButton.addEventListener('click', async () => {
    const status = await saveNow();
    if (status !== 'success' && status !== 'skipped') {
      return showBanner(`Not saved (${status}), so no checkpoint was made.`, 'error');
    }
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
    const status = await saveNow();
    saved.textContent = status === 'success' ? 'saved' : `not saved: ${status}`;
  });
  runAllButton.addEventListener('click', () => commands.runAll());
  // (A refused interrupt or restart changes nothing to show.)
  interruptButton.addEventListener('click', () => void commands.ask({ type: 'interrupt' }, { showRefusal: false }));
  restartButton.addEventListener('click', () => void commands.ask({ type: 'restart' }, { showRefusal: false }));
  addButton.addEventListener('click', () => commands.insertCell(model.length));
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
