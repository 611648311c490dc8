/* The messages between hvfs-init and the manager (see init.h). */
#include "init.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static uint32_t read_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Checks that the records tile the message exactly; returns 0 if so. */
static int validate(struct message *m) {
    size_t at = 0;
    while (at < m->size) {
        if (m->size - at < 5) return -1;
        uint32_t length = read_u32(m->data + at + 1);
        if (length > m->size - at - 5) return -1;
        at += 5 + length;
    }
    size_t length;
    const uint8_t *type = msg_get(m, T_TYPE, 0, &length);
    if (type == NULL || length != 1) return -1;
    m->type = type[0];
    return 0;
}

/* One message with its fds; -1 with errno set on failure, 0 on end of file (type 0). */
int msg_receive(int chan, struct message *m) {
    memset(m, 0, sizeof *m);
    m->data = malloc(MAX_MESSAGE);
    if (m->data == NULL) return -1;
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    } control;
    struct iovec iov = {m->data, MAX_MESSAGE};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                         .msg_controllen = sizeof control.space};
    ssize_t got;
    do got = recvmsg(chan, &msg, MSG_CMSG_CLOEXEC);
    while (got < 0 && errno == EINTR);
    if (got < 0) {
        msg_free(m);
        return -1;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < n && m->nfds < MAX_FDS; i++) memcpy(&m->fds[m->nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
    }
    m->size = (size_t)got;
    if (got == 0) return 0;
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC) || validate(m) < 0) {
        msg_free(m);
        errno = EBADMSG;
        return -1;
    }
    return 0;
}

void msg_free(struct message *m) {
    free(m->data);
    m->data = NULL;
}

const uint8_t *msg_get(const struct message *m, int tag, size_t index, size_t *length) {
    size_t at = 0;
    while (at + 5 <= m->size) {
        uint32_t size = read_u32(m->data + at + 1);
        if (m->data[at] == tag && index-- == 0) {
            *length = size;
            return m->data + at + 5;
        }
        at += 5 + size;
    }
    return NULL;
}

size_t msg_count(const struct message *m, int tag) {
    size_t n = 0, length;
    while (msg_get(m, tag, n, &length) != NULL) n++;
    return n;
}

/* A string record (NUL-terminated inside the record), or NULL. */
const char *msg_string(const struct message *m, int tag, size_t index) {
    size_t length;
    const uint8_t *p = msg_get(m, tag, index, &length);
    if (p == NULL || length == 0 || p[length - 1] != 0) return NULL;
    return (const char *)p;
}

int64_t msg_int(const struct message *m, int tag, int64_t missing) {
    size_t length;
    const uint8_t *p = msg_get(m, tag, 0, &length);
    if (p == NULL || length != 8) return missing;
    uint64_t value = 0;
    for (int i = 7; i >= 0; i--) value = value << 8 | p[i];
    return (int64_t)value;
}

/* Every string record with `tag`, as a NULL-terminated array pointing into the message. */
char **msg_strings(const struct message *m, int tag) {
    size_t n = msg_count(m, tag);
    char **list = calloc(n + 1, sizeof *list);
    if (list == NULL) return NULL;
    for (size_t i = 0; i < n; i++) {
        list[i] = (char *)msg_string(m, tag, i);
        if (list[i] == NULL) {
            free(list);
            return NULL;
        }
    }
    return list;
}

void build_begin(struct builder *b, int type) {
    b->size = 0;
    b->capacity = 256;
    b->data = malloc(b->capacity);
    uint8_t t = (uint8_t)type;
    build_bytes(b, T_TYPE, &t, 1);
}

void build_bytes(struct builder *b, int tag, const void *data, size_t length) {
    if (b->data == NULL) return;
    while (b->size + 5 + length > b->capacity) {
        b->capacity *= 2;
        uint8_t *bigger = realloc(b->data, b->capacity);
        if (bigger == NULL) {
            free(b->data);
            b->data = NULL;
            return;
        }
        b->data = bigger;
    }
    uint8_t *p = b->data + b->size;
    p[0] = (uint8_t)tag;
    for (int i = 0; i < 4; i++) p[1 + i] = (uint8_t)(length >> (8 * i));
    memcpy(p + 5, data, length);
    b->size += 5 + length;
}

void build_string(struct builder *b, int tag, const char *text) {
    build_bytes(b, tag, text, strlen(text) + 1);
}

void build_int(struct builder *b, int tag, int64_t value) {
    uint8_t raw[8];
    for (int i = 0; i < 8; i++) raw[i] = (uint8_t)((uint64_t)value >> (8 * i));
    build_bytes(b, tag, raw, 8);
}

int build_send(int chan, struct builder *b, const int *fds, int nfds) {
    if (b->data == NULL) {
        errno = ENOMEM;
        return -1;
    }
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    } control;
    struct iovec iov = {b->data, b->size};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.space;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t sent;
    do sent = nfds > 0 ? sendmsg(chan, &msg, MSG_NOSIGNAL) : send(chan, b->data, b->size, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    free(b->data);
    b->data = NULL;
    return sent < 0 ? -1 : 0;
}

int send_simple(int chan, int type) {
    struct builder b;
    build_begin(&b, type);
    return build_send(chan, &b, NULL, 0);
}

/* Tells the manager which named step failed and why; it adds the hint. */
void send_error(int chan, const char *step, int error, const char *text) {
    struct builder b;
    build_begin(&b, MSG_ERROR);
    build_string(&b, T_STEP, step);
    if (error) build_int(&b, T_ERRNO, error);
    if (text) build_string(&b, T_TEXT, text);
    build_send(chan, &b, NULL, 0);
}
