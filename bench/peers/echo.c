#define _GNU_SOURCE
// Small epoll echo server for the bench's short-connection test: echoes whatever it reads and
// closes when the peer closes. Single thread, edge-triggered, non-blocking.
// Usage: echo ADDR PORT   (prints "ready" once listening; ends on SIGTERM/SIGKILL from the bench)
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 3) { fprintf(stderr, "usage: echo ADDR PORT\n"); return 2; }
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)atoi(argv[2]));
  if (inet_pton(AF_INET, argv[1], &a.sin_addr) != 1) { fprintf(stderr, "bad address\n"); return 2; }
  if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4096)) { perror("bind/listen"); return 1; }
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = ls};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  printf("ready\n");
  fflush(stdout);
  struct epoll_event evs[256];
  char buf[65536];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    if (n < 0) { if (errno == EINTR) continue; perror("epoll_wait"); return 1; }
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        for (;;) {
          int c = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (c < 0) break;
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
        continue;
      }
      int closed = 0;
      for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r > 0) {
          ssize_t off = 0;
          while (off < r) {
            ssize_t w = write(fd, buf + off, (size_t)(r - off));
            if (w <= 0) { closed = 1; break; }  // 100 B echoes never fill the send buffer
            off += w;
          }
          if (closed) break;
          continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EINTR)) closed = 1;
        break;
      }
      if (closed) close(fd);
    }
  }
}
