/*
 * app.js - the qchat web client: one WebSocket to /ws on the page's own
 * origin, the JSON protocol of qchat-protocol(7), one object per frame.
 *
 * Session: LOGIN_MSG (1) with token:true; the token (never the password)
 * is kept in localStorage so a reload logs in again with `token` (error 24
 * means it is bad or expired: back to the password form).  Every request
 * carries `seq`; its one reply (the seed's ACK or ACK_MSG 11) settles the
 * promise waiting for it.  A lost connection shows a banner and reconnects
 * with backoff, logs in with the token and catches up on the open
 * conversation with HISTORY `after` its last cseq.
 *
 * Messages are deduplicated by cseq (or mid).  A sent message is "sent"
 * until its ACK (then "stored", with the cseq the ACK carries) and "read"
 * once a RECEIPT_MSG (25) from the other user reaches its cseq.
 */
'use strict';

const MSG = {
    LOGIN: 1, LOGIN_ACK: 2, REG: 3, REG_ACK: 4, ONE_CHAT: 5, ADD_FRIEND: 6, CREATE_GROUP: 7,
    ADD_GROUP: 8, GROUP_CHAT: 9, LOGINOUT: 10, ACK: 11, KICK: 12, PRESENCE: 13, HEARTBEAT: 14,
    HISTORY: 20, HISTORY_ACK: 21, CONVERSATIONS: 22, CONVERSATIONS_ACK: 23, READ: 24, RECEIPT: 25,
    TYPING: 26, FRIEND_LIST: 30, FRIEND_LIST_ACK: 31, FRIEND_REMOVE: 32, BLOCK: 33, UNBLOCK: 34,
    FRIEND_REQUEST: 35, FRIEND_DECLINE: 36, GROUP_MEMBERS: 40, GROUP_MEMBERS_ACK: 41,
    GROUP_LEAVE: 42, GROUP_KICK: 43, GROUP_ROLE: 44, GROUP_UPDATE: 45, GROUP_DELETE: 46,
    GROUP_EVENT: 47,
};
const ERR_BAD_TOKEN = 24;
const ERR_UNKNOWN_MSGID = 7;
const REPLY_TIMEOUT_MS = 15000;
const HEARTBEAT_MS = 25000;
const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 15000;
const HISTORY_PAGE = 50;
const TYPING_SEND_EVERY_MS = 3000;
const TYPING_SHOW_MS = 5000;
const SCROLL_LOAD_PX = 80;
const STORE_KEY = 'qchat.session';
const DEVICE_KEY = 'qchat.device';

const $ = (id) => document.getElementById(id);

/* ---- state -------------------------------------------------------------- */

const S = {
    ws: null,
    seq: 0,
    pending: new Map(),     /* seq -> {resolve, reject, timer} */
    me: null,               /* {id, name} */
    token: null,
    password: null,         /* only in memory, when the server gives no token */
    loggedIn: false,
    kicked: false,
    leaving: false,
    retryMs: RECONNECT_MIN_MS,
    retryTimer: null,
    heartbeat: null,
    convs: new Map(),       /* key -> conv */
    friends: new Map(),     /* id -> {id, name, state} */
    requestsIn: new Map(),  /* id -> {id, name} */
    requestsOut: new Map(),
    blocked: new Map(),
    groups: new Map(),      /* groupid -> {groupid, groupname, groupdesc, users: []} */
    open: null,             /* key of the open conversation */
    typingSent: 0,
    typingTimers: new Map(),
    hasHistory: true,       /* the server answers HISTORY_MSG */
    v2: false,              /* the server answered CONVERSATIONS_MSG: READ and TYPING exist */
};

function convKey(m) {
    return m.groupid !== undefined ? 'g:' + m.groupid : 'u:' + m.with;
}

function getConv(key) {
    let c = S.convs.get(key);
    if (!c) {
        const isGroup = key.startsWith('g:');
        const id = Number(key.slice(2));
        c = {
            key, isGroup, id, name: '', msgs: [], seen: new Set(), unread: 0, readCseq: 0,
            lastCseq: 0, more: true, loading: false, loadedOnce: false, peerRead: 0, lastTs: 0,
        };
        S.convs.set(key, c);
    }
    if (!c.name)
        c.name = c.isGroup ? (S.groups.get(c.id) || {}).groupname || 'Group ' + c.id
                           : (S.friends.get(c.id) || {}).name || 'User ' + c.id;
    return c;
}

/* ---- the connection ----------------------------------------------------- */

function wsUrl() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
}

function connect() {
    clearTimeout(S.retryTimer);
    const ws = new WebSocket(wsUrl());
    S.ws = ws;
    ws.onopen = () => {
        S.retryMs = RECONNECT_MIN_MS;
        resumeSession();
    };
    ws.onmessage = (ev) => {
        let m;
        try {
            m = JSON.parse(ev.data);
        } catch (e) {
            console.warn('not JSON from the server', ev.data);
            return;
        }
        dispatch(m);
    };
    ws.onclose = () => {
        if (S.ws !== ws)
            return;
        S.ws = null;
        S.loggedIn = false;
        clearInterval(S.heartbeat);
        for (const p of S.pending.values()) {
            clearTimeout(p.timer);
            p.reject(new Error('connection lost'));
        }
        S.pending.clear();
        if (S.kicked || S.leaving)
            return;
        const wait = S.retryMs;
        S.retryMs = Math.min(S.retryMs * 2, RECONNECT_MAX_MS);
        banner('Connection lost. Reconnecting in ' + Math.round(wait / 1000) + ' s…');
        S.retryTimer = setTimeout(connect, wait);
    };
}

