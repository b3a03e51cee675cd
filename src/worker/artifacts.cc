#include "worker/artifacts.h"

#include <fnmatch.h>
#include <openssl/evp.h>

#include <fstream>
#include <memory>

#include <fmt/format.h>

#include "common/error.h"

namespace tamma::worker {
namespace {

std::vector<std::string_view> split(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    auto slash = path.find('/');
    auto part = path.substr(0, slash);
    if (!part.empty() && part != ".") parts.push_back(part);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return parts;
}

bool match_parts(const std::vector<std::string_view>& pat, std::size_t pi,
                 const std::vector<std::string_view>& path, std::size_t si) {
  if (pi == pat.size()) return si == path.size();
  if (pat[pi] == "**") {
    for (std::size_t skip = si; skip <= path.size(); ++skip) {
      if (match_parts(pat, pi + 1, path, skip)) return true;
    }
    return false;
  }
  if (si == path.size()) return false;
  const std::string p(pat[pi]);
  const std::string s(path[si]);
  if (::fnmatch(p.c_str(), s.c_str(), FNM_PERIOD) != 0) return false;
  return match_parts(pat, pi + 1, path, si + 1);
}

}  // namespace

bool glob_match(std::string_view pattern, std::string_view path) {
  return match_parts(split(pattern), 0, split(path), 0);
}

std::string sha256_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorKind::kInfrastructure, "artifact_unreadable",
                       "cannot read artifact " + file.string());
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  char buffer[1 << 16];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
    EVP_DigestUpdate(ctx.get(), buffer, static_cast<std::size_t>(in.gcount()));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &length);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

std::vector<protocol::Artifact> collect_artifacts(
    const std::filesystem::path& workspace, const std::vector<std::string>& globs,
    const std::optional<std::filesystem::path>& copy_to) {
  namespace fs = std::filesystem;
  std::vector<protocol::Artifact> found;
  std::error_code ec;
  // recursive_directory_iterator does not follow directory symlinks by default.
  for (fs::recursive_directory_iterator it(workspace, fs::directory_options::none, ec), end;
       !ec && it != end; it.increment(ec)) {
    const auto status = it->symlink_status();
    if (!fs::is_regular_file(status)) continue;  // symlinks, devices, fifos: never collected
    const std::string relative = fs::relative(it->path(), workspace).generic_string();
    bool wanted = false;
    for (const auto& glob : globs) wanted = wanted || glob_match(glob, relative);
    if (!wanted) continue;
    protocol::Artifact artifact;
    artifact.path = relative;
    artifact.size = fs::file_size(it->path());
    artifact.sha256 = sha256_file(it->path());
    if (copy_to) {
      const fs::path target = *copy_to / relative;
      fs::create_directories(target.parent_path());
      fs::copy_file(it->path(), target, fs::copy_options::overwrite_existing);
    }
    found.push_back(std::move(artifact));
  }
  if (ec) {
    throw Error(ErrorKind::kInfrastructure, "artifact_walk_failed",
                "listing the workspace for artifacts: " + ec.message());
  }
  std::sort(found.begin(), found.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });
  return found;
}

}  // namespace tamma::worker
