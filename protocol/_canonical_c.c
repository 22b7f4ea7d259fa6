/* Canonical msgpack (SPEC section 2) in C: the fast path of protocol/canonical.py.
 *
 * pack(obj) returns the bytes msgpack.packb(_ordered(obj), use_bin_type=True) returns, or None
 * when obj holds anything but the exact types answers and decoded requests are made of: None,
 * bool, int (int64 or uint64), float, str, bytes, list, tuple, and dict with exact str keys.
 * On None the caller takes the pure-Python path, which handles (or refuses) everything else
 * the way it always has; this file therefore never raises for an unusual value, it declines.
 *
 * Encodings are msgpack-python's: the shortest form of each int, float64 for every float,
 * str8/16/32 and bin8/16/32 (use_bin_type=True), fix/16/32 arrays and maps. Map keys are
 * emitted in code-point order, which for UTF-8 is byte order (PyUnicode_Compare compares code
 * points).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Deeper trees decline (the Python path judges them); decoded requests nest far less. */
#define DEPTH_MAX 64
/* Maps with more keys than this are sorted with a heap array instead of the stack. */
#define STACK_PAIRS 32

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buffer;

/* Return codes of the packers: OK, DECLINE (take the Python path), FAIL (a Python error is set). */
enum { OK = 0, DECLINE = 1, FAIL = -1 };

static int
reserve(Buffer *buf, Py_ssize_t more)
{
    if (buf->len + more <= buf->cap)
        return OK;
    Py_ssize_t cap = buf->cap * 2;
    while (cap < buf->len + more)
        cap *= 2;
    char *data = PyMem_Realloc(buf->data, (size_t)cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return FAIL;
    }
    buf->data = data;
    buf->cap = cap;
    return OK;
}

static int
put(Buffer *buf, const void *bytes, Py_ssize_t n)
{
    if (reserve(buf, n) != OK)
        return FAIL;
    memcpy(buf->data + buf->len, bytes, (size_t)n);
    buf->len += n;
    return OK;
}

/* One type byte followed by `width` big-endian bytes of `value`. */
static int
put_be(Buffer *buf, unsigned char type, uint64_t value, int width)
{
    unsigned char out[9];
    out[0] = type;
    for (int i = 0; i < width; i++)
        out[1 + i] = (unsigned char)(value >> (8 * (width - 1 - i)));
    return put(buf, out, 1 + width);
}

/* A length header: fix form below `fix_limit`, else the 8- (if `type8`), 16- or 32-bit form. */
static int
put_header(Buffer *buf, Py_ssize_t n, unsigned char fix, Py_ssize_t fix_limit, int type8,
           unsigned char type16, unsigned char type32)
{
    if (n < fix_limit) {
        unsigned char byte = (unsigned char)(fix | n);
        return put(buf, &byte, 1);
    }
    if (type8 >= 0 && n < 256)
        return put_be(buf, (unsigned char)type8, (uint64_t)n, 1);
    if (n < 65536)
        return put_be(buf, type16, (uint64_t)n, 2);
    if ((uint64_t)n <= 0xffffffffULL)
        return put_be(buf, type32, (uint64_t)n, 4);
    return DECLINE;
}

static int
pack_int(Buffer *buf, PyObject *obj)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred())
        return FAIL;
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(obj);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();   /* beyond uint64: msgpack refuses it, the Python path says how */
            return DECLINE;
        }
        return put_be(buf, 0xcf, u, 8);
    }
    if (overflow < 0)
        return DECLINE;
    if (v < -32) {
        if (v < -32768)
            return v < -2147483648LL ? put_be(buf, 0xd3, (uint64_t)v, 8) : put_be(buf, 0xd2, (uint64_t)v, 4);
        return v < -128 ? put_be(buf, 0xd1, (uint64_t)v, 2) : put_be(buf, 0xd0, (uint64_t)v, 1);
    }
    if (v < 128) {
        unsigned char byte = (unsigned char)(v & 0xff);
        return put(buf, &byte, 1);
    }
    if (v < 65536)
        return v < 256 ? put_be(buf, 0xcc, (uint64_t)v, 1) : put_be(buf, 0xcd, (uint64_t)v, 2);
    return v < 4294967296LL ? put_be(buf, 0xce, (uint64_t)v, 4) : put_be(buf, 0xcf, (uint64_t)v, 8);
}

