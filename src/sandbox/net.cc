#include "sandbox/net.h"

#include <errno.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace tamma::sandbox {

int bring_up_loopback() {
  // An ioctl on any socket of the namespace is the cheapest way: no netlink round trip.
  int sock = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return errno;
  struct ifreq req {};
  std::memcpy(req.ifr_name, "lo", 3);
  int err = 0;
  if (::ioctl(sock, SIOCGIFFLAGS, &req) != 0) {
    err = errno;
  } else {
    req.ifr_flags = static_cast<short>(req.ifr_flags | IFF_UP | IFF_RUNNING);
    if (::ioctl(sock, SIOCSIFFLAGS, &req) != 0) err = errno;
  }
  ::close(sock);
  return err;
}

}  // namespace tamma::sandbox
