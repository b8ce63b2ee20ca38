/* The mailbox: producers push onto a lock-free stack; the single consumer
 * takes the whole stack at once and reverses it, which gives back each
 * producer's order without the half-linked window of a linked-list queue.
 * Taking everything at once makes ABA impossible: a node is only reused
 * after the consumer has taken it. */
#include "core.h"

void synchro__mailbox_init(synchro_mailbox_t *mb) {
  mb->head = NULL;
  mb->closed = 0;
  mb->pushers = 0;
}

int synchro__mailbox_push_then(synchro_mailbox_t *mb, synchro_msg_t *msg,
                               void (*then)(void *ud), void *ud) {
  synchro_msg_t *head;
  /* Dekker with mailbox_close: announce ourselves, then check closed. */
  __atomic_add_fetch(&mb->pushers, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&mb->closed, __ATOMIC_SEQ_CST)) {
    __atomic_sub_fetch(&mb->pushers, 1, __ATOMIC_SEQ_CST);
    return SYNCHRO_ECLOSED;
  }
  head = synchro__load_relaxed(&mb->head);
  do {
    msg->next = head;
  } while (!__atomic_compare_exchange_n(&mb->head, &head, msg, 1,
                                        __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
  /* Still inside the window that mailbox_close waits for: the consumer
   * cannot have gone (and freed what then touches) yet. */
  if (then != NULL)
    then(ud);
  __atomic_sub_fetch(&mb->pushers, 1, __ATOMIC_SEQ_CST);
  return 0;
}

int synchro__mailbox_push(synchro_mailbox_t *mb, synchro_msg_t *msg) {
  return synchro__mailbox_push_then(mb, msg, NULL, NULL);
}

synchro_msg_t *synchro__mailbox_take(synchro_mailbox_t *mb) {
  synchro_msg_t *list, *fifo = NULL;
  if (synchro__load_relaxed(&mb->head) == NULL)
    return NULL;
  list = synchro__xchg(&mb->head, NULL);
  while (list != NULL) {
    synchro_msg_t *next = list->next;
    list->next = fifo;
    fifo = list;
    list = next;
  }
  return fifo;
}

int synchro__mailbox_empty(synchro_mailbox_t *mb) {
  return __atomic_load_n(&mb->head, __ATOMIC_SEQ_CST) == NULL;
}

void synchro__mailbox_close(synchro_mailbox_t *mb) {
  __atomic_store_n(&mb->closed, 1, __ATOMIC_SEQ_CST);
  while (__atomic_load_n(&mb->pushers, __ATOMIC_SEQ_CST) != 0)
    synchro__cpu_relax();
}
