// Browser figures (a benchmark, not a test: it prints numbers and asserts nothing):
// - time from opening a notebook to the page being interactive (every cell laid out, the first
//   code cell's editor accepting input), over a few fresh browser contexts;
// - keystroke-to-remote-render latency between two browser contexts in the first code cell
//   (p50/p99 over --keys keystrokes).
//
// node browser_bench.mjs --base URL --token T --notebook PATH --cells N [--keys 200]
//                        [--chromium PATH]
import { chromium } from 'playwright-core';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith('--')) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const base = args.base.replace(/\/$/, '');
const cells = Number(args.cells);
const keys = Number(args.keys ?? 200);
const url = `${base}/notebooks/${args.notebook}?token=${args.token}`;
const browser = await chromium.launch({
  executablePath: args.chromium ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

async function open(context) {
  const page = await context.newPage();
  const started = Date.now();
  await page.goto(url);
  await page.locator('section.cell').nth(cells - 1).waitFor({ state: 'attached', timeout: 120000 });
  await page
    .locator('section.cell-code')
    .first()
    .locator('.cm-content[contenteditable=true]')
    .waitFor({ timeout: 120000 });
  return { page, ms: Date.now() - started };
}

const loads = [];
for (let i = 0; i < 3; i++) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  loads.push((await open(context)).ms);
  await context.close();
}

// Two people in one cell: every keystroke of one, timed until the other's editor shows it.
const typist = await open(await browser.newContext({ viewport: { width: 1200, height: 900 } }));
const reader = await open(await browser.newContext({ viewport: { width: 1200, height: 900 } }));
await reader.page.evaluate(() => {
  const content = document.querySelector('section.cell-code .cm-content');
  window.__seen = [];
  new MutationObserver(() => {
    window.__seen.push({ at: Date.now(), text: content.textContent });
  }).observe(content, { childList: true, subtree: true, characterData: true });
});
await typist.page.locator('section.cell-code').first().locator('.cm-content').click();
await typist.page.keyboard.press('Control+End');
const sent = [];
for (let i = 0; i < keys; i++) {
  const marker = String.fromCharCode(97 + (i % 26));
  sent.push({ at: Date.now(), length: i + 1 });
  await typist.page.keyboard.type(marker);
  await new Promise((r) => setTimeout(r, 40));
}
await new Promise((r) => setTimeout(r, 1000));
const seen = await reader.page.evaluate(() => window.__seen);
const original = seen.length ? seen[0].text.length - 1 : 0;
const latencies = [];
for (const [i, key] of sent.entries()) {
  const shown = seen.find((s) => s.text.length - original >= i + 1 && s.at >= key.at);
  if (shown) latencies.push(shown.at - key.at);
}
latencies.sort((a, b) => a - b);
loads.sort((a, b) => a - b);
console.log(
  JSON.stringify({
    notebook: args.notebook,
    cells,
    open_to_interactive_ms: { runs: loads, median: loads[1] },
    keystroke_to_remote_render_ms: {
      keys,
      rendered: latencies.length,
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      max: latencies[latencies.length - 1],
    },
  }),
);
await browser.close();
