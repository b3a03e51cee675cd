// tamma-link-relay: the fault suite's userspace netem (faults/link_relay.h) by hand.
//
//   tamma-link-relay [--delay MS] [--loss P]
//
// Makes the two namespaces and their link, prints their names and addresses, then reads
// commands on stdin, one a line: `delay MS`, `loss P` (0..1), `partition on|off`, `stats`,
// `quit`. Run a program on either side with `nsenter --net=/run/netns/NAME -- PROGRAM ...`.
// Everything is removed on `quit`, end of input, SIGINT, SIGTERM or SIGHUP.

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>

#include "faults/link_relay.h"

namespace {

using tamma::faults::LinkRelay;

void print_stats(const LinkRelay& relay) {
  const auto s = relay.stats();
  std::printf("forwarded %llu, dropped: loss %llu, partition %llu, queue %llu\n",
              static_cast<unsigned long long>(s.forwarded),
              static_cast<unsigned long long>(s.dropped_loss),
              static_cast<unsigned long long>(s.dropped_partition),
              static_cast<unsigned long long>(s.dropped_overflow));
}

// False when the command asks to quit.
bool apply_command(LinkRelay& relay, const std::string& line) {
  std::istringstream in(line);
  std::string word, arg;
  in >> word >> arg;
  if (word.empty()) return true;
  if (word == "quit" || word == "exit") return false;
  if (word == "delay" && !arg.empty()) {
    relay.set_delay(std::chrono::milliseconds(std::atoll(arg.c_str())));
  } else if (word == "loss" && !arg.empty()) {
    relay.set_loss(std::atof(arg.c_str()));
  } else if (word == "partition" && (arg == "on" || arg == "off")) {
    relay.set_partition(arg == "on");
  } else if (word == "stats") {
    print_stats(relay);
  } else {
    std::printf("commands: delay MS | loss P | partition on|off | stats | quit\n");
    return true;
  }
  std::printf("ok\n");
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  long delay_ms = 0;
  double loss = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--delay" && i + 1 < argc) {
      delay_ms = std::atol(argv[++i]);
    } else if (a == "--loss" && i + 1 < argc) {
      loss = std::atof(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: tamma-link-relay [--delay MS] [--loss P]\n");
      return 2;
    }
  }
  // Before the relay's thread starts, so that it inherits the mask and only signalfd sees them.
  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&signals, s);
  sigprocmask(SIG_BLOCK, &signals, nullptr);
  const int sfd = signalfd(-1, &signals, SFD_CLOEXEC);

  try {
    LinkRelay relay;
    relay.set_delay(std::chrono::milliseconds(delay_ms));
    relay.set_loss(loss);
    for (auto side : {LinkRelay::Side::kA, LinkRelay::Side::kB}) {
      std::printf("side %c: netns %s, address %s (/run/netns/%s)\n",
                  side == LinkRelay::Side::kA ? 'A' : 'B', relay.netns_name(side).c_str(),
                  relay.address(side).c_str(), relay.netns_name(side).c_str());
    }
    std::printf("commands: delay MS | loss P | partition on|off | stats | quit\n");
    std::string pending;
    for (bool go = true; go;) {
      pollfd fds[2] = {{0, POLLIN, 0}, {sfd, POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents != 0) break;
      char buffer[512];
      const ssize_t n = ::read(0, buffer, sizeof buffer);
      if (n <= 0) break;
      pending.append(buffer, static_cast<std::size_t>(n));
      for (auto nl = pending.find('\n'); go && nl != std::string::npos; nl = pending.find('\n')) {
        go = apply_command(relay, pending.substr(0, nl));
        pending.erase(0, nl + 1);
      }
    }
    print_stats(relay);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tamma-link-relay: %s\n", e.what());
    return 1;
  }
  return 0;
}
