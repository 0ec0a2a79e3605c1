// Binding for the tunnel's certificates (certs_core.h): generateCa(spec), issueCert(spec),
// certInfo(pem). Synchronous on purpose: a node certificate (an EC P-256 key, one signature)
// takes about a millisecond, a CA less, and these run from the `certs` CLI commands, not from the
// agent's event loop; a Promise through the libuv pool would only add code.
// Wrong JS types throw a TypeError naming the field; a core failure throws an Error with the
// core's stable `code` (EBADCERT, EBADKEY, EKEYMISMATCH, ENOTCA, EINVAL, ECERT).
#include <napi.h>

#include <string>

#include "certs/certs_core.h"
#include "common/module_registry.h"
#include "common/napi_args.h"
#include "common/napi_util.h"

namespace {

using edgemesh::args::ArgError;
using edgemesh::args::Where;
namespace args = edgemesh::args;
namespace certs = edgemesh::certs;

// Mirrors the core's bound (1000 years) so an out-of-range offset is a TypeError here.
constexpr int64_t kMaxOffset = 1000LL * 366 * certs::kDay;

// args::Str stops at 4 KiB by default, meant for names; a PEM bundle may be longer.
std::string Pem(Napi::Value v, const Where& w) { return args::Str(v, w, args::kMaxPem); }

void OptOffset(Napi::Object o, const char* key, const Where& w, int64_t* out) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return;
  *out = args::Int(v, w.field(key), -kMaxOffset, kMaxOffset);
}

Napi::Object KeyPairToJs(Napi::Env env, const certs::KeyPair& kp) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("certPem", kp.certPem);
  o.Set("keyPem", kp.keyPem);
  return o;
}

Napi::Value Throw(Napi::Env env, const ArgError& e) {
  edgemesh::TypeFail(env, false, e.message);
  return env.Undefined();
}

Napi::Value Throw(Napi::Env env, const certs::CertError& e) {
  Napi::Error err = Napi::Error::New(env, e.what());
  err.Set("code", Napi::String::New(env, e.code));
  err.ThrowAsJavaScriptException();
  return env.Undefined();
}

// generateCa(spec?: { commonName?, notBeforeOffsetSeconds?, notAfterOffsetSeconds? }) -> { certPem, keyPem }
Napi::Value GenerateCa(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  certs::CaSpec spec;
  try {
    if (info.Length() >= 1 && !info[0].IsUndefined()) {
      Where w{"spec"};
      Napi::Object o = args::Obj(info[0], w);
      args::OptStr(o, "commonName", w, spec.commonName);
      OptOffset(o, "notBeforeOffsetSeconds", w, &spec.notBeforeOffset);
      OptOffset(o, "notAfterOffsetSeconds", w, &spec.notAfterOffset);
    }
    return KeyPairToJs(env, certs::GenerateCa(spec));
  } catch (const ArgError& e) {
    return Throw(env, e);
  } catch (const certs::CertError& e) {
    return Throw(env, e);
  }
}

// issueCert(spec: { caCertPem, caKeyPem, name, notBeforeOffsetSeconds?, notAfterOffsetSeconds? }) -> { certPem, keyPem }
Napi::Value IssueCert(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  certs::IssueSpec spec;
  try {
    Where w{"spec"};
    Napi::Object o = args::Obj(info[0], w);
    spec.caCertPem = Pem(o.Get("caCertPem"), w.field("caCertPem"));
    spec.caKeyPem = Pem(o.Get("caKeyPem"), w.field("caKeyPem"));
    spec.name = args::Str(o.Get("name"), w.field("name"));
    OptOffset(o, "notBeforeOffsetSeconds", w, &spec.notBeforeOffset);
    OptOffset(o, "notAfterOffsetSeconds", w, &spec.notAfterOffset);
    return KeyPairToJs(env, certs::IssueCert(spec));
  } catch (const ArgError& e) {
    return Throw(env, e);
  } catch (const certs::CertError& e) {
    return Throw(env, e);
  }
}

// certInfo(pem: string) -> { subjectCN, dnsNames, serialHex, notBefore, notAfter, issuerCN, isCa }
Napi::Value CertInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    certs::CertDetails d = certs::CertInfo(Pem(info[0], Where{"pem"}));
    Napi::Object o = Napi::Object::New(env);
    o.Set("subjectCN", d.subjectCN);
    Napi::Array dns = Napi::Array::New(env, d.dnsNames.size());
    for (size_t i = 0; i < d.dnsNames.size(); i++) dns.Set(static_cast<uint32_t>(i), d.dnsNames[i]);
    o.Set("dnsNames", dns);
    o.Set("serialHex", d.serialHex);
    o.Set("notBefore", d.notBefore);
    o.Set("notAfter", d.notAfter);
    o.Set("issuerCN", d.issuerCN);
    o.Set("isCa", d.isCa);
    return o;
  } catch (const ArgError& e) {
    return Throw(env, e);
  } catch (const certs::CertError& e) {
    return Throw(env, e);
  }
}

void Init(Napi::Env env, Napi::Object exports) {
  exports.Set("generateCa", Napi::Function::New(env, GenerateCa, "generateCa"));
  exports.Set("issueCert", Napi::Function::New(env, IssueCert, "issueCert"));
  exports.Set("certInfo", Napi::Function::New(env, CertInfo, "certInfo"));
}

}  // namespace

EDGEMESH_REGISTER_MODULE(certs, Init);
