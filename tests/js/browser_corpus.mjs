// Opens each named notebook in the app (one browser context, logged in with the token) and
// reports, per notebook, how many cells and outputs the page shows and any script errors.
// node browser_corpus.mjs --base URL --token T [--chromium PATH] NAME...
import { chromium } from 'playwright-core';

const argv = process.argv.slice(2);
const option = (name) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv.splice(i, 2)[1] : undefined;
};
const base = option('base').replace(/\/$/, '');
const token = option('token');
const executablePath = option('chromium') ?? '/usr/bin/chromium';
const browser = await chromium.launch({ executablePath, args: ['--no-sandbox', '--disable-gpu'] });
const page = await (await browser.newContext()).newPage();
await page.goto(`${base}/api/me?token=${token}`);
const report = [];
for (const name of argv) {
  const errors = [];
  const onError = (e) => errors.push(e.message);
  page.on('pageerror', onError);
  await page.goto(`${base}/notebooks/${encodeURIComponent(name)}`);
  await page
    .locator('section.cell')
    .first()
    .waitFor({ state: 'attached', timeout: 15000 })
    .catch((e) => errors.push(`no cell shown: ${e.message.split('\n')[0]}`));
  await new Promise((r) => setTimeout(r, 300));
  report.push({
    name,
    cells: await page.locator('section.cell').count(),
    outputs: await page.locator('.outputs > *').count(),
    errors,
  });
  page.off('pageerror', onError);
}
await browser.close();
console.log(JSON.stringify(report));
