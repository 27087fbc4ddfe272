/*
 * egressd-icmp: ICMP echo probes for every target of one egressd, in one
 * process, judged by the kernel's receive timestamps and reported once per
 * round.
 *
 * Why it exists (docs/health.md, "ICMP probes"): a Node.js thread pays about
 * 170 us of CPU for every wake-up on these machines, and one `ping` child per
 * target woke egressd once per reply: 100 wake-ups a second for 10 probes at
 * 100 ms, more than the whole idle budget. Here every probe sends on the
 * multiples of its interval (in groups of up to 16, each group at its own
 * phase), so probes of one interval share a few wake-ups; the
 * replies are not read as they come but when their timeout is due, from the
 * socket's queue, each with the time the kernel received it (SO_TIMESTAMPNS).
 * A reply that arrived in time counts however late this process ran, and
 * egressd hears of a round once, as one line.
 *
 * Commands, one per line on stdin:
 *   add ID TARGET SOURCE INTERVAL_MS TIMEOUT_MS SIZE
 *       ID: 1..2^31-1, chosen by egressd; an ID added again is replaced.
 *       SOURCE: "-" (the kernel chooses), a local address of the target's family, or an
 *       interface name.
 *       SIZE: payload bytes, 8..1400 (the first 8 carry this process's cookie).
 *   del ID
 * End of stdin ends the process.
 *
 * Output, one line per wake-up that has something to say:
 *   MONO_US ITEM...
 *   MONO_US is CLOCK_MONOTONIC in microseconds when the line was written;
 *   items are separated by spaces:
 *     ID:SEQ:ok:RTT_US         a reply within the timeout
 *     ID:SEQ:late:RTT_US       a reply, after the timeout
 *     ID:SEQ:lost:0            no reply and no error by the timeout
 *     ID:SEQ:unreach:RTT_US:TYPE-CODE@ADDR   an ICMP error about the echo
 *     ID:SEQ:senderr:0:ERRNO   the kernel refused to send it
 *     !drops:N                 replies the kernel dropped since the last
 *                              report (a full socket buffer): results in this
 *                              line may be wrong
 *     !refused:ID:WHY          a command that was not applied
 *
 * Needs CAP_NET_RAW (raw ICMP sockets). No other privilege is used.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <poll.h>
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

/* IPv4 raw socket option (linux/icmp.h; not included, as it clashes with
 * glibc's net/if.h): a bit set per ICMP type filters that type out. */
#define ICMP4_FILTER_OPT 1
#define T4_ECHOREPLY 0
#define T4_DEST_UNREACH 3
#define T4_ECHO 8
#define T4_TIME_EXCEEDED 11
#define T4_PARAMETERPROB 12

enum {
  /* Probes of one interval send together in groups of at most BURST, the groups spread over SLOTS
   * phases of the interval: few wake-ups, and no burst of hundreds of echoes (and their replies'
   * softirq work) at one instant, which delayed the BFD thread's packets. */
  BURST = 16,
  SLOTS = 8,
  MAX_PROBES = 4096,
  RING = 64, /* outstanding echoes per probe: timeout / interval must stay below */
  MIN_SIZE = 8,
  MAX_SIZE = 1400,
  OUT_MAX = 1 << 20,
};

enum kind { K_NONE = 0, K_REPLY, K_UNREACH, K_SENDERR };

struct pending {
  int used;
  uint16_t seq16;
  uint64_t seq;
  int64_t sched;     /* ns: when it was due to be sent (a multiple of the interval) */
  int64_t due;       /* ns: when it is judged next */
  int64_t sent_mono; /* ns */
  int64_t sent_real; /* ns, for the RTT against the kernel's timestamp */
  int kind;
  int64_t rtt; /* ns */
  char detail[72];
};

struct probe {
  int used;
  long id;
  int family;
  struct sockaddr_in dst4;
  struct sockaddr_in6 dst6;
  int has_src;
  struct in_addr src4;
  struct in6_addr src6;
  int ifindex;
  int64_t interval, timeout, next_send; /* ns */
  int64_t phase;                        /* ns: this probe's offset within its interval */
  uint16_t ident;
  uint64_t seq;
  int size;
  struct pending ring[RING];
};

