// The file browser at `/`: folders, notebooks, new notebook, rename, delete.
import { el, api, encodePath, ApiError } from './util';

export async function mountFiles(root: HTMLElement, dir: string) {
  const list = el('ul', { class: 'files' });
  const message = el('p', { class: 'banner', role: 'status', hidden: '' });
  const newNotebook = el('button', { class: 'new-notebook' }, 'New notebook');
  const newFolder = el('button', { class: 'new-folder' }, 'New folder');
  const crumbs = el('nav', { class: 'crumbs' });
  root.replaceChildren(
    el('header', { class: 'nb-header' }, el('a', { href: '/', class: 'home' }, 'Quire'), crumbs, el('span', { class: 'spacer' }), newNotebook, newFolder),
    message,
    el('main', { class: 'browser' }, list),
  );
  const parts = dir ? dir.split('/') : [];
  crumbs.append(el('a', { href: '/' }, 'Files'));
  parts.forEach((part, i) => {
    crumbs.append(' / ', el('a', { href: `/tree/${encodePath(parts.slice(0, i + 1).join('/'))}` }, part));
  });
  const fail = (e: unknown) => {
    message.textContent = e instanceof ApiError ? e.message : String(e);
    message.hidden = false;
  };
  async function refresh() {
    const model = await api('GET', `/api/contents/${encodePath(dir)}?content=1`);
    const items = (model.content as any[]).sort(
      (a, b) => Number(b.type === 'directory') - Number(a.type === 'directory') || a.name.localeCompare(b.name),
    );
    list.replaceChildren(
      ...items.map((item) => {
        const href =
          item.type === 'directory'
            ? `/tree/${encodePath(item.path)}`
            : item.type === 'notebook'
              ? `/notebooks/${encodePath(item.path)}`
              : null;
        const name = href ? el('a', { href }, item.name) : el('span', {}, item.name);
        const rename = el('button', { class: 'rename' }, 'Rename');
        const remove = el('button', { class: 'delete' }, 'Delete');
        rename.addEventListener('click', async () => {
          const to = prompt('New name', item.name);
          if (!to || to === item.name) return;
          const target = dir ? `${dir}/${to}` : to;
          await api('PATCH', `/api/contents/${encodePath(item.path)}`, { path: target }).catch(fail);
          await refresh();
        });
        remove.addEventListener('click', async () => {
          if (!confirm(`Delete ${item.name}?`)) return;
          await api('DELETE', `/api/contents/${encodePath(item.path)}`).catch(fail);
          await refresh();
        });
        return el('li', { class: `file file-${item.type}` }, name, el('span', { class: 'spacer' }), rename, remove);
      }),
    );
  }
  newNotebook.addEventListener('click', async () => {
    try {
      const model = await api('POST', `/api/contents/${encodePath(dir)}`, { type: 'notebook' });
      location.assign(`/notebooks/${encodePath(model.path)}`);
    } catch (e) {
      fail(e);
    }
  });
  newFolder.addEventListener('click', async () => {
    await api('POST', `/api/contents/${encodePath(dir)}`, { type: 'directory' }).catch(fail);
    await refresh();
  });
  await refresh().catch(fail);
  // Notebooks others share with us (multi-user mode): opened by id.
  const shared = await api('GET', '/api/shared').catch(() => []);
  if (dir === '' && shared.length > 0) {
    root.querySelector('main')?.append(
      el('h2', { class: 'shared-title' }, 'Shared with me'),
      el(
        'ul',
        { class: 'files shared' },
        ...shared.map((item: any) =>
          el(
            'li',
            { class: 'file file-notebook' },
            el('a', { href: `/shared/${item.file_id}` }, item.name),
            el('span', { class: 'muted' }, ` from ${item.owner ?? 'the server'} · ${item.capabilities.join(', ')}`),
          ),
        ),
      ),
    );
  }
}
