/*
 * egressd-bfd: the periodic half of egressd's BFD sessions (RFC 5880
 * asynchronous mode, RFC 5881 single hop), in a process of its own.
 *
 * egressd keeps the protocol: the state machine, timer negotiation, poll
 * sequences and authentication stay in health/bfd/session.ts, where they are
 * unit-tested with a hand-driven clock. What a session does between two
 * changes is the same every interval: send one packet that does not change,
 * and receive one that does not change either. That part runs here, as a
 * router offloads it to its line cards:
 *
 *   - each session's current packet is sent on a jittered schedule
 *     (RFC 5880 6.8.7), from a socket bound to its source port with TTL 255;
 *   - a received packet identical, byte for byte, to the last one egressd
 *     accepted from that peer (its "steady" packet) only moves the session's
 *     detection deadline; anything else goes up to egressd to decide;
 *   - the detection time is judged against the kernel's receive timestamps
 *     (SO_TIMESTAMPNS), after the sockets are drained, so a late wake-up of
 *     this process is never mistaken for a silent peer;
 *   - packets whose TTL / hop limit is not 255 are dropped (RFC 5881 5),
 *     which a Node.js socket cannot check.
 *
 * So egressd's thread wakes when something changes, not for every packet.
 *
 * Fate sharing: the C bit egressd sends is 0, so these packets must stop when
 * egressd stops. End of stdin (egressd gone) ends this process; a stopped
 * egressd (SIGSTOP; state T in /proc/PPID/stat, read before each round of
 * sending) sends nothing until it runs again.
 *
 * Commands, one per line on stdin (IDs are chosen by egressd; addresses are
 * numeric, IPv6 link-local ones with "%IFNAME"; HEX is a packet in hex):
 *   L LID ADDR PORT           open the receiving socket of a local address
 *                             -> "l LID ok" | "l LID err ERRNO"
 *   O SID LID LOCAL PEER LO HI PORT
 *                             open a session's sending socket: bound to LOCAL and a free port
 *                             in LO..HI, connected to PEER:PORT, TTL 255; packets from PEER on
 *                             listener LID belong to it
 *                             -> "o SID ok SRCPORT" | "o SID err ERRNO"
 *   C SID                     close a session          X LID   close a listener
 *   S SID HEX                 send HEX now
 *   T SID INTERVAL_US MULT1 RESCHED HEX
 *                             send HEX every INTERVAL_US less 0-25% jitter (10-25% with
 *                             MULT1 = 1). RESCHED = 1: the next one is due an interval after
 *                             the last packet sent, as when the interval changes or egressd
 *                             just sent one itself. HEX "-" or INTERVAL_US 0 stops sending.
 *   A SID TS DETECT_US HEX    egressd accepted the packet received at TS (from an "r" line):
 *                             the detection deadline is TS + DETECT_US (0: none), and packets
 *                             equal to HEX are steady ("-": none is). TS "now": this process
 *                             was started again, and the deadline runs from now
 *   D SID DETECT_US           the detection time changed
 * Output, one line per item, written once per wake-up:
 *   r LID TS TTL FROM HEX     a received packet that was not steady (TS: CLOCK_MONOTONIC ns of
 *                             the kernel's receive time)
 *   x SID LAST_RX             no packet for the detection time since LAST_RX (ns); disarmed,
 *                             and no packet steady, until the next "A"
 *   s SID RX TX LAST_RX LAST_TX SLACK_MIN_US LATE_MAX_US TXERR
 *                             a session's steady packets received and packets sent on schedule
 *                             since its last "s" line, once a second when there were any;
 *                             SLACK_MIN_US "-" when none was steady while armed
 *   h TTL_DROPS OVERFLOWS     once a second: packets dropped for their TTL, and by a full
 *                             socket buffer, since the start (egressd's watchdog reads it too)
 *   ! WHAT                    a command that could not be applied
 *
 * Needs no privilege beyond binding the BFD port (3784 < 1024: CAP_NET_BIND_SERVICE); with
 * CAP_SYS_NICE, "--realtime N" puts it in the real-time class (see main).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"

enum {
  MAX_LISTENERS = 64,
  MAX_SESSIONS = 1024,
  MAX_PKT = 64, /* 24-byte header + the longest authentication section (SHA1: 28) */
  OUT_MAX = 1 << 20,
};

#define NS 1000000000LL
/* Sessions due within this much of each other share a wake-up. */
#define SLACK_NS 500000LL
#define REPORT_NS NS

