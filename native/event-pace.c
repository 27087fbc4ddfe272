/*
 * egressd-event-pace.so: loaded into conntrackd (LD_PRELOAD) so that,
 * first, it reads the kernel's conntrack events in batches, at most once every
 * EGRESSD_EVENT_PACE_US microseconds, instead of waking for each one.
 *
 * Why (docs/connection-sync.md, "Events read in batches"): most of
 * conntrackd's CPU under load is the cost of each wake-up (the context
 * switch, select(), re-enabling interrupts under a hypervisor, the
 * sigprocmask pair around each pass), not the work on each event. A
 * connection makes three events (new, established, destroyed), and at a
 * few thousand connections a second conntrackd woke for nearly every one.
 * conntrackd has no option to wait before it reads, so this library adds
 * one, around the one call its main loop blocks in.
 *
 * What it changes: conntrackd's main loop calls select() on its sockets. A
 * netlink socket that is a member of multicast groups (the event socket) is
 * left out of a call made less than the pace after the last time it was
 * reported readable; the call waits for the other sockets (the sync link,
 * the control socket) as before, and its timeout is cut to the end of the
 * pace, after which the event socket is watched again. So the sync link and
 * conntrackd's own timers are served as soon as before, and events wait at
 * most the pace. close() is wrapped only to forget what it knew of the
 * descriptor. Without the variable, or with 0, select() is conntrackd's
 * own and nothing below applies either.
 *
 * conntrackd must also read more than its default 100 events per pass
 * (EventIterationLimit), or the pace would cap its rate: egressd's config
 * sets that.
 *
 * Paced, what is left is the work on each event, on both sides. Two more
 * changes cut it (docs/connection-sync.md, "Fewer events"), each with its
 * own variable, set by egressd:
 *
 * - EGRESSD_EVENT_MERGE=1: the event socket's batch is read at once
 *   (recvmmsg) and a connection's events within it are merged before
 *   conntrackd reads them (recvfrom, "Merging" below);
 * - EGRESSD_EVENT_DROP_ECHO=1: the kernel drops the events of the states
 *   conntrackd writes for its peers, which it reads only to skip them; the
 *   end of one passes, handed over as the end of conntrackd's own flush, so
 *   that it leaves conntrackd's cache (sendto, "Echoes" below).
 *
 * A fourth, EGRESSD_INJECT_KEEP=1 (also set by egressd, and independent of
 * the pace), keeps an entry that exists where conntrackd would destroy it
 * and create it again from a peer's state ("Keeping entries that exist"
 * below; docs/connection-sync.md, "Entries kept"). A fifth,
 * EGRESSD_INJECT_BATCH=1 (with the fourth), writes the peers' new states
 * of one pass with one system call instead of two each ("Writing in
 * batches" below; docs/connection-sync.md, "Writes in batches").
 *
 * Everything else passes through untouched.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

typedef int (*select_fn)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
typedef int (*close_fn)(int);
typedef ssize_t (*recvfrom_fn)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
typedef int (*socket_fn)(int, int, int);

static select_fn real_select;
static close_fn real_close;
static recvfrom_fn real_recvfrom;
static int64_t pace_ns = -1;
/* Whether a batch's new and update events of one connection are merged (EGRESSD_EVENT_MERGE=1). */
static int merge;
/* Whether the events of the states conntrackd writes itself are dropped in the kernel (EGRESSD_EVENT_DROP_ECHO=1). */
static int drop_echo;
static uint32_t writer_portid;     /* the socket conntrackd writes states with (0: not seen yet) */
static int filtered_fd = -1;       /* the event socket the filter is on */
static uint32_t filtered_portid;   /* the port id it drops */
static int event_fd = -1;          /* the last event socket seen */
/* The last two ctnetlink sockets conntrackd opened, the latest last (-1: none). */
static int netfilter_fds[2] = {-1, -1};
/* The socket conntrackd opened just before its event socket: its flush socket ("Echoes"). */
static int flush_fd = -1;
/* Whether a peer's state never replaces an entry that exists (EGRESSD_INJECT_KEEP=1). */
static int keep;
/* Whether the creates of a pass are written at once (EGRESSD_INJECT_BATCH=1, with keep). */
static int inject_batch;
/* The last ctnetlink request conntrackd sent on each netlink socket: 0 none (or another), 1 create, 2 update. */
static unsigned char last_request[FD_SETSIZE];
/* When each paced socket was last reported readable (0: never), by fd. */
static int64_t last_ready[FD_SETSIZE];
/*
 * 1: paced (a netlink socket with group memberships), 3: another netlink
 * socket, 2: any other descriptor, 0: not looked at yet.
 */
