// The notebook model: typed reading and writing of the shared Yjs document (PROTOCOL's notebook
// schema), with typed change events, so that views never observe the document themselves. A
// cell's events say what changed (its type, its source replaced, its execution count, which of
// its outputs), never "something below this cell": typing in a cell is not an outputs change.
// `state` is the server's: each run (`executions`), each cell's locks (`locks`), the kernel.
import * as Y from 'yjs';

export type CellType = 'code' | 'markdown' | 'raw';

/** Who a run or a lock in `state` names. */
export interface Person {
  username: string;
  name: string;
  color: string;
}

/** `state.executions[cellId]`: the cell's last or current run. */
export interface ExecutionEntry {
  status: string;
  by?: Person;
  run?: string;
  queued_at?: number;
  started_at?: number;
  finished_at?: number;
  execution_count?: number | null;
  reason?: string;
}

/** `state.locks[cellId]`: who holds the cell for editing, whose run holds it. */
export interface LockEntry {
  edit?: { by: Person };
  execute?: { by: Person };
}

/** `state.kernel`. */
export interface KernelState {
  id?: string;
  name?: string;
  status?: string;
}

/** A list of listeners: what a model tells its views. */
export class Signal<T> {
  private slots = new Set<(value: T) => void>();

  /** Calls `slot` on each change until the returned function is called. */
  connect(slot: (value: T) => void): () => void {
    this.slots.add(slot);
    return () => this.slots.delete(slot);
  }

  emit(value: T) {
    for (const slot of [...this.slots]) slot(value);
  }
}

/** Which outputs changed: the items whose content changed (the list's own insertions and
 * deletions are seen by comparing items), or 'all' when the outputs were replaced. */
export type OutputsChange = ReadonlySet<unknown> | 'all';

export type CellChange =
  | { kind: 'type' }
  /** The cell's `source` is another text (not an edit of the text). */
  | { kind: 'source' }
  | { kind: 'executionCount' }
  | { kind: 'outputs'; changed: OutputsChange };

/** What changed in `state`: the kernel, the dirty flag, and whose runs or locks ('all' when a
 * whole map was replaced). */
export interface StateChange {
  kernel: boolean;
  dirty: boolean;
  cells: ReadonlySet<string> | 'all';
}

/** A cell's source as a shared text (another client may have written a plain string: the
 * editor needs a text all the same). */
function sourceOf(map: Y.Map<unknown>): Y.Text {
  const source = map.get('source');
  return source instanceof Y.Text ? source : new Y.Text(typeof source === 'string' ? source : '');
}

/** Plain JSON of a value of `state` (a Y.Map, or a plain object written by another server). */
function stateJson<T>(value: unknown): Record<string, T> {
  if (value instanceof Y.Map) return value.toJSON() as Record<string, T>;
  return value && typeof value === 'object' ? (value as Record<string, T>) : {};
}

export class CellModel {
  readonly changed = new Signal<CellChange>();
  private text: Y.Text;
  private outputList: Y.Array<unknown> | null = null;

  constructor(readonly map: Y.Map<unknown>) {
    this.text = sourceOf(map);
    map.observe(this.onKeys);
    this.bindOutputs();
  }

  get id(): string {
    return String(this.map.get('id') ?? '');
  }

  get type(): CellType {
    const type = String(this.map.get('cell_type') ?? 'code');
    return type === 'markdown' || type === 'raw' ? type : 'code';
  }

  /** The cell's type as the document has it (a select shows it even when unknown). */
  get typeName(): string {
    return String(this.map.get('cell_type') ?? 'code');
  }

  get source(): Y.Text {
    return this.text;
  }

  get executionCount(): number | null {
    const count = this.map.get('execution_count');
    return typeof count === 'number' ? count : null;
  }

  /** The outputs, each a Y.Map or a plain JSON object; each item is the same object for as long
   * as the output stays (the key outputs are reconciled by). */
  outputs(): unknown[] {
    return this.outputList?.toArray() ?? [];
  }

  dispose() {
    this.map.unobserve(this.onKeys);
    this.outputList?.unobserveDeep(this.onOutputs);
  }

  private bindOutputs() {
    this.outputList?.unobserveDeep(this.onOutputs);
    const outputs = this.map.get('outputs');
    this.outputList = outputs instanceof Y.Array ? outputs : null;
    this.outputList?.observeDeep(this.onOutputs);
  }

  private onKeys = (event: Y.YMapEvent<unknown>) => {
    const keys = event.keysChanged;
    if (keys.has('outputs')) this.bindOutputs();
    if (keys.has('source')) this.text = sourceOf(this.map);
    // A new type or source makes the cell's view again, which shows everything anew.
    if (keys.has('cell_type')) return this.changed.emit({ kind: 'type' });
    if (keys.has('source')) return this.changed.emit({ kind: 'source' });
    if (keys.has('outputs')) this.changed.emit({ kind: 'outputs', changed: 'all' });
    if (keys.has('execution_count')) this.changed.emit({ kind: 'executionCount' });
  };

  private onOutputs = (events: Y.YEvent<any>[]) => {
    const changed = new Set<unknown>();
    for (const event of events) {
      // A change below an output (a stream's growing text, a display updated): that output.
      let target: Y.AbstractType<any> = event.target;
      if (target === this.outputList) continue;
      while (target.parent && target.parent !== this.outputList) target = target.parent;
      changed.add(target);
    }
    this.changed.emit({ kind: 'outputs', changed });
  };
}

