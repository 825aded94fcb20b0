# qchat - cluster chat server.  Plain GNU Make; every dependency via pkg-config.
#
#   make            build everything into build/
#   make run        install missing packages, build, serve on 127.0.0.1:6000 (SQLite)
#   make check      install missing packages, build, run every test: "N passed, N failed"
#   make check SANITIZE=1   the same under AddressSanitizer + UBSan
#   make install    PREFIX, DESTDIR, SYSCONFDIR honoured; make uninstall
#   make cluster    two nodes + MariaDB + Redis + nginx on loopback (see README)
#   make bench      qchat-bench against qchatd and relay_ref

PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
MANDIR     ?= $(PREFIX)/share/man
DATADIR    ?= $(PREFIX)/share/qchat
UNITDIR    ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d

CC       ?= cc
B        := build
PKGS     := json-c hiredis libmariadb sqlite3 libbsd-overlay libcrypt inih libsystemd libedit libmd
TESTPKGS := cmocka

# Debian packages: build, then what make check / make cluster start privately.
DEB_BUILD := build-essential pkg-config clang libjson-c-dev libhiredis-dev libmariadb-dev \
             libsqlite3-dev libbsd-dev libcrypt-dev libinih-dev libsystemd-dev libedit-dev \
             libcmocka-dev libwslay-dev libmd-dev
DEB_CHECK := mariadb-server redis-server nginx-light libnginx-mod-stream mandoc systemd \
             sqlite3 valgrind libclang-rt-14-dev clang-format debootstrap systemd-container \
             prometheus curl chromium nodejs openssl fonts-noto-cjk fonts-noto-color-emoji
# npm for the browser tests: Debian's package, unless an npm is there already
# (a nodejs build that bundles npm conflicts with Debian's npm package).
DEB_CHECK += $(if $(shell command -v npm),,npm)

# Building needs the -dev packages; say how to get them instead of failing on a header.
NODEPS_GOALS := deps check-deps clean format uninstall run check bench cluster
ifneq ($(filter-out $(NODEPS_GOALS),$(if $(MAKECMDGOALS),$(MAKECMDGOALS),all)),)
  ifneq ($(shell pkg-config --exists $(PKGS) 2>/dev/null && echo ok),ok)
    $(error missing build packages (pkg-config: $(PKGS)): run "make deps" (as root) to install them, or "make run")
  endif
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# Debian's libwslay-dev ships no .pc file: ask pkg-config, else link it plainly.
# libresolv: b64_ntop/b64_pton for the WebSocket handshake.
WSLAY_LIBS := $(shell pkg-config --libs libwslay 2>/dev/null || echo -lwslay)
TEST_LIBS  := $(shell pkg-config --libs $(TESTPKGS) 2>/dev/null)

OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
QCFLAGS  := -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
            -Iinclude $(PKG_CFLAGS) -MMD -MP -DQC_DATADIR='"$(DATADIR)"'
LDLIBS   := $(PKG_LIBS) $(WSLAY_LIBS) -lresolv -lpthread
ifeq ($(SANITIZE),1)
  QCFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDFLAGS += -fsanitize=address,undefined
  B := build-san
endif

