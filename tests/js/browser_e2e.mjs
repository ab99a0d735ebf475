// Drives Debian's Chromium (through playwright-core) against a running quire: an owner and a
// live-share guest in two browser contexts, typing in the same notebook. Prints one JSON report
// of what it saw (the Rust test asserts on it) and saves a screenshot of each step under
// --shots.
//
// node browser_e2e.mjs --base URL --token T --file-id ID --shots DIR [--chromium PATH]
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const base = args.base.replace(/\/$/, '');
const report = { steps: [], latency_ms: {} };
mkdirSync(args.shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: args.chromium ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});

let shot = 0;
async function snap(page, name) {
  shot += 1;
  await page.screenshot({ path: `${args.shots}/${String(shot).padStart(2, '0')}-${name}.png`, fullPage: true });
}

/** The text of the first cell's editor in a page. */
const firstCellText = (page) =>
  page.locator('section.cell').first().locator('.cm-content').innerText();

/** Waits until `check()` holds; how long it took (ms), or null after `timeoutMs`. */
async function waitFor(check, timeoutMs = 5000) {
  const started = performance.now();
  while (performance.now() - started < timeoutMs) {
    if (await check().catch(() => false)) return performance.now() - started;
    await new Promise((r) => setTimeout(r, 20));
  }
  return null;
}

function step(name, ok, detail = '') {
  report.steps.push({ name, ok: Boolean(ok), detail: String(detail) });
}

/** Types at the end of a cell (the first by default). */
async function typeInCell(page, text, index = 0) {
  const cell = page.locator('section.cell').nth(index);
  await cell.scrollIntoViewIfNeeded();
  // (An editor is made as its cell comes near the screen: until then the source is plain text.)
  await cell.locator('.cm-content').click();
  await page.keyboard.press('Control+End');
  await page.keyboard.type(text, { delay: 5 });
}
const typeInFirstCell = (page, text) => typeInCell(page, text);

/** The banner of a page when it shows an error, or null. */
const errorBanner = (page) =>
  page.locator('.banner').evaluate((b) => (!b.hidden && b.dataset.kind === 'error' ? b.textContent : null));

/** Posts a chat message and waits until the page shows it: everything the server sent this
 * page before its answer has been handled. */
async function chatSentinel(page, text) {
  await page.fill('.chat-input', text);
  await page.press('.chat-input', 'Enter');
  return waitFor(async () => (await page.locator('.chat-messages').innerText()).includes(text));
}

/** Creates a live-share link in the owner's share panel with exactly `caps`; its address. */
async function createLink(page, caps) {
  const panel = page.locator('.share-panel');
  if (await panel.isHidden()) await page.click('button.share');
  const boxes = panel.locator('.new-link input[type=checkbox]');
  for (let i = 0; i < (await boxes.count()); i++) {
    const box = boxes.nth(i);
    const want = caps.includes(await box.getAttribute('data-cap'));
    if ((await box.isChecked()) !== want) await box.click();
  }
  const field = panel.locator('.link-url');
  const before = (await field.count()) ? await field.inputValue() : null;
  await panel.locator('button.create-link').click();
  // The panel shows the new link's address in place of the last one's.
  await waitFor(async () => (await field.count()) > 0 && (await field.inputValue()) !== before);
  return field.inputValue();
}

const flagsSet = (page) =>
  page.evaluate(() => [window.__quireFlag, window.__quireFlag2].filter((v) => v !== undefined));

