// Helpers shared by the binding layers (with napi_args.h, the only files that include napi.h
// besides addon.cc).
#pragma once
#include <napi.h>

#include <functional>
#include <string>

#include "common/syserror.h"

namespace edgemesh {

// A JS Error whose message is e.what(), with .code (stable), .errno (number), .syscall.
inline Napi::Error ToJsError(Napi::Env env, const SysError& e) {
  Napi::Error err = Napi::Error::New(env, e.what());
  err.Set("code", Napi::String::New(env, e.code));
  err.Set("errno", Napi::Number::New(env, e.err));
  err.Set("syscall", Napi::String::New(env, e.syscall));
  if (e.opIndex >= 0) err.Set("opIndex", Napi::Number::New(env, e.opIndex));
  return err;
}

// Throws a TypeError and returns true when `cond` is false (use: if (TypeCheck(...)) return ...).
inline bool TypeFail(Napi::Env env, bool ok, const std::string& what) {
  if (ok) return false;
  Napi::TypeError::New(env, what).ThrowAsJavaScriptException();
  return true;
}

// Runs `work` on the libuv pool and settles a Promise: resolve(toJs(result)) or reject(SysError).
// Result is a plain C++ value; `work` must not touch V8.
template <typename Result>
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<Result()>;
  using ToJs = std::function<Napi::Value(Napi::Env, Result&)>;

  static Napi::Promise Run(Napi::Env env, const char* name, Work work, ToJs toJs) {
    auto* w = new PromiseWorker(env, name, std::move(work), std::move(toJs));
    Napi::Promise p = w->deferred_.Promise();
    w->Queue();
    return p;
  }

 protected:
  void Execute() override {
    try {
      result_ = work_();
    } catch (const SysError& e) {
      failed_ = true;
      err_ = e;
    } catch (const std::exception& e) {
      failed_ = true;
      err_ = SysError(0, "", e.what(), "ENATIVE");
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (failed_) {
      deferred_.Reject(ToJsError(env, err_).Value());
      return;
    }
    deferred_.Resolve(toJs_(env, result_));
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  PromiseWorker(Napi::Env env, const char* name, Work work, ToJs toJs)
      : Napi::AsyncWorker(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        toJs_(std::move(toJs)),
        err_(0, "", "") {}
  Napi::Promise::Deferred deferred_;
  Work work_;
  ToJs toJs_;
  Result result_{};
  bool failed_ = false;
  SysError err_;
};

}  // namespace edgemesh
