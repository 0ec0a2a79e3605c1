// Each binding translation unit registers its exports with a static EDGEMESH_REGISTER_MODULE(...)
// so that native parts (iptc, sockopt, relay, nft) can be added without touching addon.cc.
#pragma once
#include <napi.h>
#include <vector>

namespace edgemesh {

using ModuleInit = void (*)(Napi::Env env, Napi::Object exports);

struct ModuleEntry {
  const char* name;
  ModuleInit init;
};

inline std::vector<ModuleEntry>& ModuleRegistry() {
  static std::vector<ModuleEntry> modules;
  return modules;
}

struct ModuleRegistrar {
  ModuleRegistrar(const char* name, ModuleInit init) { ModuleRegistry().push_back({name, init}); }
};

}  // namespace edgemesh

#define EDGEMESH_REGISTER_MODULE(name, fn) static ::edgemesh::ModuleRegistrar edgemesh_registrar_##name(#name, fn)
