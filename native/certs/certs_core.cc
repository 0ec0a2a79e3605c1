// Certificates for the tunnel over OpenSSL 3.0 (certs_core.h). Every OpenSSL object is held by a
// unique_ptr with its free function from the moment it exists, so each error path (a throw from
// anywhere) releases everything; ErrorQueueGuard empties the thread's error queue on every exit.
#include "certs/certs_core.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <climits>
#include <ctime>
#include <memory>

namespace edgemesh {
namespace certs {
namespace {

template <typename T, void (*Free)(T*)>
struct FreeWith {
  void operator()(T* p) const { Free(p); }
};
template <typename T, void (*Free)(T*)>
using Owned = std::unique_ptr<T, FreeWith<T, Free>>;

using BioPtr = Owned<BIO, BIO_free_all>;
using X509Ptr = Owned<X509, X509_free>;
using PkeyPtr = Owned<EVP_PKEY, EVP_PKEY_free>;
using ExtPtr = Owned<X509_EXTENSION, X509_EXTENSION_free>;
using BnPtr = Owned<BIGNUM, BN_free>;
using NamesPtr = Owned<GENERAL_NAMES, GENERAL_NAMES_free>;

// OPENSSL_free is a macro (it passes file and line), so it cannot be a template argument.
struct OpensslFree {
  void operator()(void* p) const { OPENSSL_free(p); }
};

struct ErrorQueueGuard {
  ErrorQueueGuard() { ERR_clear_error(); }
  ~ErrorQueueGuard() { ERR_clear_error(); }
  ErrorQueueGuard(const ErrorQueueGuard&) = delete;
  ErrorQueueGuard& operator=(const ErrorQueueGuard&) = delete;
};

// Throws CertError(code, what[: OpenSSL's reason]) and empties the queue. `withReason` is false
// for our own checks: a call that succeeded may still have queued something irrelevant.
[[noreturn]] void Fail(const char* code, const std::string& what, bool withReason = true) {
  std::string msg = what;
  unsigned long e = withReason ? ERR_get_error() : 0;  // the first (oldest) queued error
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    msg += ": ";
    msg += buf;
  }
  ERR_clear_error();
  throw CertError(code, msg);
}

// Larger than any PEM we would ever be handed; keeps the int conversion for BIO_new_mem_buf safe.
constexpr size_t kMaxPem = 1 << 20;
// |offset| bound: far beyond any sensible validity, far inside time_t and ASN1_TIME arithmetic.
constexpr int64_t kMaxOffset = 1000LL * 366 * kDay;

BioPtr MemIn(const std::string& s, const char* code, const char* what) {
  if (s.size() > kMaxPem) Fail(code, std::string(what) + ": the PEM input is larger than 1 MiB", false);
  BioPtr b(BIO_new_mem_buf(s.data(), static_cast<int>(s.size())));
  if (!b) Fail("ECERT", "BIO_new_mem_buf");
  return b;
}

BioPtr MemOut() {
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b) Fail("ECERT", "BIO_new");
  return b;
}

std::string Drain(BIO* b) {
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  return n > 0 && p ? std::string(p, static_cast<size_t>(n)) : std::string();
}

// Never prompt on the terminal for a passphrase (the default callback would): an encrypted key
// is refused instead.
int NoPassphrase(char*, int, int, void*) { return -1; }

PkeyPtr NewKey() {
  PkeyPtr k(EVP_EC_gen("P-256"));
  if (!k) Fail("ECERT", "generating an EC P-256 key");
  return k;
}

// 128 random bits, read as an unsigned (so positive) integer; DER adds a 0 byte when the top bit
// is set, 17 octets at most, within RFC 5280's 20.
void SetRandomSerial(X509* x) {
  unsigned char buf[16];
  if (RAND_bytes(buf, sizeof buf) != 1) Fail("ECERT", "drawing a random serial");
  BnPtr bn(BN_bin2bn(buf, sizeof buf, nullptr));
  if (!bn) Fail("ECERT", "BN_bin2bn");
  if (BN_is_zero(bn.get()) && !BN_one(bn.get())) Fail("ECERT", "BN_one");  // RFC 5280: positive
  if (!BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x))) Fail("ECERT", "setting the serial");
}