static unsigned char kind[FD_SETSIZE];
/* The netlink port id of each socket once looked up (0: not yet; the kernel never gives a socket 0). */
static uint32_t port_ids[FD_SETSIZE];

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void setup(void) {
  real_select = (select_fn)dlsym(RTLD_NEXT, "select");
  const char *v = getenv("EGRESSD_EVENT_PACE_US");
  long us = v ? strtol(v, NULL, 10) : 0;
  pace_ns = us > 0 && us <= 1000000 ? (int64_t)us * 1000 : 0;
  const char *m = getenv("EGRESSD_EVENT_MERGE");
  merge = pace_ns > 0 && m && strcmp(m, "1") == 0;
  const char *d = getenv("EGRESSD_EVENT_DROP_ECHO");
  drop_echo = pace_ns > 0 && d && strcmp(d, "1") == 0;
  const char *k = getenv("EGRESSD_INJECT_KEEP");
  keep = k && strcmp(k, "1") == 0;
  const char *b = getenv("EGRESSD_INJECT_BATCH");
  inject_batch = keep && b && strcmp(b, "1") == 0;
}

static void batch_forget(int fd);
static void pending_write(int fd);
static ssize_t owed_answer(int fd, void *buf, size_t len, struct sockaddr *from, socklen_t *fromlen);

/* A closed descriptor's number may come back as another socket: it is looked at again then. */
int close(int fd) {
  if (!real_close) real_close = (close_fn)dlsym(RTLD_NEXT, "close");
  if (!real_close) {
    errno = ENOSYS;
    return -1;
  }
  if (fd >= 0 && fd < FD_SETSIZE) {
    pending_write(fd); /* its held creates first */
    kind[fd] = 0;
    last_ready[fd] = 0;
    batch_forget(fd);
    if (filtered_fd == fd) filtered_fd = -1;
    if (event_fd == fd) event_fd = -1;
    if (flush_fd == fd) flush_fd = -1;
    last_request[fd] = 0;
    port_ids[fd] = 0;
  }
  return real_close(fd);
}

/* Whether fd is a netlink socket subscribed to multicast groups: conntrackd's event socket. */
static int paced(int fd) {
  if (!kind[fd]) {
    int domain = 0;
    socklen_t len = sizeof(domain);
    uint32_t groups[4] = {0};
    socklen_t glen = sizeof(groups);
    int member = 0, netlink = 0;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_NETLINK &&
        getsockopt(fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, groups, &glen) == 0) {
      netlink = 1;
      for (unsigned i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) member |= groups[i] != 0;
    }
    kind[fd] = member ? 1 : netlink ? 3 : 2;
    if (member) {
      event_fd = fd;
      if (netfilter_fds[1] == fd && netfilter_fds[0] >= 0) flush_fd = netfilter_fds[0];
    }
  }
  return kind[fd] == 1;
}

/*
 * Merging (EGRESSD_EVENT_MERGE=1). conntrackd reads its events with
 * recvfrom(), one datagram a call. On the event socket, the first call of a
 * pass reads everything the kernel has queued (up to BATCH_MAX datagrams,
 * RECV_AT_ONCE a system call) into this library's own buffer and hands it
 * out one datagram a call, after one change: a connection's "new" event
 * followed in the batch by an update that carries its TCP state (the
 * established one; matched on the conntrack id) becomes that update alone,
 * flagged as new. conntrackd reads one event instead of two, and its peer
 * writes the state with one request (a create) instead of two: a create and
 * an update, or, when conntrackd's send queue had already folded the two
 * into an update, an update the kernel refuses and then a create.
 *
 * Nothing else changes: other events, their order, the kernel's errors
 * (ENOBUFS, after the datagrams read before it) and the sender's address.
 * An update without a TCP state is never merged (conntrackd would replace
 * the connection's state with it). A peer learns a merged state no later
 * than it would have learnt the "new" one: both were read in the same pass.
 * The pace holds the socket only after it was readable, so the first event
 * after a quiet spell is read alone: merging saves only when conntrackd is
 * busy, which is when it matters.
 */
#define BATCH_MAX 4096
#define ARENA_BYTES (4u << 20)
#define SLOT_BYTES 16384u /* the largest event read whole (conntrackd reads at most 8192) */
#define RECV_AT_ONCE 64
#define ID_SLOTS 8192 /* a power of two, twice BATCH_MAX */

struct datagram {
  uint32_t at, len;
  int dropped;
  struct sockaddr_nl from;
  socklen_t fromlen;
};

static struct {
  int fd; /* the event socket the batch was read from, or -1 */
  unsigned count, next;
  int error;   /* errno the kernel returned after the batch (0: none), handed out after it */
  int drained; /* the kernel said EAGAIN when the batch was read */
  struct datagram d[BATCH_MAX];
  unsigned char *arena;
} batch = {.fd = -1};

