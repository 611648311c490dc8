/* The manager's socket, vouched for by the kernel before anything is sent (as
 * hvfs.hypervisor.control.connect), and the hello that tells its code. */
#define _GNU_SOURCE
#include "front.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int manager_connect(const char *path, long pid) {
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof address.sun_path)
        return -1;
    strcpy(address.sun_path, path);
    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return -1;
    struct ucred peer;
    socklen_t size = sizeof peer;
    if (connect(sock, (struct sockaddr *)&address, sizeof address) < 0 ||
        getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &peer, &size) < 0 || peer.uid != geteuid() ||
        (peer.pid != pid && peer.pid != 0)) { /* 0: outside our pid namespace */
        close(sock);
        return -1;
    }
    return sock;
}

int send_message(int sock, struct buf *b, const int *fds, int nfds) {
    if (b->failed)
        return -1;
    struct iovec iov = {.iov_base = b->data, .iov_len = b->len};
    union {
        char space[CMSG_SPACE(sizeof(int) * 3)];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.space;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t sent;
    do
        sent = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    return sent == (ssize_t)b->len ? 0 : -1;
}

ssize_t receive_message(int sock, char *buf) { return receive_message_fd(sock, buf, NULL); }

ssize_t receive_message_fd(int sock, char *buf, int *kept) {
    union {
        char space[CMSG_SPACE(sizeof(int) * 64)];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = buf, .iov_len = MAX_MESSAGE};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.space,
                         .msg_controllen = sizeof control.space};
    ssize_t got;
    do
        got = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (got < 0 && errno == EINTR);
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int *fds = (int *)CMSG_DATA(c);
            for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++)
                if (kept && *kept < 0)
                    *kept = fds[i];
                else
                    close(fds[i]);
        }
    if (got < 0)
        return -1;
    buf[got] = 0;
    return got;
}

/* This hvfs's code id, as hvfs/hypervisor/version.py makes it: version, package
 * directory, hvfs-init's build time. */
void code_id(char *out, size_t size) {
    struct stat st;
    char init[4200];
    snprintf(init, sizeof init, "%s/_bin/hvfs-init", HVFS_PACKAGE);
    long long built = stat(init, &st) == 0 ? (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec : 0;
    snprintf(out, size, "%s:%s:%lld", HVFS_VERSION, HVFS_PACKAGE, built);
}

/* 0 if the manager answers hello as one of this very hvfs (code_id). */
int hello(int sock) {
    char expected[CODE_ID], version[CODE_ID];
    code_id(expected, sizeof expected);
    struct buf b = {0};
    buf_raw(&b, "{\"hvfs\": 1, \"op\": \"hello\"}");
    int ok = send_message(sock, &b, NULL, 0);
    free(b.data);
    if (ok < 0)
        return -1;
    const char *timeout = getenv("HVFS_CONTROL_TIMEOUT");
    double seconds = timeout ? strtod(timeout, NULL) : 10.0;
    struct pollfd waiting = {.fd = sock, .events = POLLIN};
    if (poll(&waiting, 1, (int)((seconds > 0.1 ? seconds : 0.1) * 1000)) <= 0)
        return -1; /* stopped or stuck: the Python client reports it */
    char *reply = malloc(MAX_MESSAGE + 1);
    if (!reply || receive_message(sock, reply) <= 0 || json_string(json_get(reply, "version"), version,
                                                                   sizeof version) < 0) {
        free(reply);
        return -1;
    }
    free(reply);
    return strcmp(version, expected) == 0 ? 0 : -1;
}
