/*
 * open_run: the data messages of a UDP GRO read that follow one which took the full path,
 * opened, checked against the replay window and trimmed to their IP length in one call.
 * The contract and the pure twin are wgpy.batch.pure_open_run; the replay rules are
 * wgpy.replay.ReplayWindow.accept's (the kernel's), applied to the window's own bitmap.
 *
 * The run stops at the first datagram that is anything but the common case (short, a
 * keepalive, not for ``receiver`` below ``limit``, not authentic, not a well-formed IP
 * packet, refused by the window): that one is left untouched for the caller's full path.
 */
#include "_batch.h"

/* wgpy.replay: 8192 bits in 64-bit words; the usable window is 8192 - 64 counters */
#define REPLAY_BITS 8192
#define REPLAY_BYTES (REPLAY_BITS / 8)
#define REPLAY_WORD_BYTES 8
#define REPLAY_WORDS (REPLAY_BITS / 64)
#define REPLAY_WINDOW (REPLAY_BITS - 64)
/* REJECT_AFTER_MESSAGES: 2**64 - 1 - WINDOW - 1 */
#define REJECT_AFTER_MESSAGES (UINT64_MAX - REPLAY_WINDOW - 1)

/* ReplayWindow.accept on ``bits`` (REPLAY_BYTES) and ``*top``: 1 if accepted (and recorded). */
static int replay_accept(unsigned char *bits, uint64_t *top, uint64_t counter)
{
    if (counter >= REJECT_AFTER_MESSAGES)
        return 0;
    uint64_t m = counter + 1;
    if (m + REPLAY_WINDOW < *top)
        return 0;
    if (m > *top) {
        uint64_t current_word = *top >> 6, new_word = m >> 6;
        uint64_t words = new_word - current_word;
        if (words >= REPLAY_WORDS) {
            memset(bits, 0, REPLAY_BYTES);
        } else {
            for (uint64_t i = 1; i <= words; i++) {
                size_t word = (size_t)((current_word + i) & (REPLAY_WORDS - 1));
                memset(bits + word * REPLAY_WORD_BYTES, 0, REPLAY_WORD_BYTES);
            }
        }
        *top = m;
    }
    size_t index = (size_t)((m >> 3) & (REPLAY_BYTES - 1));
    unsigned char mask = (unsigned char)(1u << (m & 7));
    if (bits[index] & mask)
        return 0;
    bits[index] |= mask;
    return 1;
}

/* The IP length of a plaintext that is a well-formed IPv4 or IPv6 packet (what
 * wgpy.device.receive's _deliver accepts), and where its source address is; 0 if it is not. */
static Py_ssize_t ip_shape(const unsigned char *packet, Py_ssize_t size, Py_ssize_t *source,
                           Py_ssize_t *source_len)
{
    if (size < 1)
        return 0;
    int version = packet[0] >> 4;
    if (version == 4 && size >= 20) {
        Py_ssize_t length = (Py_ssize_t)packet[2] << 8 | packet[3];
        if (length < 20 || length > size)
            return 0;
        *source = 12;
        *source_len = 4;
        return length;
    }
    if (version == 6 && size >= 40) {
        Py_ssize_t length = 40 + ((Py_ssize_t)packet[4] << 8 | packet[5]);
        if (length > size)
            return 0;
        *source = 8;
        *source_len = 16;
        return length;
    }
    return 0;
}

/* A wgpy.batch.Segments (one GRO read: ``data`` cut every ``size`` bytes): its buffer and
 * segment size, read without making an object per datagram. 0 and *segment = 0 for anything
 * else (taken as a sequence of buffers); -1 with an exception set on a bad Segments. */
static int get_segments(PyObject *object, Py_buffer *whole, Py_ssize_t *segment)
{
    *segment = 0;
    if (PyList_CheckExact(object) || PyTuple_CheckExact(object))
        return 0;
    PyObject *type_name = PyType_GetName(Py_TYPE(object));
    PyObject *module = type_name == NULL
                           ? NULL
                           : PyObject_GetAttrString((PyObject *)Py_TYPE(object), "__module__");
    if (module == NULL) {
        Py_XDECREF(type_name);
        return -1;
    }
    int is_segments = PyUnicode_Check(module) &&
                      PyUnicode_CompareWithASCIIString(type_name, "Segments") == 0 &&
                      PyUnicode_CompareWithASCIIString(module, "wgpy.batch") == 0;
    Py_DECREF(type_name);
    Py_DECREF(module);
    if (!is_segments)
        return 0;
    PyObject *data = PyObject_GetAttrString(object, "data");
    PyObject *size = data == NULL ? NULL : PyObject_GetAttrString(object, "size");
    Py_ssize_t value = size == NULL ? -1 : PyLong_AsSsize_t(size);
    int failed = size == NULL || (value == -1 && PyErr_Occurred());
    if (!failed && value <= 0) {
        PyErr_SetString(PyExc_ValueError, "the segment size must be positive");
        failed = 1;
    }
    if (!failed && PyObject_GetBuffer(data, whole, PyBUF_SIMPLE) < 0)
        failed = 1;
    Py_XDECREF(data);
    Py_XDECREF(size);
    if (failed)
        return -1;
    *segment = value;
    return 0;
}