/* conntrack id (with family) -> index of the batch's pending "new" event; gen marks live slots. */
static struct {
  uint64_t key;
  uint32_t gen;
  unsigned index;
} ids[ID_SLOTS];
static uint32_t ids_gen;

static int batch_waiting(int fd) { return batch.fd == fd && (batch.next < batch.count || batch.error); }

static void batch_forget(int fd) {
  if (batch.fd == fd) batch.fd = -1, batch.count = batch.next = 0, batch.error = batch.drained = 0;
}

/* The port id of netlink socket fd, looked up once; -1 when fd is not one. */
static int64_t port_of(int fd) {
  if (fd < 0 || fd >= FD_SETSIZE) return -1;
  if (!port_ids[fd]) {
    struct sockaddr_nl self;
    socklen_t l = sizeof self;
    if (getsockname(fd, (struct sockaddr *)&self, &l) != 0 || self.nl_family != AF_NETLINK) return -1;
    port_ids[fd] = self.nl_pid;
  }
  return port_ids[fd];
}

/* The port id of conntrackd's flush socket, or 0 when it is not known (or would be the writer's). */
static uint32_t flush_portid(void) {
  int64_t id = port_of(flush_fd);
  return id < 0 || (uint32_t)id == writer_portid ? 0 : (uint32_t)id;
}

/* Only to note the order in which conntrackd opens its ctnetlink sockets (flush_fd). */
int socket(int domain, int type, int protocol) {
  static socket_fn real_socket;
  if (!real_socket) real_socket = (socket_fn)dlsym(RTLD_NEXT, "socket");
  if (!real_socket) {
    errno = ENOSYS;
    return -1;
  }
  int fd = real_socket(domain, type, protocol);
  if (fd >= 0 && fd < FD_SETSIZE && domain == AF_NETLINK && protocol == NETLINK_NETFILTER) {
    netfilter_fds[0] = netfilter_fds[1];
    netfilter_fds[1] = fd;
  }
  return fd;
}

enum kind { OTHER, NEW_EVENT, UPDATE, DESTROY };

/* What a datagram is: one ctnetlink event, its conntrack id and whether it has a TCP state. */
static enum kind classify(unsigned char *p, uint32_t len, uint64_t *key, int *protoinfo) {
  struct nlmsghdr h;
  if (len < NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg))) return OTHER;
  memcpy(&h, p, sizeof h);
  if (h.nlmsg_len != len || NFNL_SUBSYS_ID(h.nlmsg_type) != NFNL_SUBSYS_CTNETLINK) return OTHER;
  enum kind k;
  if (NFNL_MSG_TYPE(h.nlmsg_type) == IPCTNL_MSG_CT_DELETE) k = DESTROY;
  else if (NFNL_MSG_TYPE(h.nlmsg_type) == IPCTNL_MSG_CT_NEW)
    k = (h.nlmsg_flags & (NLM_F_CREATE | NLM_F_EXCL)) ? NEW_EVENT : UPDATE;
  else return OTHER;
  struct nfgenmsg g;
  memcpy(&g, p + NLMSG_HDRLEN, sizeof g);
  int have_id = 0;
  uint32_t id = 0;
  *protoinfo = 0;
  for (uint32_t at = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof g); at + sizeof(struct nlattr) <= len;) {
    struct nlattr a;
    memcpy(&a, p + at, sizeof a);
    if (a.nla_len < sizeof a || a.nla_len > len - at) return OTHER;
    int type = a.nla_type & NLA_TYPE_MASK;
    if (type == CTA_ID && a.nla_len == sizeof a + 4) {
      memcpy(&id, p + at + sizeof a, 4);
      have_id = 1;
    } else if (type == CTA_PROTOINFO)
      *protoinfo = 1;
    at += NLA_ALIGN(a.nla_len);
  }
  if (!have_id) return OTHER;
  *key = (uint64_t)g.nfgen_family << 32 | id;
  return k;
}

static unsigned *id_find(uint64_t key, int add) {
  uint32_t h = (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> 40) & (ID_SLOTS - 1);
  for (unsigned i = 0; i < ID_SLOTS; i++, h = (h + 1) & (ID_SLOTS - 1)) {
    if (ids[h].gen != ids_gen) {
      if (!add) return NULL;
      ids[h].gen = ids_gen;
      ids[h].key = key;
      return &ids[h].index;
    }
    if (ids[h].key == key) return &ids[h].index;
  }
  return NULL;
}

static void id_forget(uint64_t key) {
  /* Marked with an index no event has: the slot stays in the probe chain. */
  unsigned *i = id_find(key, 0);
  if (i) *i = BATCH_MAX;
}

