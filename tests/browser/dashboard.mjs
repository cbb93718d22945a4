// The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core.
// Started by tests/tests/browser.rs against the real binaries on Postgres, which passes:
//   TM_URL            the dashboard's base URL (http://127.0.0.1:PORT), through a proxy of the
//                     Rust side that can cut every open connection (`cut` / `cut-done` in the
//                     handshake directory)
//   TM_VIEWER, TM_OPERATOR   the two API tokens
//   TM_HANDSHAKE      a directory: this script writes `ready` there when it wants the slow
//                     run, and the Rust side answers with `slow-run` holding the id of a run
//                     that emits many events for several seconds (a small batch, a pause per
//                     chunk)
//   TM_JOB            the job the operator runs, pauses and resumes
//   TM_TICKING_JOB    the slow run's job, which ticks every second with overlap skip while
//                     the slow run goes on (so its ledger holds skipped ticks)
//   TM_SHOTS          where the screenshots go (kept as test artifacts)
//   TM_CHROMIUM       the browser binary (default /usr/bin/chromium)
// Each step prints one line; the first failure throws, and the process exits non-zero.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const base = env("TM_URL");
const shots = env("TM_SHOTS");
const job = env("TM_JOB");
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.TM_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const step = (what) => console.log(`[browser] ${what}`);
const shot = (page, name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });

