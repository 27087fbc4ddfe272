/*
 * egressd-spawn: runs egressd's short commands (nft -f, nft list, conntrack)
 * so that egressd itself never forks once it is large.
 *
 * Why it exists (docs/dataplane.md, "Commands run by a helper"): Node.js
 * starts a child with fork(), and fork() of a 300 MB process copies its page
 * tables (25-36 ms here, during which the forking thread, and any thread
 * that faults, waits) and makes every page copy-on-write: the first write to
 * each page afterwards is a fault, 17 us each on these machines, so one
 * `nft -f` cost egressd about a second of CPU in faults spread over the next
 * writes of its heap. This process is started while egressd is small and
 * stays small; it starts each command with posix_spawn(), which glibc does
 * with CLONE_VM|CLONE_VFORK: no page tables are copied and nothing becomes
 * copy-on-write.
 *
 * Protocol, binary, little-endian, on stdin and stdout. A request:
 *
 *   u32 length of what follows
 *   u32 id, u32 timeout_ms (0: none), u32 argc, u32 envc, u32 input_len
 *   argc NUL-terminated arguments (argv[0] is looked up in PATH)
 *   envc NUL-terminated NAME=VALUE strings, set over this process's environment
 *   input_len bytes for the command's standard input
 *
 * The answer, once the command has exited and both its outputs are closed:
 *
 *   u32 length of what follows
 *   u32 id, i32 status, u32 flags, u32 stdout_len, u32 stderr_len
 *   stdout_len bytes, stderr_len bytes
 *
 * status is the exit code (0-255), or minus the signal that ended the
 * command; flags: 1 = killed at its timeout, 2 = not started (status is then
 * the errno). A malformed request ends this process (egressd sees its
 * outputs close). Up to 64 commands run at once (more wait their turn);
 * answers come as they finish.
 *
 * Fate sharing: end of stdin, or egressd's death (PR_SET_PDEATHSIG), kills
 * the commands still running and ends this process.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAX_JOBS 64
#define MAX_REQUEST (64u << 20)
#define MAX_OUTPUT (256u << 20)

struct buf {
  char *data;
  size_t len, cap;
};

struct job {
  int used;
  uint32_t id;
  pid_t pid;
  int pidfd, out, err, in; /* -1 when closed */
  int exited, status;
  uint32_t flags;
  int64_t deadline_ms; /* 0: none */
  struct buf stdout_buf, stderr_buf;
  char *input;
  size_t input_len, input_off;
};

static struct job jobs[MAX_JOBS];
static struct buf request; /* bytes read from stdin, not yet taken as requests */

static void die(const char *what) {
  fprintf(stderr, "egressd-spawn: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void append(struct buf *b, const char *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) die("out of memory");
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
}

static uint32_t get32(const char *p) {
  return (uint32_t)(unsigned char)p[0] | (uint32_t)(unsigned char)p[1] << 8 |
         (uint32_t)(unsigned char)p[2] << 16 | (uint32_t)(unsigned char)p[3] << 24;
}

static void put32(char *p, uint32_t v) {
  p[0] = (char)(v & 0xff);
  p[1] = (char)(v >> 8 & 0xff);
  p[2] = (char)(v >> 16 & 0xff);
  p[3] = (char)(v >> 24 & 0xff);
}

static void write_all(const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(1, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      exit(0); /* egressd is gone */
    }
    p += w;
    n -= (size_t)w;
  }
}