static void merge_batch(void) {
  if (++ids_gen == 0) memset(ids, 0, sizeof ids), ids_gen = 1;
  for (unsigned i = 0; i < batch.count; i++) {
    struct datagram *d = &batch.d[i];
    unsigned char *p = batch.arena + d->at;
    uint64_t key;
    int protoinfo;
    enum kind k = classify(p, d->len, &key, &protoinfo);
    if (k == OTHER) continue;
    uint32_t flush = k == DESTROY && drop_echo && writer_portid ? flush_portid() : 0;
    if (flush) {
      /* The end of a state conntrackd wrote for a peer, as if its flush had ended it ("Echoes"). */
      struct nlmsghdr h;
      memcpy(&h, p, sizeof h);
      if (h.nlmsg_pid == writer_portid) {
        h.nlmsg_pid = flush;
        memcpy(p, &h, sizeof h);
      }
    }
    unsigned *pending = id_find(key, k == NEW_EVENT);
    if (k == NEW_EVENT) {
      if (pending) *pending = i;
      continue;
    }
    if (!pending || *pending >= BATCH_MAX) continue;
    if (k == UPDATE && protoinfo) {
      struct nlmsghdr h;
      batch.d[*pending].dropped = 1;
      memcpy(&h, p, sizeof h);
      h.nlmsg_flags |= NLM_F_CREATE | NLM_F_EXCL;
      memcpy(p, &h, sizeof h);
      *pending = i;
    } else
      id_forget(key); /* an update without a state, or the end of the connection: passed on as it is */
  }
}

/* Reads what the kernel has queued on fd into the batch. Returns -1 (errno set) if it had nothing. */
static int batch_fill(int fd) {
  batch.fd = fd;
  batch.count = batch.next = 0;
  batch.error = batch.drained = 0;
  uint32_t used = 0;
  struct mmsghdr m[RECV_AT_ONCE];
  struct iovec v[RECV_AT_ONCE];
  while (!batch.drained) {
    unsigned want = RECV_AT_ONCE;
    if (want > BATCH_MAX - batch.count) want = BATCH_MAX - batch.count;
    if (want > (ARENA_BYTES - used) / SLOT_BYTES) want = (ARENA_BYTES - used) / SLOT_BYTES;
    if (!want) break;
    /* Each datagram gets a slot of SLOT_BYTES at the end of the arena; kept ones are packed after. */
    for (unsigned i = 0; i < want; i++) {
      struct datagram *d = &batch.d[batch.count + i];
      v[i] = (struct iovec){.iov_base = batch.arena + used + i * SLOT_BYTES, .iov_len = SLOT_BYTES};
      m[i] = (struct mmsghdr){
          .msg_hdr = {.msg_name = &d->from, .msg_namelen = sizeof d->from, .msg_iov = &v[i], .msg_iovlen = 1}};
    }
    int n = recvmmsg(fd, m, want, MSG_DONTWAIT, NULL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) batch.drained = 1;
      else batch.error = errno;
      break;
    }
    for (int i = 0; i < n; i++) {
      struct datagram *d = &batch.d[batch.count++];
      d->len = m[i].msg_len;
      d->fromlen = m[i].msg_hdr.msg_namelen;
      d->dropped = 0;
      d->at = used;
      memmove(batch.arena + used, v[i].iov_base, d->len);
      used += NLMSG_ALIGN(d->len);
    }
    /* Fewer than asked: the socket had no more (what comes meanwhile waits for the next pass). */
    if ((unsigned)n < want) batch.drained = 1;
  }
  if (!batch.count) {
    int e = batch.error ? batch.error : EAGAIN;
    batch_forget(fd);
    errno = e;
    return -1;
  }
  merge_batch();
  return 0;
}

/*
 * Keeping entries that exist (EGRESSD_INJECT_KEEP=1). conntrackd writes a
 * peer's state with a create, or with an update. When the kernel refuses the
 * create because the entry exists (EEXIST), or the update for any reason but
 * ENOENT, conntrackd destroys the entry and creates it again from the peer's
 * message. A packet of that connection between the two requests finds no
 * entry and is taken for a new connection. In a group of three, a member that
 * restarts asks for the others' state, and each of them answers with its
 * whole table (egressd has it reload the kernel's, so that the member gets
 * its own connections back), sent to the whole group: every member then
 * destroyed and created again every entry it had, its own live connections
 * included, at the moment the returning member rejoined the ECMP group and
 * flows moved (docs/connection-sync.md, "Entries kept"). With this set, such
 * an answer reaches conntrackd as a success, and the entry in the table stays
 * as it is; a missing entry is still created. The library tells the answers
 * apart by the request conntrackd last sent on that socket (it waits for each
 * answer before it sends the next).
 */