static struct probe probes[MAX_PROBES];
/* How many probes were added with each interval (for their phases); a short list. */
static struct {
  int64_t interval;
  unsigned added;
} phases[64];
static int probes_hi; /* probes[probes_hi..] are unused */
static int by_ident[65536]; /* ident -> probe index + 1 */
static uint16_t next_ident;
static uint64_t cookie;
static int sock4 = -1, sock6 = -1;
static uint32_t drops4, drops6, drops_reported;
static char out[OUT_MAX];
static size_t out_len;

static int64_t clock_ns(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void flush_line(void);

static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emit(const char *fmt, ...) {
  if (out_len > OUT_MAX - 256) flush_line(); /* a round too large for one line goes out in several */
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(out + out_len, OUT_MAX - out_len, fmt, ap);
  va_end(ap);
  if (n > 0) out_len += (size_t)n;
}

static void flush_line(void) {
  if (!out_len) return;
  char head[32];
  int h = snprintf(head, sizeof head, "%lld", (long long)(clock_ns(CLOCK_MONOTONIC) / 1000));
  /* head, then the items (each starts with a space), then a newline: one write when it fits. */
  static char line[OUT_MAX + 64];
  memcpy(line, head, (size_t)h);
  memcpy(line + h, out, out_len);
  line[h + out_len] = '\n';
  size_t len = (size_t)h + out_len + 1, off = 0;
  while (off < len) {
    ssize_t w = write(1, line + off, len - off);
    if (w < 0) {
      if (errno == EINTR) continue;
      exit(0); /* egressd is gone */
    }
    off += (size_t)w;
  }
  out_len = 0;
}

static int open_socket(int family) {
  int s = socket(family, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC,
                 family == AF_INET ? IPPROTO_ICMP : IPPROTO_ICMPV6);
  if (s < 0) return -1;
  int on = 1;
  setsockopt(s, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
  setsockopt(s, SOL_SOCKET, SO_RXQ_OVFL, &on, sizeof on);
  /* Replies wait in the queue until their round is judged: room for many. */
  int buf = 4 << 20;
  if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) < 0)
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  if (family == AF_INET) {
    uint32_t blocked = ~((1u << T4_ECHOREPLY) | (1u << T4_DEST_UNREACH) | (1u << T4_TIME_EXCEEDED) |
                         (1u << T4_PARAMETERPROB));
    setsockopt(s, SOL_RAW, ICMP4_FILTER_OPT, &blocked, sizeof blocked);
  } else {
    struct icmp6_filter f;
    ICMP6_FILTER_SETBLOCKALL(&f);
    ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &f);
    ICMP6_FILTER_SETPASS(ICMP6_DST_UNREACH, &f);
    ICMP6_FILTER_SETPASS(ICMP6_PACKET_TOO_BIG, &f);
    ICMP6_FILTER_SETPASS(ICMP6_TIME_EXCEEDED, &f);
    ICMP6_FILTER_SETPASS(ICMP6_PARAM_PROB, &f);
    setsockopt(s, IPPROTO_ICMPV6, ICMP6_FILTER, &f, sizeof f);
  }
  return s;
}

