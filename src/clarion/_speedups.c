/*
 * clarion._speedups: the native accelerator of the fan-out (clarion.hub.fanout).
 *
 * Two functions, the same as the pure-Python _queue and _flush of clarion/hub/fanout.py,
 * byte for byte and order for order, without a Python frame per subscriber:
 *
 *   queue(pending: dict, subscribers: dict, frame: bytes, exclude: str | None) -> int
 *       append ``frame`` to pending[sub] (a new list for a subscriber not in it yet) for
 *       every subscriber whose socket_id is not ``exclude``; return how many.
 *   flush(pending: dict) -> list | None
 *       for every (sub, frames) in order: one sub.transport.write() of the frames (the
 *       only frame as is, several joined into one bytes object); a write that raises an
 *       Exception is caught and its subscriber returned in the list (None: none raised).
 *
 * The write itself is the transport's: uvloop's writes to the socket at once when its
 * buffer is empty and buffers the rest, so order and back-pressure (pause_writing past
 * the write-buffer bound) stay the transport's. Built at install when a C compiler is
 * there (setup.py); CLARION_NO_EXTENSIONS=1 forces the pure-Python code (clarion.speedups).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *str_socket_id;
static PyObject *str_transport;
static PyObject *str_write;
static PyObject *str_join;
static PyObject *empty_bytes;

static PyObject *
speedups_queue(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "queue() takes 4 arguments");
        return NULL;
    }
    PyObject *pending = args[0], *subscribers = args[1], *frame = args[2], *exclude = args[3];
    if (!PyDict_Check(pending) || !PyDict_Check(subscribers)) {
        PyErr_SetString(PyExc_TypeError, "queue() needs dicts");
        return NULL;
    }
    int excluding = exclude != Py_None;
    Py_ssize_t pos = 0, count = 0;
    PyObject *sub, *value;
    while (PyDict_Next(subscribers, &pos, &sub, &value)) {
        Py_INCREF(sub);  /* held across calls that could run Python code */
        if (excluding) {
            PyObject *socket_id = PyObject_GetAttr(sub, str_socket_id);
            if (socket_id == NULL) {
                Py_DECREF(sub);
                return NULL;
            }
            int same = PyObject_RichCompareBool(socket_id, exclude, Py_EQ);
            Py_DECREF(socket_id);
            if (same != 0) {
                Py_DECREF(sub);
                if (same < 0) {
                    return NULL;
                }
                continue;
            }
        }
        PyObject *frames = PyDict_GetItemWithError(pending, sub); /* borrowed */
        if (frames == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(sub);
                return NULL;
            }
            frames = PyList_New(1);
            if (frames == NULL) {
                Py_DECREF(sub);
                return NULL;
            }
            Py_INCREF(frame);
            PyList_SET_ITEM(frames, 0, frame);
            int failed = PyDict_SetItem(pending, sub, frames);
            Py_DECREF(frames);
            if (failed) {
                Py_DECREF(sub);
                return NULL;
            }
        }
        else if (PyList_Append(frames, frame) < 0) {
            Py_DECREF(sub);
            return NULL;
        }
        Py_DECREF(sub);
        count++;
    }
    return PyLong_FromSsize_t(count);
}

/* The frames of one subscriber as one object: the only one as is, else joined. */
static PyObject *
joined(PyObject *frames)
{
    if (!PyList_Check(frames)) {
        return PyObject_CallMethodOneArg(empty_bytes, str_join, frames);
    }
    Py_ssize_t n = PyList_GET_SIZE(frames);
    if (n == 1) {
        PyObject *only = PyList_GET_ITEM(frames, 0);
        Py_INCREF(only);
        return only;
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(frames, i);
        if (!PyBytes_CheckExact(item) || total > PY_SSIZE_T_MAX - PyBytes_GET_SIZE(item)) {
            return PyObject_CallMethodOneArg(empty_bytes, str_join, frames);
        }
        total += PyBytes_GET_SIZE(item);
    }
    PyObject *data = PyBytes_FromStringAndSize(NULL, total);
    if (data == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(data);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(frames, i);
        Py_ssize_t size = PyBytes_GET_SIZE(item);
        memcpy(out, PyBytes_AS_STRING(item), (size_t)size);
        out += size;
    }
    return data;
}

static PyObject *
speedups_flush(PyObject *Py_UNUSED(module), PyObject *pending)
{
    if (!PyDict_Check(pending)) {
        PyErr_SetString(PyExc_TypeError, "flush() needs a dict");
        return NULL;
    }
    PyObject *failed = NULL;
    Py_ssize_t pos = 0;
    PyObject *sub, *frames;
    while (PyDict_Next(pending, &pos, &sub, &frames)) {
        Py_INCREF(sub);
        Py_INCREF(frames);
        PyObject *result = NULL;
        PyObject *data = joined(frames);
        if (data != NULL) {
            PyObject *transport = PyObject_GetAttr(sub, str_transport);
            if (transport != NULL) {
                result = PyObject_CallMethodOneArg(transport, str_write, data);
                Py_DECREF(transport);
            }
            Py_DECREF(data);
        }
        Py_DECREF(frames);
        if (result != NULL) {
            Py_DECREF(result);
            Py_DECREF(sub);
            continue;
        }
        /* As the Python code: an Exception skips this subscriber; anything else (a
           KeyboardInterrupt, say) goes up. */
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            Py_DECREF(sub);
            Py_XDECREF(failed);
            return NULL;
        }
        PyErr_Clear();
        if (failed == NULL && (failed = PyList_New(0)) == NULL) {
            Py_DECREF(sub);
            return NULL;
        }
        int appended = PyList_Append(failed, sub);
        Py_DECREF(sub);
        if (appended < 0) {
            Py_DECREF(failed);
            return NULL;
        }
    }
    if (failed == NULL) {
        Py_RETURN_NONE;
    }
    return failed;
}

static PyMethodDef speedups_methods[] = {
    {"queue", (PyCFunction)(void (*)(void))speedups_queue, METH_FASTCALL,
     "queue(pending, subscribers, frame, exclude) -> int: queue frame for each subscriber "
     "but socket exclude."},
    {"flush", speedups_flush, METH_O,
     "flush(pending) -> list | None: one transport.write per subscriber; those that raised."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "clarion._speedups",
    "The native accelerator of clarion.hub.fanout (see clarion.speedups).",
    -1,
    speedups_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (str_socket_id == NULL) {
        str_socket_id = PyUnicode_InternFromString("socket_id");
        str_transport = PyUnicode_InternFromString("transport");
        str_write = PyUnicode_InternFromString("write");
        str_join = PyUnicode_InternFromString("join");
        empty_bytes = PyBytes_FromStringAndSize(NULL, 0);
        if (str_socket_id == NULL || str_transport == NULL || str_write == NULL ||
            str_join == NULL || empty_bytes == NULL) {
            return NULL;
        }
    }
    return PyModule_Create(&speedups_module);
}