struct listener {
  int used;
  long lid;
  int fd, family;
};

struct session {
  int used;
  long sid, lid;
  int fd, family;
  uint8_t peer[16]; /* address bytes: 4 or 16 */
  uint8_t tmpl[MAX_PKT];
  int tmpl_len, mult1;
  int64_t interval, next_tx, last_tx; /* ns; next_tx INT64_MAX when not sending */
  uint8_t steady[MAX_PKT];
  int steady_len;
  int64_t last_rx, detect; /* ns */
  int armed;
  /* Since the last "s" line. */
  uint64_t rx, tx, txerr;
  int64_t slack_min, late_max; /* ns; slack_min INT64_MAX when none */
};

static struct listener listeners[MAX_LISTENERS];
static struct session sessions[MAX_SESSIONS];
static int sessions_hi;
static uint64_t ttl_drops, overflows;
static uint64_t rng;
static int parent_stat = -1;
static char out[OUT_MAX];
static size_t out_len;

static int64_t clock_ns(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static void flush_out(void) {
  size_t off = 0;
  while (off < out_len) {
    ssize_t w = write(1, out + off, out_len - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      exit(0); /* egressd is gone */
    }
    off += (size_t)w;
  }
  out_len = 0;
}

static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emit(const char *fmt, ...) {
  if (out_len > OUT_MAX - 512) flush_out();
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(out + out_len, OUT_MAX - out_len, fmt, ap);
  va_end(ap);
  if (n > 0) out_len += (size_t)n;
}

static const char *errname(int e) {
  const char *s = strerrorname_np(e);
  return s ? s : "EIO";
}

/* xorshift64*: jitter needs spread, not secrecy. */
static double random01(void) {
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return (double)((rng * 2685821657736338717ULL) >> 11) / (double)(1ULL << 53);
}

/* RFC 5880 6.8.7: the interval less 0-25%, or 10-25% with a detect multiplier of 1; r in [0, 1). */
static int64_t jittered_by(const struct session *s, double r) {
  double f = s->mult1 ? 0.9 - 0.15 * r : 1 - 0.25 * r;
  return (int64_t)((double)s->interval * f);
}

static int64_t jittered(const struct session *s) { return jittered_by(s, random01()); }

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decodes HEX into buf; -1 when it is not hex or longer than MAX_PKT bytes. */
static int unhex(const char *h, uint8_t *buf) {
  size_t n = strlen(h);
  if (n % 2 || n / 2 > MAX_PKT) return -1;
  for (size_t i = 0; i < n / 2; i++) {
    int a = hexval(h[2 * i]), b = hexval(h[2 * i + 1]);
    if (a < 0 || b < 0) return -1;
    buf[i] = (uint8_t)(a << 4 | b);
  }
  return (int)(n / 2);
}

/* Parses "ADDR" or "fe80::1%eth0" into a socket address with the given port. */
static int parse_addr(const char *text, int port, struct sockaddr_storage *ss, socklen_t *len) {
  char a[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
  snprintf(a, sizeof a, "%s", text);
  char *zone = strchr(a, '%');
  if (zone) *zone++ = 0;
  memset(ss, 0, sizeof *ss);
  struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
  if (!zone && inet_pton(AF_INET, a, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *len = sizeof *s4;
    return AF_INET;
  }
  if (inet_pton(AF_INET6, a, &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons((uint16_t)port);
    if (zone && !(s6->sin6_scope_id = if_nametoindex(zone))) return -1;
    *len = sizeof *s6;
    return AF_INET6;
  }
  return -1;
}

static struct listener *find_listener(long lid) {
  for (int i = 0; i < MAX_LISTENERS; i++)
    if (listeners[i].used && listeners[i].lid == lid) return &listeners[i];
  return NULL;
}

static struct session *find_session(long sid) {
  for (int i = 0; i < sessions_hi; i++)
    if (sessions[i].used && sessions[i].sid == sid) return &sessions[i];
  return NULL;
}

static void open_listener(char *args) {
  long lid, port;
  char addr[128];
  if (sscanf(args, "%ld %127s %ld", &lid, addr, &port) != 3 || port < 1 || port > 65535) {
    emit("! usage L\n");
    return;
  }
  if (find_listener(lid)) {
    emit("l %ld err EEXIST\n", lid);
    return;
  }
  struct listener *l = NULL;
  for (int i = 0; i < MAX_LISTENERS && !l; i++)
    if (!listeners[i].used) l = &listeners[i];
  struct sockaddr_storage ss;
  socklen_t len;
  int family = parse_addr(addr, (int)port, &ss, &len);
  if (!l || family < 0) {
    emit("l %ld err %s\n", lid, l ? "EINVAL" : "ENOSPC");
    return;
  }
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    emit("l %ld err %s\n", lid, errname(errno));
    return;
  }
  int on = 1;
  if (family == AF_INET6) {
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    setsockopt(fd, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &on, sizeof on);
  } else {
    setsockopt(fd, IPPROTO_IP, IP_RECVTTL, &on, sizeof on);
  }
  setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
  setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &on, sizeof on);
  if (bind(fd, (struct sockaddr *)&ss, len) < 0) {
    emit("l %ld err %s\n", lid, errname(errno));
    close(fd);
    return;
  }
  *l = (struct listener){.used = 1, .lid = lid, .fd = fd, .family = family};
  emit("l %ld ok\n", lid);
}

static void open_session(char *args) {
  long sid, lid, lo, hi, port;
  char local[128], peer[128];
  if (sscanf(args, "%ld %ld %127s %127s %ld %ld %ld", &sid, &lid, local, peer, &lo, &hi, &port) != 7 || lo < 1 ||
      hi > 65535 || lo > hi || port < 1 || port > 65535) {
    emit("! usage O\n");
    return;
  }
  if (find_session(sid)) {
    emit("o %ld err EEXIST\n", sid);
    return;
  }
  struct listener *l = find_listener(lid);
  struct session *s = NULL;
  for (int i = 0; i < MAX_SESSIONS && !s; i++)
    if (!sessions[i].used) s = &sessions[i];
  struct sockaddr_storage src, dst;
  socklen_t src_len, dst_len;
  int family = parse_addr(local, 0, &src, &src_len);
  if (!l || !s || family < 0 || parse_addr(peer, (int)port, &dst, &dst_len) != family || l->family != family) {
    emit("o %ld err %s\n", sid, !s ? "ENOSPC" : "EINVAL");
    return;
  }
  int fd = -1, err = EADDRINUSE, bound = 0;
  for (int attempt = 0; attempt < 32 && err == EADDRINUSE; attempt++) {
    fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      err = errno;
      break;
    }
    bound = (int)(lo + (long)(random01() * (double)(hi - lo + 1)));
    if (bound > hi) bound = (int)hi;
    if (family == AF_INET) ((struct sockaddr_in *)&src)->sin_port = htons((uint16_t)bound);
    else ((struct sockaddr_in6 *)&src)->sin6_port = htons((uint16_t)bound);
    if (bind(fd, (struct sockaddr *)&src, src_len) == 0) {
      err = 0;
      break;
    }
    err = errno;
    close(fd);
    fd = -1;
  }
  int ttl = 255, small = 1024;
  if (!err) {
    if (family == AF_INET) setsockopt(fd, IPPROTO_IP, IP_TTL, &ttl, sizeof ttl);
    else setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &ttl, sizeof ttl);
    /* Nothing is expected on the sending socket: the peer sends to port 3784. */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    if (connect(fd, (struct sockaddr *)&dst, dst_len) < 0) err = errno;
  }
  if (err) {
    if (fd >= 0) close(fd);
    emit("o %ld err %s\n", sid, errname(err));
    return;
  }
  *s = (struct session){.used = 1, .sid = sid, .lid = lid, .fd = fd, .family = family,
                        .next_tx = INT64_MAX, .slack_min = INT64_MAX};
  if (family == AF_INET) memcpy(s->peer, &((struct sockaddr_in *)&dst)->sin_addr, 4);
  else memcpy(s->peer, &((struct sockaddr_in6 *)&dst)->sin6_addr, 16);
  if (s - sessions >= sessions_hi) sessions_hi = (int)(s - sessions) + 1;
  emit("o %ld ok %d\n", sid, bound);
}

