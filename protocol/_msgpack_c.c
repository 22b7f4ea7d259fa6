/* msgpack in C: the fast paths of the protocol package, each with a pure-Python twin that an
 * install without a C compiler runs (and the tests hold both to the same results).
 *
 * pack_canonical(obj): canonical msgpack (SPEC section 2), the fast path of protocol/canonical.py.
 * It returns the bytes msgpack.packb(_ordered(obj), use_bin_type=True) returns, or None when obj
 * holds anything but the exact types answers and decoded requests are made of: None, bool, int
 * (int64 or uint64), float, str, bytes, list, tuple, and dict with exact str keys. Encodings are
 * msgpack-python's: the shortest form of each int, float64 for every float, str8/16/32 and
 * bin8/16/32 (use_bin_type=True), fix/16/32 arrays and maps. Map keys are emitted in code-point
 * order, which for UTF-8 is byte order (PyUnicode_Compare compares code points).
 *
 * unpack_plain(data, len_max, depth_max): the fast path of protocol/_msgpack.py for plain
 * documents. It returns the value of `data` when it is exactly one msgpack document that
 * `unpack` would decode and `first_fault` find no fault in: maps with str keys each named once,
 * ints within int64, no ext, every length within `len_max`, no container deeper than
 * `depth_max`, valid UTF-8, no trailing bytes; None for anything else (and for a document that
 * is nil itself). The value is what msgpack-python builds (raw=False, use_list=True,
 * strict_map_key=True): str, bytes for bin, float for float32/64, lists, dicts in wire order
 * with interned str keys.
 *
 * Neither raises for an unusual value or hostile input: each declines (None), and the caller
 * takes the Python path, which answers every case exactly as it always has.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---- pack_canonical ------------------------------------------------------------------------ */
/* Deeper trees decline (the Python path judges them); decoded requests nest far less. */
#define PACK_DEPTH_MAX 64
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
    if (depth > PACK_DEPTH_MAX)
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


/* ---- unpack_plain -------------------------------------------------------------------------- */

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
    Py_ssize_t len_max;
    int depth_max;
    int declined;       /* set when the document is not plain: the caller returns None */
} Reader;

static PyObject *
decline(Reader *r)
{
    r->declined = 1;
    return NULL;
}

/* `n` big-endian bytes as an unsigned integer, or decline when fewer than `n` are left. */
static int
take_be(Reader *r, int n, uint64_t *out)
{
    if (r->end - r->p < n)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | r->p[i];
    r->p += n;
    *out = v;
    return 1;
}

static PyObject *read_value(Reader *r, int depth);

static PyObject *
read_str(Reader *r, uint64_t n)
{
    if ((Py_ssize_t)n > r->len_max || (uint64_t)(r->end - r->p) < n)
        return decline(r);
    PyObject *s = PyUnicode_DecodeUTF8((const char *)r->p, (Py_ssize_t)n, "strict");
    if (s == NULL) {
        PyErr_Clear();   /* not UTF-8: the Python path says so */
        return decline(r);
    }
    r->p += n;
    return s;
}

static PyObject *
read_bin(Reader *r, uint64_t n)
{
    if ((Py_ssize_t)n > r->len_max || (uint64_t)(r->end - r->p) < n)
        return decline(r);
    PyObject *b = PyBytes_FromStringAndSize((const char *)r->p, (Py_ssize_t)n);
    r->p += n;
    return b;
}

