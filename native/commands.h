/*
 * Reading egressd's commands: the helpers (icmp-prober.c, bfd-offload.c)
 * take one command per line on a non-blocking stdin. End of stdin means
 * egressd is gone, and the helper ends with it.
 */
#ifndef EGRESSD_COMMANDS_H
#define EGRESSD_COMMANDS_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Reads what stdin holds and calls `command` with each complete line (without its newline). */
static void read_commands(void (*command)(char *line)) {
  static char buf[65536];
  static size_t have;
  for (;;) {
    ssize_t n = read(0, buf + have, sizeof buf - 1 - have);
    if (n == 0) exit(0); /* egressd closed our stdin */
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;
      exit(1);
    }
    have += (size_t)n;
    char *start = buf, *nl;
    while ((nl = memchr(start, '\n', have - (size_t)(start - buf)))) {
      *nl = 0;
      command(start);
      start = nl + 1;
    }
    have -= (size_t)(start - buf);
    memmove(buf, start, have);
    if (have == sizeof buf - 1) have = 0; /* a line longer than any command: drop it */
  }
}

#endif