static void close_session(struct session *s) {
  close(s->fd);
  s->used = 0;
  while (sessions_hi > 0 && !sessions[sessions_hi - 1].used) sessions_hi--;
}

static void send_now(struct session *s, const uint8_t *pkt, int len) {
  if (send(s->fd, pkt, (size_t)len, 0) < 0) s->txerr++;
}

static void command(char *line) {
  char op = line[0];
  char *args = line[0] ? line + 1 : line;
  long sid;
  if (op == 'L') return open_listener(args);
  if (op == 'O') return open_session(args);
  if (op == 'X') {
    struct listener *l = find_listener(strtol(args, NULL, 10));
    if (l) {
      close(l->fd);
      l->used = 0;
    }
    return;
  }
  if (!op) return;
  char *rest;
  sid = strtol(args, &rest, 10);
  struct session *s = find_session(sid);
  if (!s) {
    emit("! no session %ld for %c\n", sid, op);
    return;
  }
  uint8_t pkt[MAX_PKT];
  char hex[2 * MAX_PKT + 2];
  switch (op) {
  case 'C':
    close_session(s);
    return;
  case 'S': {
    int n = sscanf(rest, "%130s", hex) == 1 ? unhex(hex, pkt) : -1;
    if (n <= 0) break;
    send_now(s, pkt, n);
    s->last_tx = clock_ns(CLOCK_MONOTONIC);
    return;
  }
  case 'T': {
    long long interval_us;
    int mult1, resched;
    if (sscanf(rest, "%lld %d %d %130s", &interval_us, &mult1, &resched, hex) != 4 || interval_us < 0) break;
    if (interval_us == 0 || strcmp(hex, "-") == 0) {
      s->tmpl_len = 0;
      s->next_tx = INT64_MAX;
      return;
    }
    int n = unhex(hex, pkt);
    if (n <= 0) break;
    memcpy(s->tmpl, pkt, (size_t)n);
    s->tmpl_len = n;
    s->mult1 = mult1 != 0;
    int64_t interval = (int64_t)interval_us * 1000;
    if (resched || s->next_tx == INT64_MAX || interval != s->interval) {
      s->interval = interval;
      int64_t now = clock_ns(CLOCK_MONOTONIC);
      int64_t next = s->last_tx + jittered(s);
      s->next_tx = next > now ? next : now;
    }
    return;
  }
  case 'A': {
    long long ts, detect_us;
    char when[24];
    if (sscanf(rest, "%23s %lld %130s", when, &detect_us, hex) != 3 || detect_us < 0) break;
    /* "now": a helper started again is given the sessions' last packets as if received now. */
    ts = strcmp(when, "now") == 0 ? clock_ns(CLOCK_MONOTONIC) : strtoll(when, NULL, 10);
    int n = strcmp(hex, "-") == 0 ? 0 : unhex(hex, pkt);
    if (n < 0) break;
    memcpy(s->steady, pkt, (size_t)n);
    s->steady_len = n;
    if (ts > s->last_rx) s->last_rx = ts;
    s->detect = (int64_t)detect_us * 1000;
    s->armed = s->detect > 0;
    return;
  }
  case 'D': {
    long long detect_us;
    if (sscanf(rest, "%lld", &detect_us) != 1 || detect_us < 0) break;
    s->detect = (int64_t)detect_us * 1000;
    if (!s->detect) s->armed = 0;
    return;
  }
  }
  emit("! bad %c for session %ld\n", op, sid);
}

