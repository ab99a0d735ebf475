// What a person can do to the notebook: run cells, add, delete, move and retype them, hold a
// cell, and Jupyter's command mode (keys on a selected cell, not in its editor). The server
// enforces every right; these only skip what the page already knows is refused.
import type { CellModel, CellType, NotebookModel } from './model';
import type { RoomProvider } from './provider';
import { Answers, ClientRequest, refusal } from './protocol';

/** What the commands act on and report to. */
export interface CommandHost {
  model: NotebookModel;
  provider: RoomProvider;
  can(capability: string): boolean;
  /** The cell's element, to select it (command mode) … */
  cellElement(cell: CellModel): HTMLElement | undefined;
  /** … and its editor, to type in (made if it was not yet). */
  focusEditor(cell: CellModel): void;
  /** Shows the editor of a rendered markdown cell. */
  showEditor(cell: CellModel): void;
  /** Tells the person what went wrong. */
  fail(text: string): void;
}

/** Two presses of D within this time delete the cell, as in Jupyter. */
const DOUBLE_D_MS = 800;

export class Commands {
  private lastD = 0;

  constructor(private host: CommandHost) {}

  /** Sends a request; its answer, or null after telling the person it was refused (when
   * `showRefusal`) or not answered. */
  async ask<R extends ClientRequest>(
    request: R,
    { showRefusal = true } = {},
  ): Promise<Answers[R['type']] | null> {
    let answer: Answers[R['type']];
    try {
      answer = await this.host.provider.request(request);
    } catch (e) {
      this.host.fail(`No answer to ${request.type}: ${e instanceof Error ? e.message : e}`);
      return null;
    }
    const reason = refusal(answer);
    if (reason === null) return answer;
    if (showRefusal) this.host.fail(reason);
    return null;
  }

  async run(cell: CellModel) {
    if (!this.host.can('execute') || cell.type !== 'code') return;
    await this.ask({ type: 'execute', cell_id: cell.id });
  }

  /** Shift+Enter in an editor: runs the cell and moves to the next (a new one after the last). */
  runAndAdvance(cell: CellModel) {
    void this.run(cell);
    const next = this.host.model.indexOf(cell) + 1;
    if (next >= this.host.model.length) this.insertCell(next);
    else this.focusEditorAt(next);
  }

  runAll() {
    for (const cell of this.host.model.list()) void this.run(cell);
  }

  /** Holds the cell (others cannot change it until we let go), or lets it go. */
  async toggleLock(cell: CellModel, held: boolean) {
    await this.ask({ type: held ? 'unlock' : 'lock', cell_id: cell.id });
  }

  insertCell(at: number, type: CellType = 'code') {
    if (!this.host.can('edit')) return;
    this.host.model.insertCell(at, type);
    queueMicrotask(() => this.focusEditorAt(at));
  }

  deleteCell(cell: CellModel) {
    if (this.host.can('edit')) this.host.model.deleteCell(cell);
  }

  moveCell(cell: CellModel, by: number) {
    if (!this.host.can('edit')) return;
    const to = this.host.model.moveCell(cell, by);
    if (to !== null) queueMicrotask(() => this.select(to));
  }

  /** Changes the cell's type; false when we may not. */
  setType(cell: CellModel, type: string): boolean {
    if (!this.host.can('edit')) return false;
    this.host.model.setType(cell, type);
    return true;
  }

  /** Selects the cell at `index` (clamped) for command-mode keys. */
  select(index: number) {
    const cell = this.host.model.at(index);
    if (cell) this.host.cellElement(cell)?.focus();
  }

  focusEditorAt(index: number) {
    const cell = this.host.model.at(index);
    if (!cell) return;
    this.host.focusEditor(cell);
    this.host.cellElement(cell)?.scrollIntoView({ block: 'nearest' });
  }

  /** Jupyter's command mode: a key on a selected cell (`root`, not its editor). */
  commandKey(event: KeyboardEvent, cell: CellModel, root: HTMLElement) {
    if (event.target !== root || event.ctrlKey || event.metaKey || event.altKey) return;
    const at = this.host.model.indexOf(cell);
    let handled = true;
    switch (event.key) {
      case 'Enter':
        if (event.shiftKey) {
          void this.run(cell);
          this.select(at + 1);
        } else {
          this.host.showEditor(cell);
        }
        break;
      case 'ArrowUp':
      case 'k':
        this.select(at - 1);
        break;
      case 'ArrowDown':
      case 'j':
        this.select(at + 1);
        break;
      case 'a':
        this.insertCell(at);
        break;
      case 'b':
        this.insertCell(at + 1);
        break;
      case 'd':
        if (Date.now() - this.lastD < DOUBLE_D_MS) {
          this.deleteCell(cell);
          this.select(at);
          this.lastD = 0;
        } else this.lastD = Date.now();
        break;
      case 'm':
        this.setType(cell, 'markdown');
        break;
      case 'y':
        this.setType(cell, 'code');
        break;
      case 'r':
        this.setType(cell, 'raw');
        break;
      default:
        handled = false;
    }
    if (handled) event.preventDefault();
  }
}
