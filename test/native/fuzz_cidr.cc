// libFuzzer target for the plain C++ address parsing of the libiptc core (iptc_core.h:
// CanonicalCidr, CanonicalAddress), which every rule's -s/-d and DNAT address go through before
// anything is encoded into a kernel entry. Pure parsing: no kernel, no namespace.
//
// Input: first byte picks the family (even: IPv4, odd: IPv6), the rest is the text.
// Properties checked besides "no crash, no ASan/UBSan report":
//  - CanonicalAddress agrees with inet_pton (the oracle) on which texts are addresses;
//  - canonical forms are fixed points (canonicalising again changes nothing);
//  - a canonical CIDR is "address/prefix" with the prefix in range, no host bits set, and its
//    address part is itself a canonical address;
//  - an address alone is the same as address/32 (/128).
#include <arpa/inet.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "iptc_core.h"

using edgemesh::iptc::CanonicalAddress;
using edgemesh::iptc::CanonicalCidr;
using edgemesh::iptc::Family;

namespace {

[[noreturn]] void Fail(const char* what, const std::string& in, const std::string& out) {
  std::fprintf(stderr, "fuzz_cidr: %s: input \"%s\" -> \"%s\"\n", what, in.c_str(), out.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 512) return 0;
  const Family f = data[0] % 2 ? Family::V6 : Family::V4;
  const int af = f == Family::V4 ? AF_INET : AF_INET6;
  const int maxPrefix = f == Family::V4 ? 32 : 128;
  const std::string s(reinterpret_cast<const char*>(data + 1), size - 1);

  const std::string a = CanonicalAddress(f, s);
  uint8_t buf[16];
  const bool oracle = s.find('\0') == std::string::npos && inet_pton(af, s.c_str(), buf) == 1;
  if (oracle != !a.empty()) Fail("CanonicalAddress disagrees with inet_pton", s, a);
  if (!a.empty()) {
    if (CanonicalAddress(f, a) != a) Fail("canonical address is not a fixed point", s, a);
    const std::string host = CanonicalCidr(f, s);
    if (host != a + "/" + std::to_string(maxPrefix)) Fail("an address is not its own host CIDR", s, host);
  }

  const std::string c = CanonicalCidr(f, s);
  if (!c.empty()) {
    if (CanonicalCidr(f, c) != c) Fail("canonical CIDR is not a fixed point", s, c);
    const size_t slash = c.find('/');
    if (slash == std::string::npos || c.find('/', slash + 1) != std::string::npos) Fail("canonical CIDR is not addr/prefix", s, c);
    const std::string addr = c.substr(0, slash);
    const std::string plen = c.substr(slash + 1);
    if (CanonicalAddress(f, addr) != addr) Fail("CIDR address part is not canonical", s, c);
    char* end = nullptr;
    const long p = std::strtol(plen.c_str(), &end, 10);
    if (plen.empty() || *end != '\0' || p < 0 || p > maxPrefix || std::to_string(p) != plen) Fail("prefix out of range or not canonical", s, c);
    // No host bits: the address with the prefix re-applied is the same CIDR.
    if (CanonicalCidr(f, addr + "/" + plen) != c) Fail("host bits survive", s, c);
    // The input's address part must itself be an address (the CIDR did not invent one).
    const std::string inAddr = s.substr(0, s.find('/'));
    if (CanonicalAddress(f, inAddr).empty()) Fail("a CIDR was accepted whose address part is not an address", s, c);
  }
  return 0;
}