export class NotebookModel {
  readonly cells: Y.Array<Y.Map<unknown>>;
  readonly state: Y.Map<unknown>;
  /** Cells were added, deleted or moved. */
  readonly cellsChanged = new Signal<void>();
  readonly stateChanged = new Signal<StateChange>();
  private models = new Map<Y.Map<unknown>, CellModel>();
  // Which cell each source text belongs to, made again after the cell list changes (presence
  // asks with every cursor move: not a walk over every cell each time).
  private bySource: Map<unknown, CellModel> | null = null;

  constructor(readonly doc: Y.Doc) {
    this.cells = doc.getArray<Y.Map<unknown>>('cells');
    this.state = doc.getMap<unknown>('state');
    this.cells.observe(() => {
      this.bySource = null;
      const present = new Set(this.cells.toArray());
      for (const [map, model] of this.models) {
        if (!present.has(map)) {
          model.dispose();
          this.models.delete(map);
        }
      }
      this.cellsChanged.emit();
    });
    this.state.observeDeep((events) => this.stateChanged.emit(this.stateChange(events)));
  }

  /** The cells in the document's order. */
  list(): CellModel[] {
    const list: CellModel[] = [];
    for (const map of this.cells.toArray()) if (map instanceof Y.Map) list.push(this.model(map));
    return list;
  }

  get length(): number {
    return this.cells.length;
  }

  /** The cell at `index`, clamped to the list; null when there is none. */
  at(index: number): CellModel | null {
    const map = this.cells.get(Math.max(0, Math.min(index, this.cells.length - 1)));
    return map instanceof Y.Map ? this.model(map) : null;
  }

  indexOf(cell: CellModel): number {
    return this.cells.toArray().indexOf(cell.map);
  }

  byId(id: string): CellModel | null {
    return this.list().find((cell) => cell.id === id) ?? null;
  }

  /** The cell whose source is `text`, if any. */
  bySourceText(text: unknown): CellModel | null {
    if (!this.bySource) this.bySource = new Map(this.list().map((cell) => [cell.map.get('source'), cell]));
    return this.bySource.get(text) ?? null;
  }

  kernel(): KernelState | null {
    const kernel = this.state.get('kernel');
    return kernel && typeof kernel === 'object' ? (kernel as KernelState) : null;
  }

  executions(): Record<string, ExecutionEntry> {
    return stateJson<ExecutionEntry>(this.state.get('executions'));
  }

  locks(): Record<string, LockEntry> {
    return stateJson<LockEntry>(this.state.get('locks'));
  }

  dirty(): boolean {
    return Boolean(this.state.get('dirty'));
  }

  insertCell(at: number, type: CellType) {
    const map = new Y.Map<unknown>();
    this.doc.transact(() => {
      map.set('id', crypto.randomUUID().replace(/-/g, '').slice(0, 8));
      map.set('cell_type', type);
      map.set('source', new Y.Text());
      map.set('metadata', new Y.Map());
      if (type === 'code') {
        map.set('execution_count', null);
        map.set('outputs', new Y.Array());
      }
      this.cells.insert(at, [map]);
    });
  }

  deleteCell(cell: CellModel) {
    const at = this.indexOf(cell);
    if (at >= 0) this.cells.delete(at, 1);
  }

  /** Moves a cell (a copy keeps its id, source, outputs and metadata); its new index, or null. */
  moveCell(cell: CellModel, by: number): number | null {
    const from = this.indexOf(cell);
    const to = from + by;
    if (from < 0 || to < 0 || to >= this.cells.length) return null;
    this.doc.transact(() => {
      const copy = cell.map.clone();
      this.cells.delete(from, 1);
      this.cells.insert(to, [copy]);
    });
    return to;
  }

  setType(cell: CellModel, type: string) {
    if (cell.typeName === type) return;
    this.doc.transact(() => {
      cell.map.set('cell_type', type);
      if (type === 'code' && !(cell.map.get('outputs') instanceof Y.Array)) {
        cell.map.set('outputs', new Y.Array());
        cell.map.set('execution_count', null);
      }
    });
  }

  private model(map: Y.Map<unknown>): CellModel {
    let model = this.models.get(map);
    if (!model) {
      model = new CellModel(map);
      this.models.set(map, model);
    }
    return model;
  }

  private stateChange(events: Y.YEvent<any>[]): StateChange {
    const change: StateChange = { kernel: false, dirty: false, cells: new Set() };
    const cells = new Set<string>();
    for (const event of events) {
      if (event.target === this.state) {
        const keys = (event as Y.YMapEvent<unknown>).keysChanged;
        if (keys.has('kernel')) change.kernel = true;
        if (keys.has('dirty')) change.dirty = true;
        if (keys.has('executions') || keys.has('locks')) change.cells = 'all';
      } else if (event.target.parent === this.state && event instanceof Y.YMapEvent) {
        // Inside `executions` or `locks`: the keys are cell ids.
        for (const id of event.keysChanged) cells.add(String(id));
      } else {
        change.cells = 'all';
      }
    }
    if (change.cells !== 'all') change.cells = cells;
    return change;
  }
}