function send(obj) {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN)
        return false;
    S.ws.send(JSON.stringify(obj));
    return true;
}

/* A request with seq; resolves with its reply, rejects on error or loss. */
function request(obj) {
    return new Promise((resolve, reject) => {
        const seq = ++S.seq;
        obj.seq = seq;
        if (!send(obj)) {
            reject(new Error('not connected'));
            return;
        }
        const timer = setTimeout(() => {
            S.pending.delete(seq);
            reject(new Error('no answer from the server'));
        }, REPLY_TIMEOUT_MS);
        S.pending.set(seq, { resolve, reject, timer, obj });
    });
}

class ServerError extends Error {
    constructor(reply) {
        super(reply.errmsg || 'error ' + reply.errno);
        this.errno = reply.errno;
        this.reply = reply;
    }
}

function settle(m) {
    const p = S.pending.get(m.seq);
    if (!p)
        return false;
    S.pending.delete(m.seq);
    clearTimeout(p.timer);
    if (m.errno)
        p.reject(new ServerError(m));
    else
        p.resolve(m);
    return true;
}

function dispatch(m) {
    if (m.seq !== undefined && settle(m) && !isPush(m))
        return;
    switch (m.msgid) {
    case MSG.ONE_CHAT: case MSG.GROUP_CHAT: onChat(m); break;
    case MSG.KICK: onKick(m); break;
    case MSG.PRESENCE: onPresence(m); break;
    case MSG.READ: onReadSync(m); break;
    case MSG.RECEIPT: onReceipt(m); break;
    case MSG.TYPING: onTyping(m); break;
    case MSG.FRIEND_REQUEST: onFriendRequest(m); break;
    case MSG.GROUP_EVENT: onGroupEvent(m); break;
    case MSG.ACK:
        if (m.errno && m.seq === undefined)
            note('Server: ' + (m.errmsg || 'error ' + m.errno));
        break;
    default: break;
    }
}

function isPush(m) {
    return m.msgid === MSG.ONE_CHAT || m.msgid === MSG.GROUP_CHAT;
}

/* ---- logging in --------------------------------------------------------- */

function deviceName() {
    let d = localStorage.getItem(DEVICE_KEY);
    if (!d) {
        d = 'web-' + Math.random().toString(36).slice(2, 10);
        localStorage.setItem(DEVICE_KEY, d);
    }
    return d;
}

function saved() {
    try {
        return JSON.parse(localStorage.getItem(STORE_KEY) || 'null');
    } catch (e) {
        return null;
    }
}

function loginRequest(id, secret) {
    const req = {
        msgid: MSG.LOGIN, id, presence: true, receipts: true, typing: true, device: deviceName(),
    };
    if (secret.token)
        req.token = secret.token;
    else {
        req.password = secret.password;
        req.token = true;
    }
    return request(req);
}

/* After (re)connecting: log in with what we have, or show the form. */
async function resumeSession() {
    const s = saved();
    const id = S.me ? S.me.id : s && s.id;
    const secret = S.token ? { token: S.token } : s && s.token ? { token: s.token }
                 : S.password ? { password: S.password } : null;
    if (!id || !secret) {
        hideBanner();
        showAuth();
        return;
    }
    try {
        const reply = await loginRequest(id, secret);
        await afterLogin(reply, secret, s ? s.remember !== false : true);
    } catch (e) {
        if (e.errno === ERR_BAD_TOKEN || e.errno === 1) {
            localStorage.removeItem(STORE_KEY);
            S.token = null;
            S.password = null;
            hideBanner();
            showAuth('Please log in again.');
        } else if (S.ws) {
            banner('Could not log in: ' + e.message);
        }
    }
}

async function doLogin(ev) {
    ev.preventDefault();
    const id = Number($('login-id').value);
    const password = $('login-password').value;
    authMsg('');
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) {
        authMsg('Not connected to the server yet.');
        return;
    }
    try {
        const reply = await loginRequest(id, { password });
        $('login-password').value = '';
        await afterLogin(reply, { password }, $('login-remember').checked);
    } catch (e) {
        authMsg(e.errno === 1 ? 'Wrong user id or password.' : e.message);
    }
}

async function doRegister(ev) {
    ev.preventDefault();
    authMsg('');
    try {
        const r = await request({ msgid: MSG.REG, name: $('reg-name').value,
                                  password: $('reg-password').value });
        $('login-id').value = r.id;
        $('login-password').value = $('reg-password').value;
        $('reg-password').value = '';
        showAuthTab('login');
        authMsg('Account created. Your user id is ' + r.id + '.', true);
    } catch (e) {
        authMsg(e.errno === 3 ? 'That name is taken.' : e.message);
    }
}

