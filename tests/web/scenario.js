/*
 * scenario.js - the web client driven in Debian's headless chromium
 * (playwright-core, no browser download), run by tests/scripts/web_client.sh.
 *
 *   node scenario.js BASE_URL OUTDIR RESTART_CMD
 *
 * Two users in two browser contexts (separate storage): both register and
 * log in, A asks B to be friends and B accepts the request (FRIEND_REQUEST
 * 35, friend consent being the default), they chat in Chinese and emoji
 * both ways with the sender's delivery state going to "stored", then the
 * receiver's read receipt turns it "read", typing shows, 60 messages load
 * by scrolling up (each once, in cseq order), and a reload logs in with the
 * token; then RESTART_CMD restarts qchatd: both pages (both reloaded
 * before, so both resume with the kept token) show the reconnect banner,
 * it goes away, and a chat goes through again; last a group with its name,
 * members, a group chat and A made admin.  Screenshots at 1280x800 and 390x844 into
 * OUTDIR.
 *
 * Prints "ok ..." / "FAIL ..." lines; exit 0 when nothing failed.  Every
 * check runs against every server: one without the version 2 protocol
 * (the conversation log, friend requests, tokens) fails them.
 */
'use strict';

const { chromium } = require('playwright-core');
const { execSync } = require('child_process');
const path = require('path');

const [base, outdir, restartCmd] = process.argv.slice(2);
const WAIT = 10000;
const HISTORY_COUNT = 60;
const TYPING_INTERVAL_MS = 1100; /* the server's TYPING rate limit (1 s), and a margin */
const PASSWORD = 'web-test-pw';
const LAPTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

let failed = 0;
const ok = (what) => console.log('ok   ' + what);
const fail = (what, e) => {
    failed++;
    console.log('FAIL ' + what + (e ? ': ' + (e.message || e).split('\n')[0] : ''));
};

async function check(what, fn) {
    try {
        await fn();
        ok(what);
        return true;
    } catch (e) {
        fail(what, e);
        return false;
    }
}

async function shot(page, name, size) {
    await page.setViewportSize(size);
    await page.waitForTimeout(200);
    await page.screenshot({ path: path.join(outdir, name + '.png') });
}

async function register(page, name) {
    await page.goto(base + '/');
    await page.click('#tab-register');
    await page.fill('#reg-name', name);
    await page.fill('#reg-password', PASSWORD);
    await page.click('#reg-submit');
    await page.waitForFunction(() => /user id is \d+/.test(document.getElementById('auth-msg').textContent),
                               null, { timeout: WAIT });
    const text = await page.textContent('#auth-msg');
    return Number(text.match(/user id is (\d+)/)[1]);
}

async function login(page) {
    /* the registration left the id and password in the login form */
    await page.click('#login-submit');
    await page.waitForSelector('#app:not([hidden])', { timeout: WAIT });
}

async function openChatWith(page, key) {
    await page.click('#tab-chats');
    await page.click(`#conv-list li[data-key="${key}"]`, { timeout: WAIT });
    await page.waitForSelector('#composer:not([hidden])', { timeout: WAIT });
}

async function say(page, text) {
    await page.fill('#input', text);
    await page.press('#input', 'Enter');
}

async function lastMine(page) {
    return page.locator('#msg-list li.bubble.mine').last();
}

