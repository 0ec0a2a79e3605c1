// Binding: reexec(path, argv[], env[]) (never returns on success) and mallocStats() -> numbers.
// Both run on the JS thread: execve replaces the process, mallinfo2 only reads counters.
#include <napi.h>

#include "common/module_registry.h"
#include "common/napi_util.h"
#include "process/process_core.h"

namespace {

constexpr size_t kMaxArg = 1 << 20;  // an argument or an environment entry (certificates fit)

bool Strings(Napi::Env env, Napi::Value v, const char* what, std::vector<std::string>* out) {
  if (edgemesh::TypeFail(env, v.IsArray(), std::string("reexec: ") + what + " must be an array of strings")) return false;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (edgemesh::TypeFail(env, e.IsString(), std::string("reexec: ") + what + "[" + std::to_string(i) + "] must be a string"))
      return false;
    std::string s = e.As<Napi::String>().Utf8Value();
    if (edgemesh::TypeFail(env, s.size() <= kMaxArg && s.find('\0') == std::string::npos,
                           std::string("reexec: ") + what + "[" + std::to_string(i) + "] is longer than 1 MiB or holds a NUL"))
      return false;
    out->push_back(std::move(s));
  }
  return true;
}

Napi::Value Reexec(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (edgemesh::TypeFail(env, info.Length() >= 3 && info[0].IsString(), "reexec(path, argv, env): path must be a string"))
    return env.Undefined();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  std::vector<std::string> argv, envv;
  if (!Strings(env, info[1], "argv", &argv) || !Strings(env, info[2], "env", &envv)) return env.Undefined();
  if (edgemesh::TypeFail(env, !argv.empty(), "reexec: argv must hold at least the program name")) return env.Undefined();
  try {
    edgemesh::Reexec(path, argv, envv);
  } catch (const edgemesh::SysError& e) {
    edgemesh::ToJsError(env, e).ThrowAsJavaScriptException();
  }
  return env.Undefined();
}

Napi::Value MallocStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const edgemesh::MallocStats s = edgemesh::ReadMallocStats();
  Napi::Object o = Napi::Object::New(env);
  o.Set("arenaBytes", static_cast<double>(s.arenaBytes));
  o.Set("mmapBytes", static_cast<double>(s.mmapBytes));
  o.Set("inUseBytes", static_cast<double>(s.inUseBytes));
  o.Set("freeBytes", static_cast<double>(s.freeBytes));
  return o;
}

void Init(Napi::Env env, Napi::Object exports) {
  exports.Set("reexec", Napi::Function::New(env, Reexec, "reexec"));
  exports.Set("mallocStats", Napi::Function::New(env, MallocStats, "mallocStats"));
}

}  // namespace

EDGEMESH_REGISTER_MODULE(process, Init);
