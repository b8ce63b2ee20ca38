/* synchro.h is the first and only include: it must bring what it uses
 * (size_t came from nowhere once). Compiled as C99 and as C++. */
#include <synchro.h>

int main(void) {
  size_t n = 0;
  synchro_value_t v = synchro_nil();
  return (int)n + (int)v.type + (SYNCHRO_ETIMEDOUT < 0 ? 0 : 1);
}
