/* The little JSON the native front speaks to the manager (docs/control.md): messages it
 * writes (strings escaped, as UTF-8 only), and top-level fields of the replies it reads. */
#ifndef HVFS_FRONT_JSON_H
#define HVFS_FRONT_JSON_H

#include <stddef.h>

#define MAX_MESSAGE (1 << 20) /* as hvfs.hypervisor.control: one datagram, one message */

struct buf {
    char *data;
    size_t len, cap;
    int failed; /* too long, or not UTF-8: the Python client does this run */
};

void buf_raw(struct buf *b, const char *text);
void buf_str(struct buf *b, const char *text); /* a JSON string of UTF-8 ``text`` */
void buf_long(struct buf *b, long long value);

/* The value of top-level ``key`` in the object ``msg``, or NULL. */
const char *json_get(const char *msg, const char *key);
/* The string at ``p`` decoded into ``out`` (NUL-terminated, cut to ``size``); 0, or -1. */
int json_string(const char *p, char *out, size_t size);
/* The first element of the array at ``p``, then the one after ``p`` (NULL: no more). */
const char *json_first(const char *p);
const char *json_next(const char *p);

#endif