function parseItems(arr) {
    return (arr || []).map((x) => {
        try {
            return typeof x === 'string' ? JSON.parse(x) : x;
        } catch (e) {
            return null;
        }
    }).filter(Boolean);
}

/*
 * secret is what the login used: {token} or {password}.  A token login's
 * reply carries no new token (it did not ask for one), so the token used
 * stays the session's: the next reconnect or reload needs it again.
 */
async function afterLogin(reply, secret, remember) {
    S.me = { id: reply.id, name: reply.name };
    S.loggedIn = true;
    S.kicked = false;
    if (reply.token || secret.token) {
        S.token = reply.token || secret.token;
        S.password = null;
    } else if (secret.password) {
        S.password = secret.password; /* no token was given: memory only, never stored */
    }
    if (remember && S.token)
        localStorage.setItem(STORE_KEY, JSON.stringify({ id: S.me.id, token: S.token, remember }));
    else
        localStorage.removeItem(STORE_KEY);
    hideBanner();
    clearInterval(S.heartbeat);
    S.heartbeat = setInterval(() => send({ msgid: MSG.HEARTBEAT }), HEARTBEAT_MS);

    for (const f of parseItems(reply.friends))
        S.friends.set(f.id, { id: f.id, name: f.name, state: f.state });
    for (const g of parseItems(reply.groups)) {
        g.users = parseItems(g.users);
        S.groups.set(g.groupid, g);
    }
    for (const m of parseItems(reply.offlinemsg))
        onChat(m);
    showApp();
    await Promise.allSettled([loadConversations(), loadFriends()]);
    if (S.open)
        catchUp(getConv(S.open));
    render();
}

function logout() {
    S.leaving = true;
    send({ msgid: MSG.LOGINOUT, revoke: true });
    localStorage.removeItem(STORE_KEY);
    setTimeout(() => location.reload(), 200);
}

/* ---- lists -------------------------------------------------------------- */

async function loadConversations() {
    try {
        const r = await request({ msgid: MSG.CONVERSATIONS, limit: 100 });
        S.v2 = true;
        for (const v of r.convs || []) {
            const c = getConv(convKey(v));
            if (v.name)
                c.name = v.name;
            const g = v.groupid !== undefined && S.groups.get(v.groupid);
            if (g && v.name)
                g.groupname = v.name; /* a joined group's name is known from here only */
            c.lastCseq = v.last_cseq || 0;
            c.readCseq = v.read_cseq || 0;
            c.unread = v.unread || 0;
            if (v.last)
                addMsg(c, v.last, false);
        }
    } catch (e) {
        if (e.errno !== ERR_UNKNOWN_MSGID)
            note('Conversations: ' + e.message);
    }
    for (const f of S.friends.values())
        getConv('u:' + f.id);
    for (const g of S.groups.values())
        getConv('g:' + g.groupid);
}

async function loadFriends() {
    try {
        const r = await request({ msgid: MSG.FRIEND_LIST });
        S.friends.clear();
        for (const f of r.friends || [])
            S.friends.set(f.id, f);
        S.requestsIn = new Map((r.requests_in || []).map((x) => [x.id, x]));
        S.requestsOut = new Map((r.requests_out || []).map((x) => [x.id, x]));
        S.blocked = new Map((r.blocked || []).map((x) => [x.id, x]));
    } catch (e) {
        if (e.errno !== ERR_UNKNOWN_MSGID)
            note('Friends: ' + e.message);
    }
}

/* ---- messages ----------------------------------------------------------- */

function msgIdOf(m) {
    if (m.cseq)
        return 'c' + m.cseq;
    if (m.mid)
        return 'm' + m.mid;
    return null;
}

/* Add m to c once; returns true when it was new. */
function addMsg(c, m, live) {
    const id = msgIdOf(m);
    if (id && c.seen.has(id))
        return false;
    if (id)
        c.seen.add(id);
    const mine = S.me && senderOf(m) === S.me.id;
    const entry = {
        cseq: m.cseq || 0, mid: m.mid, from: senderOf(m), name: m.name, text: m.msg,
        ts: m.ts || Date.parse((m.time || '').replace(' ', 'T')) || Date.now(), mine,
        state: mine ? 'stored' : null,
    };
    if (mine && c.peerRead && entry.cseq && entry.cseq <= c.peerRead)
        entry.state = 'read';
    c.msgs.push(entry);
    c.msgs.sort((a, b) => (a.cseq && b.cseq ? a.cseq - b.cseq : a.ts - b.ts));
    if (entry.cseq > c.lastCseq)
        c.lastCseq = entry.cseq;
    c.lastTs = Math.max(c.lastTs, entry.ts);
    if (live && !mine && !(S.open === c.key && document.visibilityState === 'visible'))
        c.unread++;
    return true;
}

function senderOf(m) {
    return m.msgid === MSG.GROUP_CHAT ? m.userid : m.id;
}

