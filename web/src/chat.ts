// Chat beside the notebook: the recent history arrives when we join, new messages as they are
// posted (RAW JSON over the room's socket). Posting needs `edit`; the server says so if not.
import { el } from './util';
import type { RoomProvider } from './provider';
import { ChatMessage, ServerMessage, refusal } from './protocol';

export function mountChat(host: HTMLElement, provider: RoomProvider) {
  const list = el('ol', { class: 'chat-messages', 'aria-live': 'polite' });
  const input = el('input', { class: 'chat-input', placeholder: 'Message', maxlength: '4000' }) as HTMLInputElement;
  const status = el('p', { class: 'chat-status', role: 'status' });
  const form = el('form', { class: 'chat-form' }, input, el('button', {}, 'Send'));
  host.replaceChildren(el('h2', {}, 'Chat'), list, status, form);
  const seen = new Set<number>();

  const show = (message: ChatMessage) => {
    if (seen.has(message.id)) return;
    seen.add(message.id);
    const who = el('b', {}, message.name);
    who.style.color = message.color;
    const when = el('time', { datetime: new Date(message.at).toISOString() }, new Date(message.at).toLocaleTimeString());
    // Text only: a message is never HTML.
    const item = el('li', { class: 'chat-message' }, who, ' ', when, el('div', { class: 'chat-text' }, message.text));
    const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    list.append(item);
    if (atBottom) list.scrollTop = list.scrollHeight;
  };

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    let failure: string | null;
    try {
      failure = refusal(await provider.request({ type: 'chat', text }));
    } catch (e) {
      failure = `not sent: ${e instanceof Error ? e.message : e}`;
    }
    if (failure === null) input.value = '';
    status.textContent = failure ?? '';
  });

  return {
    onRaw(message: ServerMessage) {
      if (message.type === 'chat_history') for (const m of message.messages ?? []) show(m);
      else if (message.type === 'chat_message' && message.message) show(message.message);
    },
    setCanPost(can: boolean) {
      input.disabled = !can;
      input.placeholder = can ? 'Message' : 'You may read the chat';
    },
  };
}
