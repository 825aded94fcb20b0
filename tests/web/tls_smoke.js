/*
 * tls_smoke.js - the web client over https and wss through nginx, in
 * Debian's headless chromium (run by tests/scripts/web_tls.sh).
 *
 *   node tls_smoke.js HTTPS_BASE_URL SCREENSHOT
 *
 * Loads the page from nginx, registers and logs in, both over
 * wss://.../ws, so the Upgrade went through nginx.  The certificate is a
 * throwaway self-signed one: certificate errors are ignored for it.
 * Prints ok/FAIL lines; exit 0 when all passed.
 */
'use strict';

const { chromium } = require('playwright-core');

const [base, shotPath] = process.argv.slice(2);
const WAIT = 10000;

async function main() {
    const browser = await chromium.launch({
        executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
        args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
               '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    const r = await page.goto(base + '/');
    if (r.status() !== 200)
        throw new Error('GET / through nginx answered ' + r.status());
    console.log('ok   GET / over https through nginx');
    if (!(await page.evaluate(() => location.protocol === 'https:')))
        throw new Error('not an https page');
    await page.click('#tab-register');
    await page.fill('#reg-name', 'tls 用户 🔒 ' + (Date.now() % 100000));
    await page.fill('#reg-password', 'tls-web-pw');
    await page.click('#reg-submit');
    await page.waitForFunction(() => /user id is \d+/.test(document.getElementById('auth-msg').textContent),
                               null, { timeout: WAIT });
    console.log('ok   registered over wss:// through nginx');
    await page.click('#login-submit');
    await page.waitForSelector('#app:not([hidden])', { timeout: WAIT });
    console.log('ok   logged in over wss:// through nginx');
    await page.screenshot({ path: shotPath });
    await browser.close();
}

main().then(() => {
    console.log('all checks passed');
}, (e) => {
    console.log('FAIL ' + (e.message || e).split('\n')[0]);
    process.exit(1);
});