static void answer(uint32_t id, int32_t status, uint32_t flags, const struct buf *out, const struct buf *err) {
  size_t olen = out ? out->len : 0, elen = err ? err->len : 0;
  char head[24];
  put32(head, (uint32_t)(20 + olen + elen));
  put32(head + 4, id);
  put32(head + 8, (uint32_t)status);
  put32(head + 12, flags);
  put32(head + 16, (uint32_t)olen);
  put32(head + 20, (uint32_t)elen);
  write_all(head, sizeof head);
  if (olen) write_all(out->data, olen);
  if (elen) write_all(err->data, elen);
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

/* Finds `count` NUL-terminated strings from *p (before end); NULL if they are not all there. */
static char **strings(char **p, const char *end, uint32_t count) {
  char **out = calloc((size_t)count + 1, sizeof *out);
  if (!out) die("out of memory");
  for (uint32_t i = 0; i < count; i++) {
    char *nul = memchr(*p, 0, (size_t)(end - *p));
    if (!nul) {
      free(out);
      return NULL;
    }
    out[i] = *p;
    *p = nul + 1;
  }
  return out;
}

/* This process's environment with `set` (NAME=VALUE) laid over it. */
static char **environment(char **set, uint32_t n) {
  size_t have = 0;
  while (environ[have]) have++;
  char **env = calloc(have + n + 1, sizeof *env);
  if (!env) die("out of memory");
  size_t k = 0;
  for (size_t i = 0; i < have; i++) {
    const char *eq = strchr(environ[i], '=');
    size_t name = eq ? (size_t)(eq - environ[i]) + 1 : strlen(environ[i]);
    int replaced = 0;
    for (uint32_t j = 0; j < n && !replaced; j++) replaced = strncmp(set[j], environ[i], name) == 0;
    if (!replaced) env[k++] = environ[i];
  }
  for (uint32_t j = 0; j < n; j++) env[k++] = set[j];
  return env;
}

static struct job *free_slot(void) {
  for (int i = 0; i < MAX_JOBS; i++)
    if (!jobs[i].used) return &jobs[i];
  return NULL;
}

static void start(struct job *j, char *payload, uint32_t len) {
  if (len < 20) {
    fprintf(stderr, "egressd-spawn: request too short\n");
    exit(1);
  }
  uint32_t id = get32(payload), timeout = get32(payload + 4), argc = get32(payload + 8),
           envc = get32(payload + 12), input_len = get32(payload + 16);
  char *p = payload + 20, *end = payload + len;
  char **argv = argc > 0 && argc < len ? strings(&p, end, argc) : NULL;
  char **set = argv && envc < len ? strings(&p, end, envc) : NULL;
  if (!argv || !set || (size_t)(end - p) != input_len) {
    fprintf(stderr, "egressd-spawn: malformed request %u\n", id);
    exit(1);
  }
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) die("pipe2");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  posix_spawnattr_t at;
  posix_spawnattr_init(&at);
  sigset_t none, dflt;
  sigemptyset(&none);
  sigemptyset(&dflt);
  sigaddset(&dflt, SIGPIPE);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &dflt);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  char **env = environment(set, envc);
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], &fa, &at, argv, env);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  free(env);
  free(argv);
  free(set);
  close(in[0]);
  close(out[1]);
  close(err[1]);
  if (rc != 0) {
    close(in[1]);
    close(out[0]);
    close(err[0]);
    answer(id, rc, 2, NULL, NULL);
    return;
  }
  memset(j, 0, sizeof *j);
  j->used = 1;
  j->id = id;
  j->pid = pid;
  j->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (j->pidfd < 0) die("pidfd_open");
  j->out = out[0];
  j->err = err[0];
  j->in = in[1];
  j->deadline_ms = timeout ? now_ms() + timeout : 0;
  if (input_len) {
    j->input = malloc(input_len);
    if (!j->input) die("out of memory");
    memcpy(j->input, p, input_len);
    j->input_len = input_len;
    fcntl(j->in, F_SETFL, O_NONBLOCK);
  } else
    close_fd(&j->in);
}

/* Starts the complete requests read so far, as many as there are free slots (the rest wait). */
static void take_requests(void) {
  size_t at = 0;
  struct job *j;
  while (request.len - at >= 4 && (j = free_slot()) != NULL) {
    uint32_t n = get32(request.data + at);
    if (n > MAX_REQUEST) {
      fprintf(stderr, "egressd-spawn: request of %u bytes refused\n", n);
      exit(1);
    }
    if (request.len - at - 4 < n) break;
    start(j, request.data + at + 4, n);
    at += 4 + (size_t)n;
  }
  memmove(request.data, request.data + at, request.len - at);
  request.len -= at;
}

