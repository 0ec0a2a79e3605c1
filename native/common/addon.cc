// Entry point of the addon: every native part registers itself (module_registry.h).
#include <napi.h>

#include "common/module_registry.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Napi::Array names = Napi::Array::New(env);
  uint32_t i = 0;
  for (const auto& m : edgemesh::ModuleRegistry()) {
    m.init(env, exports);
    names.Set(i++, Napi::String::New(env, m.name));
  }
  exports.Set("modules", names);
  return exports;
}

}  // namespace

NODE_API_MODULE(edgemesh_native, Init)