static uint16_t checksum(const uint8_t *p, size_t n) {
  uint32_t sum = 0;
  for (; n > 1; p += 2, n -= 2) sum += (uint32_t)(p[0] << 8 | p[1]);
  if (n) sum += (uint32_t)(p[0] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

static struct pending *find_pending(struct probe *p, uint16_t seq16) {
  for (int i = 0; i < RING; i++)
    if (p->ring[i].used && p->ring[i].seq16 == seq16) return &p->ring[i];
  return NULL;
}

static void send_echo(struct probe *p, int64_t sched) {
  struct pending *slot = &p->ring[p->seq % RING];
  if (slot->used) {
    /* Still outstanding after RING intervals: cannot happen with timeout < RING * interval. */
    slot->used = 0;
  }
  uint8_t pkt[8 + MAX_SIZE];
  uint16_t seq16 = (uint16_t)p->seq;
  pkt[0] = p->family == AF_INET ? T4_ECHO : ICMP6_ECHO_REQUEST;
  pkt[1] = 0;
  pkt[2] = pkt[3] = 0;
  pkt[4] = (uint8_t)(p->ident >> 8);
  pkt[5] = (uint8_t)p->ident;
  pkt[6] = (uint8_t)(seq16 >> 8);
  pkt[7] = (uint8_t)seq16;
  memcpy(pkt + 8, &cookie, sizeof cookie);
  for (int i = (int)sizeof cookie; i < p->size; i++) pkt[8 + i] = (uint8_t)i;
  size_t len = 8 + (size_t)p->size;
  if (p->family == AF_INET) {
    uint16_t c = checksum(pkt, len);
    pkt[2] = (uint8_t)(c >> 8);
    pkt[3] = (uint8_t)c;
  } /* ICMPv6: the kernel fills the checksum in */

  struct iovec iov = {.iov_base = pkt, .iov_len = len};
  union {
    char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
    struct cmsghdr align;
  } ctl;
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (p->family == AF_INET) {
    msg.msg_name = &p->dst4;
    msg.msg_namelen = sizeof p->dst4;
  } else {
    msg.msg_name = &p->dst6;
    msg.msg_namelen = sizeof p->dst6;
  }
  if (p->has_src || p->ifindex) {
    memset(&ctl, 0, sizeof ctl);
    msg.msg_control = ctl.buf;
    struct cmsghdr *cm = (struct cmsghdr *)ctl.buf;
    if (p->family == AF_INET) {
      struct in_pktinfo pi = {.ipi_ifindex = p->ifindex, .ipi_spec_dst = p->src4};
      msg.msg_controllen = CMSG_SPACE(sizeof pi);
      cm->cmsg_level = IPPROTO_IP;
      cm->cmsg_type = IP_PKTINFO;
      cm->cmsg_len = CMSG_LEN(sizeof pi);
      memcpy(CMSG_DATA(cm), &pi, sizeof pi);
    } else {
      struct in6_pktinfo pi = {.ipi6_addr = p->src6, .ipi6_ifindex = (unsigned)p->ifindex};
      msg.msg_controllen = CMSG_SPACE(sizeof pi);
      cm->cmsg_level = IPPROTO_IPV6;
      cm->cmsg_type = IPV6_PKTINFO;
      cm->cmsg_len = CMSG_LEN(sizeof pi);
      memcpy(CMSG_DATA(cm), &pi, sizeof pi);
    }
  }
  /* Judged at its scheduled time + timeout: with the timeout equal to the interval, one wake-up judges a
   * round and sends the next. An echo still unanswered then, but sent late, gets its full timeout. */
  *slot = (struct pending){.used = 1, .seq16 = seq16, .seq = p->seq, .sched = sched, .due = sched + p->timeout};
  slot->sent_real = clock_ns(CLOCK_REALTIME);
  slot->sent_mono = clock_ns(CLOCK_MONOTONIC);
  if (sendmsg(p->family == AF_INET ? sock4 : sock6, &msg, 0) < 0) {
    const char *e = strerrorname_np(errno);
    emit(" %ld:%llu:senderr:0:%s", p->id, (unsigned long long)p->seq, e ? e : "EIO");
    slot->used = 0;
  }
  p->seq++;
}

/* The probe and outstanding echo that an (ident, seq) of ours belongs to. */
static struct pending *lookup(uint16_t ident, uint16_t seq16, struct probe **pp) {
  int idx = by_ident[ident];
  if (!idx) return NULL;
  struct probe *p = &probes[idx - 1];
  *pp = p;
  return find_pending(p, seq16);
}

static void record(struct pending *e, int kind, int64_t rx_real, const char *detail) {
  if (e->kind != K_NONE) return; /* the first answer counts */
  e->kind = kind;
  e->rtt = rx_real - e->sent_real;
  if (e->rtt < 0) e->rtt = 0; /* the wall clock was stepped back meanwhile */
  if (detail) snprintf(e->detail, sizeof e->detail, "%s", detail);
}

static void drain(int family) {
  int s = family == AF_INET ? sock4 : sock6;
  if (s < 0) return;
  for (;;) {
    uint8_t buf[2048];
    struct sockaddr_in6 from;
    union {
      char b[CMSG_SPACE(sizeof(struct timespec)) + CMSG_SPACE(sizeof(uint32_t)) + 64];
      struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof buf};
    struct msghdr msg = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = ctl.b, .msg_controllen = sizeof ctl.b};
    ssize_t n = recvmsg(s, &msg, MSG_DONTWAIT);
    if (n < 0) return; /* EAGAIN: drained */
    int64_t rx = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
      if (cm->cmsg_level != SOL_SOCKET) continue;
      if (cm->cmsg_type == SCM_TIMESTAMPNS) {
        struct timespec ts;
        memcpy(&ts, CMSG_DATA(cm), sizeof ts);
        rx = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
      } else if (cm->cmsg_type == SO_RXQ_OVFL) {
        uint32_t d;
        memcpy(&d, CMSG_DATA(cm), sizeof d);
        if (family == AF_INET) drops4 = d;
        else drops6 = d;
      }
    }
    if (!rx) rx = clock_ns(CLOCK_REALTIME);
    char from_s[INET6_ADDRSTRLEN];
    const uint8_t *icmp;
    size_t len;
    if (family == AF_INET) {
      if (n < 20) continue;
      size_t ihl = (size_t)(buf[0] & 0x0f) * 4;
      if ((size_t)n < ihl + 8) continue;
      icmp = buf + ihl;
      len = (size_t)n - ihl;
      inet_ntop(AF_INET, buf + 12, from_s, sizeof from_s);
    } else {
      if (n < 8) continue;
      icmp = buf;
      len = (size_t)n;
      inet_ntop(AF_INET6, &from.sin6_addr, from_s, sizeof from_s);
    }
    uint8_t type = icmp[0], code = icmp[1];
    struct probe *p = NULL;
    struct pending *e;
    int is_reply = family == AF_INET ? type == T4_ECHOREPLY : type == ICMP6_ECHO_REPLY;
    if (is_reply) {
      uint16_t ident = (uint16_t)(icmp[4] << 8 | icmp[5]), seq16 = (uint16_t)(icmp[6] << 8 | icmp[7]);
      if (len < 8 + sizeof cookie || memcmp(icmp + 8, &cookie, sizeof cookie) != 0) continue;
      if (!(e = lookup(ident, seq16, &p))) continue;
      /* The reply must come from the target. */
      int from_target = family == AF_INET
                            ? memcmp(buf + 12, &p->dst4.sin_addr, 4) == 0
                            : memcmp(&from.sin6_addr, &p->dst6.sin6_addr, 16) == 0;
      if (!from_target || p->family != family) continue;
      record(e, K_REPLY, rx, NULL);
      continue;
    }
    /* An ICMP error quotes the packet it is about: our echo request, to our target. */
    const uint8_t *inner;
    size_t inner_len;
    const uint8_t *inner_dst;
    if (family == AF_INET) {
      if (len < 8 + 20) continue;
      inner = icmp + 8;
      size_t ihl = (size_t)(inner[0] & 0x0f) * 4;
      if (inner[9] != IPPROTO_ICMP || len < 8 + ihl + 8) continue;
      inner_dst = inner + 16;
      inner_len = ihl;
    } else {
      if (len < 8 + 40 + 8) continue;
      inner = icmp + 8;
      if (inner[6] != IPPROTO_ICMPV6) continue;
      inner_dst = inner + 24;
      inner_len = 40;
    }
    const uint8_t *echo = inner + inner_len;
    if (echo[0] != (family == AF_INET ? T4_ECHO : ICMP6_ECHO_REQUEST)) continue;
    uint16_t ident = (uint16_t)(echo[4] << 8 | echo[5]), seq16 = (uint16_t)(echo[6] << 8 | echo[7]);
    if (!(e = lookup(ident, seq16, &p)) || p->family != family) continue;
    if (memcmp(inner_dst, family == AF_INET ? (const void *)&p->dst4.sin_addr : (const void *)&p->dst6.sin6_addr,
               family == AF_INET ? 4 : 16) != 0)
      continue;
    char detail[72];
    snprintf(detail, sizeof detail, "%u-%u@%s", type, code, from_s);
    record(e, K_UNREACH, rx, detail);
  }
}