function onChat(m) {
    let key;
    if (m.msgid === MSG.GROUP_CHAT)
        key = 'g:' + m.groupid;
    else
        key = 'u:' + (S.me && m.id === S.me.id ? m.toid : m.id);
    const c = getConv(key);
    if (m.msgid === MSG.ONE_CHAT && S.me && m.id !== S.me.id && m.name && c.name === 'User ' + m.id)
        c.name = m.name; /* a stranger: the chat carries the name */
    if (!addMsg(c, m, true))
        return;
    stopTyping(c, senderOf(m));
    if (S.open === c.key) {
        renderMessages(c, true);
        markRead(c);
    }
    renderConvList();
}

async function sendMessage(ev) {
    ev.preventDefault();
    const text = $('input').value;
    if (!text.trim() || !S.open)
        return;
    const c = getConv(S.open);
    $('input').value = '';
    autoGrow();
    S.typingSent = 0; /* the next keystroke starts a new burst: tell it at once */
    const entry = { cseq: 0, from: S.me.id, name: S.me.name, text, ts: Date.now(), mine: true,
                    state: 'sent' };
    c.msgs.push(entry);
    c.lastTs = entry.ts;
    renderMessages(c, true);
    renderConvList();
    const req = c.isGroup ? { msgid: MSG.GROUP_CHAT, groupid: c.id, msg: text }
                          : { msgid: MSG.ONE_CHAT, toid: c.id, msg: text };
    try {
        const ack = await request(req);
        entry.cseq = ack.cseq || 0;
        entry.mid = ack.mid;
        const id = msgIdOf(ack);
        if (id) {
            if (c.seen.has(id)) /* the echo from another device came first */
                c.msgs.splice(c.msgs.indexOf(entry), 1);
            c.seen.add(id);
        }
        entry.state = c.peerRead && entry.cseq && entry.cseq <= c.peerRead ? 'read' : 'stored';
        if (entry.cseq > c.lastCseq)
            c.lastCseq = entry.cseq;
    } catch (e) {
        entry.state = 'failed';
        entry.error = e.message;
    }
    if (S.open === c.key)
        renderMessages(c, false);
}

async function loadHistory(c, opts) {
    if (c.loading || !S.loggedIn || !S.hasHistory)
        return;
    c.loading = true;
    $('history-state').textContent = 'Loading…';
    const req = { msgid: MSG.HISTORY, limit: HISTORY_PAGE };
    if (c.isGroup)
        req.groupid = c.id;
    else
        req.with = c.id;
    Object.assign(req, opts || {});
    const box = $('messages');
    const fromBottom = box.scrollHeight - box.scrollTop;
    try {
        const r = await request(req);
        let added = 0;
        for (const m of r.msgs || [])
            if (addMsg(c, m, false))
                added++;
        if (!req.after)
            c.more = !!r.more;
        c.loadedOnce = true;
        if (S.open === c.key) {
            renderMessages(c, false);
            if (req.before)
                box.scrollTop = box.scrollHeight - fromBottom; /* keep the view where it was */
            else if (added)
                box.scrollTop = box.scrollHeight;
            markRead(c);
        }
    } catch (e) {
        if (e.errno === ERR_UNKNOWN_MSGID)
            S.hasHistory = false;
        else
            note('History: ' + e.message);
    } finally {
        c.loading = false;
        if (S.open === c.key)
            $('history-state').textContent = historyLabel(c);
    }
}

function historyLabel(c) {
    if (!S.hasHistory)
        return '';
    return c.more ? '' : 'Beginning of the conversation';
}

function oldestCseq(c) {
    let min = 0;
    for (const m of c.msgs)
        if (m.cseq && (!min || m.cseq < min))
            min = m.cseq;
    return min;
}

function catchUp(c) {
    if (!c.loadedOnce)
        return loadHistory(c);
    return loadHistory(c, c.lastCseq ? { after: c.lastCseq } : {});
}

function markRead(c) {
    if (document.visibilityState !== 'visible')
        return;
    c.unread = 0;
    if (S.v2 && c.lastCseq > c.readCseq) {
        c.readCseq = c.lastCseq;
        const req = { msgid: MSG.READ, cseq: c.lastCseq };
        if (c.isGroup)
            req.groupid = c.id;
        else
            req.with = c.id;
        send(req);
    }
    renderConvList();
}

function onReadSync(m) {
    const c = getConv(convKey(m));
    if (m.cseq > c.readCseq)
        c.readCseq = m.cseq;
    c.unread = c.msgs.filter((x) => !x.mine && x.cseq > c.readCseq).length;
    renderConvList();
}

function onReceipt(m) {
    const c = getConv('u:' + m.id);
    c.peerRead = Math.max(c.peerRead, m.cseq);
    for (const x of c.msgs)
        if (x.mine && x.cseq && x.cseq <= c.peerRead && x.state === 'stored')
            x.state = 'read';
    if (S.open === c.key)
        renderMessages(c, false);
}

/* ---- typing ------------------------------------------------------------- */

function onInput() {
    autoGrow();
    if (!S.v2 || !S.open || Date.now() - S.typingSent < TYPING_SEND_EVERY_MS)
        return;
    S.typingSent = Date.now();
    const c = getConv(S.open);
    send(c.isGroup ? { msgid: MSG.TYPING, groupid: c.id } : { msgid: MSG.TYPING, toid: c.id });
}

