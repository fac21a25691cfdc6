/* One side of a price-level order book, compiled: the same algorithm and results as
 * actors/feed/book.py's pure-Python ``PySide`` (which stays the reference and the fallback).
 *
 * Every level lives in an open-addressing hash map (price -> size, linear probing with
 * backward-shift deletion); the best levels are also kept in a sorted array of keys (asks: the
 * price, bids: the negated price, so the best is first). The window holds every level whose key
 * is <= ``limit``; it is cut back to 2 * window past 4 * window and rebuilt from the map (the
 * best 2 * window) when deletions leave fewer than ``window``.
 *
 * Prices and sizes are converted exactly as Python's float() converts them: short decimal
 * strings by an exact fast path (decimal_fast_path), other strings through PyOS_string_to_double,
 * the function float() itself uses, anything else through float() itself.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    double price;
    double size;
} Entry;

#define EMPTY(e) ((e).price != (e).price)

typedef struct {
    PyObject_HEAD
    int sign;                 /* +1 asks, -1 bids */
    Py_ssize_t window;        /* the window keeps at least this many levels when it can */
    double limit;             /* every level with key <= limit is in keys; INFINITY: all are */
    /* hash map: price -> size; an empty slot's price is NaN (a NaN price is never stored) */
    Entry *entries;
    Py_ssize_t capacity;      /* a power of two */
    Py_ssize_t count;
    /* the window: sorted keys (sign * price), ascending */
    double *keys;
    Py_ssize_t nkeys;
    Py_ssize_t keys_capacity;
} Side;

static uint64_t hash_price(double price) {
    uint64_t bits;
    if (price == 0.0) price = 0.0;              /* -0.0 and 0.0 are one price, as in a dict */
    memcpy(&bits, &price, sizeof bits);
    bits ^= bits >> 33;                         /* murmur3's finaliser */
    bits *= 0xff51afd7ed558ccdULL;
    bits ^= bits >> 33;
    bits *= 0xc4ceb9fe1a85ec53ULL;
    bits ^= bits >> 33;
    return bits;
}

/* The slot holding ``price``, or the empty slot where it would go. */
static Py_ssize_t find_slot(Side *s, double price) {
    Py_ssize_t mask = s->capacity - 1;
    Py_ssize_t i = (Py_ssize_t)(hash_price(price) & (uint64_t)mask);
    while (!EMPTY(s->entries[i]) && s->entries[i].price != price)
        i = (i + 1) & mask;
    return i;
}

static void empty_entries(Entry *entries, Py_ssize_t capacity) {
    for (Py_ssize_t i = 0; i < capacity; i++)
        entries[i].price = NAN;
}

static int allocate_map(Side *s, Py_ssize_t capacity) {
    Entry *entries = PyMem_Malloc(capacity * sizeof(Entry));
    if (!entries) {
        PyErr_NoMemory();
        return -1;
    }
    empty_entries(entries, capacity);
    Entry *old = s->entries;
    Py_ssize_t old_capacity = s->capacity;
    s->entries = entries;
    s->capacity = capacity;
    for (Py_ssize_t i = 0; i < old_capacity; i++)
        if (!EMPTY(old[i]))
            s->entries[find_slot(s, old[i].price)] = old[i];
    PyMem_Free(old);
    return 0;
}

/* Remove the entry at slot i (backward-shift deletion keeps probe chains unbroken). */
static void remove_slot(Side *s, Py_ssize_t i) {
    Py_ssize_t mask = s->capacity - 1;
    Py_ssize_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (EMPTY(s->entries[j]))
            break;
        Py_ssize_t home = (Py_ssize_t)(hash_price(s->entries[j].price) & (uint64_t)mask);
        /* move j back to i unless its home lies cyclically in (i, j] */
        int stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            s->entries[i] = s->entries[j];
            i = j;
        }
    }
    s->entries[i].price = NAN;
    s->count--;
}

static int reserve_keys(Side *s, Py_ssize_t needed) {
    if (needed <= s->keys_capacity)
        return 0;
    Py_ssize_t capacity = s->keys_capacity ? s->keys_capacity : 64;
    while (capacity < needed)
        capacity *= 2;
    double *keys = PyMem_Realloc(s->keys, capacity * sizeof(double));
    if (!keys) {
        PyErr_NoMemory();
        return -1;
    }
    s->keys = keys;
    s->keys_capacity = capacity;
    return 0;
}