static PyObject *
read_array(Reader *r, uint64_t n, int depth)
{
    /* Each element takes at least one byte: a count beyond what is left cannot be plain. */
    if (depth >= r->depth_max || (Py_ssize_t)n > r->len_max || (uint64_t)(r->end - r->p) < n)
        return decline(r);
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < (Py_ssize_t)n; i++) {
        PyObject *item = read_value(r, depth + 1);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

static PyObject *
read_map(Reader *r, uint64_t n, int depth)
{
    if (depth >= r->depth_max || (Py_ssize_t)n > r->len_max || (uint64_t)(r->end - r->p) < 2 * n)
        return decline(r);
    PyObject *dict = PyDict_New();
    if (dict == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < (Py_ssize_t)n; i++) {
        if (r->p >= r->end)
            goto declined;
        unsigned char type = *r->p;
        uint64_t length;
        /* Keys: msgpack str only (a bin key is legal msgpack but never plain here). */
        if ((type & 0xe0) == 0xa0) {
            r->p++;
            length = type & 0x1f;
        } else if (type >= 0xd9 && type <= 0xdb) {
            r->p++;
            if (!take_be(r, 1 << (type - 0xd9), &length))
                goto declined;
        } else {
            goto declined;
        }
        PyObject *key = read_str(r, length);
        if (key == NULL)
            goto failed;
        PyUnicode_InternInPlace(&key);   /* as msgpack-python does */
        PyObject *value = read_value(r, depth + 1);
        if (value == NULL) {
            Py_DECREF(key);
            goto failed;
        }
        int rc = PyDict_SetItem(dict, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (rc < 0)
            goto failed;
        if (PyDict_GET_SIZE(dict) != i + 1)
            goto declined;   /* a key named twice: the Python path names it */
    }
    return dict;
declined:
    r->declined = 1;
failed:
    Py_DECREF(dict);
    return NULL;
}

static PyObject *
read_value(Reader *r, int depth)
{
    if (r->p >= r->end)
        return decline(r);
    unsigned char type = *r->p++;
    uint64_t v;
    if (type <= 0x7f)
        return PyLong_FromLong(type);
    if (type >= 0xe0)
        return PyLong_FromLong((long)(int8_t)type);
    if ((type & 0xe0) == 0xa0)
        return read_str(r, type & 0x1f);
    if ((type & 0xf0) == 0x90)
        return read_array(r, type & 0x0f, depth);
    if ((type & 0xf0) == 0x80)
        return read_map(r, type & 0x0f, depth);
    switch (type) {
    case 0xc0:
        Py_RETURN_NONE;
    case 0xc2:
        Py_RETURN_FALSE;
    case 0xc3:
        Py_RETURN_TRUE;
    case 0xc4: case 0xc5: case 0xc6:
        return take_be(r, 1 << (type - 0xc4), &v) ? read_bin(r, v) : decline(r);
    case 0xca:
        if (r->end - r->p < 4)
            return decline(r);
        r->p += 4;
        return PyFloat_FromDouble(PyFloat_Unpack4((const char *)r->p - 4, 0));
    case 0xcb:
        if (r->end - r->p < 8)
            return decline(r);
        r->p += 8;
        return PyFloat_FromDouble(PyFloat_Unpack8((const char *)r->p - 8, 0));
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        if (!take_be(r, 1 << (type - 0xcc), &v))
            return decline(r);
        if (v > (uint64_t)INT64_MAX)
            return decline(r);   /* outside int64: a fault of value */
        return PyLong_FromLongLong((long long)v);
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        int width = 1 << (type - 0xd0);
        if (!take_be(r, width, &v))
            return decline(r);
        int shift = 64 - 8 * width;   /* sign-extend the `width`-byte value */
        return PyLong_FromLongLong(width == 8 ? (long long)v : ((long long)(v << shift)) >> shift);
    }
    case 0xd9: case 0xda: case 0xdb:
        return take_be(r, 1 << (type - 0xd9), &v) ? read_str(r, v) : decline(r);
    case 0xdc: case 0xdd:
        return take_be(r, 2 << (type - 0xdc), &v) ? read_array(r, v, depth) : decline(r);
    case 0xde: case 0xdf:
        return take_be(r, 2 << (type - 0xde), &v) ? read_map(r, v, depth) : decline(r);
    default:
        return decline(r);   /* ext types, 0xc1 */
    }
}

static PyObject *
unpack_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "unpack_plain(data, len_max, depth_max)");
        return NULL;
    }
    if (!PyBytes_CheckExact(args[0]))
        Py_RETURN_NONE;
    Py_ssize_t len_max = PyLong_AsSsize_t(args[1]);
    long depth_max = PyLong_AsLong(args[2]);
    if ((len_max == -1 || depth_max == -1) && PyErr_Occurred())
        return NULL;
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Reader r = {data, data + PyBytes_GET_SIZE(args[0]), len_max, (int)depth_max, 0};
    PyObject *value = read_value(&r, 0);
    if (value == NULL) {
        if (r.declined && !PyErr_Occurred())
            Py_RETURN_NONE;
        return NULL;   /* MemoryError and the like */
    }
    if (r.p != r.end) {
        Py_DECREF(value);
        Py_RETURN_NONE;   /* trailing bytes */
    }
    return value;
}

static PyMethodDef methods[] = {
    {"pack_canonical", canonical_pack, METH_O,
     "pack_canonical(obj) -> bytes | None: canonical msgpack of a tree of exact plain types, else None."},
    {"unpack_plain", (PyCFunction)(void (*)(void))unpack_plain, METH_FASTCALL,
     "unpack_plain(data, len_max, depth_max) -> value | None: one plain msgpack document, else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "protocol._msgpack_c",
    "msgpack in C: the fast paths of protocol.canonical and protocol._msgpack.", -1, methods,
};

PyMODINIT_FUNC
PyInit__msgpack_c(void)
{
    return PyModule_Create(&module);
}