function onTyping(m) {
    const key = m.groupid !== undefined ? 'g:' + m.groupid : 'u:' + m.id;
    const c = getConv(key);
    c.typing = c.typing || new Map();
    c.typing.set(m.id, m.name || 'User ' + m.id);
    clearTimeout(S.typingTimers.get(key + ':' + m.id));
    S.typingTimers.set(key + ':' + m.id, setTimeout(() => {
        c.typing.delete(m.id);
        renderTyping();
    }, TYPING_SHOW_MS));
    renderTyping();
}

/* A chat from someone ends their "typing" line at once, not after TYPING_SHOW_MS. */
function stopTyping(c, who) {
    if (!c.typing || !c.typing.delete(who))
        return;
    clearTimeout(S.typingTimers.get(c.key + ':' + who));
    S.typingTimers.delete(c.key + ':' + who);
    renderTyping();
}

function renderTyping() {
    const c = S.open && S.convs.get(S.open);
    const names = c && c.typing ? [...c.typing.values()] : [];
    $('typing').textContent = names.length ? names.join(', ') + (names.length > 1 ? ' are' : ' is')
        + ' typing…' : '';
}

function autoGrow() {
    const t = $('input');
    t.style.height = 'auto';
    t.style.height = Math.min(t.scrollHeight, 140) + 'px';
}

/* ---- friends and presence ----------------------------------------------- */

/*
 * PRESENCE_MSG 13.  It is also how an accepted friend request is told to
 * both sides (qchat-protocol(7): there is no other push for it), so a
 * notice about someone not yet in the list makes them a friend and the
 * list is read again for the requests that changed.
 */
function onPresence(m) {
    const f = S.friends.get(m.id);
    if (f) {
        f.state = m.state;
        render();
        return;
    }
    S.friends.set(m.id, { id: m.id, name: m.name || 'User ' + m.id, state: m.state });
    S.requestsOut.delete(m.id);
    S.requestsIn.delete(m.id);
    const c = getConv('u:' + m.id);
    if (m.name)
        c.name = m.name;
    render();
    loadFriends().then(render);
}

function onFriendRequest(m) {
    S.requestsIn.set(m.id, { id: m.id, name: m.name });
    renderFriends();
    note(m.name + ' wants to be your friend.', true);
}

async function friendAction(msgid, field, id, then) {
    note('');
    try {
        const req = { msgid };
        req[field] = id;
        await request(req);
        if (then)
            then();
    } catch (e) {
        note(e.message);
    }
    await loadFriends();
    render();
}

async function addFriend(ev) {
    ev.preventDefault();
    const id = Number($('add-friend-id').value);
    await friendAction(MSG.ADD_FRIEND, 'friendid', id, () => {
        $('add-friend-id').value = '';
        if (!S.v2 && !S.friends.has(id)) /* the seed's protocol: friends at once, name unknown */
            S.friends.set(id, { id, name: 'User ' + id, state: '' });
        getConv('u:' + id);
        note(S.requestsIn.has(id) || S.friends.has(id) ? 'Friend added.' : 'Request sent.', true);
    });
}

/* ---- groups ------------------------------------------------------------- */

async function createGroup(ev) {
    ev.preventDefault();
    try {
        const r = await request({ msgid: MSG.CREATE_GROUP, groupname: $('new-group-name').value,
                                  groupdesc: $('new-group-desc').value });
        S.groups.set(r.groupid, { groupid: r.groupid, groupname: $('new-group-name').value,
                                  groupdesc: $('new-group-desc').value,
                                  users: [{ userid: S.me.id, name: S.me.name, role: 'creator' }] });
        $('new-group-name').value = '';
        $('new-group-desc').value = '';
        getConv('g:' + r.groupid);
        render();
    } catch (e) {
        note(e.message);
    }
}

async function joinGroup(ev) {
    ev.preventDefault();
    const id = Number($('join-group-id').value);
    try {
        await request({ msgid: MSG.ADD_GROUP, groupid: id });
        $('join-group-id').value = '';
        S.groups.set(id, { groupid: id, groupname: 'Group ' + id, groupdesc: '', users: [] });
        getConv('g:' + id);
        await Promise.allSettled([refreshMembers(id), loadConversations()]);
        render();
    } catch (e) {
        note(e.message);
    }
}

async function refreshMembers(groupid) {
    try {
        const r = await request({ msgid: MSG.GROUP_MEMBERS, groupid });
        const g = S.groups.get(groupid) || { groupid, groupname: 'Group ' + groupid, groupdesc: '' };
        g.users = (r.users || []).map((u) => ({ userid: u.id, name: u.name, state: u.state,
                                                role: u.role }));
        if (r.groupname)
            g.groupname = r.groupname;
        S.groups.set(groupid, g);
    } catch (e) {
        if (e.errno !== ERR_UNKNOWN_MSGID)
            note('Members: ' + e.message);
    }
}

function myRole(g) {
    const u = (g.users || []).find((x) => x.userid === S.me.id);
    return u ? u.role : 'normal';
}

const RANK = { creator: 3, admin: 2, normal: 1 };

