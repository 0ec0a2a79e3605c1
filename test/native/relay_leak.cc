// LeakSanitizer (and a live-heap check) over many connections through the native relay core:
// accept, SO_ORIGINAL_DST, route lookup, connect, splice both ways, half-close, final event.
// Run by scripts/test-asan.sh inside a network namespace it prepared:
//   lo holds 169.254.96.16 (the proxy) and 169.254.96.17 (the endpoint), and nat OUTPUT DNATs
//   10.10.0.20:80 to 169.254.96.16:40001, as EDGE-MESH-TCP would.
//   relay_leak [connections=10000] [splice|copy]
// Exit 0: every connection echoed its bytes, one final event each, the live heap after the
// warm-up did not grow, and (at exit) LeakSanitizer found nothing.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "relay/relay_core.h"

using namespace edgemesh;

// From the sanitizer runtime (gcc ships no header for it).
extern "C" size_t __sanitizer_get_current_allocated_bytes();

namespace {

void Expect(bool ok, const std::string& what) {
  if (ok) return;
  std::fprintf(stderr, "relay_leak: FAILED: %s\n", what.c_str());
  std::exit(1);
}

int ListenOn(const char* ip, uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  Expect(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, std::string("bind ") + ip + ": " + std::strerror(errno));
  Expect(listen(fd, 128) == 0, "listen");
  return fd;
}

// The endpoint: echoes each connection until EOF, one at a time; stops when `stop` is set.
void Echo(int lfd, std::atomic<bool>& stop) {
  char buf[4096];
  while (!stop) {
    pollfd p{lfd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    int c = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    for (;;) {
      ssize_t n = read(c, buf, sizeof buf);
      if (n <= 0) break;
      for (ssize_t off = 0; off < n;) {
        ssize_t w = write(c, buf + off, n - off);
        if (w <= 0) break;
        off += w;
      }
    }
    close(c);
  }
}

// A client socket connected to the service address (DNATed to the proxy), or -1.
int ConnectService() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(80);
  inet_pton(AF_INET, "10.10.0.20", &a.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Bytes read until EOF (or an error).
size_t ReadToEof(int fd) {
  size_t got = 0;
  char in[256];
  for (;;) {
    ssize_t n = read(fd, in, sizeof in);
    if (n <= 0) return got;
    got += static_cast<size_t>(n);
  }
}

// One client connection to the service address; true when its 100 bytes came back.
bool OneConnection() {
  int fd = ConnectService();
  if (fd < 0) return false;
  char out[100];
  std::memset(out, 'x', sizeof out);
  bool ok = write(fd, out, sizeof out) == static_cast<ssize_t>(sizeof out);
  shutdown(fd, SHUT_WR);  // half-close: the echo must still come back in full
  size_t got = ReadToEof(fd);
  close(fd);
  return ok && got == sizeof out;
}

// `k` client connections open at once (so that one worker accepts several and hands some to the
// other): each writes its 100 bytes and half-closes before any reads, so the one-at-a-time echo
// endpoint can serve them in whatever order the proxy connected them. True when all echoed.
bool BurstConnections(int k) {
  std::vector<int> fds;
  bool ok = true;
  for (int i = 0; i < k; i++) {
    int fd = ConnectService();
    if (fd < 0) {
      ok = false;  // the ones opened so far still finish and are closed below
      break;
    }
    fds.push_back(fd);
  }
  char out[100];
  std::memset(out, 'y', sizeof out);
  for (int fd : fds) {
    if (write(fd, out, sizeof out) != static_cast<ssize_t>(sizeof out)) ok = false;
    shutdown(fd, SHUT_WR);
  }
  for (int fd : fds) {
    if (ReadToEof(fd) != sizeof out) ok = false;
    close(fd);
  }
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const int count = argc > 1 ? std::atoi(argv[1]) : 10000;
  const bool copy = argc > 2 && std::string(argv[2]) == "copy";
  Expect(count >= 2000, "at least 2000 connections");
  std::atomic<bool> stop{false};
  int lfd = ListenOn("169.254.96.17", 8080);
  std::thread echo(Echo, lfd, std::ref(stop));

  std::atomic<uint64_t> events{0}, eofs{0};
  ProxyConfig cfg;
  cfg.address = "169.254.96.16";
  cfg.port = 40001;
  cfg.threads = 2;
  cfg.mode = copy ? RelayMode::kCopy : RelayMode::kSplice;
  cfg.pipeIdleMs = 100;
  {
    Proxy proxy(cfg, [&](std::vector<ConnEvent>&& evs) {
      for (const auto& e : evs) {
        events++;
        if (e.reason == EndReason::kEof) eofs++;
      }
    });
    auto table = std::make_shared<RouteTable>();
    auto entry = std::make_unique<RouteEntry>();
    entry->service = "shop/web:http";
    RouteEndpoint ep;
    Expect(ParseSockAddr("169.254.96.17", 8080, &ep.addr), "endpoint address");
    ep.text = "169.254.96.17:8080";
    entry->endpoints.push_back(ep);
    SockAddr svc;
    Expect(ParseSockAddr("10.10.0.20", 80, &svc), "service address");
    table->Add(svc, std::move(entry));
    proxy.SetRoutes(table);

    const int warmup = 1000;
    size_t liveAfterWarmup = 0;
    for (int i = 0; i < count; i++) {
      Expect(OneConnection(), "connection " + std::to_string(i) + " did not echo its 100 bytes");
      if (i + 1 == warmup) {
        for (int w = 0; w < 200 && events < static_cast<uint64_t>(warmup); w++) usleep(10000);
        usleep(300000);  // pooled pipes idle out (pipeIdleMs 100)
        liveAfterWarmup = __sanitizer_get_current_allocated_bytes();
      }
    }
    // Bursts: sockets handed from the accepting worker to the other one (PassedFd) leak nothing either.
    constexpr int kBursts = 100, kBurst = 8;
    for (int b = 0; b < kBursts; b++) Expect(BurstConnections(kBurst), "burst " + std::to_string(b) + " did not echo in full");
    const uint64_t total = static_cast<uint64_t>(count) + kBursts * kBurst;
    for (int w = 0; w < 500 && events < total; w++) usleep(10000);
    Expect(events == total, "final events: " + std::to_string(events.load()) + " for " + std::to_string(total) + " connections");
    Expect(eofs == total, "connections that ended by EOF: " + std::to_string(eofs.load()));
    usleep(300000);
    const size_t liveAtEnd = __sanitizer_get_current_allocated_bytes();
    const long growth = static_cast<long>(liveAtEnd) - static_cast<long>(liveAfterWarmup);
    ProxyStats st = proxy.Stats();
    std::printf("relay_leak: %llu connections (%s; %d in bursts of %d), %llu relayed, %llu handed between workers, pipes created %llu reused %llu; live heap after %d: %zu bytes, at the end: %zu (%+ld)\n",
                static_cast<unsigned long long>(total), copy ? "copy" : "splice", kBursts * kBurst, kBurst, static_cast<unsigned long long>(st.relayed),
                static_cast<unsigned long long>(st.handoffs), static_cast<unsigned long long>(st.pipesCreated), static_cast<unsigned long long>(st.pipesReused), warmup,
                liveAfterWarmup, liveAtEnd, growth);
    Expect(st.active == 0, "active connections left: " + std::to_string(st.active));
    Expect(st.handoffs > 0, "no connection was handed between workers in " + std::to_string(kBursts) + " bursts");
    Expect(growth < 64 * 1024, "the live heap grew by " + std::to_string(growth) + " bytes over " + std::to_string(count - warmup) + " connections");
    proxy.Shutdown();
  }
  stop = true;
  echo.join();
  close(lfd);
  return 0;
}
