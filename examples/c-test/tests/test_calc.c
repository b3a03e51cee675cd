#include "calc.h"
#include "check.h"

static void adds(void) { CHECK(add(2, 2) == 4); }

static void multiplies(void) { CHECK(mul(3, 4) == 12); }

static void clamps_to_the_upper_bound(void) { CHECK(clamp(15, 0, 10) == 10); }

int main(int argc, char **argv) {
  static const struct check_case cases[] = {
      {"adds", adds},
      {"multiplies", multiplies},
      {"clamps_to_the_upper_bound", clamps_to_the_upper_bound},
  };
  const char *report = argc > 1 ? argv[1] : "junit.xml";
  return check_run("calc", cases, 3, report) == 0 ? 0 : 1;
}
