// Who is here: a badge per person in the header (click one to follow them), and a dot in the
// cell each other person's cursor is in (y-codemirror's `cursor` field in awareness).
import * as Y from 'yjs';
import type { Awareness } from 'y-protocols/awareness';
import type { CellModel, NotebookModel } from './model';
import { el } from './util';

/** The identity a client shows in awareness (`/api/me`'s). */
interface AwarenessUser {
  username?: string;
  name?: string;
  display_name?: string;
  initials?: string;
  color?: string;
}

export class Presence {
  private following: string | null = null;
  // The cells showing someone's presence (cleared on each repaint: not every cell).
  private marked: HTMLElement[] = [];

  constructor(
    private awareness: Awareness,
    private model: NotebookModel,
    private people: HTMLElement,
    private cellView: (cell: CellModel) => { root: HTMLElement; presence: HTMLElement } | undefined,
  ) {
    awareness.on('change', () => this.paint());
    this.paint();
  }

  paint() {
    const items: HTMLElement[] = [];
    const seen = new Set<string>();
    const self = this.model.doc.clientID;
    for (const box of this.marked) box.replaceChildren();
    this.marked = [];
    for (const [client, value] of this.awareness.getStates()) {
      const user = value?.user as AwarenessUser | undefined;
      if (!user) continue;
      const key = user.username ?? String(client);
      const name = user.display_name ?? user.name;
      const cell = client === self ? null : this.cellOf(value);
      const view = cell && this.cellView(cell);
      if (view) {
        const dot = el('span', { class: 'presence-dot', title: `${name} is here` }, user.initials ?? '?');
        dot.style.background = user.color ?? '#888';
        view.presence.append(dot);
        this.marked.push(view.presence);
        if (this.following === key) view.root.scrollIntoView({ block: 'center', behavior: 'smooth' });
      }
      if (seen.has(key)) continue;
      seen.add(key);
      const badge = el(
        'li',
        {
          class: `person${this.following === key ? ' following' : ''}`,
          title: client === self ? `${name} (you)` : `${name}: click to follow`,
        },
        user.initials ?? '?',
      );
      badge.style.background = user.color ?? '#888';
      if (client !== self) {
        badge.addEventListener('click', () => {
          this.following = this.following === key ? null : key;
          this.paint();
        });
      }
      items.push(badge);
    }
    this.people.replaceChildren(...items);
  }

  /** The cell a person's cursor is in, if any. */
  private cellOf(state: { cursor?: { anchor?: unknown } }): CellModel | null {
    const anchor = state?.cursor?.anchor;
    if (!anchor) return null;
    try {
      const position = Y.createAbsolutePositionFromRelativePosition(
        Y.createRelativePositionFromJSON(anchor),
        this.model.doc,
      );
      return this.model.bySourceText(position?.type);
    } catch {
      return null;
    }
  }
}
