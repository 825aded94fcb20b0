#!/usr/bin/env python3
"""vg_qchatd.py - run qchatd under valgrind memcheck and drive every path.

    python3 vg_qchatd.py [BUILD_DIR] [--redis PORT]

Starts BUILD_DIR/qchatd (default build/) under valgrind in a temporary
directory on a free 127.0.0.1 port, drives it with plain sockets (register,
login, chats, friends, groups, offline messages and the cap, bad input of
every kind, takeover, logout, failed-login throttling, a request flood, a
stopped reader, the control socket, a worker killed and respawned), stops
it with SIGTERM and prints each process's valgrind summary.  Exit 0 when
every process reported 0 errors and 0 bytes definitely/indirectly lost.
"""
import glob, json, os, re, select, signal, socket, subprocess, sys, tempfile, time

REPLY_S = 30          # valgrind is ~20-50x slower: generous waits
START_S = 120
STOP_S = 120
STOPPED_CHATS = 3000  # at most 12 MB to a client that reads nothing
STOPPED_WINDOW = 32   # chats in flight: 128 KB, over server.max_output_bytes
PACE_S = 0.006        # under the default request_rate (200/s)
SMALL_RCVBUF = 4096   # the stopped reader's socket

args = sys.argv[1:]
redis_port = None
if "--redis" in args:
    i = args.index("--redis")
    redis_port = int(args[i + 1])
    del args[i:i + 2]
build = args[0] if args else "build"
qchatd = os.path.abspath(os.path.join(build, "qchatd"))
tmp = tempfile.mkdtemp(prefix="qchat-vg.")

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p

port = free_port()
children = 2 + (1 if redis_port else 0)     # workers, and the relay with Redis
ctl_path = os.path.join(tmp, "ctl.sock")
vg = ["valgrind", "--leak-check=full", "--track-origins=yes", "--show-leak-kinds=definite,indirect",
      "--errors-for-leak-kinds=definite,indirect", "--trace-children=yes",
      "--track-fds=no", "--error-exitcode=99", "--log-file=%s/vg.%%p.log" % tmp]
cmd = vg + [qchatd, "-f", "-o", "server.listen=127.0.0.1:%d" % port,
            "-o", "storage.path=%s/q.db" % tmp, "-o", "server.control_socket=%s" % ctl_path,
            "-o", "security.password_cost=1", "-o", "server.workers=2",
            "-o", "limits.max_offline_messages=3", "-o", "server.max_output_bytes=65536",
            "-o", "security.login_timeout=20", "-o", "log.level=info"]
if redis_port:
    cmd += ["-o", "redis.host=127.0.0.1", "-o", "redis.port=%d" % redis_port]
print("command:", " ".join(cmd))
log = open(os.path.join(tmp, "qchatd.log"), "w")
srv = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
failures = []

def check(cond, what):
    if not cond:
        failures.append(what)
        print("CHECK FAILED:", what)

class Client:
    def __init__(self, rcvbuf=0):
        self.s = socket.socket()
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(REPLY_S)
        self.s.connect(("127.0.0.1", port))
        self.buf = b""
    def raw(self, b):
        self.s.sendall(b)
    def send(self, **o):
        self.s.sendall(json.dumps(o).encode())
    def recv(self, timeout=REPLY_S):
        end = time.time() + timeout
        while b"\n" not in self.buf:
            left = end - time.time()
            if left <= 0:
                return None
            r, _, _ = select.select([self.s], [], [], left)
            if not r:
                return None
            try:
                d = self.s.recv(65536)
            except OSError:
                return "EOF"
            if not d:
                return "EOF"
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)
    def recv_msgid(self, msgid, timeout=REPLY_S):
        while True:
            o = self.recv(timeout)
            if not isinstance(o, dict) or o.get("msgid") == msgid:
                return o
    def req(self, **o):
        """Send with o["seq"]; the reply echoing it (others are skipped)."""
        self.send(**o)
        want = {1: 2, 3: 4}.get(o["msgid"], 11)
        while True:
            r = self.recv()
            if not isinstance(r, dict):
                return {"errno": None, "got": r}
            if r.get("msgid") == want and r.get("seq") == o["seq"]:
                return r
    def eof(self, timeout=REPLY_S):
        while True:
            o = self.recv(timeout)
            if o == "EOF" or o is None:
                return o == "EOF"
    def close(self):
        self.s.close()

seq = [0]
def nseq():
    seq[0] += 1
    return seq[0]

