// LeakSanitizer (and a live-heap check) over the certificate core: every success path and every
// refusal (bad PEM, encrypted or mismatched key, a CA that is no CA, bad specs), many times.
// Run by scripts/test-asan.sh:   certs_leak [rounds=300]
// Exit 0: every call behaved, the OpenSSL error queue was empty after each, the live heap after
// the warm-up did not grow, and (at exit) LeakSanitizer found nothing.
#include <openssl/err.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "certs/certs_core.h"

using namespace edgemesh::certs;

extern "C" size_t __sanitizer_get_current_allocated_bytes();

namespace {

void Expect(bool ok, const std::string& what) {
  if (ok) return;
  std::fprintf(stderr, "certs_leak: FAILED: %s\n", what.c_str());
  std::exit(1);
}

template <typename F>
void ExpectCode(const char* code, F f) {
  try {
    f();
  } catch (const CertError& e) {
    Expect(e.code == code, std::string("expected ") + code + ", got " + e.code + ": " + e.what());
    Expect(ERR_peek_error() == 0, std::string("error queue left non-empty after ") + code);
    return;
  }
  Expect(false, std::string("expected ") + code + ", nothing thrown");
}

// An EC key encrypted with a passphrase (PKCS#8, AES-256): must be refused, never prompted for.
const char* kEncryptedKey =
    "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
    "MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAiBv7wJN15EUwICCAAw\n"
    "DAYIKoZIhvcNAgkFADAdBglghkgBZQMEASoEEAhUdWLTfTg7X84VP1+/4RkEgZDE\n"
    "UVjyPJe66RosxoWYjKDqFmQQ0HN/AyDPRY1lm6Xw8VCRuIrk/DJ5WGTTBRKuOjN2\n"
    "XWrk2R2nKdaN2ALkVGOwTw/lv8abLqsVll2xYNetvMeKGQcvBWjgTi9mOOOYSDIW\n"
    "IWG3D1Muuyb6etY8I3ksKLVHSjZDFL34MaBawLotOr6ia90nJkxymM80YkGqg+Y=\n"
    "-----END ENCRYPTED PRIVATE KEY-----\n";

void Round() {
  KeyPair ca = GenerateCa(CaSpec{});
  KeyPair other = GenerateCa(CaSpec{});
  IssueSpec spec;
  spec.caCertPem = ca.certPem;
  spec.caKeyPem = ca.keyPem;
  spec.name = "node-1";
  KeyPair node = IssueCert(spec);
  Expect(ERR_peek_error() == 0, "error queue left non-empty after a success");
  CertDetails d = CertInfo(node.certPem + ca.certPem);
  Expect(d.subjectCN == "node-1" && d.dnsNames.size() == 1 && !d.isCa, "certInfo of the node certificate");
  Expect(CertInfo(ca.certPem).isCa, "certInfo of the CA");
  spec.name = std::string(100, 'a');  // no CN, critical SAN
  Expect(CertInfo(IssueCert(spec).certPem).subjectCN.empty(), "a long name has no CN");

  IssueSpec bad = spec;
  bad.name = "node-1";
  bad.caKeyPem = other.keyPem;
  ExpectCode("EKEYMISMATCH", [&] { IssueCert(bad); });
  bad.caCertPem = node.certPem;
  bad.caKeyPem = node.keyPem;
  ExpectCode("ENOTCA", [&] { IssueCert(bad); });
  bad.caCertPem = "junk";
  ExpectCode("EBADCERT", [&] { IssueCert(bad); });
  bad.caCertPem = ca.certPem;
  bad.caKeyPem = ca.certPem;
  ExpectCode("EBADKEY", [&] { IssueCert(bad); });
  bad.caKeyPem = kEncryptedKey;
  ExpectCode("EBADKEY", [&] { IssueCert(bad); });
  bad.caKeyPem = ca.keyPem;
  bad.name = "a,DNS:b";
  ExpectCode("EINVAL", [&] { IssueCert(bad); });
  bad.name = "n";
  bad.notAfterOffset = bad.notBeforeOffset;
  ExpectCode("EINVAL", [&] { IssueCert(bad); });
  // A truncated certificate: the PEM armour is right, the DER inside is cut.
  std::string cut = ca.certPem.substr(0, ca.certPem.size() / 2) + "\n-----END CERTIFICATE-----\n";
  ExpectCode("EBADCERT", [&] { CertInfo(cut); });
  ExpectCode("EBADCERT", [&] { CertInfo(""); });
  CaSpec badCa;
  badCa.commonName = std::string(65, 'x');
  ExpectCode("EINVAL", [&] { GenerateCa(badCa); });
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = argc > 1 ? std::atoi(argv[1]) : 300;
  Expect(rounds >= 20, "rounds must be at least 20");
  for (int i = 0; i < 10; i++) Round();  // warm-up: OpenSSL's lazily built tables, providers
  size_t before = __sanitizer_get_current_allocated_bytes();
  for (int i = 10; i < rounds; i++) Round();
  size_t after = __sanitizer_get_current_allocated_bytes();
  std::printf("certs_leak: %d rounds (4 certificates, 10 refusals each); live heap after warm-up %zu -> %zu bytes\n", rounds, before, after);
  // A leak of one certificate per round would be >100 KB here; allow some allocator noise.
  Expect(after < before + 64 * 1024, "the live heap grew");
  return 0;
}