/* What a message conntrackd sends is: a ctnetlink "new" request, 1 a create, 2 an update; 0 anything else. */
static unsigned char write_request(const void *buf, size_t len) {
  struct nlmsghdr h;
  if (len < sizeof h) return 0;
  memcpy(&h, buf, sizeof h);
  if (NFNL_SUBSYS_ID(h.nlmsg_type) != NFNL_SUBSYS_CTNETLINK || NFNL_MSG_TYPE(h.nlmsg_type) != IPCTNL_MSG_CT_NEW ||
      !(h.nlmsg_flags & NLM_F_REQUEST))
    return 0;
  return (h.nlmsg_flags & NLM_F_CREATE) ? 1 : 2;
}

/* Turns the kernel's refusal of the last request on fd into a success, where conntrackd would replace the entry. */
static void keep_entry(int fd, unsigned char *buf, ssize_t n) {
  struct nlmsghdr h;
  struct nlmsgerr e;
  if (n < (ssize_t)(NLMSG_HDRLEN + sizeof e)) return;
  memcpy(&h, buf, sizeof h);
  if (h.nlmsg_type != NLMSG_ERROR || h.nlmsg_len > (size_t)n) return;
  memcpy(&e, buf + NLMSG_HDRLEN, sizeof e);
  if (e.msg.nlmsg_type != ((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW)) return;
  int replaced = last_request[fd] == 1 ? e.error == -EEXIST : e.error != 0 && e.error != -ENOENT;
  if (!replaced) return;
  e.error = 0;
  memcpy(buf + NLMSG_HDRLEN, &e, sizeof e);
}

ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen) {
  if (!real_recvfrom) real_recvfrom = (recvfrom_fn)dlsym(RTLD_NEXT, "recvfrom");
  if (!real_recvfrom) {
    errno = ENOSYS;
    return -1;
  }
  if (pace_ns < 0) setup();
  if (inject_batch) {
    ssize_t n = owed_answer(fd, buf, len, from, fromlen);
    if (n) return n;
  }
  if (keep && fd >= 0 && fd < FD_SETSIZE && last_request[fd]) {
    ssize_t n = real_recvfrom(fd, buf, len, flags, from, fromlen);
    if (n > 0) keep_entry(fd, buf, n);
    return n;
  }
  if (merge && !batch.arena && !(batch.arena = malloc(ARENA_BYTES))) merge = 0; /* conntrackd's own reads then */
  if (!merge || flags || fd < 0 || fd >= FD_SETSIZE || !paced(fd))
    return real_recvfrom(fd, buf, len, flags, from, fromlen);
  /* Another event socket while this one's batch is handed out: read as conntrackd would. */
  if (batch.fd >= 0 && batch.fd != fd && batch_waiting(batch.fd))
    return real_recvfrom(fd, buf, len, flags, from, fromlen);
  for (;;) {
    while (batch.fd == fd && batch.next < batch.count && batch.d[batch.next].dropped) batch.next++;
    if (batch.fd == fd && batch.next < batch.count) break;
    if (batch.fd == fd && batch.error) {
      errno = batch.error;
      batch_forget(fd);
      return -1;
    }
    if (batch.fd == fd && batch.drained) {
      /* The kernel had nothing more when the batch was read: the pass ends here. */
      batch_forget(fd);
      errno = EAGAIN;
      return -1;
    }
    if (batch_fill(fd) < 0) return -1;
  }
  struct datagram *d = &batch.d[batch.next++];
  size_t n = d->len < len ? d->len : len;
  memcpy(buf, batch.arena + d->at, n);
  if (from && fromlen) {
    socklen_t l = *fromlen < d->fromlen ? *fromlen : d->fromlen;
    memcpy(from, &d->from, l);
    *fromlen = d->fromlen;
  }
  return (ssize_t)n;
}

/*
 * Echoes (EGRESSD_EVENT_DROP_ECHO=1). A state conntrackd writes into the
 * kernel table for a peer comes back to it as an event of its own, carrying
 * the port id of the socket that wrote it; conntrackd reads it, parses it and
 * then skips it (it knows that socket). The library learns that socket's port
 * id from the first state conntrackd writes (a ctnetlink "new" request: a
 * create or an update) and gives the event socket a filter that drops, in the
 * kernel, every "new" and update event carrying it. conntrackd's event
 * socket then wakes and reads only for the events it acts on. Events caused
 * by anything else (the kernel, another program, conntrackd's other
 * sockets) carry another port id and pass. The filter would replace one of
 * conntrackd's own ("Filter From Kernelspace"), which egressd's config does
 * not use.
 *
 * The "destroy" of a state a peer ended passes, and is handed to conntrackd
 * (in the batch, "Merging" above) with the port id of conntrackd's flush
 * socket instead: the socket it opens just before its event socket. conntrackd
 * skips an event of its own writing, so a connection of a peer's that it
 * holds in its cache (egressd reloads the cache from the kernel's table to
 * answer a returning peer, docs/connection-sync.md) stayed there after the
 * connection ended, and went out again as alive with the next answer: every
 * member injected it again, an entry for a connection that no longer exists
 * (200 of 200 on the namespace pair). An event of its flush it takes out of
 * its cache and sends nowhere. As the kernel's (port id 0) it would send the
 * end on, and a peer where the same addresses and ports had meanwhile opened
 * a new connection would delete that one's entry.
 */