async function signIn(token, width = 1280) {
  const context = await browser.newContext({ viewport: { width, height: 900 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => { throw new Error(`script error on ${page.url()}: ${e.message}`); });
  await page.goto(`${base}/`);
  assert.match(page.url(), /\/login\?next=/, "signed out, the dashboard asks for a token");
  await page.fill("input[name=token]", token);
  await Promise.all([page.waitForURL(`${base}/`), page.click("button[type=submit]")]);
  return { context, page };
}

try {
  // ---- the viewer -----------------------------------------------------------------------
  const viewer = await signIn(env("TM_VIEWER"));
  await viewer.page.waitForSelector("table.jobs");
  assert.ok(await viewer.page.isVisible(`a[href="/jobs/${job}"]`), "the job is listed");
  assert.equal(await viewer.page.locator("text=Run now").count(), 0, "a viewer sees no Run now");
  assert.match(await viewer.page.textContent(".who"), /viewer/);
  await shot(viewer.page, "overview-viewer");
  step("viewer: overview without write controls");
  // A forged POST from the viewer's own page, with its valid CSRF token: 403, nothing runs.
  const forged = await viewer.page.evaluate(async (job) => {
    const csrf = document.querySelector("input[name=csrf]").value;
    const r = await fetch(`/jobs/${job}/trigger`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: `csrf=${encodeURIComponent(csrf)}`,
      redirect: "manual",
    });
    return r.status;
  }, job);
  assert.equal(forged, 403, "the viewer's forged POST is refused");
  step("viewer: forged POST refused with 403");

  // ---- the operator ---------------------------------------------------------------------
  const op = await signIn(env("TM_OPERATOR"));
  // A POST without the CSRF token is refused.
  const noCsrf = await op.page.evaluate(async (job) => {
    const r = await fetch(`/jobs/${job}/pause`, { method: "POST", redirect: "manual",
      headers: { "Content-Type": "application/x-www-form-urlencoded" }, body: "" });
    return r.status;
  }, job);
  assert.equal(noCsrf, 403, "a POST without the CSRF token is refused");
  step("operator: POST without CSRF token refused with 403");

  // Run now from the job page, then follow the run to SUCCEEDED on its page.
  await op.page.goto(`${base}/jobs/${job}`);
  await Promise.all([op.page.waitForURL(/\/runs\/[0-9a-f-]+$/), op.page.click("button:has-text('Run now')")]);
  await op.page.waitForSelector("#tm-state .s-succeeded", { timeout: 60_000 });
  await op.page.waitForFunction(() => document.getElementById("tm-run").dataset.live === "ended");
  assert.ok((await op.page.locator("#tm-events li").count()) >= 3, "state events are listed");
  await shot(op.page, "run-succeeded");
  step("operator: Run now, the run page reached succeeded live");

  // Pause and resume from the job page.
  await op.page.goto(`${base}/jobs/${job}`);
  await Promise.all([op.page.waitForURL(`${base}/jobs/${job}`), op.page.click("button:has-text('Pause')")]);
  assert.ok(await op.page.isVisible("h1 .badge:has-text('paused')"), "paused");
  await shot(op.page, "job-paused");
  await Promise.all([op.page.waitForURL(`${base}/jobs/${job}`), op.page.click("button:has-text('Resume')")]);
  assert.equal(await op.page.locator("h1 .badge:has-text('paused')").count(), 0, "resumed");
  await shot(op.page, "job");
  step("operator: pause and resume");

  // An invalid cron in the edit form: the API's message, nothing saved.
  await op.page.goto(`${base}/jobs/${job}`);
  const before = await op.page.inputValue("input[name=schedule]");
  await op.page.fill("input[name=schedule]", "61 * * * *");
  await op.page.click("button:has-text('Preview')");
  await op.page.waitForSelector(".preview .err");
  await shot(op.page, "edit-preview-invalid");
  await op.page.fill("input[name=schedule]", "61 * * * *");
  await op.page.click("button:has-text('Save')");
  await op.page.waitForSelector("p.err");
  assert.match(await op.page.textContent("p.err"), /61 \* \* \* \*/);
  await shot(op.page, "edit-invalid-cron");
  await op.page.goto(`${base}/jobs/${job}`);
  assert.equal(await op.page.inputValue("input[name=schedule]"), before, "nothing was saved");
  step("operator: an invalid cron is refused with the API's message");

  // A report beside the previous period.
  await op.page.goto(`${base}/reports`);
  await op.page.click("a:has-text('daily-analytics') >> nth=0");
  await op.page.waitForSelector("table.report");
  assert.ok((await op.page.textContent("table.report")).includes("+20 (+20.0%)"), "the change from the previous period");
  // Its chart: each number across the periods, this one highlighted.
  assert.equal(await op.page.locator(".history svg").count(), 2, "a chart per number");
  assert.equal(await op.page.locator(".history svg >> nth=0 >> rect.now").getAttribute("data-period"), "2026-11-28");
  await shot(op.page, "report");
  step("report beside the previous period, with its history chart");

  // The slow run: drop the connection in the middle, the console resumes from the last event
  // id it saw, with every event exactly once.
  const hs = env("TM_HANDSHAKE");
  writeFileSync(join(hs, "ready"), "");
  let slow = "";
  for (let i = 0; i < 600 && !slow; i++) {
    try { slow = readFileSync(join(hs, "slow-run"), "utf8").trim(); } catch (_) { await new Promise((r) => setTimeout(r, 100)); }
  }
  assert.ok(slow, "the slow run was started");
  await op.page.goto(`${base}/runs/${slow}`);
  await op.page.waitForFunction(() => document.querySelectorAll("#tm-events li").length >= 3);
  assert.notEqual(await op.page.getAttribute("#tm-run", "data-live"), "ended", "the run is still going");
  // The Rust side cuts every open connection of its proxy (the browser's only way in).
  writeFileSync(join(hs, "cut"), "");
  for (let i = 0; i < 300; i++) {
    try { readFileSync(join(hs, "cut-done")); break; } catch (_) { await new Promise((r) => setTimeout(r, 100)); }
  }
  await op.page.waitForSelector("#tm-state .s-succeeded", { timeout: 90_000 });
  await op.page.waitForFunction(() => document.getElementById("tm-run").dataset.live === "ended");
  const seqs = await op.page.$$eval("#tm-events li", (lis) => lis.map((li) => Number(li.dataset.seq)));
  assert.ok(seqs.length >= 10, `many events: ${seqs.length}`);
  assert.deepEqual(seqs, seqs.map((_, i) => i + 1), `no gap and no duplicate: ${seqs.join(",")}`);
  const opens = Number(await op.page.getAttribute("#tm-run", "data-opens"));
  assert.ok(opens >= 2, `the stream was dropped and reopened (${opens} opens)`);
  await shot(op.page, "run-resumed");
  step(`operator: the live console resumed after a dropped connection (${seqs.length} events, none missing or doubled)`);

  // The tick ledger: the ticks that fell while the slow run was going were skipped, and each
  // says why.
  await op.page.goto(`${base}/jobs/${env("TM_TICKING_JOB")}`);
  const skippedTick = op.page.locator("ol.ledger li[data-verdict=skipped] a").first();
  await skippedTick.waitFor();
  assert.match(await skippedTick.getAttribute("title"),
    /skipped \(skipped\): overlap policy 'skip': run \S+ is still running/, "the reason of the skip");
  await skippedTick.focus();
  await shot(op.page, "ledger-skipped");
  step("the tick ledger shows a skipped tick with its reason");

  // Cancel all matching: the count first, then the button that cancels what was counted.
  await op.page.goto(`${base}/runs?job=${encodeURIComponent(job)}&state=succeeded`);
  await Promise.all([op.page.waitForURL(/\/runs\/cancel-matching\?/), op.page.click("a:has-text('Cancel all matching')")]);
  assert.equal(await op.page.getAttribute(".count", "data-count"), "0", "nothing succeeded can be cancelled");
  await shot(op.page, "cancel-matching-none");
  step("cancel all matching counts first (nothing to cancel among finished runs)");

  // The runs list with its filters in the URL, on a phone-wide screen and in dark mode.
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, colorScheme: "dark",
    storageState: await op.context.storageState() });
  const p = await phone.newPage();
  await p.goto(`${base}/runs?job=${encodeURIComponent(job)}&state=succeeded`);
  assert.equal(await p.inputValue("select[name=state]"), "succeeded");
  const overflow = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `no sideways scrolling on a phone: ${overflow}px`);
  await shot(p, "runs-phone-dark");
  step("runs list on a phone-wide screen, dark mode");
  console.log("[browser] all steps passed");
} finally {
  await browser.close();
}
