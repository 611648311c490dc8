/* The answer of a change a quiet or audited VM's request made in the C receive loop by a plain path
 * (served_dirs.h's mkdir and rmdir, served_pathmeta.h's chmod, chown and utimensat): the
 * change set's note of the path's text, before the answer, as changes.after notes the
 * request's target once its handler has acted.
 */
#ifndef HVFS_SERVED_NOTED_H
#define HVFS_SERVED_NOTED_H

#include "write_open.h" /* note_change */

/* Notes whole (length bytes: write_request's, the path's text; existed, exists: as
 * changes.after notes the request) and answers 0, counted done in count (counts[COUNTS_*]);
 * where the note fell back on Python and raised, answers EIO, counted failed: the change is
 * made all the same, as in Python, whose dispatch answers an exception after the handler
 * acted EIO. ANSWER. Without the GIL (the note queued: note_change). */
static int
answer_noted(const struct stat_context *c, const char *whole, size_t length, int existed, int exists,
             uint64_t *count, struct seccomp_notif_resp *resp)
{
    int failed = note_change(c->change_note, whole, length, existed, exists) < 0 ? EIO : 0;
    resp->error = -failed;
    resp->val = 0;
    count[failed ? SERVED_FAILED : SERVED_DONE]++;
    return ANSWER;
}

#endif /* HVFS_SERVED_NOTED_H */