static void judge(int64_t now) {
  for (int i = 0; i < probes_hi; i++) {
    struct probe *p = &probes[i];
    if (!p->used) continue;
    /* Oldest first: a probe's results go out in the order of its echoes. */
    for (uint64_t k = p->seq > RING ? p->seq - RING : 0; k < p->seq; k++) {
      struct pending *e = &p->ring[k % RING];
      if (!e->used || e->seq != k || e->due > now) continue;
      if (e->kind == K_NONE && e->sent_mono + p->timeout > now) {
        e->due = e->sent_mono + p->timeout;
        continue;
      }
      unsigned long long seq = (unsigned long long)e->seq;
      long long rtt_us = (long long)(e->rtt / 1000);
      switch (e->kind) {
      case K_REPLY:
        emit(" %ld:%llu:%s:%lld", p->id, seq, e->rtt <= p->timeout ? "ok" : "late", rtt_us);
        break;
      case K_UNREACH:
        emit(" %ld:%llu:unreach:%lld:%s", p->id, seq, rtt_us, e->detail);
        break;
      default:
        emit(" %ld:%llu:lost:0", p->id, seq);
      }
      e->used = 0;
    }
  }
}

static int64_t next_due(void) {
  int64_t due = INT64_MAX;
  for (int i = 0; i < probes_hi; i++) {
    struct probe *p = &probes[i];
    if (!p->used) continue;
    if (p->next_send < due) due = p->next_send;
    for (int j = 0; j < RING; j++)
      if (p->ring[j].used && p->ring[j].due < due) due = p->ring[j].due;
  }
  return due;
}

