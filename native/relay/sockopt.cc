// Binding: originalDst(fd) -> {address, port, family}. Synchronous: one getsockopt.
#include <napi.h>

#include "common/module_registry.h"
#include "common/napi_util.h"
#include "relay/sockopt_core.h"

namespace {

Napi::Value OriginalDst(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (edgemesh::TypeFail(env, info.Length() >= 1 && info[0].IsNumber(), "originalDst(fd): fd must be a number")) {
    return env.Undefined();
  }
  double d = info[0].As<Napi::Number>().DoubleValue();
  if (edgemesh::TypeFail(env, d >= 0 && d <= 2147483647.0 && d == static_cast<double>(static_cast<int>(d)),
                         "originalDst(fd): fd must be a non-negative integer")) {
    return env.Undefined();
  }
  try {
    edgemesh::SockEndpoint e = edgemesh::OriginalDstOrThrow(static_cast<int>(d));
    Napi::Object o = Napi::Object::New(env);
    o.Set("address", e.address);
    o.Set("port", e.port);
    o.Set("family", e.family);
    return o;
  } catch (const edgemesh::SysError& e) {
    edgemesh::ToJsError(env, e).ThrowAsJavaScriptException();
    return env.Undefined();
  }
}

void Init(Napi::Env env, Napi::Object exports) { exports.Set("originalDst", Napi::Function::New(env, OriginalDst, "originalDst")); }

}  // namespace

EDGEMESH_REGISTER_MODULE(sockopt, Init);
