/* Which caller paths the C loop leaves to Python for naming the VM's kernel mounts or the
 * caller's own files (served_stat.h's stats and read-only opens).
 *
 * The Python path treats a path specially only by its text's components: the decoder's
 * magic links (decoders/magic.py: its normal text under "/proc/" or, for an open, "/dev/"),
 * and the handlers' kernel paths (VmContext.is_kernel_path: its normpath "/proc" or
 * "/dev/pts", or under them). Dropping empty, "." and ".." components (normal, normpath)
 * only removes components, so a path whose text (its base's, for a relative one, whose
 * VmPath joins the two with a "/") has no component "proc", "pts" (nor "dev", for an open)
 * is none of those, and resolves in the VM's root alike in C and in Python. One that does
 * is declined. A name that merely holds those letters (multiprocessing, scripts, devel) is
 * served: matching substrings sent W2's stats of the standard library's multiprocessing and
 * venv/scripts to Python, 79 of the 104 requests it handed there.
 *
 * A symlink on the way into /proc is no text matter: C and Python both resolve it in the
 * VM's root (the manager's /proc/self names no process there: ENOENT, continued).
 */
#ifndef HVFS_SERVED_NAMES_H
#define HVFS_SERVED_NAMES_H

#include <string.h>

/* Whether text has a component (between two "/", or an end) spelt exactly word. */
static int
has_component(const char *text, const char *word)
{
    size_t length = strlen(word);
    for (const char *at = text;;) {
        const char *end = strchrnul(at, '/');
        if ((size_t)(end - at) == length && memcmp(at, word, length) == 0)
            return 1;
        if (*end == 0)
            return 0;
        at = end + 1;
    }
}

/* Whether text may name the VM's procfs or devpts, or (declined: "dev", or "" for none)
 * what else the call treats by name: a component "proc", "pts" or declined. */
static inline int /* inline: the tracer's build includes this header for has_component alone (dev_probe.h) */
names_kernel_mount(const char *text, const char *declined)
{
    return has_component(text, "proc") || has_component(text, "pts") || (declined[0] && has_component(text, declined));
}

#endif
