/* A request type's (operation as JSON, flagged) pair, asked of Python once per type and
 * kept: shared by the recorder (record.c) and the writer (audit.c), each with its own
 * ``kinds`` dict and ``kind_of`` callable (their configure()). Include after Python.h. */
#ifndef HVFS_KINDS_H
#define HVFS_KINDS_H

/* (operation as JSON, flagged) of request's type, borrowed from kinds; NULL with an error. */
static PyObject *kind_in(PyObject *kinds, PyObject *kind_of, PyObject *request) {
    PyObject *type = (PyObject *)Py_TYPE(request);
    PyObject *known = PyDict_GetItemWithError(kinds, type);
    if (known != NULL || PyErr_Occurred())
        return known;
    PyObject *made = PyObject_CallOneArg(kind_of, request);
    if (made == NULL)
        return NULL;
    if (!PyTuple_CheckExact(made) || PyTuple_GET_SIZE(made) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(made, 0))) {
        Py_DECREF(made);
        PyErr_SetString(PyExc_TypeError, "kind_of must return (str, bool)");
        return NULL;
    }
    int stored = PyDict_SetItem(kinds, type, made);
    Py_DECREF(made);
    return stored < 0 ? NULL : PyDict_GetItemWithError(kinds, type);
}

#endif