async function groupAction(req, done) {
    try {
        await request(req);
        if (done)
            done();
    } catch (e) {
        note(e.message);
    }
    if (S.groups.has(req.groupid))
        await refreshMembers(req.groupid);
    renderDrawer();
    render();
}

function dropGroup(groupid) {
    S.groups.delete(groupid);
    S.convs.delete('g:' + groupid);
    if (S.open === 'g:' + groupid)
        closeConv();
    $('drawer').hidden = true;
}

function onGroupEvent(m) {
    const mine = S.me && m.userid === S.me.id;
    if (m.event === 'deleted' || (mine && (m.event === 'kicked' || m.event === 'left'))) {
        if (m.event !== 'left')
            note((m.event === 'deleted' ? 'A group was deleted: ' : 'You were removed from ')
                 + ((S.groups.get(m.groupid) || {}).groupname || 'group ' + m.groupid) + '.');
        dropGroup(m.groupid);
        render();
        return;
    }
    /* a new name or description is told by CONVERSATIONS_MSG only */
    const lists = m.event === 'updated' ? [refreshMembers(m.groupid), loadConversations()]
                                        : [refreshMembers(m.groupid)];
    Promise.allSettled(lists).then(() => {
        renderDrawer();
        render();
    });
}

/* ---- rendering ---------------------------------------------------------- */

function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls)
        e.className = cls;
    if (text !== undefined)
        e.textContent = text;
    return e;
}

function avatar(name, online) {
    const a = el('span', 'avatar' + (online ? ' online' : ''), Array.from(name || '?')[0]);
    let h = 0;
    for (const ch of name || '')
        h = (h * 31 + ch.codePointAt(0)) % 360;
    a.style.background = 'hsl(' + h + ', 45%, 52%)';
    return a;
}

function timeLabel(ts) {
    if (!ts)
        return '';
    const d = new Date(ts);
    const now = new Date();
    if (d.toDateString() === now.toDateString())
        return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    return d.toLocaleDateString([], { month: 'short', day: 'numeric' });
}

function render() {
    renderConvList();
    renderFriends();
    renderGroups();
    if (S.open) {
        const c = getConv(S.open);
        $('conv-name').textContent = c.name;
        renderSub(c);
    }
}

function renderConvList() {
    const ul = $('conv-list');
    ul.replaceChildren();
    const list = [...S.convs.values()].sort((a, b) => b.lastTs - a.lastTs || a.name.localeCompare(b.name));
    let total = 0;
    for (const c of list) {
        const li = el('li', 'clickable' + (S.open === c.key ? ' selected' : ''));
        li.dataset.key = c.key;
        const f = !c.isGroup && S.friends.get(c.id);
        li.append(avatar(c.name, f && f.state === 'online'));
        const grow = el('div', 'grow');
        const title = el('div', 'title');
        title.append(el('strong', '', c.name), el('span', 'when', timeLabel(c.lastTs)));
        const last = c.msgs[c.msgs.length - 1];
        grow.append(title, el('div', 'preview', last ? (c.isGroup && !last.mine ? last.name + ': ' : '')
                                                       + last.text : (c.isGroup ? 'Group' : '')));
        li.append(grow);
        if (c.unread > 0) {
            li.append(el('span', 'badge unread', String(c.unread)));
            total += c.unread;
        }
        li.onclick = () => openConv(c.key);
        ul.append(li);
    }
    $('conv-empty').hidden = list.length > 0;
    $('total-unread').hidden = total === 0;
    $('total-unread').textContent = String(total);
    document.title = total ? '(' + total + ') qchat' : 'qchat';
}

function button(label, onclick, cls) {
    const b = el('button', cls || '', label);
    b.type = 'button';
    b.onclick = (ev) => {
        ev.stopPropagation();
        onclick();
    };
    return b;
}

function renderFriends() {
    const fl = $('friend-list');
    fl.replaceChildren();
    for (const f of [...S.friends.values()].sort((a, b) => a.name.localeCompare(b.name))) {
        const li = el('li', 'clickable');
        li.append(avatar(f.name, f.state === 'online'));
        const g = el('div', 'grow');
        g.append(el('strong', '', f.name), el('div', 'preview', '#' + f.id + ' · ' + (f.state || 'offline')));
        const act = el('div', 'actions');
        act.append(button('Remove', () => friendAction(MSG.FRIEND_REMOVE, 'friendid', f.id)),
                   button('Block', () => friendAction(MSG.BLOCK, 'userid', f.id)));
        li.append(g, act);
        li.onclick = () => openConv('u:' + f.id);
        fl.append(li);
    }
    const rl = $('request-list');
    rl.replaceChildren();
    for (const r of S.requestsIn.values()) {
        const li = el('li');
        li.append(avatar(r.name));
        const g = el('div', 'grow');
        g.append(el('strong', '', r.name), el('div', 'preview', '#' + r.id + ' wants to be friends'));
        const act = el('div', 'actions');
        act.append(button('Accept', () => friendAction(MSG.ADD_FRIEND, 'friendid', r.id,
                                                          () => S.requestsIn.delete(r.id)), 'primary'),
                   button('Decline', () => friendAction(MSG.FRIEND_DECLINE, 'friendid', r.id,
                                                           () => S.requestsIn.delete(r.id))));
        li.append(g, act);
        rl.append(li);
    }
    $('requests-head').hidden = S.requestsIn.size === 0;
    $('req-count').hidden = S.requestsIn.size === 0;
    $('req-count').textContent = String(S.requestsIn.size);
    fillSimple('pending-list', 'pending-head', S.requestsOut, null);
    fillSimple('blocked-list', 'blocked-head', S.blocked,
               (u) => button('Unblock', () => friendAction(MSG.UNBLOCK, 'userid', u.id)));
}

