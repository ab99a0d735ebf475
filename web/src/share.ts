// The share panel (for those who may manage the notebook): live-share links with their
// capabilities, expiry and a one-time view of their address; people and groups invited, with
// their capabilities editable live. The server refuses anything beyond the manager's own rights.
import { el, api, ApiError } from './util';

const LINK_CAPS = ['view', 'watch', 'edit', 'save', 'execute'];
const PERSON_CAPS = [...LINK_CAPS, 'manage'];
const EXECUTE_WARNING =
  'execute lets them run any code as the account the kernel runs as: a shell on this machine';

function capsBoxes(names: string[], checked: string[], onChange?: (caps: string[]) => void) {
  const box = el('span', { class: 'caps' });
  const inputs = names.map((name) => {
    const input = el('input', { type: 'checkbox', value: name, 'data-cap': name }) as HTMLInputElement;
    input.checked = checked.includes(name);
    const label = el('label', { title: name === 'execute' ? EXECUTE_WARNING : '' }, input, ` ${name}`);
    box.append(label);
    return input;
  });
  const value = () => inputs.filter((i) => i.checked).map((i) => i.value);
  if (onChange) for (const input of inputs) input.addEventListener('change', () => onChange(value()));
  return { box, value };
}

export function mountSharePanel(host: HTMLElement, fileId: string) {
  const message = el('p', { class: 'panel-message', role: 'status' });
  const links = el('ul', { class: 'links' });
  const people = el('ul', { class: 'grants' });
  const created = el('div', { class: 'created-link', hidden: '' });
  const fail = (e: unknown) => {
    message.textContent = e instanceof ApiError ? e.message : String(e);
  };

  const newCaps = capsBoxes(LINK_CAPS, ['view', 'watch', 'edit']);
  const expiry = el(
    'select',
    { class: 'expiry', 'aria-label': 'Expires' },
    el('option', { value: '' }, 'never expires'),
    el('option', { value: '3600' }, 'expires in an hour'),
    el('option', { value: '86400' }, 'expires in a day'),
    el('option', { value: '604800' }, 'expires in a week'),
  ) as HTMLSelectElement;
  const createLink = el('button', { class: 'create-link' }, 'Create link');
  createLink.addEventListener('click', async () => {
    try {
      const body: Record<string, unknown> = { capabilities: newCaps.value() };
      if (expiry.value) body.expires_in_secs = Number(expiry.value);
      const link = await api('POST', `/api/sharing/${fileId}/links`, body);
      const url = `${location.origin}${link.url}`;
      const field = el('input', { class: 'link-url', readonly: '', value: url }) as HTMLInputElement;
      const copy = el('button', { class: 'copy-link' }, 'Copy');
      copy.addEventListener('click', async () => {
        field.select();
        await navigator.clipboard?.writeText(url).catch(() => document.execCommand('copy'));
        copy.textContent = 'Copied';
      });
      created.replaceChildren(
        el('p', {}, 'Anyone with this address joins with these rights. It is shown only now:'),
        field,
        copy,
      );
      created.hidden = false;
      message.textContent = '';
      await refresh();
    } catch (e) {
      fail(e);
    }
  });

  const inviteKind = el(
    'select',
    { class: 'invite-kind', 'aria-label': 'Person or group' },
    el('option', { value: 'user' }, 'person'),
    el('option', { value: 'group' }, 'group'),
  ) as HTMLSelectElement;
  const inviteName = el('input', { class: 'invite-name', placeholder: 'account or group name' }) as HTMLInputElement;
  const inviteCaps = capsBoxes(PERSON_CAPS, ['view', 'watch', 'edit']);
  const invite = el('button', { class: 'invite' }, 'Invite');
  invite.addEventListener('click', async () => {
    const name = inviteName.value.trim();
    if (!name) return;
    try {
      await api('PUT', `/api/sharing/${fileId}/people/${inviteKind.value}/${encodeURIComponent(name)}`, {
        capabilities: inviteCaps.value(),
      });
      inviteName.value = '';
      message.textContent = '';
      await refresh();
    } catch (e) {
      fail(e);
    }
  });

  async function refresh() {
    const [linkList, grantList] = await Promise.all([
      api('GET', `/api/sharing/${fileId}/links`),
      api('GET', `/api/sharing/${fileId}/people`),
    ]);
    links.replaceChildren(
      ...linkList.map((link: any) => {
        const caps = capsBoxes(LINK_CAPS, link.capabilities, (value) =>
          api('PATCH', `/api/sharing/${fileId}/links/${link.id}`, { capabilities: value }).catch(fail),
        );
        const revoke = el('button', { class: 'revoke-link' }, 'Revoke');
        revoke.addEventListener('click', async () => {
          await api('DELETE', `/api/sharing/${fileId}/links/${link.id}`).catch(fail);
          await refresh();
        });
        const expires = link.expires_at
          ? `until ${new Date(link.expires_at * 1000).toLocaleString()}`
          : 'no expiry';
        return el(
          'li',
          { class: 'link', 'data-link-id': link.id },
          el('span', { class: 'link-label' }, link.label || 'link'),
          caps.box,
          el('span', { class: 'muted' }, ` ${expires}, used ${link.uses}×`),
          revoke,
        );
      }),
    );
    people.replaceChildren(
      ...grantList.map((grant: any) => {
        const path = `/api/sharing/${fileId}/people/${grant.kind}/${encodeURIComponent(grant.name)}`;
        const caps = capsBoxes(PERSON_CAPS, grant.capabilities, (value) =>
          api('PUT', path, { capabilities: value }).catch(fail),
        );
        const revoke = el('button', { class: 'revoke-person' }, 'Remove');
        revoke.addEventListener('click', async () => {
          await api('DELETE', path).catch(fail);
          await refresh();
        });
        return el('li', { class: 'grant' }, el('b', {}, `${grant.name}${grant.kind === 'group' ? ' (group)' : ''}`), caps.box, revoke);
      }),
    );
  }

  host.replaceChildren(
    el('h2', {}, 'Share'),
    message,
    el('h3', {}, 'Live-share links'),
    links,
    el('div', { class: 'new-link' }, newCaps.box, expiry, createLink),
    created,
    el('h3', {}, 'People and groups'),
    people,
    el('div', { class: 'new-grant' }, inviteKind, inviteName, inviteCaps.box, invite),
    el('p', { class: 'warning' }, `Careful: ${EXECUTE_WARNING}.`),
  );
  refresh().catch(fail);
  return { refresh };
}
