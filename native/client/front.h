#ifndef HVFS_FRONT_H
#define HVFS_FRONT_H

#include "json.h"

#include <sys/types.h>

#ifndef HVFS_PYTHON
#error "build with -DHVFS_PYTHON=... -DHVFS_PACKAGE=... -DHVFS_VERSION=... (setup.py does)"
#endif

#define EXIT_HVFS 125
#define PROTOCOL 1

/* The VM's stdio: each of 0, 1, 2 as it is (a pipe or a socket), or a pipe this
 * process relays (hvfs/sandbox/stdio.py); stderr shares stdout's pipe when both are the
 * same file, which keeps their lines in order. */
struct stdio_plan {
    int vm[3];       /* what the VM gets */
    int relay[3];    /* our end of a relayed pipe, or -1 */
    int shared_err;  /* stderr goes through stdout's pipe */
};

/* front.c */
_Noreturn void python_client(const char *why);
void trace(const char *what, const char *why);
long manager_pid(const char *state);
extern const char *state_dir;
extern char manager_socket[4200];

/* stdio.c */
int plan_stdio(struct stdio_plan *plan);
void handed_over(struct stdio_plan *plan);

/* connect.c */
int manager_connect(const char *path, long pid);
#define CODE_ID 4400 /* bytes that hold a code id */
void code_id(char *out, size_t size);
int hello(int sock);
int send_message(int sock, struct buf *b, const int *fds, int nfds);
/* One message into ``buf`` (MAX_MESSAGE + 1 bytes), NUL-terminated; its length, 0 at the
 * end, -1 on error. Any fds that came with it are closed. */
ssize_t receive_message(int sock, char *buf);
/* The same, keeping the first fd that came in ``*kept`` (which must be -1), if any. */
ssize_t receive_message_fd(int sock, char *buf, int *kept);

/* start.c: a connection to the manager it started (or another client did meanwhile), or -1 */
int start_manager(const char *state);

/* run.c */
void restore_signals(void);
/* checked: no hello was said on sock; the request carries this hvfs's code id instead
 * (run_argv_checked), and a manager of other code makes it the Python client's. */
int run(int sock, int argc, char **argv, struct stdio_plan *plan, int checked);

#endif