static struct session *session_of(const struct listener *l, const uint8_t *from) {
  int n = l->family == AF_INET ? 4 : 16;
  for (int i = 0; i < sessions_hi; i++) {
    struct session *s = &sessions[i];
    if (s->used && s->lid == l->lid && memcmp(s->peer, from, (size_t)n) == 0) return s;
  }
  return NULL;
}

/* Reads every queued packet of one listener; `mono_minus_real` converts the kernel's timestamps. */
static void drain(struct listener *l, int64_t mono_minus_real) {
  for (;;) {
    uint8_t buf[512];
    struct sockaddr_storage from;
    union {
      char b[CMSG_SPACE(sizeof(struct timespec)) + 2 * CMSG_SPACE(sizeof(int)) + 64];
      struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr msg = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
    ssize_t n = recvmsg(l->fd, &msg, MSG_DONTWAIT);
    if (n < 0) return; /* EAGAIN: drained */
    int64_t rx = 0;
    int ttl = -1;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
      if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
        struct timespec ts;
        memcpy(&ts, CMSG_DATA(cm), sizeof ts);
        rx = (int64_t)ts.tv_sec * NS + ts.tv_nsec + mono_minus_real;
      } else if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SO_RXQ_OVFL) {
        uint32_t d;
        memcpy(&d, CMSG_DATA(cm), sizeof d);
        overflows = d;
      } else if ((cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_TTL) ||
                 (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_HOPLIMIT)) {
        memcpy(&ttl, CMSG_DATA(cm), sizeof ttl);
      }
    }
    int64_t now = clock_ns(CLOCK_MONOTONIC);
    if (!rx || rx > now) rx = now; /* no timestamp, or the wall clock stepped meanwhile */
    /* RFC 5881 5: a single-hop packet comes with TTL / hop limit 255, or from off the link. */
    if (ttl != 255) {
      ttl_drops++;
      continue;
    }
    const uint8_t *addr = l->family == AF_INET ? (const uint8_t *)&((struct sockaddr_in *)&from)->sin_addr
                                               : (const uint8_t *)&((struct sockaddr_in6 *)&from)->sin6_addr;
    struct session *s = session_of(l, addr);
    if (s && s->steady_len == n && memcmp(s->steady, buf, (size_t)n) == 0) {
      if (s->armed) {
        int64_t slack = s->last_rx + s->detect - rx;
        if (slack < s->slack_min) s->slack_min = slack;
      }
      if (rx > s->last_rx) s->last_rx = rx;
      s->rx++;
      continue;
    }
    char from_s[INET6_ADDRSTRLEN + IF_NAMESIZE + 1];
    inet_ntop(l->family, addr, from_s, INET6_ADDRSTRLEN);
    /* A link-local peer is named with its interface, as egressd names it: "fe80::1%eth0". */
    unsigned scope = l->family == AF_INET6 ? ((struct sockaddr_in6 *)&from)->sin6_scope_id : 0;
    char ifname[IF_NAMESIZE];
    if (scope && if_indextoname(scope, ifname)) {
      size_t at = strlen(from_s);
      snprintf(from_s + at, sizeof from_s - at, "%%%s", ifname);
    }
    char hex[2 * sizeof buf + 1];
    for (ssize_t i = 0; i < n; i++) snprintf(hex + 2 * i, 3, "%02x", buf[i]);
    if (n == 0) strcpy(hex, "-");
    emit("r %ld %lld %d %s %s\n", l->lid, (long long)rx, ttl, from_s, hex);
  }
}

