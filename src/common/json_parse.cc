#include "common/json_parse.h"

#include <unordered_set>
#include <vector>

namespace tamma {
namespace {

using json = nlohmann::json;

// Where the parser is: one frame per open object or array.
struct Frame {
  bool object = false;
  std::string key;                       // objects: the member being read
  std::size_t index = 0;                 // arrays: the element being read
  bool has_element = false;              // arrays: an element was seen
  std::unordered_set<std::string> keys;  // objects: the members seen so far
};

bool plain_name(const std::string& key) {
  if (key.empty()) return false;
  for (char c : key) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string path_of(const std::vector<Frame>& frames) {
  std::string path = "$";
  for (const auto& f : frames) {
    if (f.object) {
      if (f.key.empty() && f.keys.empty()) continue;  // no member read yet
      // Appended piece by piece: `"." + key` into `path` trips GCC 12's -Wrestrict at -O3.
      if (plain_name(f.key)) {
        path += '.';
        path += f.key;
      } else {
        path += '[';
        path += json(f.key).dump(-1, ' ', false, json::error_handler_t::replace);
        path += ']';
      }
    } else if (f.has_element) {
      path += '[';
      path += std::to_string(f.index);
      path += ']';
    }
  }
  return path;
}

class Checker {
 public:
  explicit Checker(const JsonLimits& limits) : limits_(limits) {}

  bool operator()(int /*depth*/, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start: {
        next_element();
        if (static_cast<int>(frames_.size()) >= limits_.max_depth) {
          throw JsonTextError(path_of(frames_), 0,
                              "nested deeper than " + std::to_string(limits_.max_depth) +
                                  " levels of objects and arrays");
        }
        Frame f;
        f.object = event == json::parse_event_t::object_start;
        frames_.push_back(std::move(f));
        break;
      }
      case json::parse_event_t::key: {
        Frame& f = frames_.back();
        const auto& key = parsed.get_ref<const std::string&>();
        if (!f.keys.insert(key).second) {
          f.key = key;
          throw JsonTextError(path_of(frames_), 0, "the member appears more than once");
        }
        f.key = key;
        break;
      }
      case json::parse_event_t::object_end:
      case json::parse_event_t::array_end:
        frames_.pop_back();
        break;
      case json::parse_event_t::value:
        next_element();
        break;
    }
    return true;
  }

 private:
  void next_element() {
    if (frames_.empty() || frames_.back().object) return;
    Frame& f = frames_.back();
    if (f.has_element) {
      ++f.index;
    } else {
      f.has_element = true;
    }
  }

  const JsonLimits& limits_;
  std::vector<Frame> frames_;

 public:
  [[nodiscard]] std::string path() const { return path_of(frames_); }
};

}  // namespace

json parse_json_text(std::string_view text, const JsonLimits& limits) {
  if (text.size() > limits.max_bytes) {
    throw JsonTextError("$", 0,
                        "the document has " + std::to_string(text.size()) + " bytes; at most " +
                            std::to_string(limits.max_bytes) + " are accepted");
  }
  Checker checker(limits);
  try {
    return json::parse(text.begin(), text.end(),
                       [&checker](int depth, json::parse_event_t event, json& parsed) {
                         return checker(depth, event, parsed);
                       });
  } catch (const json::exception& e) {
    // A syntax error, or a number beyond a double's range (1e400: out_of_range, not a
    // parse_error). nlohmann's text carries the line and column after an "[json.exception...] "
    // tag.
    std::string detail = e.what();
    if (auto tag_end = detail.find("] "); tag_end != std::string::npos)
      detail.erase(0, tag_end + 2);
    const auto* syntax = dynamic_cast<const json::parse_error*>(&e);
    throw JsonTextError(checker.path(), syntax != nullptr ? syntax->byte : 0, detail);
  }
}

}  // namespace tamma
