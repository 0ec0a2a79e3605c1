// Certificates for the agents' mutual-TLS tunnel: a cluster CA and one certificate per node,
// plain C++ over OpenSSL 3.0 (EVP/X509), no V8. A node's identity is its certificate's CN (the
// first DNS subjectAltName when there is no CN), signed by the cluster CA.
//
// Every function clears OpenSSL's (thread-local) error queue on the way out, success or not, so a
// stale entry can never be reported as the reason of a later, unrelated failure.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgemesh {
namespace certs {

// A failure with a stable code:
//   EBADCERT     a PEM input holds no parsable certificate
//   EBADKEY      a PEM input holds no parsable (unencrypted) private key
//   EKEYMISMATCH the CA key is not the key of the CA certificate
//   ENOTCA       the CA certificate lacks basicConstraints CA:TRUE
//   EINVAL       a bad spec (empty or unsafe name, validity that ends before it starts)
//   ECERT        any other OpenSSL failure (key generation, signing, encoding)
// what() is one line: what we were doing, then OpenSSL's reason for the first queued error if any.
struct CertError : std::runtime_error {
  std::string code;
  CertError(std::string c, const std::string& msg) : std::runtime_error(msg), code(std::move(c)) {}
};

struct KeyPair {
  std::string certPem;
  std::string keyPem;  // PKCS#8, unencrypted ("BEGIN PRIVATE KEY")
};

constexpr int64_t kHour = 3600;
constexpr int64_t kDay = 86400;

struct CaSpec {
  std::string commonName = "edgemesh cluster CA";
  // Validity, in seconds relative to now. notBefore is back-dated by default so that nodes whose
  // clocks lag a little still accept a certificate made a moment ago.
  int64_t notBeforeOffset = -kHour;
  int64_t notAfterOffset = 3650 * kDay;
};

struct IssueSpec {
  std::string caCertPem;
  std::string caKeyPem;
  // The node name: CN and DNS subjectAltName. Must be a lowercase DNS name ([a-z0-9.-], at most
  // 253 characters); user-facing validation (DNS-1123) is done in TypeScript, this check only
  // keeps anything that could inject into the extension syntax out of the certificate.
  std::string name;
  int64_t notBeforeOffset = -kHour;
  int64_t notAfterOffset = 365 * kDay;
};

struct CertDetails {
  std::string subjectCN;  // "" when the subject has no CN
  std::vector<std::string> dnsNames;
  std::string serialHex;  // uppercase, whole bytes (as `openssl x509 -serial` prints it)
  std::string notBefore;  // ISO-8601 UTC, "2025-01-31T12:00:00Z"
  std::string notAfter;
  std::string issuerCN;
  bool isCa = false;  // basicConstraints CA:TRUE
};

// X.509's upper bound on a commonName (RFC 5280 ub-common-name). A longer node name (Kubernetes
// allows 253) gets no CN; its identity is then its DNS subjectAltName, marked critical as RFC
// 5280 requires for an empty subject.
constexpr size_t kMaxCommonName = 64;

// A self-signed CA: EC P-256, X509v3, basicConstraints critical CA:TRUE, keyUsage critical
// keyCertSign,cRLSign, subjectKeyIdentifier, random 128-bit serial, SHA-256. Throws CertError.
KeyPair GenerateCa(const CaSpec& spec);

// A node certificate signed by the CA: EC P-256, CN and DNS SAN = name, CA:FALSE, keyUsage
// critical digitalSignature, extendedKeyUsage serverAuth,clientAuth, authority and subject key
// identifiers, random serial, SHA-256. Refuses a CA key that does not match the CA certificate and
// a CA certificate without CA:TRUE. Throws CertError.
KeyPair IssueCert(const IssueSpec& spec);

// The first certificate of `pem` (other PEM blocks before it are skipped). Throws CertError.
CertDetails CertInfo(const std::string& pem);

}  // namespace certs
}  // namespace edgemesh