typedef ssize_t (*sendto_fn)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
static sendto_fn real_sendto;

/* Puts the filter on fd, once the writer is known; a later writer replaces it. */
static void filter_echoes(int fd) {
  if (!drop_echo || !writer_portid || (filtered_fd == fd && filtered_portid == writer_portid)) return;
  /* A classic BPF word load reads in network order: compare with the port id as such a load sees it. */
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct nlmsghdr, nlmsg_pid)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ntohl(writer_portid), 0, 3),
      BPF_STMT(BPF_LD | BPF_H | BPF_ABS, offsetof(struct nlmsghdr, nlmsg_type)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ntohs((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE), 1, 0),
      BPF_STMT(BPF_RET | BPF_K, 0),
      BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
  };
  struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) == 0) {
    filtered_fd = fd;
    filtered_portid = writer_portid;
  } else
    drop_echo = 0; /* conntrackd skips the echoes itself, as without the library */
}

/*
 * Writing in batches (EGRESSD_INJECT_BATCH=1, with EGRESSD_INJECT_KEEP=1).
 * conntrackd writes each of its peers' new states with a create request and
 * waits for the kernel's answer: two system calls a state, on the receiving
 * gateway the largest cost after the kernel's own work on the entry (at 10k
 * connections a second, 35k sendto and 37k recvfrom in 4 s, and a sixth of
 * the process's time re-enabling interrupts around them under this
 * hypervisor). The library holds each create instead and answers it with
 * the kernel's success at once; the held creates go to the kernel in one
 * sendto, one after another in the same buffer (the kernel handles every
 * message of a buffer in turn, before sendto returns), when conntrackd is
 * about to wait in select() at the end of its pass, before anything else it
 * sends to the kernel (an update, a destroy: their order is kept; a dump of
 * the table sees them), when the buffer is full, and when the socket is
 * closed. A state waits at most
 * until the end of the pass that received it, as it would have waited for
 * the pass to reach it.
 *
 * The held creates are sent without NLM_F_ACK: the kernel then answers only
 * the ones it refuses, and after the sendto the library reads those
 * answers (usually none, one recvmmsg that finds nothing). A refusal that
 * EGRESSD_INJECT_KEEP turns into a success (the entry exists, EEXIST)
 * counts as one here too. Any other (a full table: ENOMEM) conntrackd
 * never hears of: it counted the state as created. The library says so on
 * standard error, one line per sendto with refusals, with the total so
 * far, which egressd reads and adds to conntrackd's count of failed
 * injections (egressd_conntrackd_injections_failed_total).
 */
#define HELD_BYTES 32768u
#define HELD_MAX 64u
#define ANSWERS_AT_ONCE 16

static struct {
  int fd; /* the socket the held creates are for, or -1 */
  unsigned count;
  uint32_t used;
  unsigned char buf[HELD_BYTES];
} held = {.fd = -1};

/* The answer owed to conntrackd's next read on owed_fd: the success of the create it just handed over. */
static int owed_fd = -1;
static struct nlmsghdr owed_request;
static uint32_t owed_portid;
static unsigned long long refused_total;

/* Holds a create conntrackd sends on fd; 0 when it cannot be held (it is then sent as it is). */
static int hold_create(int fd, const void *buf, size_t len) {
  struct nlmsghdr h;
  if (len < sizeof h || len > HELD_BYTES) return 0;
  memcpy(&h, buf, sizeof h);
  if (h.nlmsg_len != len) return 0;
  int64_t portid = port_of(fd);
  if (portid < 0) return 0;
  if (held.fd >= 0 && (held.fd != fd || held.count >= HELD_MAX || held.used + NLMSG_ALIGN(len) > HELD_BYTES))
    pending_write(held.fd);
  unsigned char *at = held.buf + held.used;
  memcpy(at, buf, len);
  memset(at + len, 0, NLMSG_ALIGN(len) - len);
  struct nlmsghdr copy = h;
  copy.nlmsg_flags &= ~NLM_F_ACK; /* the kernel answers only a refusal */
  memcpy(at, &copy, sizeof copy);
  held.fd = fd;
  held.used += NLMSG_ALIGN(len);
  held.count++;
  owed_fd = fd;
  owed_request = h;
  owed_portid = (uint32_t)portid;
  last_request[fd] = 0; /* the answer is the library's own: nothing for keep_entry to change */
  return 1;
}

