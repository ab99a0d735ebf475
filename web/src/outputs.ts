// Rendering a cell's outputs. Everything in an output is untrusted (another person's run made
// it): text is set as text, never as HTML; images go through <img> (SVG too, where it cannot run
// script); markdown is rendered and sanitized; HTML and JavaScript outputs run only inside an
// iframe sandboxed without same-origin rights, so nothing they do reaches the app's origin.
import * as Y from 'yjs';
import { marked } from 'marked';
import DOMPurify from 'dompurify';
import type { OutputsChange } from './model';

/** An output as plain JSON (the server writes Maps with a growing Text for streams). */
export function outputJson(item: unknown): any {
  if (item instanceof Y.Map) return item.toJSON();
  return item;
}

function joinText(value: unknown): string {
  if (Array.isArray(value)) return value.join('');
  if (value instanceof Y.Text) return value.toString();
  return typeof value === 'string' ? value : '';
}

const ANSI_COLORS = ['black', 'red', 'green', 'yellow', 'blue', 'magenta', 'cyan', 'white'];

/** Text with terminal colour codes, as spans with classes (never as HTML). */
export function ansiText(target: HTMLElement, text: string) {
  let fg: string | null = null;
  let bold = false;
  const pattern = /\x1b\[([0-9;]*)m/g;
  let last = 0;
  const emit = (chunk: string) => {
    if (!chunk) return;
    if (!fg && !bold) {
      target.append(chunk);
      return;
    }
    const span = document.createElement('span');
    if (fg) span.className = `ansi-${fg}`;
    if (bold) span.classList.add('ansi-bold');
    span.textContent = chunk;
    target.append(span);
  };
  for (let m = pattern.exec(text); m; m = pattern.exec(text)) {
    emit(text.slice(last, m.index));
    last = pattern.lastIndex;
    for (const code of (m[1] || '0').split(';').map(Number)) {
      if (code === 0) {
        fg = null;
        bold = false;
      } else if (code === 1) bold = true;
      else if (code === 22) bold = false;
      else if (code >= 30 && code <= 37) fg = ANSI_COLORS[code - 30];
      else if (code >= 90 && code <= 97) fg = `bright-${ANSI_COLORS[code - 90]}`;
      else if (code === 39) fg = null;
    }
  }
  // Other escape sequences (cursor movement and the like) are dropped.
  emit(text.slice(last).replace(/\x1b\[[0-9;?]*[A-Za-z]/g, ''));
}

/** A frame for HTML or JavaScript output: its scripts run, in an opaque origin (`/sandbox`
 * loaded with `sandbox="allow-scripts"`), so nothing they do reaches the app. */
function sandboxedFrame(html: string): HTMLIFrameElement {
  const frame = document.createElement('iframe');
  frame.className = 'output-frame';
  frame.setAttribute('sandbox', 'allow-scripts');
  frame.setAttribute('referrerpolicy', 'no-referrer');
  frame.src = '/sandbox';
  frame.addEventListener('load', () => frame.contentWindow?.postMessage(html, '*'), { once: true });
  frames.set(frame, true);
  return frame;
}

// Output frames report their height; only messages from one of our frames are believed.
const frames = new WeakMap<HTMLIFrameElement, boolean>();
window.addEventListener('message', (event) => {
  const height = event.data?.quireHeight;
  if (typeof height !== 'number') return;
  for (const frame of document.querySelectorAll<HTMLIFrameElement>('iframe.output-frame')) {
    if (frame.contentWindow === event.source && frames.has(frame)) {
      frame.style.height = `${Math.min(Math.max(height, 20), 2000)}px`;
    }
  }
});

export function renderMarkdown(target: HTMLElement, source: string) {
  const html = marked.parse(source, { async: false }) as string;
  target.innerHTML = DOMPurify.sanitize(html, { USE_PROFILES: { html: true } });
  for (const link of target.querySelectorAll('a')) {
    link.setAttribute('target', '_blank');
    link.setAttribute('rel', 'noopener noreferrer');
  }
}

function renderBundle(data: Record<string, unknown>): HTMLElement {
  const box = document.createElement('div');
  box.className = 'output-data';
  const text = (mime: string) => joinText(data[mime]);
  if (data['text/html'] !== undefined) {
    box.append(sandboxedFrame(text('text/html')));
  } else if (data['application/javascript'] !== undefined) {
    box.append(sandboxedFrame(`<script>${text('application/javascript')}<\/script>`));
  } else if (data['image/png'] !== undefined || data['image/jpeg'] !== undefined) {
    const mime = data['image/png'] !== undefined ? 'image/png' : 'image/jpeg';
    const img = document.createElement('img');
    img.src = `data:${mime};base64,${text(mime).replace(/\s/g, '')}`;
    img.alt = 'image output';
    box.append(img);
  } else if (data['image/svg+xml'] !== undefined) {
    const img = document.createElement('img');
    img.src = `data:image/svg+xml;base64,${btoa(unescape(encodeURIComponent(text('image/svg+xml'))))}`;
    img.alt = 'SVG output';
    box.append(img);
  } else if (data['text/markdown'] !== undefined) {
    box.classList.add('markdown');
    renderMarkdown(box, text('text/markdown'));
  } else if (data['text/plain'] !== undefined) {
    const pre = document.createElement('pre');
    ansiText(pre, text('text/plain'));
    box.append(pre);
  }
  return box;
}

/** One output's element; null for an output of no kind we show. */
function renderOutput(item: unknown): HTMLElement | null {
  const output = outputJson(item);
  if (!output || typeof output !== 'object') return null;
  switch (output.output_type) {
    case 'stream': {
      const pre = document.createElement('pre');
      pre.className = `output-stream ${output.name === 'stderr' ? 'stderr' : 'stdout'}`;
      ansiText(pre, joinText(output.text));
      return pre;
    }
    case 'execute_result':
    case 'display_data':
      return renderBundle(output.data ?? {});
    case 'error': {
      const pre = document.createElement('pre');
      pre.className = 'output-error';
      const traceback = Array.isArray(output.traceback) ? output.traceback.join('\n') : '';
      ansiText(pre, traceback || `${output.ename}: ${output.evalue}`);
      return pre;
    }
    default:
      return null;
  }
}

/** A cell's outputs, reconciled by key: each output item (the same object for as long as the
 * output stays) keeps its element until it changes, so an HTML output's frame is not loaded
 * again, nor its scripts run again, when other outputs come and go. */
export class OutputArea {
  private shown = new Map<unknown, HTMLElement>();

  constructor(readonly node: HTMLElement) {}

  /** Shows `items` in order; those in `changed` (all of them for 'all') are drawn anew. */
  render(items: unknown[], changed: OutputsChange) {
    const next = new Map<unknown, HTMLElement>();
    for (const item of items) {
      const kept = changed === 'all' || changed.has(item) ? undefined : this.shown.get(item);
      const node = kept ?? renderOutput(item);
      if (node) next.set(item, node);
    }
    const keep = new Set(next.values());
    for (const node of this.shown.values()) if (!keep.has(node)) node.remove();
    // Outputs kept are already in order (outputs are appended, cleared or updated in place):
    // only new ones are placed, so a kept frame is never moved (moving a frame reloads it).
    let previous: Element | null = null;
    for (const node of next.values()) {
      const expected: Element | null = previous ? previous.nextElementSibling : this.node.firstElementChild;
      if (expected !== node) {
        if (previous) previous.after(node);
        else this.node.prepend(node);
      }
      previous = node;
    }
    this.shown = next;
  }
}