async function main() {
    const browser = await chromium.launch({
        executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
        args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
               '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const ctxA = await browser.newContext({ viewport: LAPTOP });
    const ctxB = await browser.newContext({ viewport: LAPTOP });
    const a = await ctxA.newPage();
    const b = await ctxB.newPage();
    for (const [p, who] of [[a, 'A'], [b, 'B']]) {
        p.on('pageerror', (e) => fail('page ' + who + ' script error', e));
        p.on('console', (m) => { if (m.type() === 'error') console.log('     ' + who + ' console: ' + m.text()); });
    }
    const stamp = Date.now() % 100000;
    const nameA = 'Alice 爱丽丝 ' + stamp;
    const nameB = 'Bob 🐻 ' + stamp;
    let idA = 0;
    let idB = 0;

    await check('the page loads from qchatd with its script and styles', async () => {
        const r = await a.goto(base + '/');
        if (r.status() !== 200)
            throw new Error('GET / answered ' + r.status());
        await a.waitForSelector('#auth:not([hidden])', { timeout: WAIT });
        const color = await a.$eval('.card h1', (e) => getComputedStyle(e).color);
        if (color === 'rgb(0, 0, 0)')
            throw new Error('style.css not applied');
    });
    await shot(a, 'login-laptop', LAPTOP);
    await shot(a, 'login-phone', PHONE);
    await a.setViewportSize(LAPTOP);

    if (!await check('A and B register (ids shown) and log in', async () => {
        idA = await register(a, nameA);
        idB = await register(b, nameB);
        await login(a);
        await login(b);
        const me = await a.textContent('#me-name');
        if (me !== nameA)
            throw new Error('A is shown as ' + me);
    })) {
        await browser.close();
        return;
    }

    await check('the server answers CONVERSATIONS_MSG (the version 2 log)', async () => {
        await a.waitForFunction(() => S.v2, null, { timeout: WAIT });
    });

    await check('A asks B to be friends; B sees the request and accepts; both list the other', async () => {
        await a.click('#tab-friends');
        await a.fill('#add-friend-id', String(idB));
        await a.click('#add-friend-form button');
        await a.locator(`#pending-list li:has-text("#${idB}")`).waitFor({ timeout: WAIT });
        await b.locator('#req-count:not([hidden])').waitFor({ timeout: WAIT });
        await b.click('#tab-friends');
        await b.click(`#request-list li:has-text("${nameA}") button:has-text("Accept")`, { timeout: WAIT });
        await b.locator(`#friend-list li:has-text("${nameA}")`).waitFor({ timeout: WAIT });
        /* the requester learns of the acceptance by a presence notice */
        await a.locator(`#friend-list li:has-text("${nameB}"):has-text("#${idB} ·")`).waitFor({ timeout: WAIT });
        if (await a.locator(`#pending-list li`).count() !== 0)
            throw new Error('A still lists B as waiting for an answer');
    });

    await check('A sends B Chinese and emoji text; it becomes "stored"', async () => {
        await a.click(`#friend-list li:has-text("#${idB} ·")`);
        await a.waitForSelector('#composer:not([hidden])', { timeout: WAIT });
        await say(a, '你好 Bob 👋 第一条');
        const mine = await lastMine(a);
        await mine.locator('.state.stored, .state.read').waitFor({ timeout: WAIT });
    });

    await check('B sees the chat in the list with an unread count, opens it, reads it', async () => {
        await b.click('#tab-chats');
        const row = b.locator(`#conv-list li[data-key="u:${idA}"]:has-text("${nameA}")`);
        await row.locator('.badge.unread').waitFor({ timeout: WAIT });
        if ((await row.locator('.badge.unread').textContent()) !== '1')
            throw new Error('unread badge is not 1');
        await row.click();
        await b.locator('#msg-list li.bubble:has-text("你好 Bob 👋 第一条")').waitFor({ timeout: WAIT });
        if (await row.locator('.badge.unread').count() !== 0)
            throw new Error('unread badge still shown after opening');
    });

    await check('B answers; A sees it live', async () => {
        await say(b, '收到 🎉 reply');
        await a.locator('#msg-list li.bubble:not(.mine):has-text("收到 🎉 reply")').waitFor({ timeout: WAIT });
    });

    await check('A\'s message turns "read" after B read it (RECEIPT 25)', async () => {
        await a.locator('#msg-list li.bubble.mine .state.read').first().waitFor({ timeout: WAIT });
    });
    await check('B typing shows on A\'s page (TYPING 26) and ends with B\'s message', async () => {
        /* B's answer above was typed too: the server forwards one notice a second */
        await b.waitForTimeout(TYPING_INTERVAL_MS);
        await b.type('#input', 'typing…');
        await a.waitForFunction(() => /typing/.test(document.getElementById('typing').textContent),
                                null, { timeout: WAIT });
        await b.fill('#input', '');
        await say(b, '打字 done');
        await a.locator('#msg-list li.bubble:not(.mine):has-text("打字 done")').waitFor({ timeout: WAIT });
        const still = await a.textContent('#typing');
        if (still !== '')
            throw new Error('after the message A still shows "' + still + '"');
    });
    await check(`A sends ${HISTORY_COUNT} more; B scrolls up and history loads to the first`, async () => {
        for (let i = 1; i <= HISTORY_COUNT; i++)
            await say(a, 'history ' + i);
        await (await lastMine(a)).locator('.state.stored, .state.read').waitFor({ timeout: WAIT });
        await b.reload();
        await b.waitForSelector('#app:not([hidden])', { timeout: WAIT });
        await openChatWith(b, 'u:' + idA);
        await b.locator('#msg-list li.bubble:has-text("history ' + HISTORY_COUNT + '")').waitFor({ timeout: WAIT });
        for (let i = 0; i < 10; i++) {
            if (await b.locator('#msg-list li.bubble:has-text("你好 Bob 👋 第一条")').count())
                break;
            await b.$eval('#messages', (e) => { e.scrollTop = 0; });
            await b.waitForTimeout(400);
        }
        await b.locator('#msg-list li.bubble:has-text("你好 Bob 👋 第一条")').waitFor({ timeout: WAIT });
        const cseqs = await b.$$eval('#msg-list li.bubble', (l) => l.map((e) => Number(e.dataset.cseq)));
        if (cseqs.length !== HISTORY_COUNT + 3)
            throw new Error(cseqs.length + ' messages after scrolling, not ' + (HISTORY_COUNT + 3));
        cseqs.forEach((c, i) => {
            if (c !== i + 1)
                throw new Error('message ' + (i + 1) + ' has cseq ' + c + ' (duplicated or out of order)');
        });
    });
    await check('a reload keeps the session (token login, no password form, no password kept)', async () => {
        await a.reload();
        await a.waitForSelector('#app:not([hidden])', { timeout: WAIT });
        if (await a.isVisible('#auth'))
            throw new Error('the login form is shown');
        if (await a.textContent('#me-name') !== nameA)
            throw new Error('after the reload A is shown as ' + await a.textContent('#me-name'));
        const kept = await a.evaluate(() => Object.values(localStorage).join('\n'));
        if (kept.includes(PASSWORD))
            throw new Error('the password is kept in localStorage');
        const session = await a.evaluate(() => JSON.parse(localStorage.getItem('qchat.session') || 'null'));
        if (!session || session.id !== idA || typeof session.token !== 'string' || !session.token)
            throw new Error('no token kept in localStorage: ' + kept);
    });

    await openChatWith(a, 'u:' + idB);
    await shot(a, 'chat-laptop', LAPTOP);
    await shot(a, 'chat-phone', PHONE);
    await a.setViewportSize(LAPTOP);
    await check('at a phone width the back button leaves the conversation for the list', async () => {
        await b.setViewportSize(PHONE);
        await b.click('#back', { timeout: WAIT });
        await b.locator(`#conv-list li[data-key="u:${idA}"]`).waitFor({ timeout: WAIT });
        if (await b.isVisible('#composer'))
            throw new Error('the conversation is still shown');
        await shot(b, 'list-phone', PHONE);
    });
    await b.setViewportSize(LAPTOP);
    await openChatWith(b, 'u:' + idA);

    await check('a server restart shows the banner on both pages, then they recover', async () => {
        execSync(restartCmd, { stdio: 'inherit' });
        await a.waitForSelector('#banner:not([hidden])', { timeout: WAIT });
        await b.waitForSelector('#banner:not([hidden])', { timeout: WAIT });
        await shot(a, 'reconnecting-laptop', LAPTOP);
        for (const p of [a, b]) {
            try {
                await p.waitForSelector('#banner', { state: 'hidden', timeout: 3 * WAIT });
            } catch (e) {
                throw new Error('the banner stays: "' + await p.textContent('#banner') + '"');
            }
        }
    });
    await check('after the restart A\'s chat reaches B', async () => {
        await say(a, 'back again 🔁 重新连接');
        await (await lastMine(a)).locator('.state.stored, .state.read').waitFor({ timeout: WAIT });
        await b.locator('#msg-list li.bubble:has-text("back again 🔁 重新连接")').waitFor({ timeout: WAIT });
    });
    await shot(b, 'chat-after-restart-laptop', LAPTOP);

    await check('B creates a group, A joins it, members and a group chat', async () => {
        await b.click('#tab-groups');
        await b.fill('#new-group-name', '测试群 ' + stamp);
        await b.fill('#new-group-desc', 'web test 🧪');
        await b.click('#create-group-form button');
        const row = b.locator(`#group-list li:has-text("测试群 ${stamp}")`);
        await row.waitFor({ timeout: WAIT });
        const gid = Number((await row.locator('.preview').textContent()).match(/#(\d+)/)[1]);
        await a.click('#tab-groups');
        await a.fill('#join-group-id', String(gid));
        await a.click('#join-group-form button');
        /* the joiner learns the group's name (from CONVERSATIONS_MSG) */
        await a.click(`#group-list li:has-text("测试群 ${stamp}"):has-text("#${gid} ·")`, { timeout: WAIT });
        await say(a, '大家好 group 👥');
        await (await lastMine(a)).locator('.state.stored').waitFor({ timeout: WAIT });
        await b.click(`#group-list li:has-text("测试群 ${stamp}")`);
        await b.locator('#msg-list li.bubble:has-text("大家好 group 👥")').waitFor({ timeout: WAIT });
        await b.click('#conv-info');
        await b.locator(`#member-list li:has-text("${nameA}")`).waitFor({ timeout: WAIT });
        await b.locator(`#member-list li:has-text("${nameB}") .role:has-text("creator")`).waitFor({ timeout: WAIT });
    });
    await check('the creator makes A an admin from the member list (GROUP_ROLE 44)', async () => {
        await b.click(`#member-list li:has-text("${nameA}") button:has-text("Make admin")`, { timeout: WAIT });
        await b.locator(`#member-list li:has-text("${nameA}") .role:has-text("admin")`).waitFor({ timeout: WAIT });
        await b.locator(`#member-list li:has-text("${nameA}") button:has-text("Make normal")`).waitFor({ timeout: WAIT });
        await shot(b, 'group-members-laptop', LAPTOP);
        await shot(b, 'group-members-phone', PHONE);
        await b.setViewportSize(LAPTOP);
    });

    await browser.close();
}

main().then(() => {
    console.log(failed ? failed + ' check(s) failed' : 'all checks passed');
    process.exit(failed ? 1 : 0);
}, (e) => {
    console.log('FAIL scenario crashed: ' + (e.stack || e));
    process.exit(1);
});
