/* The caller's command name, by comm_of's rules (hvfs.api.events), for record.c: a
 * per-serving-thread cache of /proc/TID/comm fds and names (see record.c's top comment).
 * Included by record.c alone, after Python.h and the libc headers it names. */
#ifndef HVFS_COMM_H
#define HVFS_COMM_H

#define KEPT 8                    /* threads per serving thread, as hvfs.api.events._COMM_KEPT */
#define COMM_FRESH_NS 20000000LL /* hvfs.api.events.COMM_FRESH */
#define COMM_READ 64              /* bytes read of /proc/TID/comm, as comm_of */

typedef struct {
    long pid; /* 0: a free slot */
    int fd;   /* -1: none kept */
    int named;
    long long when; /* CLOCK_MONOTONIC ns of the read */
    Py_ssize_t length;
    char name[COMM_READ];
    Py_ssize_t text_length; /* ``name`` as comm_of's str, in UTF-8 (errors="replace"): made once per read */
    char text[COMM_READ * 3];
} Comm;

typedef struct {
    Comm kept[KEPT];
    unsigned next; /* the slot to reuse when all are taken: the oldest */
} Comms;

static pthread_key_t comms_key;

static void comms_free(void *data) { /* the serving thread ended: its fds, no Python */
    Comms *comms = data;
    for (int i = 0; i < KEPT; i++)
        if (comms->kept[i].fd >= 0)
            close(comms->kept[i].fd);
    free(comms);
}

static Comms *comms_here(void) {
    Comms *comms = pthread_getspecific(comms_key);
    if (comms != NULL)
        return comms;
    comms = calloc(1, sizeof *comms);
    if (comms == NULL)
        return NULL;
    for (int i = 0; i < KEPT; i++)
        comms->kept[i].fd = -1;
    if (pthread_setspecific(comms_key, comms) != 0) {
        free(comms);
        return NULL;
    }
    return comms;
}

static long long clock_ns(clockid_t clock) {
    struct timespec now;
    clock_gettime(clock, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

static Py_ssize_t read_name(int fd, char *into) { /* -1: the thread is gone */
    ssize_t got = pread(fd, into, COMM_READ, 0);
    if (got < 0)
        return -1;
    while (got > 0 && into[got - 1] == '\n') /* bytes.rstrip(b"\n") */
        got--;
    return got;
}

/* Fills ``entry`` with pid's name read now (length 0 where it is gone). */
static void read_comm(Comm *entry, long pid) {
    if (entry->fd >= 0) {
        entry->length = read_name(entry->fd, entry->name);
        if (entry->length >= 0)
            return;
        close(entry->fd); /* that thread is gone; the number may be another's now */
        entry->fd = -1;
    }
    char path[48];
    snprintf(path, sizeof path, "/proc/%ld/comm", pid);
    entry->fd = open(path, O_RDONLY | O_CLOEXEC);
    entry->length = entry->fd < 0 ? 0 : read_name(entry->fd, entry->name);
    if (entry->length < 0) {
        close(entry->fd);
        entry->fd = -1;
        entry->length = 0;
    }
}

/* entry->text of entry->name where it is ASCII (no GIL needed); 0 where it is not, text_length
 * then -1: name_text makes it, with the GIL. */
static int name_ascii(Comm *entry) {
    int ascii = 1;
    for (Py_ssize_t i = 0; i < entry->length; i++)
        ascii &= (unsigned char)entry->name[i] < 0x80;
    entry->text_length = ascii ? entry->length : -1;
    if (ascii)
        memcpy(entry->text, entry->name, (size_t)entry->length);
    return ascii;
}

/* entry->text of entry->name: as it is where ASCII, else decoded as comm_of does (the GIL held). */
static void name_text(Comm *entry) {
    if (name_ascii(entry))
        return;
    entry->text_length = 0;
    PyObject *decoded = PyUnicode_DecodeUTF8(entry->name, entry->length, "replace");
    Py_ssize_t length;
    const char *utf8 = decoded != NULL ? PyUnicode_AsUTF8AndSize(decoded, &length) : NULL;
    if (utf8 != NULL && (size_t)length <= sizeof entry->text) { /* 3 bytes at most for each byte read */
        memcpy(entry->text, utf8, (size_t)length);
        entry->text_length = length;
    }
    Py_XDECREF(decoded);
    PyErr_Clear(); /* no memory: the name is left out, as for a thread that is gone */
}

/* The caller's command name as read (``name``; ``text`` too where it is ASCII), in the
 * per-thread cache (valid until its next call), without the GIL (detached.h's record). */
static const Comm *comm_lookup(long pid, int again, long long now) {
    static const Comm none = {.fd = -1};
    Comms *comms = comms_here();
    if (comms == NULL)
        return &none;
    Comm *entry = NULL;
    for (int i = 0; i < KEPT; i++)
        if (comms->kept[i].pid == pid) {
            entry = &comms->kept[i];
            break;
        }
    if (entry != NULL && !again && entry->named && now - entry->when < COMM_FRESH_NS)
        return entry;
    if (entry == NULL) {
        entry = &comms->kept[comms->next];
        comms->next = (comms->next + 1) % KEPT;
        if (entry->fd >= 0)
            close(entry->fd);
        entry->pid = pid;
        entry->fd = -1;
    }
    read_comm(entry, pid);
    name_ascii(entry);
    entry->named = !again && entry->length > 0;
    entry->when = now;
    return entry;
}

/* The caller's command name as UTF-8, in the per-thread cache (valid until its next call). */
static const Comm *comm_entry(long pid, int again, long long now) {
    Comm *entry = (Comm *)comm_lookup(pid, again, now);
    if (entry->text_length < 0) /* not ASCII: decoded once per read, with the GIL */
        name_text(entry);
    return entry;
}

static PyObject *comm_of(long pid, int again, long long now) {
    const Comm *entry = comm_entry(pid, again, now);
    return PyUnicode_DecodeUTF8(entry->text, entry->text_length, "strict");
}

#endif