function fillSimple(listId, headId, map, action) {
    const ul = $(listId);
    ul.replaceChildren();
    for (const u of map.values()) {
        const li = el('li');
        li.append(avatar(u.name), el('div', 'grow', u.name + ' #' + u.id));
        if (action)
            li.append(action(u));
        ul.append(li);
    }
    $(headId).hidden = map.size === 0;
}

function renderGroups() {
    const ul = $('group-list');
    ul.replaceChildren();
    for (const g of S.groups.values()) {
        const li = el('li', 'clickable');
        li.append(avatar(g.groupname));
        const d = el('div', 'grow');
        d.append(el('strong', '', g.groupname), el('div', 'preview', '#' + g.groupid + ' · '
            + (g.users || []).length + ' members' + (g.groupdesc ? ' · ' + g.groupdesc : '')));
        li.append(d);
        li.onclick = () => openConv('g:' + g.groupid);
        ul.append(li);
    }
}

function renderSub(c) {
    let sub = '';
    if (c.isGroup) {
        const g = S.groups.get(c.id);
        sub = g ? (g.users || []).length + ' members' : '';
    } else {
        const f = S.friends.get(c.id);
        sub = f ? f.state || '' : 'not a friend';
    }
    $('conv-sub').textContent = sub;
    $('conv-info').hidden = !c.isGroup;
}

const STATE_LABEL = { sent: 'sent', stored: '✓ stored', read: '✓✓ read', failed: 'not sent' };

function renderMessages(c, stick) {
    const box = $('messages');
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    const ol = $('msg-list');
    ol.replaceChildren();
    let lastDay = '';
    for (const m of c.msgs) {
        const day = new Date(m.ts).toDateString();
        if (day !== lastDay) {
            ol.append(el('li', 'day', new Date(m.ts).toLocaleDateString()));
            lastDay = day;
        }
        const li = el('li', 'bubble' + (m.mine ? ' mine' : ''));
        if (m.cseq)
            li.dataset.cseq = String(m.cseq);
        if (c.isGroup && !m.mine)
            li.append(el('div', 'who', m.name || 'User ' + m.from));
        li.append(el('div', 'text', m.text));
        const meta = el('div', 'meta', new Date(m.ts).toLocaleTimeString([], { hour: '2-digit',
                                                                              minute: '2-digit' }));
        if (m.mine) {
            const st = el('span', 'state ' + m.state, ' ' + STATE_LABEL[m.state]);
            if (m.error)
                st.title = m.error;
            meta.append(st);
        }
        li.append(meta);
        ol.append(li);
    }
    if (stick || atBottom)
        box.scrollTop = box.scrollHeight;
}

function openConv(key) {
    const c = getConv(key);
    S.open = key;
    $('app').classList.add('in-conv');
    for (const id of ['conv-head', 'messages', 'composer'])
        $(id).hidden = false;
    $('conv-none').hidden = true;
    $('conv-name').textContent = c.name;
    renderSub(c);
    $('history-state').textContent = historyLabel(c);
    renderMessages(c, true);
    renderTyping();
    renderConvList();
    markRead(c);
    if (!c.loadedOnce)
        loadHistory(c);
    if (c.isGroup)
        refreshMembers(c.id).then(() => renderSub(c));
    $('input').focus();
}

function closeConv() {
    S.open = null;
    $('app').classList.remove('in-conv');
    for (const id of ['conv-head', 'messages', 'composer'])
        $(id).hidden = true;
    $('conv-none').hidden = false;
    $('typing').textContent = '';
    renderConvList();
}

function onScroll() {
    const c = S.open && S.convs.get(S.open);
    if (!c || !c.more || c.loading || $('messages').scrollTop > SCROLL_LOAD_PX)
        return;
    const before = oldestCseq(c);
    if (before > 1)
        loadHistory(c, { before });
    else if (before === 1)
        c.more = false;
}

function renderDrawer() {
    if ($('drawer').hidden || !S.open || !S.open.startsWith('g:'))
        return;
    const g = S.groups.get(Number(S.open.slice(2)));
    if (!g)
        return;
    const mine = myRole(g);
    $('drawer-title').textContent = g.groupname + ' #' + g.groupid;
    $('group-edit-form').hidden = RANK[mine] < RANK.admin;
    $('group-delete').hidden = mine !== 'creator';
    const ul = $('member-list');
    ul.replaceChildren();
    for (const u of g.users || []) {
        const li = el('li');
        li.append(avatar(u.name, u.state === 'online'));
        const d = el('div', 'grow');
        d.append(el('strong', '', u.name + (u.userid === S.me.id ? ' (you)' : '')), el('span', 'role', u.role));
        li.append(d);
        const act = el('div', 'actions');
        if (u.userid !== S.me.id && RANK[mine] > RANK[u.role])
            act.append(button('Remove', () => groupAction({ msgid: MSG.GROUP_KICK, groupid: g.groupid,
                                                             userid: u.userid })));
        if (u.userid !== S.me.id && mine === 'creator')
            act.append(button(u.role === 'admin' ? 'Make normal' : 'Make admin',
                              () => groupAction({ msgid: MSG.GROUP_ROLE, groupid: g.groupid, userid: u.userid,
                                                  role: u.role === 'admin' ? 'normal' : 'admin' })));
        li.append(act);
        ul.append(li);
    }
}

