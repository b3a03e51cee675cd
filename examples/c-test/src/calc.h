#ifndef CALC_H
#define CALC_H

int add(int a, int b);
int mul(int a, int b);
int clamp(int value, int low, int high);

#endif
