// Binding: reexec(path, argv[], env[]) (never returns on success), mallocStats() -> numbers,
// mallocTrim() -> boolean, releaseExecutablePages(pageout) -> figures, lowMemoryNotification().
// The last is V8's own API (not Node-API): the addon is built against the node that runs it. All run on the JS thread:
// execve replaces the process, mallinfo2 only reads counters, malloc_trim walks the arenas and
// the release reads /proc/self/smaps and calls madvise (a millisecond or two each).
#include <napi.h>
#include <v8.h>

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

Napi::Value MallocTrim(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), edgemesh::TrimMalloc()); }

// releaseExecutablePages(pageout: boolean) -> { mappings, pageout, rssBefore, rssAfter }
Napi::Value ReleaseExecutablePages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (edgemesh::TypeFail(env, info.Length() >= 1 && info[0].IsBoolean(), "releaseExecutablePages(pageout): pageout must be a boolean"))
    return env.Undefined();
  try {
    const edgemesh::ReleaseResult r = edgemesh::ReleaseExecutablePages(info[0].As<Napi::Boolean>().Value());
    Napi::Object o = Napi::Object::New(env);
    o.Set("mappings", r.mappings);
    o.Set("pageout", r.pageout);
    o.Set("rssBefore", static_cast<double>(r.rssBefore));
    o.Set("rssAfter", static_cast<double>(r.rssAfter));
    return o;
  } catch (const edgemesh::SysError& e) {
    edgemesh::ToJsError(env, e).ThrowAsJavaScriptException();
    return env.Undefined();
  }
}

// V8's most thorough collection (what a heap snapshot or memory pressure triggers: every weak
// cache cleared, compacting), which gc({flavor: 'last-resort'}) of Node 20's V8 does not reach.
Napi::Value LowMemoryNotification(const Napi::CallbackInfo& info) {
  v8::Isolate::GetCurrent()->LowMemoryNotification();
  return info.Env().Undefined();
}

void Init(Napi::Env env, Napi::Object exports) {
  exports.Set("reexec", Napi::Function::New(env, Reexec, "reexec"));
  exports.Set("mallocStats", Napi::Function::New(env, MallocStats, "mallocStats"));
  exports.Set("mallocTrim", Napi::Function::New(env, MallocTrim, "mallocTrim"));
  exports.Set("lowMemoryNotification", Napi::Function::New(env, LowMemoryNotification, "lowMemoryNotification"));
  exports.Set("releaseExecutablePages", Napi::Function::New(env, ReleaseExecutablePages, "releaseExecutablePages"));
}

}  // namespace

EDGEMESH_REGISTER_MODULE(process, Init);