/* True when every session of the listener has a steady packet (and it has a session). */
static int all_steady(const struct listener *l) {
  int any = 0;
  for (int i = 0; i < sessions_hi; i++) {
    const struct session *s = &sessions[i];
    if (!s->used || s->lid != l->lid) continue;
    if (!s->steady_len) return 0;
    any = 1;
  }
  return any;
}

/* State of egressd (our parent's main thread) from /proc: 'T' or 't' when it is stopped. */
static int parent_stopped(void) {
  if (parent_stat < 0) return 0;
  char buf[256];
  ssize_t n = pread(parent_stat, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  buf[n] = 0;
  const char *p = strrchr(buf, ')'); /* the name may hold spaces and parentheses */
  return p && p[1] == ' ' && (p[2] == 'T' || p[2] == 't');
}

int main(int argc, char **argv) {
  /* --realtime N: run in the real-time class (SCHED_FIFO, priority N) when allowed (CAP_SYS_NICE). A
   * round of sending then waits for no ordinary process, busy as the node may be; RT throttling
   * (sched_rt_runtime_us) still bounds what a fault here could take. Without the privilege, the
   * process keeps the priority egressd gave it. */
  for (int i = 1; i + 1 < argc; i++)
    if (strcmp(argv[i], "--realtime") == 0) {
      struct sched_param sp = {.sched_priority = atoi(argv[i + 1])};
      if (sp.sched_priority > 0) sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &sp);
    }
  if (getrandom(&rng, sizeof rng, 0) != sizeof rng) rng = (uint64_t)clock_ns(CLOCK_REALTIME) ^ (uint64_t)getpid();
  if (!rng) rng = 1;
  char path[64];
  /* The main thread's own file: the process's one sums every thread's figures on each read. */
  snprintf(path, sizeof path, "/proc/%d/task/%d/stat", (int)getppid(), (int)getppid());
  parent_stat = open(path, O_RDONLY | O_CLOEXEC);
  fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  /* Waits end at an absolute time: a stop (SIGSTOP, a frozen cgroup) does not restart them. */
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (tfd < 0) return 1;
  int64_t next_report = clock_ns(CLOCK_MONOTONIC) + REPORT_NS;
  for (;;) {
    int64_t mono_minus_real = clock_ns(CLOCK_MONOTONIC) - clock_ns(CLOCK_REALTIME);
    /* Packets first, then the deadlines they move, then what is due to be sent. */
    for (int i = 0; i < MAX_LISTENERS; i++)
      if (listeners[i].used) drain(&listeners[i], mono_minus_real);
    int64_t now = clock_ns(CLOCK_MONOTONIC);
    int due = 0;
    for (int i = 0; i < sessions_hi; i++) {
      struct session *s = &sessions[i];
      if (!s->used) continue;
      if (s->armed && s->last_rx + s->detect <= now) {
        /* What follows the silence is for egressd to judge: nothing is steady until it says so. */
        s->armed = 0;
        s->steady_len = 0;
        emit("x %ld %lld\n", s->sid, (long long)s->last_rx);
      }
      if (s->next_tx <= now + SLACK_NS) due = 1;
    }
    if (due) {
      /* One round: every session that is due, and every other whose next packet may go now, 75 % of
       * its interval after its last one (RFC 5880 6.8.7 allows 75-100 %). One random draw per round:
       * sessions of one interval then stay together, and wake this process once per interval, while
       * each packet's interval is still random in the range. */
      int stopped = parent_stopped();
      double r = random01();
      for (int i = 0; i < sessions_hi; i++) {
        struct session *s = &sessions[i];
        if (!s->used || s->next_tx == INT64_MAX) continue;
        int may = now - s->last_tx >= s->interval - s->interval / 4;
        if (s->next_tx > now + SLACK_NS && !may) continue;
        int64_t late = now - s->next_tx;
        if (!stopped) {
          send_now(s, s->tmpl, s->tmpl_len);
          s->tx++;
          if (late > s->late_max) s->late_max = late;
        }
        s->last_tx = now;
        s->next_tx = now + jittered_by(s, r);
      }
    }
    if (now >= next_report) {
      for (int i = 0; i < sessions_hi; i++) {
        struct session *s = &sessions[i];
        if (!s->used || !(s->rx || s->tx || s->txerr)) continue;
        char slack[24] = "-";
        if (s->slack_min != INT64_MAX) snprintf(slack, sizeof slack, "%lld", (long long)(s->slack_min / 1000));
        emit("s %ld %llu %llu %lld %lld %s %lld %llu\n", s->sid, (unsigned long long)s->rx,
             (unsigned long long)s->tx, (long long)s->last_rx, (long long)s->last_tx, slack,
             (long long)(s->late_max / 1000), (unsigned long long)s->txerr);
        s->rx = s->tx = s->txerr = 0;
        s->slack_min = INT64_MAX;
        s->late_max = 0;
      }
      emit("h %llu %llu\n", (unsigned long long)ttl_drops, (unsigned long long)overflows);
      next_report += REPORT_NS;
      if (next_report <= now) next_report = now + REPORT_NS;
    }
    flush_out();
    int64_t wake = next_report;
    for (int i = 0; i < sessions_hi; i++) {
      struct session *s = &sessions[i];
      if (!s->used) continue;
      if (s->next_tx < wake) wake = s->next_tx;
      if (s->armed && s->last_rx + s->detect < wake) wake = s->last_rx + s->detect;
    }
    struct itimerspec its = {0};
    its.it_value.tv_sec = wake / NS;
    its.it_value.tv_nsec = wake % NS;
    if (!its.it_value.tv_sec && !its.it_value.tv_nsec) its.it_value.tv_nsec = 1;
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
    struct pollfd pfd[2 + MAX_LISTENERS];
    int nfd = 0;
    pfd[nfd++] = (struct pollfd){.fd = 0, .events = POLLIN};
    pfd[nfd++] = (struct pollfd){.fd = tfd, .events = POLLIN};
    /* A listener whose sessions all have a steady packet is read when this process wakes anyway (to
     * send, or at a deadline, which is judged after reading): a packet that changes something waits
     * at most one transmit interval. Any other listener is read as packets come. */
    for (int i = 0; i < MAX_LISTENERS; i++)
      if (listeners[i].used && !all_steady(&listeners[i]))
        pfd[nfd++] = (struct pollfd){.fd = listeners[i].fd, .events = POLLIN};
    if (poll(pfd, (nfds_t)nfd, -1) > 0) {
      if (pfd[1].revents & POLLIN) {
        uint64_t expirations;
        ssize_t got = read(tfd, &expirations, sizeof expirations);
        (void)got;
      }
      if (pfd[0].revents & (POLLIN | POLLHUP)) read_commands(command);
      else if (pfd[0].revents & (POLLERR | POLLNVAL)) return 1;
    }
  }
}