static void drain(int *fd, struct buf *b) {
  char chunk[65536];
  ssize_t r = read(*fd, chunk, sizeof chunk);
  if (r > 0) {
    if (b->len + (size_t)r <= MAX_OUTPUT) append(b, chunk, (size_t)r);
  } else if (r == 0 || (errno != EINTR && errno != EAGAIN))
    close_fd(fd);
}

static void finish_if_done(struct job *j) {
  if (!j->exited || j->out >= 0 || j->err >= 0) return;
  int32_t status = WIFEXITED(j->status) ? WEXITSTATUS(j->status) : -WTERMSIG(j->status);
  answer(j->id, status, j->flags, &j->stdout_buf, &j->stderr_buf);
  close_fd(&j->in);
  free(j->stdout_buf.data);
  free(j->stderr_buf.data);
  free(j->input);
  memset(j, 0, sizeof *j);
}

static void kill_all(void) {
  for (int i = 0; i < MAX_JOBS; i++)
    if (jobs[i].used && !jobs[i].exited) kill(jobs[i].pid, SIGKILL);
}

int main(void) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die("prctl");
  if (getppid() == 1) return 0; /* egressd is already gone */
  signal(SIGPIPE, SIG_IGN);
  for (;;) {
    struct pollfd fds[1 + MAX_JOBS * 4];
    struct {
      struct job *job;
      int what; /* 0 stdin, 1 out, 2 err, 3 in, 4 pidfd */
    } who[1 + MAX_JOBS * 4];
    nfds_t n = 0;
    fds[n] = (struct pollfd){.fd = 0, .events = POLLIN};
    who[n++].what = 0;
    int64_t now = now_ms(), wait = -1;
    for (int i = 0; i < MAX_JOBS; i++) {
      struct job *j = &jobs[i];
      if (!j->used) continue;
      if (j->deadline_ms && !j->exited) {
        if (now >= j->deadline_ms) {
          kill(j->pid, SIGKILL);
          j->flags |= 1;
          j->deadline_ms = 0;
        } else if (wait < 0 || j->deadline_ms - now < wait)
          wait = j->deadline_ms - now;
      }
      int *fd[] = {&j->out, &j->err, &j->in, &j->pidfd};
      short ev[] = {POLLIN, POLLIN, POLLOUT, POLLIN};
      for (int k = 0; k < 4; k++)
        if (*fd[k] >= 0 && !(k == 3 && j->exited)) {
          fds[n] = (struct pollfd){.fd = *fd[k], .events = ev[k]};
          who[n].job = j;
          who[n++].what = k + 1;
        }
    }
    if (poll(fds, n, (int)wait) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    for (nfds_t i = 0; i < n; i++) {
      if (!fds[i].revents) continue;
      struct job *j = who[i].job;
      switch (who[i].what) {
      case 0: {
        char chunk[65536];
        ssize_t r = read(0, chunk, sizeof chunk);
        if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
          kill_all();
          return 0;
        }
        if (r > 0) append(&request, chunk, (size_t)r);
        break;
      }
      case 1:
        drain(&j->out, &j->stdout_buf);
        break;
      case 2:
        drain(&j->err, &j->stderr_buf);
        break;
      case 3: {
        ssize_t w = write(j->in, j->input + j->input_off, j->input_len - j->input_off);
        if (w > 0) j->input_off += (size_t)w;
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || j->input_off == j->input_len) close_fd(&j->in);
        break;
      }
      case 4:
        if (waitpid(j->pid, &j->status, WNOHANG) == j->pid) {
          j->exited = 1;
          close_fd(&j->pidfd);
        }
        break;
      }
    }
    /* Requests after the outputs: a job slot freed above is free for them. */
    for (int i = 0; i < MAX_JOBS; i++)
      if (jobs[i].used) finish_if_done(&jobs[i]);
    take_requests();
  }
}
