/*
 * egressd-ctevents: conntrack's NEW and DESTROY events for egressd's audit
 * trail (daemon/audit.ts, docs/audit.md), read from the kernel as they come
 * and handed to egressd in batches.
 *
 * Why a helper: each event is a datagram of its own, and a Node thread pays
 * about 170 us of CPU per wake-up on these machines (bench/wakeup-cost). At a
 * steady 1000 connections a second, egressd woke for nearly every event. This
 * helper wakes for them instead (a few us each), and egressd reads one batch
 * every flush interval. It can also ask for a receive buffer above
 * net.core.rmem_max (SO_RCVBUFFORCE, with CAP_NET_ADMIN).
 *
 *   egressd-ctevents RCVBUF_BYTES FLUSH_MS
 *
 * Output on stdout, frames of: u32 length (little-endian), then that many
 * bytes, one netlink datagram as the kernel sent it. A frame of length 0
 * means the kernel dropped events (ENOBUFS). The first frame is of length
 * 0xffffffff and carries 4 bytes: the receive buffer the kernel granted.
 * Exits when egressd goes (its stdout closes, or its parent dies).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH (4u << 20)
#define DATAGRAM (64u * 1024u)

static unsigned char *batch;
static size_t used;

static uint64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

static void put_u32(unsigned char *p, uint32_t v) {
  p[0] = v & 0xff;
  p[1] = (v >> 8) & 0xff;
  p[2] = (v >> 16) & 0xff;
  p[3] = (v >> 24) & 0xff;
}

/* Writes the batch out whole; a closed stdout ends the helper. */
static void flush_batch(void) {
  size_t off = 0;
  while (off < used) {
    ssize_t n = write(STDOUT_FILENO, batch + off, used - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) exit(0);
    off += (size_t)n;
  }
  used = 0;
}

static void append_frame(uint32_t len, const void *data, size_t size) {
  if (used + 4 + size > MAX_BATCH) flush_batch();
  put_u32(batch + used, len);
  used += 4;
  if (size) memcpy(batch + used, data, size);
  used += size;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: egressd-ctevents RCVBUF_BYTES FLUSH_MS\n");
    return 2;
  }
  long rcvbuf = strtol(argv[1], NULL, 10);
  long flush_ms = strtol(argv[2], NULL, 10);
  if (rcvbuf < 65536 || flush_ms < 1 || flush_ms > 10000) {
    fprintf(stderr, "egressd-ctevents: bad RCVBUF_BYTES or FLUSH_MS\n");
    return 2;
  }
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  signal(SIGPIPE, SIG_IGN);
  batch = malloc(MAX_BATCH);
  unsigned char *buf = malloc(DATAGRAM);
  if (!batch || !buf) return 1;

  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_NETFILTER);
  if (fd < 0) {
    perror("egressd-ctevents: socket");
    return 1;
  }
  int size = (int)rcvbuf;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  struct sockaddr_nl addr = {.nl_family = AF_NETLINK};
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    perror("egressd-ctevents: bind");
    return 1;
  }
  int groups[] = {NFNLGRP_CONNTRACK_NEW, NFNLGRP_CONNTRACK_DESTROY};
  for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
    if (setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &groups[i], sizeof groups[i]) < 0) {
      perror("egressd-ctevents: join group");
      return 1;
    }
  int granted = 0;
  socklen_t len = sizeof granted;
  getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &granted, &len);
  unsigned char g[4];
  put_u32(g, (uint32_t)granted);
  append_frame(0xffffffffu, g, 4);
  flush_batch();

  uint64_t due = 0;
  for (;;) {
    int timeout = -1;
    if (used) {
      uint64_t t = now_ms();
      timeout = due > t ? (int)(due - t) : 0;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r = poll(&p, 1, timeout);
    if (r < 0 && errno != EINTR) return 1;
    if (r > 0) {
      for (;;) {
        ssize_t n = recv(fd, buf, DATAGRAM, MSG_DONTWAIT);
        if (n > 0) {
          if (!used) due = now_ms() + (uint64_t)flush_ms;
          append_frame((uint32_t)n, buf, (size_t)n);
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == ENOBUFS) {
          if (!used) due = now_ms() + (uint64_t)flush_ms;
          append_frame(0, NULL, 0);
          continue;
        }
        break; /* EAGAIN */
      }
    }
    if (used && now_ms() >= due) flush_batch();
  }
}
