/* A minimal harness for the C tests: CHECK aborts with file:line on a false
 * condition; each test file returns 0 from main when every check held. */
#ifndef SYNCHRO_TEST_H
#define SYNCHRO_TEST_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,       \
              #cond);                                                        \
      abort();                                                               \
    }                                                                        \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                   \
  do {                                                                       \
    long long a_ = (long long)(a), b_ = (long long)(b);                      \
    if (a_ != b_) {                                                          \
      fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__,    \
              __LINE__, #a, #b, a_, b_);                                     \
      abort();                                                               \
    }                                                                        \
  } while (0)

#define RUN(test)                                                            \
  do {                                                                       \
    fprintf(stderr, "  %s\n", #test);                                        \
    test();                                                                  \
  } while (0)

#endif
