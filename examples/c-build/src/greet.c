#include "greet.h"

#include <stdio.h>

int greet(const char *name, char *out, size_t size) {
  return snprintf(out, size, "hello, %s", name);
}
