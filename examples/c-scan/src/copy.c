/* Deliberately unsafe code for the security-scan example: flawfinder reports each of these. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  char name[16];
  char command[64];
  if (argc < 2) return 1;
  strcpy(name, argv[1]);                      /* no bounds check */
  sprintf(command, "echo hello %s", name);    /* format into a fixed buffer */
  return system(command);                     /* a shell runs user input */
}