/* The success of the held create, as the kernel would have sent it; 0 when none is owed on fd. */
static ssize_t owed_answer(int fd, void *buf, size_t len, struct sockaddr *from, socklen_t *fromlen) {
  if (owed_fd < 0 || fd != owed_fd) return 0;
  struct nlmsghdr h = {
      .nlmsg_len = NLMSG_LENGTH(sizeof(struct nlmsgerr)),
      .nlmsg_type = NLMSG_ERROR,
      .nlmsg_flags = NLM_F_CAPPED,
      .nlmsg_seq = owed_request.nlmsg_seq,
      .nlmsg_pid = owed_portid,
  };
  struct nlmsgerr e = {.error = 0, .msg = owed_request};
  if (len < h.nlmsg_len) return 0; /* conntrackd's buffer is 4096 bytes or more: not reached */
  owed_fd = -1;
  memcpy(buf, &h, sizeof h);
  memcpy((unsigned char *)buf + NLMSG_HDRLEN, &e, sizeof e);
  if (from && fromlen) {
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    socklen_t l = *fromlen < sizeof kernel ? *fromlen : sizeof kernel;
    memcpy(from, &kernel, l);
    *fromlen = sizeof kernel;
  }
  return (ssize_t)h.nlmsg_len;
}

/* The refusals in one datagram of answers that conntrackd would have counted as failures. */
static unsigned refusals_in(const unsigned char *p, uint32_t len, int *first) {
  unsigned n = 0;
  for (uint32_t at = 0; at + NLMSG_HDRLEN <= len;) {
    struct nlmsghdr h;
    memcpy(&h, p + at, sizeof h);
    if (h.nlmsg_len < NLMSG_HDRLEN || h.nlmsg_len > len - at) break;
    if (h.nlmsg_type == NLMSG_ERROR && h.nlmsg_len >= NLMSG_LENGTH(sizeof(struct nlmsgerr))) {
      struct nlmsgerr e;
      memcpy(&e, p + at + NLMSG_HDRLEN, sizeof e);
      if (e.error != 0 && e.error != -EEXIST) {
        if (!n && !*first) *first = -e.error;
        n++;
      }
    }
    at += NLMSG_ALIGN(h.nlmsg_len);
  }
  return n;
}

/* Sends the creates held for fd (any fd when fd is -1), and reads the kernel's refusals of them. */
static void pending_write(int fd) {
  if (held.fd < 0 || (fd >= 0 && held.fd != fd)) return;
  int saved = errno;
  int to = held.fd;
  unsigned count = held.count;
  uint32_t used = held.used;
  held.fd = -1, held.count = 0, held.used = 0;
  struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
  ssize_t sent;
  do
    sent = real_sendto(to, held.buf, used, 0, (struct sockaddr *)&kernel, sizeof kernel);
  while (sent < 0 && errno == EINTR);
  unsigned refused = 0;
  int first = 0;
  if (sent < 0) {
    refused = count;
    first = errno;
  } else {
    static unsigned char answers[ANSWERS_AT_ONCE][8192];
    struct mmsghdr m[ANSWERS_AT_ONCE];
    struct iovec v[ANSWERS_AT_ONCE];
    for (;;) {
      for (int i = 0; i < ANSWERS_AT_ONCE; i++) {
        v[i] = (struct iovec){.iov_base = answers[i], .iov_len = sizeof answers[i]};
        m[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &v[i], .msg_iovlen = 1}};
      }
      int n = recvmmsg(to, m, ANSWERS_AT_ONCE, MSG_DONTWAIT, NULL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        /*
         * ENOBUFS: answers were lost (never seen with these sizes), so how many the kernel refused
         * is unknown: all of the batch are reported, rather than none.
         */
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          refused = count;
          first = errno;
        }
        break;
      }
      for (int i = 0; i < n; i++) refused += refusals_in(answers[i], m[i].msg_len, &first);
      if (n < ANSWERS_AT_ONCE) break;
    }
  }
  if (refused) {
    refused_total += refused;
    char line[200];
    int l = snprintf(line, sizeof line,
                     "egressd-event-pace: [ERROR] the kernel refused %u of %u peers' states written at once (%s); "
                     "%llu refused in all\n",
                     refused, count, strerror(first), refused_total);
    if (l > 0) (void)!write(2, line, (size_t)l < sizeof line ? (size_t)l : sizeof line - 1);
  }
  errno = saved;
}

