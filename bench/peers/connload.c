// Short-connection load generator: each of C threads loops connect, send a 100 B request, read
// the 100 B echo, close; until the time limit or the connection limit (both required: every
// run stops by itself). Prints one JSON line: connections, errors, elapsed, rate, p50/p99 us.
// Usage: connload HOST PORT CONCURRENCY DURATION_MS MAX_CONNS
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define REQ 100
static struct sockaddr_in target;
static long duration_ns, max_conns;
static volatile long started_total;
static double t_start;

typedef struct { long n, errors, cap; unsigned *lat_us; } worker_t;

static double now_ns(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec * 1e9 + ts.tv_nsec; }

static void *run(void *arg) {
  worker_t *w = arg;
  char req[REQ], resp[REQ];
  memset(req, 'x', REQ);
  int one = 1;
  struct timeval tv = {.tv_sec = 2, .tv_usec = 0};
  for (;;) {
    double t0 = now_ns();
    if (t0 - t_start >= duration_ns) break;
    if (__sync_fetch_and_add(&started_total, 1) >= max_conns) break;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) { w->errors++; continue; }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int ok = connect(fd, (struct sockaddr *)&target, sizeof target) == 0 && write(fd, req, REQ) == REQ;
    size_t got = 0;
    while (ok && got < REQ) {
      ssize_t r = read(fd, resp + got, REQ - got);
      if (r <= 0) { ok = 0; break; }
      got += (size_t)r;
    }
    close(fd);
    if (!ok) { w->errors++; continue; }
    if (w->n < w->cap) w->lat_us[w->n] = (unsigned)((now_ns() - t0) / 1000);
    w->n++;
  }
  return NULL;
}

static int cmp(const void *a, const void *b) { unsigned x = *(const unsigned *)a, y = *(const unsigned *)b; return x < y ? -1 : x > y; }

int main(int argc, char **argv) {
  if (argc != 6) { fprintf(stderr, "usage: connload HOST PORT CONCURRENCY DURATION_MS MAX_CONNS\n"); return 2; }
  target.sin_family = AF_INET;
  target.sin_port = htons((unsigned short)atoi(argv[2]));
  if (inet_pton(AF_INET, argv[1], &target.sin_addr) != 1) { fprintf(stderr, "bad host\n"); return 2; }
  int c = atoi(argv[3]);
  duration_ns = atol(argv[4]) * 1000000L;
  max_conns = atol(argv[5]);
  if (c < 1 || c > 256 || duration_ns <= 0 || duration_ns > 60000000000L || max_conns < 1 || max_conns > 10000000) { fprintf(stderr, "bounds: concurrency 1-256, duration 1-60000 ms, max conns 1-1e7\n"); return 2; }
  worker_t *ws = calloc((size_t)c, sizeof *ws);
  pthread_t *th = calloc((size_t)c, sizeof *th);
  for (int i = 0; i < c; i++) { ws[i].cap = max_conns; ws[i].lat_us = malloc(sizeof(unsigned) * (size_t)max_conns / (size_t)c + 1024); ws[i].cap = max_conns / c + 1024; }
  t_start = now_ns();
  for (int i = 0; i < c; i++) pthread_create(&th[i], NULL, run, &ws[i]);
  for (int i = 0; i < c; i++) pthread_join(th[i], NULL);
  double elapsed = (now_ns() - t_start) / 1e9;
  long total = 0, errors = 0, kept = 0;
  for (int i = 0; i < c; i++) { total += ws[i].n; errors += ws[i].errors; kept += ws[i].n < ws[i].cap ? ws[i].n : ws[i].cap; }
  unsigned *all = malloc(sizeof(unsigned) * (size_t)(kept + 1));
  long k = 0;
  for (int i = 0; i < c; i++) { long m = ws[i].n < ws[i].cap ? ws[i].n : ws[i].cap; memcpy(all + k, ws[i].lat_us, sizeof(unsigned) * (size_t)m); k += m; }
  qsort(all, (size_t)k, sizeof(unsigned), cmp);
  unsigned p50 = k ? all[(long)(0.50 * (k - 1))] : 0, p99 = k ? all[(long)(0.99 * (k - 1))] : 0;
  printf("{\"connections\":%ld,\"errors\":%ld,\"elapsedS\":%.4f,\"perSec\":%.1f,\"p50us\":%u,\"p99us\":%u}\n", total, errors, elapsed, total / elapsed, p50, p99);
  return 0;
}
