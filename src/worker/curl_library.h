#pragma once
// libcurl, loaded the first time the worker speaks HTTP rather than when it starts.
//
// libcurl brings some 28 shared libraries with it (gnutls, nghttp2, ldap, kerberos, ...):
// linked into tamma-worker, the dynamic loader mapped and relocated all of them on every
// start, also for `tamma-worker run`, which never speaks HTTP (issue 13: that was most of
// `tamma-worker --version`'s 5.4 ms). Only the orchestrator client uses it; it goes through
// this table.

#include <curl/curl.h>

namespace tamma::worker {

struct CurlLibrary {
  decltype(&::curl_easy_init) easy_init;
  decltype(&::curl_easy_cleanup) easy_cleanup;
  decltype(&::curl_easy_reset) easy_reset;
  decltype(&::curl_easy_setopt) easy_setopt;
  decltype(&::curl_easy_getinfo) easy_getinfo;
  decltype(&::curl_easy_escape) easy_escape;
  decltype(&::curl_easy_strerror) easy_strerror;
  decltype(&::curl_free) free;
  decltype(&::curl_slist_append) slist_append;
  decltype(&::curl_slist_free_all) slist_free_all;
  decltype(&::curl_multi_init) multi_init;
  decltype(&::curl_multi_cleanup) multi_cleanup;
  decltype(&::curl_multi_add_handle) multi_add_handle;
  decltype(&::curl_multi_remove_handle) multi_remove_handle;
  decltype(&::curl_multi_perform) multi_perform;
  decltype(&::curl_multi_poll) multi_poll;
  decltype(&::curl_multi_wakeup) multi_wakeup;
  decltype(&::curl_multi_info_read) multi_info_read;
  decltype(&::curl_multi_strerror) multi_strerror;
};

// Loads libcurl (its SONAME, libcurl.so.4, from the libcurl4 package) and runs
// curl_global_init, once per process, thread-safely. Throws Error(kInfrastructure,
// "libcurl_missing") naming what the loader said, or "curl_init_failed".
const CurlLibrary& curl_library();

}  // namespace tamma::worker
