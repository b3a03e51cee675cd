#include <cstdio>

int main() {
  std::fputs("tamma-worker: under construction\n", stderr);
  return 6;
}
