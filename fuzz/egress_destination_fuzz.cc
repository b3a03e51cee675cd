// Allow-list entries and address ranges as a task's spec or an operator's networkPolicy gives
// them (src/egress/destination.h, address_policy.h): refusing is the parser's job; a crash, a
// sanitizer report, or an accepted entry whose canonical text means something else is a
// finding.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <variant>

#include "egress/address_policy.h"
#include "egress/destination.h"

namespace {

[[noreturn]] void broken(const char* what, const std::string& text) {
  std::fprintf(stderr, "egress_destination_fuzz: %s: %s\n", what, text.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace tamma::egress;
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (bool any_port : {false, true}) {
    auto parsed = parse_destination(text, DestinationOptions{.allow_any_port = any_port});
    if (auto* d = std::get_if<Destination>(&parsed)) {
      // The canonical text parses to the same entry, and an entry covers itself.
      auto again = parse_destination(d->text(), DestinationOptions{.allow_any_port = true});
      if (!std::holds_alternative<Destination>(again) || std::get<Destination>(again) != *d) {
        broken("canonical text does not round-trip", text);
      }
      if (!d->covers(*d)) broken("an entry does not cover itself", text);
      if (d->kind != Destination::Kind::kWildcard && !d->port_any &&
          !d->matches(d->host, d->port)) {
        broken("an entry does not match its own host", text);
      }
      if (d->kind == Destination::Kind::kWildcard && d->matches(d->host, d->port)) {
        broken("a wildcard matches its apex", text);
      }
    }
  }
  if (auto host = normalise_host(text)) {
    auto again = normalise_host(host->text);
    if (!again || again->text != host->text) broken("normalise_host is not idempotent", text);
  }
  (void)split_authority(text);
  auto range = parse_cidr(text);
  if (auto* cidr = std::get_if<Cidr>(&range)) {
    if (!cidr->contains(cidr->network)) broken("a range does not contain its network", text);
    AddressPolicy policy(false);
    (void)policy.refusal(cidr->network);
  }
  return 0;
}