__attribute__((destructor)) static void write_held_at_exit(void) { pending_write(-1); }

ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t tolen) {
  if (!real_sendto) real_sendto = (sendto_fn)dlsym(RTLD_NEXT, "sendto");
  if (!real_sendto) {
    errno = ENOSYS;
    return -1;
  }
  if (pace_ns < 0) setup();
  int learn = drop_echo && !writer_portid;
  if ((keep || learn) && fd >= 0 && fd < FD_SETSIZE && !paced(fd) && kind[fd] == 3) {
    unsigned char request = write_request(buf, len);
    if (keep) last_request[fd] = request;
    int64_t id = learn && request ? port_of(fd) : -1;
    if (id >= 0) {
      writer_portid = (uint32_t)id;
      /* Before the first state is written: its echo is dropped too. */
      if (event_fd >= 0) filter_echoes(event_fd);
    }
    if (inject_batch && request == 1 && !flags && hold_create(fd, buf, len)) return (ssize_t)len;
    /*
     * Anything else conntrackd sends to the kernel goes after the creates it handed over before: an
     * update or a destroy of the same connection, and a dump of the table (-R), which must see them.
     */
    pending_write(-1);
  }
  return real_sendto(fd, buf, len, flags, to, tolen);
}

static void note_ready(int n, const fd_set *r) {
  int64_t t = now_ns();
  for (int fd = 0; fd < n; fd++)
    if (kind[fd] == 1 && FD_ISSET(fd, r)) {
      last_ready[fd] = t;
      filter_echoes(fd);
    }
}

int select(int n, fd_set *r, fd_set *w, fd_set *e, struct timeval *tv) {
  if (pace_ns < 0) setup();
  if (!real_select) {
    errno = ENOSYS;
    return -1;
  }
  /* The end of a pass: the creates it handed over go to the kernel before conntrackd waits. */
  pending_write(-1);
  if (pace_ns == 0 || !r || n <= 0 || n > FD_SETSIZE) return real_select(n, r, w, e, tv);

  /* Datagrams of a batch still to hand out: the event socket is readable now, whatever the pace. */
  if (batch.fd >= 0 && batch.fd < n && FD_ISSET(batch.fd, r) && batch_waiting(batch.fd)) {
    int fd = batch.fd;
    struct timeval zero = {0, 0};
    int ret = real_select(n, r, w, e, &zero);
    if (ret < 0) return ret;
    if (!FD_ISSET(fd, r)) FD_SET(fd, r), ret++;
    return ret;
  }

  /* The paced sockets asked for that are still within their pace, and how long until the first is not. */
  int64_t t0 = now_ns();
  int64_t wait = -1;
  fd_set held;
  FD_ZERO(&held);
  for (int fd = 0; fd < n; fd++) {
    if (!FD_ISSET(fd, r) || !paced(fd) || !last_ready[fd]) continue;
    int64_t left = last_ready[fd] + pace_ns - t0;
    if (left <= 0) continue;
    FD_SET(fd, &held);
    FD_CLR(fd, r);
    if (wait < 0 || left < wait) wait = left;
  }
  if (wait < 0) {
    int ret = real_select(n, r, w, e, tv);
    if (ret > 0) note_ready(n, r);
    return ret;
  }

  /* Wait for the others, up to the end of the pace or the caller's timeout, whichever is first. */
  int64_t asked = tv ? (int64_t)tv->tv_sec * 1000000000 + (int64_t)tv->tv_usec * 1000 : -1;
  int capped = asked < 0 || wait < asked;
  int64_t first = capped ? wait : asked;
  fd_set r0 = *r;
  fd_set w0, e0;
  if (w) w0 = *w;
  if (e) e0 = *e;
  struct timeval t1 = {.tv_sec = first / 1000000000, .tv_usec = (first % 1000000000 + 999) / 1000};
  int ret = real_select(n, r, w, e, &t1);
  if (ret != 0 || !capped) {
    if (tv) {
      int64_t left = asked - (now_ns() - t0);
      if (left < 0) left = 0;
      tv->tv_sec = left / 1000000000;
      tv->tv_usec = (left % 1000000000) / 1000;
    }
    return ret;
  }

  /* The pace is over and nothing else came: watch everything for the rest of the caller's time. */
  *r = r0;
  for (int fd = 0; fd < n; fd++)
    if (FD_ISSET(fd, &held)) FD_SET(fd, r);
  if (w) *w = w0;
  if (e) *e = e0;
  struct timeval t2;
  struct timeval *rest = NULL;
  if (asked >= 0) {
    int64_t left = asked - (now_ns() - t0);
    if (left < 0) left = 0;
    t2.tv_sec = left / 1000000000;
    t2.tv_usec = (left % 1000000000) / 1000;
    rest = &t2;
  }
  ret = real_select(n, r, w, e, rest);
  if (ret > 0) note_ready(n, r);
  if (tv && rest) *tv = *rest;
  return ret;
}
