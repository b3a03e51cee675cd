#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tamma {

// "30s", "10m", "1h30m", "250ms", "1.5s"; a bare number is seconds.
// Returns nullopt and sets *error when the text is not a positive duration.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text,
                                                        std::string* error = nullptr);

// A number of seconds as a JSON document gives it (30, 1.5), under parse_duration's rules.
std::optional<std::chrono::milliseconds> duration_from_seconds(double seconds,
                                                               std::string* error = nullptr);

// "512M", "1G", "64KiB", "1048576"; K/M/G/T are powers of 1024, as in cgroup files, and so are
// KB/MB/GB/TB (as Docker reads them): a limit never comes out smaller than the writer meant.
std::optional<std::uint64_t> parse_size(std::string_view text, std::string* error = nullptr);

std::string format_duration(std::chrono::milliseconds ms);
std::string format_size(std::uint64_t bytes);

}  // namespace tamma
