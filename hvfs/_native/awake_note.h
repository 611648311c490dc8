/* A request seen, told to the keep-awake threads (keep_awake.c, the extension _awake) where
 * they are built: hotpath.c and tracer.c each call awake_note() once per request or stop.
 * The function comes from _awake's capsule, taken when the module is made (awake_bind);
 * without _awake it is a no-op. */
typedef void (*awake_note_fn)(void);
static awake_note_fn awake_told = NULL;

static inline void
awake_note(void)
{
    if (awake_told)
        awake_told();
}

/* At module init: the note function of hvfs._native._awake, or none (no error left set).
 * Imported by its full name, not by PyCapsule_Import, which walks the attributes from "hvfs"
 * down: while hvfs._native itself is being imported, "hvfs" has no "_native" yet. */
static void
awake_bind(void)
{
    PyObject *module = PyImport_ImportModule("hvfs._native._awake");
    PyObject *capsule = module ? PyObject_GetAttrString(module, "note") : NULL;
    awake_told = capsule ? (awake_note_fn)PyCapsule_GetPointer(capsule, "hvfs._native._awake.note") : NULL;
    Py_XDECREF(capsule);
    Py_XDECREF(module);
    if (awake_told == NULL)
        PyErr_Clear();
}