COMMON_SRC := $(wildcard src/common/*.c)
STORE_SRC  := $(wildcard src/store/*.c)
# The numbered migrations of each driver, embedded as C (sql/embed.sh).
SQL_SQLITE := $(sort $(wildcard sql/sqlite/[0-9]*.sql))
SQL_MYSQL  := $(sort $(wildcard sql/mysql/[0-9]*.sql))
GEN_SQL    := $(B)/gen/store_sql.c
SERVER_SRC := $(filter-out src/server/main.c,$(wildcard src/server/*.c))
CLIB_SRC   := src/client/qclient.c
QCHAT_SRC  := $(filter-out $(CLIB_SRC),$(wildcard src/client/*.c))
CTL_SRC    := $(wildcard src/ctl/*.c)
BENCH_SRC  := $(wildcard src/bench/*.c)
UNIT_SRC   := $(wildcard tests/unit/test_*.c)
IT_SRC     := $(wildcard tests/integration/test_*.c)
IT_LIB_SRC := $(filter-out $(IT_SRC),$(wildcard tests/integration/*.c))

obj = $(patsubst %.c,$(B)/obj/%.o,$(1))

LIBCOMMON := $(B)/libqcommon.a
LIBSTORE  := $(B)/libqstore.a
LIBSERVER := $(B)/libqserver.a
LIBCLIENT := $(B)/libqclient.a

PROGS := $(B)/qchatd $(B)/qchat $(B)/qchatctl $(B)/qchat-bench
UNIT_BINS := $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNIT_SRC))
IT_BINS   := $(patsubst tests/integration/test_%.c,$(B)/tests/it_%,$(IT_SRC))

.SECONDARY:
.PHONY: all deps check-deps run check install uninstall cluster bench fuzz clean lint format
all: $(PROGS)
tests: $(UNIT_BINS) $(IT_BINS)

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(QCFLAGS) -c -o $@ $<

# websocket.web_root's default is $(DATADIR)/web, compiled into config.o:
# this file changes (and config.o is rebuilt) only when DATADIR does, e.g.
# when make install is given another PREFIX than the build.
DATADIR_MARK := $(B)/datadir.txt
$(shell mkdir -p $(B) && printf '%s\n' '$(DATADIR)' >$(DATADIR_MARK).new && \
    { cmp -s $(DATADIR_MARK).new $(DATADIR_MARK) && rm -f $(DATADIR_MARK).new || \
      mv -f $(DATADIR_MARK).new $(DATADIR_MARK); })
$(call obj,src/common/config.c): $(DATADIR_MARK)

$(LIBCOMMON): $(call obj,$(COMMON_SRC))
$(LIBSTORE):  $(call obj,$(STORE_SRC) $(GEN_SQL))
$(LIBSERVER): $(call obj,$(SERVER_SRC))
$(LIBCLIENT): $(call obj,$(CLIB_SRC))
$(GEN_SQL): sql/embed.sh $(SQL_SQLITE) $(SQL_MYSQL)
	@mkdir -p $(dir $@)
	{ sh sql/embed.sh sqlite $(SQL_SQLITE) && sh sql/embed.sh mysql $(SQL_MYSQL); } > $@.tmp
	mv $@.tmp $@
$(B)/lib%.a:
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(B)/qchatd: $(call obj,src/server/main.c) $(LIBSERVER) $(LIBSTORE) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(B)/qchat: $(call obj,$(QCHAT_SRC)) $(LIBCLIENT) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(B)/qchatctl: $(call obj,$(CTL_SRC)) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
$(B)/qchat-bench: $(call obj,$(BENCH_SRC)) $(LIBCLIENT) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lm

$(B)/tests/%: $(B)/obj/tests/unit/%.o $(LIBSERVER) $(LIBSTORE) $(LIBCLIENT) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(filter %.a,$^) $(LDLIBS) $(TEST_LIBS)
# The cases every storage driver shares, linked into each driver's test;
# the MariaDB test helpers, shared with the integration tests.
$(B)/tests/test_store $(B)/tests/test_store_mysql: $(call obj,tests/unit/store_cases.c)
$(B)/tests/test_store_mysql: $(call obj,tests/integration/mysql_env.c)
# The social cases (issue 12 and 15 storage), shared the same way.
$(B)/tests/test_social $(B)/tests/test_social_mysql: $(call obj,tests/unit/social_cases.c tests/unit/store_cases.c)
$(B)/tests/test_social_mysql: $(call obj,tests/integration/mysql_env.c)
$(B)/tests/test_storage: $(call obj,tests/integration/mysql_env.c)
$(B)/tests/it_%: $(B)/obj/tests/integration/test_%.o $(call obj,$(IT_LIB_SRC)) $(LIBCLIENT) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(TEST_LIBS)

# Install what is missing (as root), or say the one line that would.
deps:
	@sh tests/harness/deps.sh $(DEB_BUILD)
check-deps:
	@sh tests/harness/deps.sh $(DEB_BUILD) $(DEB_CHECK)

run: deps
	@$(MAKE) --no-print-directory all
	@mkdir -p run
	exec $(B)/qchatd -f -o storage.path=$(CURDIR)/run/qchat.db \
	    -o websocket.listen=127.0.0.1:6080 -o websocket.web_root=$(CURDIR)/web \
	    -o server.control_socket=$(CURDIR)/run/qchatd.sock \
	    -o server.pidfile=$(CURDIR)/run/qchatd.pid $(RUNFLAGS)

# Apply the house style (.clang-format); make check fails on unformatted files.
format:
	clang-format -i $$(git ls-files '*.c' '*.h')

check: check-deps
	@$(MAKE) --no-print-directory all tests
	@B=$(B) SANITIZE=$(SANITIZE) sh tests/run.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@B=$(B) sh tests/harness/bench.sh

cluster: check-deps
	@$(MAKE) --no-print-directory all
	@B=$(B) sh tests/harness/cluster.sh

install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR)
	install -m 0755 $(B)/qchatd $(DESTDIR)$(SBINDIR)/qchatd
	install -m 0755 $(B)/qchat $(B)/qchat-bench $(DESTDIR)$(BINDIR)/
	install -m 0755 $(B)/qchatctl $(DESTDIR)$(SBINDIR)/qchatctl
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man7 $(DESTDIR)$(MANDIR)/man8
	install -m 0644 man/qchat.1 man/qchat-bench.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 man/qchatd.conf.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 man/qchat-protocol.7 $(DESTDIR)$(MANDIR)/man7/
	install -m 0644 man/qchatd.8 man/qchatctl.8 $(DESTDIR)$(MANDIR)/man8/
	install -d $(DESTDIR)$(SYSCONFDIR)/qchat
	[ -e $(DESTDIR)$(SYSCONFDIR)/qchat/qchatd.conf ] || \
	    install -m 0644 etc/qchatd.conf $(DESTDIR)$(SYSCONFDIR)/qchat/qchatd.conf
	install -d $(DESTDIR)$(DATADIR)/sql/mysql $(DESTDIR)$(DATADIR)/sql/sqlite $(DESTDIR)$(DATADIR)/examples
	install -m 0644 sql/mysql/*.sql $(DESTDIR)$(DATADIR)/sql/mysql/
	install -m 0644 sql/sqlite/*.sql $(DESTDIR)$(DATADIR)/sql/sqlite/
	install -m 0644 etc/nginx-qchat.conf etc/nginx-qchat-web.conf $(DESTDIR)$(DATADIR)/examples/
	install -d $(DESTDIR)$(DATADIR)/web
	install -m 0644 web/index.html web/app.js web/style.css $(DESTDIR)$(DATADIR)/web/
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	sed 's|@SBINDIR@|$(SBINDIR)|g; s|@SYSCONFDIR@|$(SYSCONFDIR)|g' systemd/qchatd.service > $(DESTDIR)$(UNITDIR)/qchatd.service
	sed 's|@SBINDIR@|$(SBINDIR)|g; s|@SYSCONFDIR@|$(SYSCONFDIR)|g' systemd/qchatd@.service > $(DESTDIR)$(UNITDIR)/qchatd@.service
	install -m 0644 systemd/qchatd-nodes.target $(DESTDIR)$(UNITDIR)/qchatd-nodes.target
	install -m 0644 etc/grafana-qchat.json $(DESTDIR)$(DATADIR)/examples/
	install -m 0644 systemd/qchat.sysusers $(DESTDIR)$(SYSUSERSDIR)/qchat.conf

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/qchatd $(DESTDIR)$(SBINDIR)/qchatctl
	rm -f $(DESTDIR)$(BINDIR)/qchat $(DESTDIR)$(BINDIR)/qchat-bench
	rm -f $(DESTDIR)$(MANDIR)/man1/qchat.1 $(DESTDIR)$(MANDIR)/man1/qchat-bench.1
	rm -f $(DESTDIR)$(MANDIR)/man5/qchatd.conf.5 $(DESTDIR)$(MANDIR)/man7/qchat-protocol.7
	rm -f $(DESTDIR)$(MANDIR)/man8/qchatd.8 $(DESTDIR)$(MANDIR)/man8/qchatctl.8
	rm -rf $(DESTDIR)$(DATADIR)
	rm -f $(DESTDIR)$(UNITDIR)/qchatd.service $(DESTDIR)$(UNITDIR)/qchatd@.service
	rm -f $(DESTDIR)$(UNITDIR)/qchatd-nodes.target
	rm -f $(DESTDIR)$(SYSUSERSDIR)/qchat.conf
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/qchat/qchatd.conf (remove it by hand)"

clean:
	rm -rf build build-san build-fuzz


# ---- fuzzing (clang libFuzzer + ASan + UBSan) ---------------------------
FUZZ_B      := build-fuzz
FUZZ_CC     ?= clang
FUZZ_CFLAGS := -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
               -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
               -Iinclude $(PKG_CFLAGS) -MMD -MP
FUZZ_SRC    := $(COMMON_SRC) $(STORE_SRC) $(GEN_SQL) $(SERVER_SRC)
FUZZ_TIME   ?= 60
.PHONY: fuzz fuzz-build

$(FUZZ_B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -c -o $@ $<

# One binary per target: the request stream, the internal packets, the control socket.
FUZZ_TARGETS := fuzz_requests fuzz_ipc fuzz_control
$(FUZZ_B)/fuzz_%: $(patsubst %.c,$(FUZZ_B)/obj/%.o,$(FUZZ_SRC) tests/fuzz/worker_setup.c) \
                  $(FUZZ_B)/obj/tests/fuzz/fuzz_%.o
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $@ $^ $(LDLIBS)

$(FUZZ_B)/fuzz_proxy: $(patsubst %.c,$(FUZZ_B)/obj/%.o,src/server/proxy.c tests/fuzz/fuzz_proxy.c)
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $@ $^

# frame.c's flat-object fast path against its tokener path (tests/unit/frame_diff.h).
$(FUZZ_B)/fuzz_frame: $(patsubst %.c,$(FUZZ_B)/obj/%.o,src/common/frame.c tests/fuzz/fuzz_frame.c)
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $@ $^ $(LDLIBS)

fuzz-build: deps $(addprefix $(FUZZ_B)/,$(FUZZ_TARGETS)) $(FUZZ_B)/fuzz_proxy $(FUZZ_B)/fuzz_frame

# A bounded run of every target (FUZZ_TIME seconds each; see tests/scripts/fuzz_bounded.sh).
fuzz: fuzz-build
	FUZZ_TIME=$(FUZZ_TIME) FUZZ_TIME_SMALL=$(FUZZ_TIME) sh tests/scripts/fuzz_bounded.sh

-include $(shell find $(B)/obj $(FUZZ_B)/obj -name '*.d' 2>/dev/null)