void SetValidity(X509* x, int64_t notBefore, int64_t notAfter) {
  if (notBefore < -kMaxOffset || notBefore > kMaxOffset || notAfter < -kMaxOffset || notAfter > kMaxOffset) {
    Fail("EINVAL", "validity offsets must be within 1000 years of now", false);
  }
  if (notAfter <= notBefore) Fail("EINVAL", "the validity ends before it starts (notAfter <= notBefore)", false);
  if (!X509_gmtime_adj(X509_getm_notBefore(x), static_cast<long>(notBefore)) ||
      !X509_gmtime_adj(X509_getm_notAfter(x), static_cast<long>(notAfter))) {
    Fail("ECERT", "setting the validity");
  }
}

X509Ptr NewCert(EVP_PKEY* subjectKey, int64_t notBefore, int64_t notAfter) {
  X509Ptr x(X509_new());
  if (!x) Fail("ECERT", "X509_new");
  if (!X509_set_version(x.get(), X509_VERSION_3)) Fail("ECERT", "X509_set_version");
  SetRandomSerial(x.get());
  SetValidity(x.get(), notBefore, notAfter);
  if (!X509_set_pubkey(x.get(), subjectKey)) Fail("ECERT", "X509_set_pubkey");
  return x;
}

void AddCN(X509_NAME* name, const std::string& cn) {
  if (!X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.data()),
                                  static_cast<int>(cn.size()), -1, 0)) {
    Fail("ECERT", "setting the CN");
  }
}

// `value` in openssl.cnf's syntax; the only variable part (a node name) was checked to hold no
// character of that syntax (',', ':', '@', spaces).
void AddExt(X509* x, X509V3_CTX* ctx, int nid, const std::string& value) {
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, ctx, nid, value.c_str()));
  if (!ext) Fail("ECERT", std::string("building the ") + OBJ_nid2ln(nid) + " extension");
  if (!X509_add_ext(x, ext.get(), -1)) Fail("ECERT", std::string("adding the ") + OBJ_nid2ln(nid) + " extension");
}

void Sign(X509* x, EVP_PKEY* key) {
  if (X509_sign(x, key, EVP_sha256()) <= 0) Fail("ECERT", "signing the certificate");
}

KeyPair ToPem(X509* x, EVP_PKEY* key) {
  KeyPair kp;
  BioPtr c = MemOut();
  if (!PEM_write_bio_X509(c.get(), x)) Fail("ECERT", "encoding the certificate");
  kp.certPem = Drain(c.get());
  BioPtr k = MemOut();
  if (!PEM_write_bio_PKCS8PrivateKey(k.get(), key, nullptr, nullptr, 0, nullptr, nullptr)) Fail("ECERT", "encoding the key");
  kp.keyPem = Drain(k.get());
  return kp;
}

X509Ptr ReadCert(const std::string& pem, const char* what) {
  BioPtr in = MemIn(pem, "EBADCERT", what);
  X509Ptr x(PEM_read_bio_X509(in.get(), nullptr, NoPassphrase, nullptr));
  if (!x) Fail("EBADCERT", std::string(what) + ": no PEM certificate");
  return x;
}

std::string NameCN(const X509_NAME* name) {
  int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (i < 0) return std::string();
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  unsigned char* out = nullptr;
  int len = ASN1_STRING_to_UTF8(&out, data);
  if (len < 0) Fail("EBADCERT", "decoding a CN");
  std::unique_ptr<unsigned char, OpensslFree> owned(out);
  return std::string(reinterpret_cast<const char*>(out), static_cast<size_t>(len));
}

std::string IsoTime(const ASN1_TIME* t) {
  struct tm tm = {};
  if (!ASN1_TIME_to_tm(t, &tm)) Fail("EBADCERT", "decoding a validity time");
  char buf[32];
  if (std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) Fail("EBADCERT", "formatting a validity time", false);
  return buf;
}

bool IsLowercaseDnsChars(const std::string& s) {
  for (char c : s) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.')) return false;
  }
  return true;
}

}  // namespace