def register(c, name):
    r = c.req(msgid=3, name=name, password="pw-" + name, seq=nseq())
    check(isinstance(r, dict) and r.get("errno") == 0, "register %s: %r" % (name, r))
    return r["id"]

def login(c, uid, name, presence=False):
    r = c.req(msgid=1, id=uid, password="pw-" + name, presence=presence, seq=nseq())
    check(isinstance(r, dict) and r.get("errno") == 0, "login %s: %r" % (name, r))
    return r

def ctl(cmd):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(REPLY_S)
    s.connect(ctl_path)
    s.sendall((json.dumps(cmd) + "\n").encode())
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        data += d
    s.close()
    return json.loads(data)

def workers():
    try:
        with open("/proc/%d/task/%d/children" % (srv.pid, srv.pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []

def wait_start():
    end = time.time() + START_S
    while time.time() < end:
        if srv.poll() is not None:
            sys.exit("qchatd exited at start: see %s" % tmp)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            if os.path.exists(ctl_path) and len(workers()) >= children:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("qchatd did not start in %d s: see %s" % (START_S, tmp))

def drive():
    tag = "vg%d" % os.getpid()
    # first, a worker killed (before any traffic, so every process that serves
    # traffic leaves a summary): the master respawns it
    before = workers()
    os.kill(before[0], signal.SIGKILL)
    end = time.time() + START_S
    while time.time() < end and (len(workers()) < children or before[0] in workers()):
        time.sleep(0.2)
    check(len(workers()) == children and before[0] not in workers(), "worker respawned")
    print("killed worker %d (its log has no summary), respawned: %r" % (before[0], workers()))
    killed = before[0]
    ca, cb = Client(), Client(SMALL_RCVBUF)
    a = register(ca, tag + "a")
    b = register(cb, tag + "b")
    cc = Client()
    c = register(cc, tag + "c")
    cc.close()
    # register errors: taken name, missing field, too long; without seq too
    r = ca.req(msgid=3, name=tag + "a", password="x", seq=nseq())
    check(r.get("errno") == 3, "name taken: %r" % r)
    ca.send(msgid=3, name="x" * 60, password="x")
    check(ca.recv_msgid(4).get("errno") == 18, "long name")
    login(ca, a, tag + "a", presence=True)
    login(cb, b, tag + "b", presence=True)
    # friends
    check(ca.req(msgid=6, friendid=b, seq=nseq()).get("errno") == 0, "add friend")
    check(ca.req(msgid=6, friendid=c, seq=nseq()).get("errno") == 0, "add friend c")
    check(ca.req(msgid=6, friendid=a, seq=nseq()).get("errno") == 16, "add self")
    check(ca.req(msgid=6, friendid=b, seq=nseq()).get("errno") == 12, "already")
    check(ca.req(msgid=6, friendid=2147000000, seq=nseq()).get("errno") == 9, "no user")
    # chats both ways, to self, without seq, with a forged id
    for i in range(20):
        ca.send(msgid=5, toid=b, msg="a->b %d" % i, seq=nseq())
        cb.send(msgid=5, toid=a, id=c, name="forged", msg="b->a %d" % i)
    got_b = [cb.recv_msgid(5) for _ in range(20)]
    check(all(isinstance(m, dict) and m["id"] == a for m in got_b), "a->b chats")
    got_a = [ca.recv_msgid(5) for _ in range(20)]
    check(all(isinstance(m, dict) and m["id"] == b for m in got_a), "b->a chats")
    r = ca.req(msgid=5, toid=a, msg="self", seq=nseq())
    check(r.get("errno") == 0, "chat self")
    check(ca.req(msgid=5, toid=2147000000, msg="x", seq=nseq()).get("errno") == 9, "chat nobody")
    check(ca.req(msgid=5, toid=b, msg="y" * 5000, seq=nseq()).get("errno") == 18, "too long")
    # groups: create, join, chat with one member offline, errors
    r = ca.req(msgid=7, groupname=tag + "g", groupdesc="vg group", seq=nseq())
    gid = r.get("groupid")
    check(r.get("errno") == 0 and gid, "create group %r" % r)
    check(ca.req(msgid=7, groupname=tag + "g", seq=nseq()).get("errno") == 19, "group taken")
    check(cb.req(msgid=8, groupid=gid, seq=nseq()).get("errno") == 0, "join")
    check(cb.req(msgid=8, groupid=gid, seq=nseq()).get("errno") == 12, "join again")
    check(cb.req(msgid=8, groupid=2147000000, seq=nseq()).get("errno") == 10, "no group")
    cc = Client()
    login(cc, c, tag + "c")
    check(cc.req(msgid=9, groupid=gid, msg="not yet", seq=nseq()).get("errno") == 11,
          "non-member")
    check(cc.req(msgid=8, groupid=gid, seq=nseq()).get("errno") == 0, "c joins")
    check(cc.req(msgid=10, seq=nseq()).get("errno") == 0, "c logs out")
    cc.close()
    for i in range(3):
        check(ca.req(msgid=9, groupid=gid, msg="group %d" % i, seq=nseq()).get("errno") == 0,
              "group chat")
    for i in range(3):
        m = cb.recv_msgid(9)
        check(isinstance(m, dict) and m.get("userid") == a, "group chat to b")
    # offline: 4 more for c (cap 3: some dropped), then c logs in
    for i in range(4):
        check(ca.req(msgid=5, toid=c, msg="off %d" % i, seq=nseq()).get("errno") == 0,
              "offline chat")
    cc = Client()
    r = login(cc, c, tag + "c")
    check(len(r.get("offlinemsg", [])) == 3 and r.get("offlinedropped", 0) > 0,
          "offline cap: %r" % r)
    check(len(r.get("groups", [])) == 1 and len(r.get("friends", [])) == 1,
          "c's friends and groups")
    # logout and login again on the same connection, heartbeat
    check(cc.req(msgid=10, seq=nseq()).get("errno") == 0, "logout")
    check(cc.req(msgid=5, toid=a, msg="x", seq=nseq()).get("errno") == 8, "not logged in")
    login(cc, c, tag + "c")
    check(cc.req(msgid=1, id=c, password="pw-" + tag + "c", seq=nseq()).get("errno") == 21,
          "already in")
    check(cc.req(msgid=14, seq=nseq()).get("errno") == 0, "heartbeat")
    # takeover: c logs in elsewhere, the old connection is kicked
    cc2 = Client()
    login(cc2, c, tag + "c")
    check(cc.recv_msgid(12) is not None, "kick")
    check(cc.eof(), "kicked connection closed")
    cc.close()
    # bad requests that keep the connection
    for o, err in (({"msgid": 5, "toid": "x", "msg": "y"}, 6), ({"msgid": 99}, 7),
                   ({"seq": 1}, 6), ({"msgid": 5, "toid": b, "msg": 5}, 6),
                   ({"msgid": 14, "seq": "s" * 100}, 6)):
        ca.raw(json.dumps(o).encode() + b"\0")
        r = ca.recv_msgid(11)
        check(isinstance(r, dict) and r.get("errno") == err, "bad request %r: %r" % (o, r))
    # bad input that closes the stream
    for junk, err in ((b'{"msgid":1,,}', 4), (b"[1,2]", 4), (b'{"msgid":14,"x":"\xff"}', 4),
                      (b"{" * 40, 4), (b'{"msgid":14,"p":"' + b"p" * 70000 + b'"}', 5)):
        x = Client()
        x.raw(b'{"msgid":14,"seq":1}' + junk + b"tail")
        r1 = x.recv()
        r2 = x.recv()
        check(isinstance(r2, dict) and r2.get("errno") == err, "bad input %r: %r" % (junk[:20], r2))
        check(x.eof(), "closed after bad input")
        x.close()
    # a half request left behind, a client vanishing while busy
    x = Client()
    x.raw(b'{"msgid":1,"id":')
    x.close()
    x = Client()
    x.raw(b'{"msgid":3,"name":"%s","password":"p"}' % (tag + "busy").encode())
    x.close()
    # wrong passwords until throttled (from this address: do it last for logins)
    cd = Client()
    d = register(cd, tag + "d")
    for i in range(4):
        r = cd.req(msgid=1, id=d, password="wrong", seq=nseq())
        check(r.get("errno") == 1, "wrong password: %r" % r)
    r = cd.req(msgid=1, id=2147000000, password="x", seq=nseq())
    check(r.get("errno") == 1, "unknown id: %r" % r)
    r = cd.req(msgid=1, id=d, password="pw-" + tag + "d", seq=nseq())
    check(r.get("errno") == 14, "throttled address: %r" % r)
    cd.close()
    time.sleep(1.5)         # the address's first delay (1 s) is over
    # a request flood: refused, then closed
    x = Client()
    x.raw(b'{"msgid":14}' * 2000)
    check(x.eof(), "flood closed")
    x.close()
    # a stopped reader: disconnected at max_output_bytes, the rest stored offline
    # (b is the stopped reader: nothing reads cb any more); windows of chats
    big = "z" * 4000
    sent = acked = 0
    online = True
    while online and sent < STOPPED_CHATS:
        seqs = []
        for i in range(STOPPED_WINDOW):
            seqs.append(nseq())
            ca.send(msgid=5, toid=b, msg="%d %s" % (sent, big), seq=seqs[-1])
            sent += 1
        for sq in seqs:
            r = ca.recv_msgid(11)
            check(isinstance(r, dict) and r.get("seq") == sq, "ACK %d: %r" % (sq, r))
            if isinstance(r, dict) and r.get("errno") == 0:
                acked += 1
        online = any(u["id"] == b for u in ctl({"cmd": "users"})["users"])
        time.sleep(PACE_S * STOPPED_WINDOW)
    check(acked == sent and not online, "stopped reader: %d sent, %d acked, online %r" %
          (sent, acked, online))
    cb.close()
    cb = Client()
    r = login(cb, b, tag + "b")
    print("stopped reader: disconnected after %d chats, all acknowledged; at the next login "
          "%d offline message(s), %d dropped for the cap" % (sent,
                                                   len(r.get("offlinemsg", [])),
                                                   r.get("offlinedropped", 0)))
    check(r.get("offlinedropped", 0) > 0, "the stopped reader was disconnected")
    # control socket
    st = ctl({"cmd": "status"})
    check(st.get("ok"), "ctl status")
    check(ctl({"cmd": "users"}).get("ok"), "ctl users")
    check(ctl({"cmd": "kick", "id": b}).get("ok"), "ctl kick")
    check(cb.recv_msgid(12) is not None, "operator kick")
    check(ctl({"cmd": "kick", "id": 2147000000}).get("ok") is False, "kick nobody")
    check(ctl({"cmd": "reload"}).get("ok"), "ctl reload")
    check(ctl({"cmd": "nonsense"}).get("ok") is False, "ctl error")
    cb.close()
    # a last user, and clients left connected for the SIGTERM
    ce = Client()
    e = register(ce, tag + "e")
    login(ce, e, tag + "e")
    check(ce.req(msgid=5, toid=a, msg="last", seq=nseq()).get("errno") == 0, "last chat")
    x = Client()
    x.raw(b'{"msgid":14,"seq":')
    return [ca, cc2, ce, x], killed

wait_start()
print("qchatd (valgrind) pid %d on 127.0.0.1:%d, dir %s" % (srv.pid, port, tmp))
clients, killed = drive()
srv.send_signal(signal.SIGTERM)
try:
    rc = srv.wait(STOP_S)
except subprocess.TimeoutExpired:
    srv.kill()
    rc = srv.wait()
    failures.append("no exit within %d s of SIGTERM" % STOP_S)
for c in clients:
    c.close()
time.sleep(2)
print("master exit status", rc)
check(rc == 0, "master exit status %r" % rc)

ok = True
for path in sorted(glob.glob(os.path.join(tmp, "vg.*.log"))):
    text = open(path).read()
    pid = int(path.rsplit(".", 2)[1])
    m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    dl = re.search(r"definitely lost: ([\d,]+) bytes in ([\d,]+) blocks", text)
    il = re.search(r"indirectly lost: ([\d,]+) bytes in ([\d,]+) blocks", text)
    pl = re.search(r"possibly lost: ([\d,]+) bytes in ([\d,]+) blocks", text)
    nl = "All heap blocks were freed" in text
    role = "master" if pid == srv.pid else ("killed worker" if pid == killed else "child")
    if m is None:
        print("%s %d: no summary (%s)" % (path, pid, role))
        if pid != killed:
            ok = False
        continue
    errs = int(m.group(1))
    lost = "no leaks possible" if nl else "definitely %s, indirectly %s, possibly %s" % (
        dl.group(1) if dl else "0", il.group(1) if il else "0", pl.group(1) if pl else "0")
    print("%s pid %d (%s): ERROR SUMMARY %d errors; %s" % (os.path.basename(path), pid, role,
                                                          errs, lost))
    if errs or (dl and dl.group(1) != "0") or (il and il.group(1) != "0"):
        ok = False
print("driver checks failed: %d %r" % (len(failures), failures))
print("logs in", tmp)
sys.exit(0 if ok and not failures else 1)