/* The first time after `now` that is a multiple of `interval` plus `phase`. */
static int64_t next_multiple(int64_t now, int64_t interval, int64_t phase) {
  return ((now - phase) / interval + 1) * interval + phase;
}

static struct probe *find_probe(long id) {
  for (int i = 0; i < probes_hi; i++)
    if (probes[i].used && probes[i].id == id) return &probes[i];
  return NULL;
}

static void remove_probe(struct probe *p) {
  by_ident[p->ident] = 0;
  p->used = 0;
  while (probes_hi > 0 && !probes[probes_hi - 1].used) probes_hi--;
}

static void refuse(long id, const char *why) { emit(" !refused:%ld:%s", id, why); }

static void add_probe(char *args) {
  char target[64], source[64];
  long id, interval_ms, timeout_ms, size;
  if (sscanf(args, "%ld %63s %63s %ld %ld %ld", &id, target, source, &interval_ms, &timeout_ms, &size) != 6)
    return refuse(0, "usage");
  if (id <= 0) return refuse(0, "id");
  if (interval_ms < 10 || interval_ms > 3600000) return refuse(id, "interval");
  if (timeout_ms < 1 || timeout_ms >= interval_ms * (RING - 1)) return refuse(id, "timeout");
  if (size < MIN_SIZE || size > MAX_SIZE) return refuse(id, "size");
  struct probe np = {.used = 1, .id = id, .size = (int)size};
  if (inet_pton(AF_INET, target, &np.dst4.sin_addr) == 1) {
    np.family = AF_INET;
    np.dst4.sin_family = AF_INET;
  } else if (inet_pton(AF_INET6, target, &np.dst6.sin6_addr) == 1) {
    np.family = AF_INET6;
    np.dst6.sin6_family = AF_INET6;
  } else
    return refuse(id, "target");
  if (strcmp(source, "-") != 0) {
    if (np.family == AF_INET && inet_pton(AF_INET, source, &np.src4) == 1) np.has_src = 1;
    else if (np.family == AF_INET6 && inet_pton(AF_INET6, source, &np.src6) == 1) np.has_src = 1;
    else if (!(np.ifindex = (int)if_nametoindex(source))) return refuse(id, "source");
  }
  int *sock = np.family == AF_INET ? &sock4 : &sock6;
  if (*sock < 0 && (*sock = open_socket(np.family)) < 0) {
    const char *e = strerrorname_np(errno);
    return refuse(id, e ? e : "socket");
  }
  struct probe *old = find_probe(id);
  if (old) remove_probe(old);
  struct probe *slot = NULL;
  for (int i = 0; i < MAX_PROBES && !slot; i++)
    if (!probes[i].used) slot = &probes[i];
  if (!slot) return refuse(id, "full");
  do next_ident++;
  while (by_ident[next_ident]);
  np.ident = next_ident;
  np.interval = (int64_t)interval_ms * 1000000;
  np.timeout = (int64_t)timeout_ms * 1000000;
  int64_t now = clock_ns(CLOCK_MONOTONIC);
  /* Every probe sends on the multiples of its interval, plus its group's phase. */
  unsigned *added = NULL;
  for (size_t i = 0; i < sizeof phases / sizeof phases[0] && !added; i++)
    if (phases[i].interval == np.interval || !phases[i].interval) {
      phases[i].interval = np.interval;
      added = &phases[i].added;
    }
  unsigned group = added ? (*added)++ / BURST % SLOTS : 0;
  np.phase = np.interval / SLOTS * group;
  np.next_send = next_multiple(now, np.interval, np.phase);
  *slot = np;
  by_ident[np.ident] = (int)(slot - probes) + 1;
  if (slot - probes >= probes_hi) probes_hi = (int)(slot - probes) + 1;
}