KeyPair GenerateCa(const CaSpec& spec) {
  ErrorQueueGuard guard;
  if (spec.commonName.empty() || spec.commonName.size() > kMaxCommonName) {
    Fail("EINVAL", "the CA's common name must be 1 to 64 characters", false);
  }
  PkeyPtr key = NewKey();
  X509Ptr x = NewCert(key.get(), spec.notBeforeOffset, spec.notAfterOffset);
  AddCN(X509_get_subject_name(x.get()), spec.commonName);
  if (!X509_set_issuer_name(x.get(), X509_get_subject_name(x.get()))) Fail("ECERT", "X509_set_issuer_name");
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, x.get(), x.get(), nullptr, nullptr, 0);
  AddExt(x.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE");
  AddExt(x.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
  AddExt(x.get(), &ctx, NID_subject_key_identifier, "hash");
  Sign(x.get(), key.get());
  return ToPem(x.get(), key.get());
}

KeyPair IssueCert(const IssueSpec& spec) {
  ErrorQueueGuard guard;
  if (spec.name.empty() || spec.name.size() > 253 || !IsLowercaseDnsChars(spec.name)) {
    Fail("EINVAL", "the node name must be 1 to 253 characters of a-z, 0-9, '-' and '.'", false);
  }
  X509Ptr ca = ReadCert(spec.caCertPem, "the CA certificate");
  PkeyPtr caKey;
  {
    BioPtr in = MemIn(spec.caKeyPem, "EBADKEY", "the CA key");
    caKey.reset(PEM_read_bio_PrivateKey(in.get(), nullptr, NoPassphrase, nullptr));
    if (!caKey) Fail("EBADKEY", "the CA key: no unencrypted PEM private key");
  }
  // EXFLAG_CA is basicConstraints CA:TRUE; a keyUsage without keyCertSign would make every
  // certificate we sign fail verification, so that CA is refused too (no keyUsage: any use).
  if (!(X509_get_extension_flags(ca.get()) & EXFLAG_CA)) {
    Fail("ENOTCA", "the CA certificate is not a CA (no basicConstraints CA:TRUE)", false);
  }
  if (!(X509_get_key_usage(ca.get()) & KU_KEY_CERT_SIGN)) {
    Fail("ENOTCA", "the CA certificate may not sign certificates (its keyUsage lacks keyCertSign)", false);
  }
  if (EVP_PKEY_eq(X509_get0_pubkey(ca.get()), caKey.get()) != 1) {
    Fail("EKEYMISMATCH", "the CA key does not belong to the CA certificate", false);
  }

  PkeyPtr key = NewKey();
  X509Ptr x = NewCert(key.get(), spec.notBeforeOffset, spec.notAfterOffset);
  bool withCN = spec.name.size() <= kMaxCommonName;
  if (withCN) AddCN(X509_get_subject_name(x.get()), spec.name);
  if (!X509_set_issuer_name(x.get(), X509_get_subject_name(ca.get()))) Fail("ECERT", "X509_set_issuer_name");
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, ca.get(), x.get(), nullptr, nullptr, 0);
  AddExt(x.get(), &ctx, NID_basic_constraints, "CA:FALSE");
  AddExt(x.get(), &ctx, NID_key_usage, "critical,digitalSignature");
  AddExt(x.get(), &ctx, NID_ext_key_usage, "serverAuth,clientAuth");
  AddExt(x.get(), &ctx, NID_subject_key_identifier, "hash");
  // keyid of the CA's subjectKeyIdentifier; issuer name + serial only for a CA that has none.
  AddExt(x.get(), &ctx, NID_authority_key_identifier, "keyid,issuer");
  AddExt(x.get(), &ctx, NID_subject_alt_name, std::string(withCN ? "" : "critical,") + "DNS:" + spec.name);
  Sign(x.get(), caKey.get());
  return ToPem(x.get(), key.get());
}

CertDetails CertInfo(const std::string& pem) {
  ErrorQueueGuard guard;
  X509Ptr x = ReadCert(pem, "certInfo");
  CertDetails d;
  d.subjectCN = NameCN(X509_get_subject_name(x.get()));
  d.issuerCN = NameCN(X509_get_issuer_name(x.get()));
  NamesPtr names(static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x.get(), NID_subject_alt_name, nullptr, nullptr)));
  if (names) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); i++) {
      const GENERAL_NAME* g = sk_GENERAL_NAME_value(names.get(), i);
      if (g->type != GEN_DNS) continue;
      const ASN1_IA5STRING* s = g->d.dNSName;
      d.dnsNames.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), static_cast<size_t>(ASN1_STRING_length(s)));
    }
  }
  BnPtr serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(x.get()), nullptr));
  if (!serial) Fail("EBADCERT", "decoding the serial");
  std::unique_ptr<char, OpensslFree> hex(BN_bn2hex(serial.get()));
  if (!hex) Fail("ECERT", "BN_bn2hex");
  d.serialHex = hex.get();
  d.notBefore = IsoTime(X509_get0_notBefore(x.get()));
  d.notAfter = IsoTime(X509_get0_notAfter(x.get()));
  d.isCa = (X509_get_extension_flags(x.get()) & EXFLAG_CA) != 0;
  return d;
}

}  // namespace certs
}  // namespace edgemesh