async function openDrawer() {
    const id = Number(S.open.slice(2));
    const g = S.groups.get(id);
    $('group-edit-name').value = g ? g.groupname : '';
    $('group-edit-desc').value = g ? g.groupdesc || '' : '';
    $('drawer').hidden = false;
    await refreshMembers(id);
    renderDrawer();
}

/* ---- small UI pieces ---------------------------------------------------- */

function banner(text) {
    $('banner').textContent = text;
    $('banner').hidden = false;
    document.body.classList.add('with-banner');
}

function hideBanner() {
    $('banner').hidden = true;
    document.body.classList.remove('with-banner');
}

function authMsg(text, ok) {
    $('auth-msg').textContent = text;
    $('auth-msg').className = 'msg' + (ok ? ' ok' : '');
}

function note(text, ok) {
    $('side-msg').textContent = text;
    $('side-msg').style.color = ok ? '#2e7d32' : '';
}

function showAuth(text) {
    $('app').hidden = true;
    $('auth').hidden = false;
    if (text)
        authMsg(text);
}

function showAuthTab(which) {
    $('tab-login').classList.toggle('active', which === 'login');
    $('tab-register').classList.toggle('active', which === 'register');
    $('login-form').hidden = which !== 'login';
    $('register-form').hidden = which !== 'register';
}

function showApp() {
    $('auth').hidden = true;
    $('app').hidden = false;
    $('me-name').textContent = S.me.name;
    $('me-id').textContent = '#' + S.me.id;
    $('me-avatar').replaceWith(Object.assign(avatar(S.me.name), { id: 'me-avatar' }));
}

/* KICK_MSG: a server going down reconnects like any loss; a takeover or an operator's kick does not. */
function onKick(m) {
    if (/shutting down/i.test(m.reason || ''))
        return;
    S.kicked = true;
    banner(/elsewhere/i.test(m.reason || '') ? 'You logged in somewhere else. Reload the page to use qchat here.'
                                              : 'Disconnected by the server: ' + (m.reason || 'kicked') + '.');
}

function wire() {
    $('tab-login').onclick = () => showAuthTab('login');
    $('tab-register').onclick = () => showAuthTab('register');
    $('login-form').onsubmit = doLogin;
    $('register-form').onsubmit = doRegister;
    $('logout').onclick = logout;
    $('composer').onsubmit = sendMessage;
    $('input').oninput = onInput;
    $('input').onkeydown = (ev) => {
        if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
            ev.preventDefault();
            $('composer').requestSubmit();
        }
    };
    $('messages').onscroll = onScroll;
    $('back').onclick = closeConv;
    $('add-friend-form').onsubmit = addFriend;
    $('create-group-form').onsubmit = createGroup;
    $('join-group-form').onsubmit = joinGroup;
    $('conv-info').onclick = openDrawer;
    $('drawer-close').onclick = () => { $('drawer').hidden = true; };
    $('group-edit-form').onsubmit = (ev) => {
        ev.preventDefault();
        const id = Number(S.open.slice(2));
        groupAction({ msgid: MSG.GROUP_UPDATE, groupid: id, groupname: $('group-edit-name').value,
                      groupdesc: $('group-edit-desc').value }, () => {
            const g = S.groups.get(id);
            g.groupname = $('group-edit-name').value;
            g.groupdesc = $('group-edit-desc').value;
            getConv('g:' + id).name = g.groupname;
        });
    };
    $('group-leave').onclick = () => {
        const id = Number(S.open.slice(2));
        if (confirm('Leave this group?'))
            groupAction({ msgid: MSG.GROUP_LEAVE, groupid: id }, () => dropGroup(id));
    };
    $('group-delete').onclick = () => {
        const id = Number(S.open.slice(2));
        if (confirm('Delete this group and its history for everyone?'))
            groupAction({ msgid: MSG.GROUP_DELETE, groupid: id }, () => dropGroup(id));
    };
    for (const t of document.querySelectorAll('.side .tab')) {
        t.onclick = () => {
            for (const o of document.querySelectorAll('.side .tab'))
                o.classList.toggle('active', o === t);
            for (const p of ['chats', 'friends', 'groups'])
                $('pane-' + p).hidden = p !== t.dataset.pane;
        };
    }
    document.addEventListener('visibilitychange', () => {
        if (document.visibilityState === 'visible' && S.open)
            markRead(getConv(S.open));
    });
}

wire();
if (saved())
    banner('Connecting…');
else
    showAuth();
connect();
