// Quire's browser app: which page this is, and who we are.
import { mountFiles } from './files';
import { mountNotebook } from './notebook';
import { api, ApiError, Me } from './util';

async function start() {
  const root = document.getElementById('app')!;
  let me: Me;
  try {
    me = await api('GET', '/api/me');
  } catch (e) {
    if (e instanceof ApiError && (e.status === 403 || e.status === 401)) {
      location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
      return;
    }
    throw e;
  }
  // A `?token=` in the address has done its work (a login cookie): take it out of sight.
  if (new URLSearchParams(location.search).has('token')) {
    history.replaceState(null, '', location.pathname);
  }
  document.body.style.setProperty('--me', me.identity.color);
  const path = decodeURIComponent(location.pathname);
  if (path.startsWith('/shared/')) {
    await mountNotebook(root, { fileId: path.slice('/shared/'.length), me });
  } else if (path.startsWith('/notebooks/')) {
    await mountNotebook(root, { path: path.slice('/notebooks/'.length), me });
  } else if (path.startsWith('/tree/')) {
    await mountFiles(root, path.slice('/tree/'.length).replace(/\/$/, ''));
  } else {
    await mountFiles(root, '');
  }
}

start().catch((e) => {
  const root = document.getElementById('app')!;
  root.textContent = `Quire could not start: ${e instanceof Error ? e.message : e}`;
});
