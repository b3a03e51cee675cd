/* A tiny test framework: CHECK records a failure with its file and line, and the runner
 * writes every test case to a JUnit XML file. */
#ifndef CHECK_H
#define CHECK_H

#include <stdio.h>

struct check_case {
  const char *name;
  void (*run)(void);
};

static const char *check_failure;
static const char *check_file;
static int check_line;

#define CHECK(condition)                       \
  do {                                         \
    if (!(condition) && check_failure == NULL) { \
      check_failure = #condition;              \
      check_file = __FILE__;                   \
      check_line = __LINE__;                   \
    }                                          \
  } while (0)

/* Runs the cases, writes the report to `path`, returns the number of failures. */
static int check_run(const char *suite, const struct check_case *cases, int count,
                     const char *path) {
  FILE *report = fopen(path, "w");
  if (report == NULL) {
    perror(path);
    return count;
  }
  int failures = 0;
  fprintf(report, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1) {
      fprintf(report, "  <testsuite name=\"%s\" tests=\"%d\" failures=\"%d\">\n", suite, count,
              failures);
    }
    for (int i = 0; i < count; ++i) {
      check_failure = NULL;
      cases[i].run();
      if (pass == 0) {
        failures += check_failure != NULL;
        printf("%s %s.%s\n", check_failure ? "FAIL" : "ok  ", suite, cases[i].name);
        if (check_failure) printf("     %s:%d: CHECK(%s)\n", check_file, check_line, check_failure);
        continue;
      }
      fprintf(report, "    <testcase classname=\"%s\" name=\"%s\"", suite, cases[i].name);
      if (check_failure == NULL) {
        fprintf(report, "/>\n");
      } else {
        /* The checked expressions of this example contain no XML special characters. */
        fprintf(report,
                " file=\"%s\" line=\"%d\">\n      <failure message=\"CHECK(%s) failed\">%s:%d"
                "</failure>\n    </testcase>\n",
                check_file, check_line, check_failure, check_file, check_line);
      }
    }
  }
  fprintf(report, "  </testsuite>\n</testsuites>\n");
  fclose(report);
  printf("%d of %d tests failed\n", failures, count);
  return failures;
}

#endif