try {
  // The owner opens the notebook with the token, as Jupyter's links do.
  const ownerContext = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const owner = await ownerContext.newPage();
  const errors = [];
  owner.on('pageerror', (e) => errors.push(`owner: ${e.message}`));
  await owner.goto(`${base}/notebooks/nb.ipynb?token=${args.token}`);
  await owner.locator('section.cell .cm-content').first().waitFor({ timeout: 15000 });
  step('owner sees the notebook', true);
  step('the token left the address bar', !owner.url().includes('token='), owner.url());
  await waitFor(async () => owner.locator('body.can-run').count().then((n) => n === 1));
  await snap(owner, 'owner-opens');

  // The owner makes an edit-only link in the share panel.
  const editLink = await createLink(owner, ['edit']);
  step('owner creates an edit-only link', editLink.includes('/share/'), editLink);
  const editLinkId = await owner.locator('.share-panel li.link').last().getAttribute('data-link-id');
  await snap(owner, 'owner-makes-a-link');
  const editToken = editLink.split('/').pop();

  // A guest opens it in another context and joins under a name.
  const guestContext = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const guest = await guestContext.newPage();
  guest.on('pageerror', (e) => errors.push(`guest: ${e.message}`));
  await guest.goto(editLink);
  step('the link token left the address bar', !guest.url().includes(editToken), guest.url());
  await guest.fill('input[name=name]', 'Grace');
  await snap(guest, 'guest-names-herself');
  await guest.click('button');
  await guest.waitForURL(/\/notebooks\/nb\.ipynb$/, { timeout: 10000 });
  await guest.locator('section.cell .cm-content').first().waitFor({ timeout: 15000 });
  step('guest joins through the link', true);
  // Her capabilities show: she may edit, not run.
  const guestEditable = await waitFor(async () =>
    guest.locator('section.cell').first().locator('.cm-content[contenteditable=true]').count().then((n) => n === 1),
  );
  step('guest can type', guestEditable !== null);
  const runVisible = await guest.locator('section.cell .run').first().isVisible();
  step('guest has no run control', !runVisible);

  // Each sees the other's typing, and the other's cursor.
  await typeInFirstCell(guest, '  # from Grace');
  let took = await waitFor(async () => (await firstCellText(owner)).includes('# from Grace'));
  report.latency_ms.guest_to_owner = took;
  step("owner sees the guest's text within 1 s", took !== null && took < 1000, took);
  await typeInFirstCell(owner, '  # from the owner');
  took = await waitFor(async () => (await firstCellText(guest)).includes('# from the owner'));
  report.latency_ms.owner_to_guest = took;
  step("guest sees the owner's text within 1 s", took !== null && took < 1000, took);
  const ownerCursorAtGuest = await waitFor(async () =>
    guest.locator('.cm-ySelectionCaret').count().then((n) => n > 0),
  );
  step("guest sees the owner's cursor", ownerCursorAtGuest !== null);
  await guest.locator('section.cell').first().locator('.cm-content').click();
  const guestCursorAtOwner = await waitFor(async () =>
    owner.locator('.cm-ySelectionCaret').count().then((n) => n > 0),
  );
  step("owner sees the guest's cursor", guestCursorAtOwner !== null);
  const people = await waitFor(async () => owner.locator('.people .person').count().then((n) => n >= 2));
  step('owner sees who is here', people !== null);
  const presence = await waitFor(async () =>
    guest.locator('section.cell').first().locator('.presence-dot').count().then((n) => n > 0),
  );
  step('the guest sees which cell the owner is in', presence !== null);

  // The owner holds cell 0: the guest is told who is editing, and cannot change it.
  await owner.locator('section.cell').first().locator('button.lock').click();
  const held = await waitFor(async () =>
    (await guest.locator('section.cell').first().locator('.run-status').innerText()).includes('is editing'),
  );
  step('a held cell shows who holds it', held !== null);
  const heldReadOnly = await waitFor(async () =>
    guest.locator('section.cell').first().locator('.cm-content[contenteditable=false]').count().then((n) => n === 1),
  );
  step("the guest cannot type in the owner's held cell", heldReadOnly !== null);
  const ownerHolds = await waitFor(async () =>
    (await owner.locator('section.cell').first().locator('button.lock').innerText()) === 'release',
  );
  // The answer to the hold came before the answer to a later chat message.
  const afterHold = await chatSentinel(owner, 'the owner holds cell 0');
  const holdBanner = await errorBanner(owner);
  step('the owner holds the cell with no error shown', ownerHolds !== null && afterHold !== null && holdBanner === null,
    `${ownerHolds} ${afterHold} ${holdBanner}`);
  await snap(guest, 'owner-holds-cell-0');
  await owner.locator('section.cell').first().locator('button.lock').click();
  const released = await waitFor(async () =>
    guest.locator('section.cell').first().locator('.cm-content[contenteditable=true]').count().then((n) => n === 1),
  );
  step('released, the cell is the guest\'s to type in again', released !== null);
  await snap(owner, 'owner-sees-grace');
  await snap(guest, 'grace-sees-owner');

  // A request whose socket closes before the answer fails, and the page says so. This page's
  // socket goes through the test, which closes it (as a network failure would: the page
  // reconnects) in place of passing its first hold request on.
  const flaky = await ownerContext.newPage();
  flaky.on('pageerror', (e) => errors.push(`flaky: ${e.message}`));
  let dropped = false;
  await flaky.routeWebSocket(/\/api\/collaboration\/room\//, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((message) => {
      const lock = typeof message !== 'string' && message[0] === 2 && message.includes('"type":"lock"');
      if (lock && !dropped) {
        dropped = true;
        ws.close({ code: 4000, reason: 'closed by the test' });
        server.close();
      } else server.send(message);
    });
    server.onMessage((message) => ws.send(message));
  });
  await flaky.goto(`${base}/notebooks/nb.ipynb`);
  await flaky.locator('section.cell').first().locator('button.lock').click();
  const failed = await waitFor(async () => ((await errorBanner(flaky)) ?? '').includes('closed before'));
  step('a hold whose socket closes fails, and the page says so', dropped && failed !== null, await errorBanner(flaky));
  await snap(flaky, 'hold-without-answer');
  await flaky.close();

  // A run request forged from the guest's page is refused by the server.
  const forged = await guest.evaluate(async ({ fileId }) => {
    const ws = new WebSocket(`ws://${location.host}/api/collaboration/room/json:notebook:${fileId}`);
    ws.binaryType = 'arraybuffer';
    const text = new TextEncoder().encode(JSON.stringify({ type: 'execute', cell_id: 'cell-0', request_id: 99 }));
    const varUint = (n) => {
      const out = [];
      while (n > 127) { out.push((n & 127) | 128); n >>>= 7; }
      out.push(n);
      return out;
    };
    return await new Promise((resolve) => {
      ws.onopen = () => ws.send(new Uint8Array([2, ...varUint(text.length), ...text]));
      ws.onmessage = (event) => {
        const bytes = new Uint8Array(event.data);
        if (bytes[0] !== 2) return;
        let i = 1, len = 0, shift = 0;
        for (;;) { const b = bytes[i++]; len |= (b & 127) << shift; shift += 7; if (b < 128) break; }
        const message = JSON.parse(new TextDecoder().decode(bytes.slice(i, i + len)));
        if (message.type === 'execute') { ws.close(); resolve(message); }
      };
      setTimeout(() => resolve({ status: 'no answer' }), 5000);
    });
  }, { fileId: args['file-id'] });
  step('a forged run request from the guest is refused', forged.status === 'refused', JSON.stringify(forged));

  // Chat: the guest posts, the owner reads it.
  await guest.fill('.chat-input', 'hello from Grace');
  await guest.press('.chat-input', 'Enter');
  const chatted = await waitFor(async () => (await owner.locator('.chat-messages').innerText()).includes('hello from Grace'));
  step("the owner reads the guest's chat message", chatted !== null);

  // The owner grants execute, live, in the share panel: the guest's run control appears.
  await owner.locator(`.share-panel li.link[data-link-id="${editLinkId}"] input[data-cap=execute]`).click();
  const canRun = await waitFor(async () => guest.locator('section.cell .run').first().isVisible());
  step('guest gets a run control', canRun !== null, canRun);
  await guest.locator('section.cell').first().locator('.run').click();
  const ownerOutput = await waitFor(
    async () => (await owner.locator('section.cell').first().locator('.outputs').innerText()).includes('42'),
    30000,
  );
  const guestOutput = await waitFor(
    async () => (await guest.locator('section.cell').first().locator('.outputs').innerText()).includes('42'),
    5000,
  );
  step('both see the output of the guest\'s run', ownerOutput !== null && guestOutput !== null);
  // A peer's streaming output above the screen does not move what the owner is looking at.
  await owner.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
  await new Promise((r) => setTimeout(r, 300));
  const anchor = () =>
    owner.evaluate(() => {
      const cell = document.elementFromPoint(600, 300)?.closest('section.cell');
      return cell ? { id: cell.dataset.cellId, top: Math.round(cell.getBoundingClientRect().top) } : null;
    });
  const looking = await anchor();
  await guest.locator('section.cell').nth(4).scrollIntoViewIfNeeded();
  await guest.locator('section.cell').nth(4).locator('.run').click();
  const streamed = await waitFor(
    async () => (await owner.locator('section.cell').nth(4).locator('.outputs').innerText()).includes('line 39'),
    30000,
  );
  await new Promise((r) => setTimeout(r, 300));
  const stillLooking = await anchor();
  step(
    "a peer's streaming output does not move the owner's view",
    streamed !== null && looking && stillLooking && looking.id === stillLooking.id && Math.abs(looking.top - stillLooking.top) <= 2,
    JSON.stringify({ looking, stillLooking }),
  );
  await owner.evaluate(() => window.scrollTo(0, 0));
  const ranBy = await waitFor(async () =>
    (await owner.locator('section.cell').first().locator('.run-status').innerText()).includes('Grace'),
  );
  step('the owner sees who ran it', ranBy !== null);
  await snap(owner, 'grace-ran-a-cell');

  // Untrusted HTML: a markdown cell with an onerror image, an HTML output with a script.
  await owner.locator('section.cell').nth(2).locator('.run').click();
  await waitFor(
    async () => owner.locator('section.cell').nth(2).locator('iframe.output-frame').count().then((n) => n > 0),
    30000,
  );
  await new Promise((r) => setTimeout(r, 500));
  const ownerFlags = await flagsSet(owner);
  const guestFlags = await flagsSet(guest);
  step('no markdown or output script ran in the app', ownerFlags.length === 0 && guestFlags.length === 0,
    JSON.stringify({ ownerFlags, guestFlags }));
  const outputFrame = owner.frames().find((f) => f.url().endsWith('/sandbox'));
  const ranInFrame = outputFrame
    ? await waitFor(async () => (await outputFrame.evaluate(() => document.body.getAttribute('data-ran'))) === 'yes')
    : null;
  step("the HTML output's script ran, inside its sandboxed frame", ranInFrame !== null);
  // A peer typing in the cell does not load its HTML output again (its script would run again
  // and draw another token): once the owner sees all the typed text, the token is the same.
  const frameToken = async () => {
    const frame = await owner.locator('section.cell').nth(2).locator('iframe.output-frame').elementHandle();
    const content = await frame?.contentFrame();
    return content ? content.evaluate(() => document.body?.getAttribute('data-token') ?? null) : null;
  };
  await waitFor(async () => (await frameToken()) !== null);
  const tokenBefore = await frameToken();
  await typeInCell(guest, '  # Grace types here', 2);
  const peerTyped = await waitFor(async () =>
    (await owner.locator('section.cell').nth(2).locator('.editor').innerText()).includes('# Grace types here'),
  );
  const tokenAfter = await frameToken();
  step("a peer's typing does not reload the cell's HTML output",
    tokenBefore !== null && peerTyped !== null && tokenAfter === tokenBefore,
    JSON.stringify({ tokenBefore, peerTyped, tokenAfter }));
  const markdownImg = await owner.locator('section.cell').nth(1).locator('.rendered img').count();
  const onerror = await owner.locator('section.cell').nth(1).locator('.rendered img[onerror]').count();
  step('markdown is rendered, sanitized', markdownImg === 1 && onerror === 0, `${markdownImg} ${onerror}`);
  await snap(owner, 'untrusted-output');

  // input(): the prompt goes to whoever ran the cell, and the answer lands in the output.
  await owner.locator('section.cell').nth(3).locator('.run').click();
  const asked = await waitFor(
    async () => owner.locator('section.cell').nth(3).locator('.stdin-input').count().then((n) => n === 1),
    30000,
  );
  step('the one who ran the cell is asked for input', asked !== null);
  const guestAsked = await guest.locator('section.cell').nth(3).locator('.stdin-input').count();
  step('nobody else is asked', guestAsked === 0);
  await owner.locator('section.cell').nth(3).locator('.stdin-input').fill('Ada');
  await owner.locator('section.cell').nth(3).locator('.stdin-input').press('Enter');
  const answered = await waitFor(
    async () => (await guest.locator('section.cell').nth(3).locator('.outputs').innerText()).includes('hello Ada'),
    10000,
  );
  step('everyone sees the answered run', answered !== null);

  // A watch-only guest sees edits live and cannot type.
  const watchLink = await createLink(owner, ['view', 'watch']);
  const watcherContext = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  const watcher = await watcherContext.newPage();
  watcher.on('pageerror', (e) => errors.push(`watcher: ${e.message}`));
  await watcher.goto(watchLink);
  await watcher.fill('input[name=name]', 'Walter');
  await watcher.click('button');
  await watcher.waitForURL(/\/notebooks\//, { timeout: 10000 });
  await watcher.locator('section.cell .cm-content').first().waitFor({ timeout: 15000 });
  const banner = await waitFor(async () =>
    (await watcher.locator('.banner').innerText()).toLowerCase().includes('watching'),
  );
  step('a watch-only guest sees a read-only banner', banner !== null);
  const readOnly = await watcher.locator('section.cell').first().locator('.cm-content[contenteditable=false]').count();
  step('a watch-only guest cannot type', readOnly === 1);
  const before = await firstCellText(owner);
  await watcher.locator('section.cell').first().locator('.cm-content').click().catch(() => {});
  await watcher.keyboard.type('# from Walter');
  await typeInFirstCell(owner, '  # live');
  const seesLive = await waitFor(async () => (await firstCellText(watcher)).includes('# live'));
  step('a watch-only guest sees edits live', seesLive !== null);
  await new Promise((r) => setTimeout(r, 300));
  const after = await firstCellText(owner);
  step("the watcher's typing changed nothing", !after.includes('Walter') && after.startsWith(before.slice(0, 5)));
  const history = await waitFor(async () => (await watcher.locator('.chat-messages').innerText()).includes('hello from Grace'));
  step('a late joiner sees the chat history', history !== null);
  const canPost = await watcher.locator('.chat-input').isEnabled();
  step('a watch-only guest cannot post to the chat', !canPost);
  await snap(watcher, 'walter-watches');

  // A checkpoint, then a change, then back to the checkpoint: everyone's page follows.
  owner.on('dialog', (dialog) => dialog.accept());
  await owner.click('button.checkpoint');
  const made = await waitFor(async () => (await owner.locator('.save-state').innerText()).includes('checkpoint made'));
  step('owner makes a checkpoint', made !== null);
  await typeInFirstCell(owner, '  # after the checkpoint');
  await owner.click('button.save');
  await waitFor(async () => (await owner.locator('.save-state').innerText()).includes('saved'));
  const typedSeen = await waitFor(async () => (await firstCellText(watcher)).includes('# after the checkpoint'));
  await owner.click('button.revert');
  const reverted = await waitFor(
    async () => !(await firstCellText(watcher)).includes('# after the checkpoint'),
    10000,
  );
  step('reverting to the checkpoint reaches everyone', typedSeen !== null && reverted !== null, `${typedSeen} ${reverted}`);

  // The owner revokes Grace's link in the share panel: her page says so within 2 s and she can
  // change nothing.
  await owner.locator(`.share-panel li.link[data-link-id="${editLinkId}"] button.revoke-link`).click();
  const gone = await waitFor(async () =>
    owner.locator(`.share-panel li.link[data-link-id="${editLinkId}"]`).count().then((n) => n === 0),
  );
  step('owner revokes the link', gone !== null);
  took = await waitFor(async () => (await guest.locator('.banner').innerText()).toLowerCase().includes('revoked'), 2000);
  step("the guest's page says she was revoked within 2 s", took !== null, took);
  const locked = await guest.locator('section.cell').first().locator('.cm-content[contenteditable=false]').count();
  step('the revoked guest can no longer type', locked === 1);
  await snap(guest, 'grace-revoked');
  // (The hostile output's own attempts to reach the app fail inside its frame, as they must:
  // those are not the app's errors.)
  const appErrors = errors.filter((e) => !e.includes('Blocked a frame with origin "null"'));
  step('no script errors in the pages', appErrors.length === 0, appErrors.join(' | '));
  step('the output frame was stopped from reaching the app', errors.length > appErrors.length);
} catch (e) {
  step('the scenario ran to its end', false, e?.stack ?? e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