static void command(char *line) {
  if (strncmp(line, "add ", 4) == 0) add_probe(line + 4);
  else if (strncmp(line, "del ", 4) == 0) {
    struct probe *p = find_probe(strtol(line + 4, NULL, 10));
    if (p) remove_probe(p);
  } else if (*line)
    refuse(0, "command");
}

int main(void) {
  if (getrandom(&cookie, sizeof cookie, 0) != sizeof cookie) cookie = (uint64_t)clock_ns(CLOCK_REALTIME) ^ (uint64_t)getpid();
  next_ident = (uint16_t)cookie;
  fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  /* Waits end at an absolute time: a wait that a stop (SIGSTOP, a frozen cgroup) interrupts does not
   * start its full length again when the process continues, as a relative ppoll timeout would. */
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (tfd < 0) return 1;
  for (;;) {
    int64_t now = clock_ns(CLOCK_MONOTONIC);
    /* Replies first, then the verdicts they make, then this round's echoes. */
    drain(AF_INET);
    drain(AF_INET6);
    judge(now);
    for (int i = 0; i < probes_hi; i++) {
      struct probe *p = &probes[i];
      if (!p->used || p->next_send > now) continue;
      send_echo(p, p->next_send);
      p->next_send += p->interval;
      if (p->next_send <= now) p->next_send = next_multiple(now, p->interval, p->phase); /* late: no burst */
    }
    uint32_t drops = drops4 + drops6;
    if (drops != drops_reported) {
      emit(" !drops:%u", drops - drops_reported);
      drops_reported = drops;
    }
    flush_line();
    int64_t due = next_due();
    struct itimerspec its = {0}; /* all zero: disarmed, when nothing is due */
    if (due != INT64_MAX) {
      its.it_value.tv_sec = due / 1000000000;
      its.it_value.tv_nsec = due % 1000000000;
      if (!its.it_value.tv_sec && !its.it_value.tv_nsec) its.it_value.tv_nsec = 1;
    }
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
    struct pollfd pfd[2] = {{.fd = 0, .events = POLLIN}, {.fd = tfd, .events = POLLIN}};
    if (poll(pfd, 2, -1) > 0) {
      if (pfd[1].revents & POLLIN) {
        uint64_t expirations; /* how many does not matter: the loop looks at the clock */
        ssize_t got = read(tfd, &expirations, sizeof expirations);
        (void)got;
      }
      if (pfd[0].revents & (POLLIN | POLLHUP)) read_commands(command);
      else if (pfd[0].revents & (POLLERR | POLLNVAL)) return 1;
    }
  }
}
