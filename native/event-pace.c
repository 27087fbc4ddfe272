/*
 * egressd-event-pace.so: loaded into conntrackd (LD_PRELOAD) so that it
 * reads the kernel's conntrack events in batches, at most once every
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
 * descriptor. Everything else passes through untouched; without the
 * variable, or with 0, select() is conntrackd's own.
 *
 * conntrackd must also read more than its default 100 events per pass
 * (EventIterationLimit), or the pace would cap its rate: egressd's config
 * sets that.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <linux/netlink.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

typedef int (*select_fn)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
typedef int (*close_fn)(int);

static select_fn real_select;
static close_fn real_close;
static int64_t pace_ns = -1;
/* When each paced socket was last reported readable (0: never), by fd. */
static int64_t last_ready[FD_SETSIZE];
/* 1: paced (a netlink socket with group memberships), 2: not, 0: not looked at yet. */
static unsigned char kind[FD_SETSIZE];

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
}

/* A closed descriptor's number may come back as another socket: it is looked at again then. */
int close(int fd) {
  if (!real_close) real_close = (close_fn)dlsym(RTLD_NEXT, "close");
  if (!real_close) {
    errno = ENOSYS;
    return -1;
  }
  if (fd >= 0 && fd < FD_SETSIZE) {
    kind[fd] = 0;
    last_ready[fd] = 0;
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
    int member = 0;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_NETLINK &&
        getsockopt(fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, groups, &glen) == 0)
      for (unsigned i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) member |= groups[i] != 0;
    kind[fd] = member ? 1 : 2;
  }
  return kind[fd] == 1;
}

static void note_ready(int n, const fd_set *r) {
  int64_t t = now_ns();
  for (int fd = 0; fd < n; fd++)
    if (kind[fd] == 1 && FD_ISSET(fd, r)) last_ready[fd] = t;
}

int select(int n, fd_set *r, fd_set *w, fd_set *e, struct timeval *tv) {
  if (pace_ns < 0) setup();
  if (!real_select) {
    errno = ENOSYS;
    return -1;
  }
  if (pace_ns == 0 || !r || n <= 0 || n > FD_SETSIZE) return real_select(n, r, w, e, tv);

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
