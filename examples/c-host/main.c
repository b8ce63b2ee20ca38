/* A plain C program calling an async Lua module through synchro: blocking
 * calls from 4 threads, then futures waited for in a poll() loop. */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <synchro.h>

static synchro_t *S;

static void *worker(void *arg) {
  long id = (long)arg, i;
  for (i = 0; i < 5; i++) {
    synchro_value_t args[2], *res = NULL;
    size_t n = 0;
    char *err = NULL;
    long item = id * 100 + i;
    args[0] = synchro_integer(item);
    args[1] = synchro_number(0.01);
    if (synchro_call(S, "fetcher.fetch", args, 2, &res, &n, 5.0, &err) != 0) {
      fprintf(stderr, "thread %ld: %s\n", id, err);
      synchro_free(err);
      return (void *)1;
    }
    if (n != 2 || res[1].as.integer != item * item) {
      fprintf(stderr, "thread %ld: wrong result\n", id);
      synchro_values_free(res, n);
      return (void *)1;
    }
    printf("thread %ld got %s\n", id, res[0].as.bytes.data);
    synchro_values_free(res, n);
  }
  return NULL;
}

int main(int argc, char **argv) {
  enum { THREADS = 4, FUTURES = 10 };
  synchro_options_t opts = {0};
  char path[1024], *err = NULL;
  pthread_t threads[THREADS];
  synchro_future_t *futures[FUTURES];
  struct pollfd fds[FUTURES];
  long i;
  int failed = 0, left = FUTURES;

  /* the module lives next to this program's sources (argv[1]) */
  snprintf(path, sizeof(path), "%s/?.lua", argc > 1 ? argv[1] : ".");
  opts.name = "c-host";
  opts.lua_path = path;
  if (synchro_open(&S, &opts, &err) != 0 ||
      synchro_load_module(S, "fetcher", &err) != 0) {
    fprintf(stderr, "cannot start: %s\n", err);
    synchro_free(err);
    return 1;
  }

  /* 1. blocking calls from several threads at once */
  for (i = 0; i < THREADS; i++)
    pthread_create(&threads[i], NULL, worker, (void *)i);
  for (i = 0; i < THREADS; i++) {
    void *r;
    pthread_join(threads[i], &r);
    failed |= r != NULL;
  }

  /* 2. futures in the program's own poll loop: 10 calls of 0.2 s each
   *    finish together after about 0.2 s */
  for (i = 0; i < FUTURES; i++) {
    synchro_value_t args[2];
    args[0] = synchro_integer(i);
    args[1] = synchro_number(0.2);
    if (synchro_submit(S, "fetcher.fetch", args, 2, &futures[i]) != 0)
      return 1;
    fds[i].fd = synchro_future_fd(futures[i]);
    fds[i].events = POLLIN;
  }
  while (left > 0 && poll(fds, FUTURES, 5000) > 0) {
    for (i = 0; i < FUTURES; i++) {
      synchro_value_t *res = NULL;
      size_t n = 0;
      if (fds[i].fd < 0 || !(fds[i].revents & POLLIN))
        continue;
      if (synchro_future_results(futures[i], &res, &n, &err) == 0) {
        printf("future %ld: %s\n", i, res[0].as.bytes.data);
        synchro_values_free(res, n);
      } else {
        fprintf(stderr, "future %ld: %s\n", i, err);
        synchro_free(err);
        failed = 1;
      }
      synchro_future_release(futures[i]);
      fds[i].fd = -1;
      left--;
    }
  }
  synchro_close(S, -1);
  if (failed || left > 0) {
    fprintf(stderr, "failed\n");
    return 1;
  }
  printf("all calls done\n");
  return 0;
}