/* First index whose key is >= key (bisect_left). */
static Py_ssize_t bisect_left(const double *keys, Py_ssize_t n, double key) {
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (keys[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Reorder keys[0:n] so that its k smallest come first (in any order); Hoare's selection. */
static void select_smallest(double *keys, Py_ssize_t n, Py_ssize_t k) {
    Py_ssize_t lo = 0, hi = n - 1;
    while (lo < hi) {
        double a = keys[lo], b = keys[(lo + hi) / 2], c = keys[hi];
        double pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        Py_ssize_t i = lo, j = hi;
        while (i <= j) {
            while (keys[i] < pivot) i++;
            while (keys[j] > pivot) j--;
            if (i <= j) {
                double t = keys[i];
                keys[i] = keys[j];
                keys[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            return;
    }
}

/* The window again from every level: the best 2 * window. */
static int rebuild(Side *s) {
    Py_ssize_t keep = 2 * s->window;
    if (reserve_keys(s, s->count > keep ? s->count : keep) < 0)
        return -1;
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < s->capacity; i++)
        if (!EMPTY(s->entries[i]))
            s->keys[n++] = s->sign * s->entries[i].price;
    if (n > keep)
        select_smallest(s->keys, n, keep);
    qsort(s->keys, (size_t)(n < keep ? n : keep), sizeof(double), compare_doubles);
    if (n <= keep) {
        s->nkeys = n;
        s->limit = INFINITY;
    } else {
        s->nkeys = keep;
        s->limit = s->keys[keep - 1];
    }
    return 0;
}

static const double POWERS_OF_TEN[] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

/* "[-]digits[.digits]" with at most 15 digits in all: the exact double, as float() gives it.
 * The digits as an integer (< 2^53) and 10^decimals (<= 10^22) are both exact doubles, and one
 * IEEE division rounds correctly (Clinger's fast path, which strtod itself takes for such
 * strings). Returns 0 for anything else, which then goes through PyOS_string_to_double. */
static int decimal_fast_path(const char *text, Py_ssize_t length, double *out) {
    const char *p = text, *end = text + length;
    int negative = 0, digits = 0, decimals = 0, seen_point = 0;
    uint64_t mantissa = 0;
    if (p < end && *p == '-') {
        negative = 1;
        p++;
    }
    for (; p < end; p++) {
        char c = *p;
        if (c >= '0' && c <= '9') {
            if (++digits > 15)
                return 0;
            mantissa = mantissa * 10 + (uint64_t)(c - '0');
            decimals += seen_point;
        } else if (c == '.' && !seen_point) {
            seen_point = 1;
        } else {
            return 0;
        }
    }
    if (digits == 0)
        return 0;
    double value = (double)mantissa / POWERS_OF_TEN[decimals];
    *out = negative ? -value : value;
    return 1;
}

/* float(obj), with the common cases (a float, an ASCII number string) without a Python call. */
static int to_double(PyObject *obj, double *out) {
    if (PyFloat_CheckExact(obj)) {
        *out = PyFloat_AS_DOUBLE(obj);
        return 0;
    }
    if (PyUnicode_CheckExact(obj) && PyUnicode_IS_ASCII(obj)) {
        Py_ssize_t length;
        const char *text = PyUnicode_AsUTF8AndSize(obj, &length);
        if (text != NULL && decimal_fast_path(text, length, out))
            return 0;
        if (text != NULL && length > 0) {
            char *end = NULL;
            double value = PyOS_string_to_double(text, &end, NULL);
            if (value == -1.0 && PyErr_Occurred())
                PyErr_Clear();                  /* float() below decides and raises */
            else if (end == text + length) {
                *out = value;
                return 0;
            }
        }
    }
    PyObject *number = PyNumber_Float(obj);   /* whitespace, underscores, ints, errors: as float() */
    if (number == NULL)
        return -1;
    *out = PyFloat_AS_DOUBLE(number);
    Py_DECREF(number);
    return 0;
}

static int level_values(PyObject *level, double *price, double *size) {
    PyObject *p, *q;
    if (PyList_CheckExact(level) && PyList_GET_SIZE(level) >= 2) {
        p = PyList_GET_ITEM(level, 0);
        q = PyList_GET_ITEM(level, 1);
        if (to_double(p, price) < 0 || to_double(q, size) < 0)
            return -1;
        return 0;
    }
    p = PySequence_GetItem(level, 0);
    if (p == NULL)
        return -1;
    q = PySequence_GetItem(level, 1);
    if (q == NULL) {
        Py_DECREF(p);
        return -1;
    }
    int rc = (to_double(p, price) < 0 || to_double(q, size) < 0) ? -1 : 0;
    Py_DECREF(p);
    Py_DECREF(q);
    return rc;
}

static int set_level(Side *s, double price, double size) {
    if (size != 0.0) {
        if (!isfinite(price)) {
            PyErr_SetString(PyExc_ValueError, "a price is not a finite number");
            return -1;
        }
        if ((s->count + 1) * 2 > s->capacity && allocate_map(s, s->capacity * 2) < 0)
            return -1;
        Py_ssize_t slot = find_slot(s, price);
        if (EMPTY(s->entries[slot])) {
            double key = s->sign * price;
            if (key <= s->limit) {
                if (reserve_keys(s, s->nkeys + 1) < 0)
                    return -1;
                Py_ssize_t at = bisect_left(s->keys, s->nkeys, key);
                memmove(s->keys + at + 1, s->keys + at, (size_t)(s->nkeys - at) * sizeof(double));
                s->keys[at] = key;
                s->nkeys++;
            }
            s->entries[slot].price = price;
            s->count++;
        }
        s->entries[slot].size = size;
    } else {
        if (isnan(price))
            return 0;                         /* never stored, so nothing to remove */
        Py_ssize_t slot = find_slot(s, price);
        if (!EMPTY(s->entries[slot])) {
            remove_slot(s, slot);
            double key = s->sign * price;
            if (key <= s->limit) {
                Py_ssize_t at = bisect_left(s->keys, s->nkeys, key);
                memmove(s->keys + at, s->keys + at + 1, (size_t)(s->nkeys - at - 1) * sizeof(double));
                s->nkeys--;
            }
        }
    }
    return 0;
}

static int settle_window(Side *s) {
    if (s->nkeys > 4 * s->window) {
        s->nkeys = 2 * s->window;
        s->limit = s->keys[s->nkeys - 1];
    } else if (s->nkeys < s->window && s->limit != INFINITY) {
        return rebuild(s);
    }
    return 0;
}

static PyObject *Side_apply(Side *s, PyObject *levels) {
    PyObject *fast = PySequence_Fast(levels, "levels must be an iterable of [price, size] pairs");
    if (fast == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    int rc = 0;
    for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
        double price, size;
        rc = level_values(items[i], &price, &size);   /* on an error the levels before stay set */
        if (rc == 0)
            rc = set_level(s, price, size);
    }
    Py_DECREF(fast);
    if (settle_window(s) < 0 || rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Side_set(Side *s, PyObject *args) {
    double price, size;
    if (!PyArg_ParseTuple(args, "dd", &price, &size))
        return NULL;
    if (set_level(s, price, size) < 0 || settle_window(s) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Side_top(Side *s, PyObject *arg) {
    Py_ssize_t n = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0)
        n = 0;
    if (n > s->window) {                      /* a caller wants more levels than the window keeps */
        s->window = n;
        if (rebuild(s) < 0)
            return NULL;
    }
    Py_ssize_t k = n < s->nkeys ? n : s->nkeys;
    PyObject *prices = PyList_New(k), *sizes = PyList_New(k);
    if (prices == NULL || sizes == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < k; i++) {
        double price = s->sign * s->keys[i];
        Py_ssize_t slot = find_slot(s, price);
        PyObject *p = PyFloat_FromDouble(price), *q = PyFloat_FromDouble(s->entries[slot].size);
        if (p == NULL || q == NULL) {
            Py_XDECREF(p);
            Py_XDECREF(q);
            goto fail;
        }
        PyList_SET_ITEM(prices, i, p);
        PyList_SET_ITEM(sizes, i, q);
    }
    return Py_BuildValue("(NN)", prices, sizes);
fail:
    Py_XDECREF(prices);
    Py_XDECREF(sizes);
    return NULL;
}

/* Append ``count`` doubles to a bytearray. */
static int append_doubles(PyObject *target, const double *values, Py_ssize_t count) {
    Py_ssize_t size = PyByteArray_GET_SIZE(target);
    if (PyByteArray_Resize(target, size + count * (Py_ssize_t)sizeof(double)) < 0)
        return -1;
    memcpy(PyByteArray_AS_STRING(target) + size, values, (size_t)count * sizeof(double));
    return 0;
}

/* Append the best n levels of a side to two bytearrays as C doubles; the count, or -1. */
static Py_ssize_t top_into(Side *s, Py_ssize_t n, PyObject *prices_out, PyObject *sizes_out) {
    if (n < 0)
        n = 0;
    if (n > s->window) {
        s->window = n;
        if (rebuild(s) < 0)
            return -1;
    }
    Py_ssize_t k = n < s->nkeys ? n : s->nkeys;
    double stack_prices[64], stack_sizes[64];
    double *prices = stack_prices, *sizes = stack_sizes;
    if (k > 64) {
        prices = PyMem_Malloc(2 * k * sizeof(double));
        if (prices == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        sizes = prices + k;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        prices[i] = s->sign * s->keys[i];
        sizes[i] = s->entries[find_slot(s, prices[i])].size;
    }
    int rc = append_doubles(prices_out, prices, k);
    if (rc == 0 && append_doubles(sizes_out, sizes, k) < 0) {
        rc = -1;                              /* no half level: undo the prices */
        PyByteArray_Resize(prices_out, PyByteArray_GET_SIZE(prices_out) - k * (Py_ssize_t)sizeof(double));
    }
    if (prices != stack_prices)
        PyMem_Free(prices);
    return rc < 0 ? -1 : k;
}

static PyObject *Side_top_into(Side *s, PyObject *args) {
    Py_ssize_t n;
    PyObject *prices_out, *sizes_out;
    if (!PyArg_ParseTuple(args, "nO!O!", &n, &PyByteArray_Type, &prices_out, &PyByteArray_Type, &sizes_out))
        return NULL;
    Py_ssize_t k = top_into(s, n, prices_out, sizes_out);
    return k < 0 ? NULL : PyLong_FromSsize_t(k);
}

static PyObject *Side_best(Side *s, PyObject *Py_UNUSED(ignored)) {
    if (s->nkeys == 0)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(s->sign * s->keys[0]);
}

static PyObject *Side_clear(Side *s, PyObject *Py_UNUSED(ignored)) {
    empty_entries(s->entries, s->capacity);
    s->count = 0;
    s->nkeys = 0;
    s->limit = INFINITY;
    Py_RETURN_NONE;
}

static PyObject *Side_levels(Side *s, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < s->capacity; i++) {
        if (EMPTY(s->entries[i]))
            continue;
        PyObject *p = PyFloat_FromDouble(s->entries[i].price), *q = PyFloat_FromDouble(s->entries[i].size);
        if (p == NULL || q == NULL || PyDict_SetItem(out, p, q) < 0) {
            Py_XDECREF(p);
            Py_XDECREF(q);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(p);
        Py_DECREF(q);
    }
    return out;
}

static Py_ssize_t Side_len(Side *s) {
    return s->count;
}

static int Side_init(Side *s, PyObject *args, PyObject *kwds) {
    static char *names[] = {"sign", "window", NULL};
    int sign;
    Py_ssize_t window = 128;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|n", names, &sign, &window))
        return -1;
    if (sign != 1 && sign != -1) {
        PyErr_SetString(PyExc_ValueError, "sign must be 1 (asks) or -1 (bids)");
        return -1;
    }
    if (window < 1) {
        PyErr_SetString(PyExc_ValueError, "window must be at least 1");
        return -1;
    }
    s->sign = sign;
    s->window = window;
    s->limit = INFINITY;
    s->count = 0;
    s->nkeys = 0;
    empty_entries(s->entries, s->capacity);
    return 0;
}

static PyObject *Side_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    Side *s = (Side *)PyType_GenericNew(type, args, kwds);
    if (s == NULL)
        return NULL;
    if (allocate_map(s, 64) < 0 || reserve_keys(s, 64) < 0) {
        Py_DECREF(s);
        return NULL;
    }
    s->sign = 1;
    s->window = 128;
    s->limit = INFINITY;
    return (PyObject *)s;
}

static void Side_dealloc(Side *s) {
    PyMem_Free(s->entries);
    PyMem_Free(s->keys);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyMethodDef Side_methods[] = {
    {"apply", (PyCFunction)Side_apply, METH_O,
     "apply(levels): set [[price, size], ...] levels (strings or numbers); size 0 removes a level"},
    {"set", (PyCFunction)Side_set, METH_VARARGS, "set(price, size): one level"},
    {"top", (PyCFunction)Side_top, METH_O, "top(n) -> (prices, sizes) of the best n levels, best first"},
    {"top_into", (PyCFunction)Side_top_into, METH_VARARGS,
     "top_into(n, prices, sizes) -> count: append the best n levels to two bytearrays as C doubles"},
    {"best", (PyCFunction)Side_best, METH_NOARGS, "the best price, or None"},
    {"clear", (PyCFunction)Side_clear, METH_NOARGS, "remove every level"},
    {"levels", (PyCFunction)Side_levels, METH_NOARGS, "every level as a dict price -> size"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Side_members[] = {
    {"sign", T_INT, offsetof(Side, sign), READONLY, "+1 asks, -1 bids"},
    {"window", T_PYSSIZET, offsetof(Side, window), READONLY, "levels the sorted window keeps at least"},
    {"limit", T_DOUBLE, offsetof(Side, limit), READONLY, "the worst key the window holds every level up to"},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods Side_as_sequence = {
    .sq_length = (lenfunc)Side_len,
};

static PyTypeObject SideType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "actors.feed._book.Side",
    .tp_doc = "One side of an order book (compiled; see actors/feed/book.py)",
    .tp_basicsize = sizeof(Side),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Side_new,
    .tp_init = (initproc)Side_init,
    .tp_dealloc = (destructor)Side_dealloc,
    .tp_methods = Side_methods,
    .tp_members = Side_members,
    .tp_as_sequence = &Side_as_sequence,
};

/* apply_top(bids, asks, bid_levels, ask_levels, depth, bid_px, bid_sz, ask_px, ask_sz) -> bool: the same
 * as book.py's pure-Python apply_top (bids.apply, asks.apply; False, nothing appended, when the book is
 * then crossed; else the best ``depth`` levels of each side appended by top_into), in one call. */
static PyObject *book_apply_top(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "apply_top takes 9 arguments");
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], &SideType) || !PyObject_TypeCheck(args[1], &SideType)) {
        PyErr_SetString(PyExc_TypeError, "apply_top: bids and asks must be compiled Sides");
        return NULL;
    }
    for (int i = 5; i < 9; i++)
        if (!PyByteArray_Check(args[i])) {
            PyErr_SetString(PyExc_TypeError, "apply_top: the level columns must be bytearrays");
            return NULL;
        }
    Side *bids = (Side *)args[0], *asks = (Side *)args[1];
    Py_ssize_t depth = PyNumber_AsSsize_t(args[4], PyExc_OverflowError);
    if (depth == -1 && PyErr_Occurred())
        return NULL;
    PyObject *rc = Side_apply(bids, args[2]);
    if (rc == NULL)
        return NULL;
    Py_DECREF(rc);
    rc = Side_apply(asks, args[3]);
    if (rc == NULL)
        return NULL;
    Py_DECREF(rc);
    if (bids->nkeys && asks->nkeys && bids->sign * bids->keys[0] >= asks->sign * asks->keys[0])
        Py_RETURN_FALSE;                      /* crossed: the caller writes the event, no row */
    Py_ssize_t bid_end = PyByteArray_GET_SIZE(args[5]), bsz_end = PyByteArray_GET_SIZE(args[6]);
    if (top_into(bids, depth, args[5], args[6]) < 0)
        return NULL;
    if (top_into(asks, depth, args[7], args[8]) < 0) {
        PyByteArray_Resize(args[5], bid_end);    /* no half row */
        PyByteArray_Resize(args[6], bsz_end);
        return NULL;
    }
    Py_RETURN_TRUE;
}

static PyMethodDef book_functions[] = {
    {"apply_top", (PyCFunction)(void (*)(void))book_apply_top, METH_FASTCALL,
     "apply_top(bids, asks, bid_levels, ask_levels, depth, bid_px, bid_sz, ask_px, ask_sz) -> bool"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef book_module = {
    PyModuleDef_HEAD_INIT, "_book", "Compiled order-book side (see actors/feed/book.py).", -1, book_functions,
};

PyMODINIT_FUNC PyInit__book(void) {
    if (PyType_Ready(&SideType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&book_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&SideType);
    if (PyModule_AddObject(module, "Side", (PyObject *)&SideType) < 0) {
        Py_DECREF(&SideType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