const char wgpy_batch_open_run_doc[] =
    "open_run(key, datagrams, start, receiver, limit, window)\n"
    "--\n\n"
    "The data messages from ``datagrams[start]`` on, opened, replay-checked and trimmed, up\n"
    "to the first that is not the common case (see wgpy.batch.pure_open_run).";

PyObject *wgpy_batch_open_run(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"key", "datagrams", "start", "receiver", "limit", "window", NULL};
    PyObject *key_object, *datagrams_object, *window;
    Py_ssize_t start;
    unsigned long receiver;
    unsigned long long limit;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOnkKO", keywords, &key_object,
                                     &datagrams_object, &start, &receiver, &limit, &window))
        return NULL;
    if (receiver > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "the receiver index is a 32-bit number");
        return NULL;
    }
    Py_buffer key;
    if (get_key(key_object, &key) < 0)
        return NULL;
    PyObject *datagrams = NULL, *bits_object = NULL, *top_object = NULL, *packets = NULL;
    PyObject *sources = NULL, *answer = NULL;
    Py_buffer bits = {0}, whole = {0};
    Py_buffer *views = NULL;
    const unsigned char **data = NULL;
    Py_ssize_t *sizes = NULL;
    PyObject **plaintexts = NULL;
    int *authentic = NULL;
    Py_ssize_t held = 0, taken = 0, count = 0, segment = 0;
    if (get_segments(datagrams_object, &whole, &segment) < 0)
        goto done;
    if (segment > 0) {
        count = whole.len ? (whole.len - 1) / segment + 1 : 0;
    } else {
        datagrams = PySequence_Fast(datagrams_object, "datagrams must be a sequence");
        if (datagrams == NULL)
            goto done;
        count = PySequence_Fast_GET_SIZE(datagrams);
    }
    if (start < 0 || start > count) {
        PyErr_SetString(PyExc_IndexError, "start is outside the datagrams");
        goto done;
    }
    bits_object = PyObject_GetAttrString(window, "_bits");
    top_object = bits_object == NULL ? NULL : PyObject_GetAttrString(window, "_top");
    if (top_object == NULL)
        goto done;
    if (PyObject_GetBuffer(bits_object, &bits, PyBUF_WRITABLE) < 0)
        goto done;
    if (bits.len != REPLAY_BYTES) {
        PyBuffer_Release(&bits);
        bits.obj = NULL;
        PyErr_SetString(PyExc_ValueError, "the window's bitmap must be 1024 bytes");
        goto done;
    }
    uint64_t top = PyLong_AsUnsignedLongLong(top_object);
    if (top == (uint64_t)-1 && PyErr_Occurred())
        goto done;
    uint64_t top_before = top;

    Py_ssize_t room = count - start;
    views = PyMem_Calloc((size_t)room + 1, sizeof(Py_buffer));
    data = PyMem_Calloc((size_t)room + 1, sizeof(const unsigned char *));
    sizes = PyMem_Calloc((size_t)room + 1, sizeof(Py_ssize_t));
    plaintexts = PyMem_Calloc((size_t)room + 1, sizeof(PyObject *));
    authentic = PyMem_Calloc((size_t)room + 1, sizeof(int));
    packets = PyList_New(0);
    sources = PyList_New(0);
    if (views == NULL || data == NULL || sizes == NULL || plaintexts == NULL ||
        authentic == NULL || packets == NULL || sources == NULL) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }

    /* With the GIL: the headers checked and a plaintext buffer made for each candidate, up
     * to the first datagram that is short, a keepalive, or not a data message for
     * ``receiver`` with a counter below ``limit``. */
    while (taken < room) {
        Py_ssize_t i = taken;
        if (segment > 0) {
            Py_ssize_t offset = (start + i) * segment;
            data[i] = (const unsigned char *)whole.buf + offset;
            sizes[i] = whole.len - offset < segment ? whole.len - offset : segment;
        } else {
            if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(datagrams, start + i), &views[i],
                                   PyBUF_SIMPLE) < 0)
                goto done;
            held = i + 1;
            data[i] = (const unsigned char *)views[i].buf;
            sizes[i] = views[i].len;
        }
        const unsigned char *datagram = data[i];
        Py_ssize_t size = sizes[i];
        if (size <= OVERHEAD || size - OVERHEAD > MAX_PLAINTEXT || get_le32(datagram) != 4 ||
            get_le32(datagram + 4) != receiver || get_le64(datagram + 8) >= limit)
            break;
        plaintexts[i] = PyBytes_FromStringAndSize(NULL, size - OVERHEAD);
        if (plaintexts[i] == NULL)
            goto done;
        taken++;
    }

    /* Without the GIL: each candidate opened, up to the first that is not authentic. */
    int ok = 1;
    Py_ssize_t opened = 0;
    Py_BEGIN_ALLOW_THREADS
    EVP_CIPHER_CTX *ctx = taken ? new_context((const unsigned char *)key.buf, 0) : NULL;
    ok = !taken || ctx != NULL;
    for (; ok && opened < taken; opened++) {
        const unsigned char *datagram = data[opened];
        if (!open_one(ctx, get_le64(datagram + 8), datagram + HEADER_LEN,
                      (int)(sizes[opened] - OVERHEAD),
                      (unsigned char *)PyBytes_AS_STRING(plaintexts[opened])))
            break;
        authentic[opened] = 1;
    }
    EVP_CIPHER_CTX_free(ctx);
    Py_END_ALLOW_THREADS
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to open");
        goto done;
    }

    /* With the GIL, in order: the IP shape, then the replay window (which records the
     * counter only for a packet that will be delivered or judged by its source). */
    unsigned long long received = 0;
    const unsigned char *last_source = NULL;
    Py_ssize_t last_source_len = 0, end = 0;
    for (; end < opened; end++) {
        if (!authentic[end])
            break;
        const unsigned char *plain = (const unsigned char *)PyBytes_AS_STRING(plaintexts[end]);
        Py_ssize_t size = PyBytes_GET_SIZE(plaintexts[end]);
        Py_ssize_t source = 0, source_len = 0;
        Py_ssize_t length = ip_shape(plain, size, &source, &source_len);
        if (!length)
            break;
        if (!replay_accept((unsigned char *)bits.buf, &top, get_le64(data[end] + 8)))
            break;
        received += (unsigned long long)sizes[end];
        if (last_source == NULL || source_len != last_source_len ||
            memcmp(plain + source, last_source, (size_t)source_len) != 0) {
            PyObject *change = Py_BuildValue("(ny#)", PyList_GET_SIZE(packets), plain + source,
                                             source_len);
            if (change == NULL || PyList_Append(sources, change) < 0) {
                Py_XDECREF(change);
                goto failed_after_accept;
            }
            Py_DECREF(change);
        }
        if (length != size && _PyBytes_Resize(&plaintexts[end], length) < 0)
            goto failed_after_accept;
        /* the resize may have moved the packet */
        plain = (const unsigned char *)PyBytes_AS_STRING(plaintexts[end]);
        last_source = plain + source;
        last_source_len = source_len;
        if (PyList_Append(packets, plaintexts[end]) < 0)
            goto failed_after_accept;
    }
    if (top != top_before) {
        PyObject *new_top = PyLong_FromUnsignedLongLong(top);
        if (new_top == NULL || PyObject_SetAttrString(window, "_top", new_top) < 0) {
            Py_XDECREF(new_top);
            goto done;
        }
        Py_DECREF(new_top);
    }
    answer = Py_BuildValue("(nOOK)", start + end, packets, sources, received);
    goto done;

failed_after_accept:
    /* out of memory after counters were recorded: keep the window consistent with them */
    if (top != top_before) {
        PyObject *error_type, *error_value, *error_traceback;
        PyErr_Fetch(&error_type, &error_value, &error_traceback);
        PyObject *new_top = PyLong_FromUnsignedLongLong(top);
        if (new_top != NULL)
            (void)PyObject_SetAttrString(window, "_top", new_top);
        Py_XDECREF(new_top);
        PyErr_Restore(error_type, error_value, error_traceback);
    }

done:
    if (plaintexts != NULL)
        for (Py_ssize_t i = 0; i < taken; i++)
            Py_XDECREF(plaintexts[i]);
    release_all(views, held);
    if (bits.obj != NULL)
        PyBuffer_Release(&bits);
    if (whole.obj != NULL)
        PyBuffer_Release(&whole);
    PyMem_Free(views);
    PyMem_Free(data);
    PyMem_Free(sizes);
    PyMem_Free(plaintexts);
    PyMem_Free(authentic);
    Py_XDECREF(bits_object);
    Py_XDECREF(top_object);
    Py_XDECREF(packets);
    Py_XDECREF(sources);
    Py_XDECREF(datagrams);
    PyBuffer_Release(&key);
    return answer;
}
