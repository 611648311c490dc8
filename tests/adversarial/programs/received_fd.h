/* An fd received over a unix socket: how an attack program gets a host file or directory the
 * test passes into the VM through a mount marked `sockets` (the VM's own way to a host fd). */
#ifndef HVFS_RECEIVED_FD_H
#define HVFS_RECEIVED_FD_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* The one fd sent with the first byte on the socket at path; exits 3 without one. */
static int receive_fd(const char *path) {
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("connect");
        exit(3);
    }
    char byte, control[CMSG_SPACE(sizeof(int))];
    struct iovec io = {.iov_base = &byte, .iov_len = 1};
    struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    if (recvmsg(s, &m, 0) < 1 || !CMSG_FIRSTHDR(&m)) {
        fprintf(stderr, "no fd received\n");
        exit(3);
    }
    int fd;
    memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof fd);
    close(s);
    return fd;
}

#endif