static int
pack_str(Buffer *buf, PyObject *obj)
{
    if (PyUnicode_IS_ASCII(obj)) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(obj);
        int rc = put_header(buf, n, 0xa0, 32, 0xd9, 0xda, 0xdb);
        return rc != OK ? rc : put(buf, PyUnicode_DATA(obj), n);
    }
    /* A new bytes object rather than PyUnicode_AsUTF8AndSize, which would keep a UTF-8 copy
     * inside every long-lived str it met. */
    PyObject *utf8 = PyUnicode_AsUTF8String(obj);
    if (utf8 == NULL) {
        PyErr_Clear();   /* e.g. a lone surrogate: the Python path raises msgpack's error */
        return DECLINE;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(utf8);
    int rc = put_header(buf, n, 0xa0, 32, 0xd9, 0xda, 0xdb);
    if (rc == OK)
        rc = put(buf, PyBytes_AS_STRING(utf8), n);
    Py_DECREF(utf8);
    return rc;
}

static int pack(Buffer *buf, PyObject *obj, int depth);

typedef struct {
    PyObject *key;
    PyObject *value;
} Pair;

static int
pack_map(Buffer *buf, PyObject *obj, int depth)
{
    Py_ssize_t n = PyDict_GET_SIZE(obj);
    Pair stack_pairs[STACK_PAIRS];
    Pair *pairs = n <= STACK_PAIRS ? stack_pairs : PyMem_Malloc(sizeof(Pair) * (size_t)n);
    if (pairs == NULL) {
        PyErr_NoMemory();
        return FAIL;
    }
    int rc = OK;
    Py_ssize_t pos = 0, count = 0;
    PyObject *key, *value;
    /* Borrowed references: nothing below runs Python code that could change the dict. */
    while (PyDict_Next(obj, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) {
            rc = DECLINE;
            goto done;
        }
        /* Insertion sort: maps here have a handful of keys, usually already in order. */
        Py_ssize_t at = count;
        while (at > 0 && PyUnicode_Compare(pairs[at - 1].key, key) > 0) {
            pairs[at] = pairs[at - 1];
            at--;
        }
        pairs[at].key = key;
        pairs[at].value = value;
        count++;
    }
    rc = put_header(buf, n, 0x80, 16, -1, 0xde, 0xdf);
    for (Py_ssize_t i = 0; i < count && rc == OK; i++) {
        rc = pack_str(buf, pairs[i].key);
        if (rc == OK)
            rc = pack(buf, pairs[i].value, depth + 1);
    }
done:
    if (pairs != stack_pairs)
        PyMem_Free(pairs);
    return rc;
}

static int
pack(Buffer *buf, PyObject *obj, int depth)
{
    if (depth > DEPTH_MAX)
        return DECLINE;
    PyTypeObject *type = Py_TYPE(obj);
    if (type == &PyUnicode_Type)
        return pack_str(buf, obj);
    if (type == &PyLong_Type)
        return pack_int(buf, obj);
    if (obj == Py_None) {
        unsigned char byte = 0xc0;
        return put(buf, &byte, 1);
    }
    if (type == &PyBool_Type) {
        unsigned char byte = obj == Py_True ? 0xc3 : 0xc2;
        return put(buf, &byte, 1);
    }
    if (type == &PyDict_Type)
        return pack_map(buf, obj, depth);
    if (type == &PyList_Type || type == &PyTuple_Type) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(obj);
        PyObject **items = PySequence_Fast_ITEMS(obj);
        int rc = put_header(buf, n, 0x90, 16, -1, 0xdc, 0xdd);
        for (Py_ssize_t i = 0; i < n && rc == OK; i++)
            rc = pack(buf, items[i], depth + 1);
        return rc;
    }
    if (type == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(obj);
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        return put_be(buf, 0xcb, bits, 8);
    }
    if (type == &PyBytes_Type) {
        Py_ssize_t n = PyBytes_GET_SIZE(obj);
        int rc = put_header(buf, n, 0, 0, 0xc4, 0xc5, 0xc6);
        return rc != OK ? rc : put(buf, PyBytes_AS_STRING(obj), n);
    }
    return DECLINE;
}

static PyObject *
canonical_pack(PyObject *module, PyObject *obj)
{
    Buffer buf = {PyMem_Malloc(1024), 0, 1024};
    if (buf.data == NULL)
        return PyErr_NoMemory();
    int rc = pack(&buf, obj, 0);
    PyObject *result;
    if (rc == OK)
        result = PyBytes_FromStringAndSize(buf.data, buf.len);
    else if (rc == DECLINE)
        result = Py_NewRef(Py_None);
    else
        result = NULL;
    PyMem_Free(buf.data);
    return result;
}

static PyMethodDef methods[] = {
    {"pack", canonical_pack, METH_O,
     "pack(obj) -> bytes | None: canonical msgpack of a tree of exact plain types, else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "protocol._canonical_c",
    "Canonical msgpack in C: the fast path of protocol.canonical.", -1, methods,
};

PyMODINIT_FUNC
PyInit__canonical_c(void)
{
    return PyModule_Create(&module);
}
