#include "worker/curl_library.h"

#include <dlfcn.h>

#include <string>

#include "common/error.h"

namespace tamma::worker {
namespace {

CurlLibrary load() {
  // RTLD_LOCAL: its symbols stay out of the global scope; RTLD_NOW: a libcurl too old for
  // one of the functions below fails here, not in the middle of a call.
  void* handle = ::dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = ::dlerror();
    throw Error(ErrorKind::kInfrastructure, "libcurl_missing",
                std::string("cannot load libcurl (install libcurl4): ") +
                    (why != nullptr ? why : "unknown error"));
  }
  auto get = [handle](auto& slot, const char* name) {
    void* symbol = ::dlsym(handle, name);
    if (symbol == nullptr) {
      throw Error(ErrorKind::kInfrastructure, "libcurl_missing",
                  std::string("libcurl.so.4 lacks ") + name + " (libcurl 7.68 or later needed)");
    }
    slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(symbol);
  };
  CurlLibrary lib{};
  get(lib.easy_init, "curl_easy_init");
  get(lib.easy_cleanup, "curl_easy_cleanup");
  get(lib.easy_reset, "curl_easy_reset");
  get(lib.easy_setopt, "curl_easy_setopt");
  get(lib.easy_getinfo, "curl_easy_getinfo");
  get(lib.easy_escape, "curl_easy_escape");
  get(lib.easy_strerror, "curl_easy_strerror");
  get(lib.free, "curl_free");
  get(lib.slist_append, "curl_slist_append");
  get(lib.slist_free_all, "curl_slist_free_all");
  get(lib.multi_init, "curl_multi_init");
  get(lib.multi_cleanup, "curl_multi_cleanup");
  get(lib.multi_add_handle, "curl_multi_add_handle");
  get(lib.multi_remove_handle, "curl_multi_remove_handle");
  get(lib.multi_perform, "curl_multi_perform");
  get(lib.multi_poll, "curl_multi_poll");
  get(lib.multi_wakeup, "curl_multi_wakeup");
  get(lib.multi_info_read, "curl_multi_info_read");
  get(lib.multi_strerror, "curl_multi_strerror");
  decltype(&::curl_global_init) global_init = nullptr;
  get(global_init, "curl_global_init");
  // Before any thread uses libcurl; curl_global_init itself is not thread-safe, and this runs
  // once, under the static's initialisation guard.
  if (global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    throw Error(ErrorKind::kInfrastructure, "curl_init_failed", "libcurl could not initialise");
  }
  return lib;  // the handle stays open for the life of the process
}

}  // namespace

const CurlLibrary& curl_library() {
  static const CurlLibrary library = load();
  return library;
}

}  // namespace tamma::worker
