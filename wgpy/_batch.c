/*
 * wgpy._batch: the per-byte work of WireGuard data messages over a whole batch, with the GIL
 * released for the batch. Every decision (peer, counter, replay, timers, drops) stays in
 * Python; wgpy/batch.py holds the pure-Python twin of each call and documents the contract.
 *
 * The AEAD is OpenSSL's ChaCha20-Poly1305 (EVP, libcrypto); nothing cryptographic is written
 * here. A data message is: type 4 (little-endian 32 bits), the receiver index (LE32), the
 * counter (LE64), the padded plaintext encrypted with the nonce 4 zero bytes || LE64(counter),
 * and the 16-byte tag.
 */
#include "_batch.h"

PyDoc_STRVAR(seal_run_doc,
             "seal_run(key, receiver, counter, packets, mtu, limits=None)\n"
             "--\n\n"
             "Data messages for ``packets`` (see wgpy.batch.pure_seal_run).");

static PyObject *seal_run(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"key", "receiver", "counter", "packets", "mtu", "limits", NULL};
    PyObject *key_object, *packets_object, *limits_object = Py_None;
    unsigned long long receiver_value, counter_value;
    Py_ssize_t mtu;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OKKOn|O", keywords, &key_object,
                                     &receiver_value, &counter_value, &packets_object, &mtu,
                                     &limits_object))
        return NULL;
    if (receiver_value > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "the receiver index is a 32-bit number");
        return NULL;
    }
    uint32_t receiver = (uint32_t)receiver_value;
    uint64_t counter = (uint64_t)counter_value;

    Py_buffer key;
    if (get_key(key_object, &key) < 0)
        return NULL;
    PyObject *packets = PySequence_Fast(packets_object, "packets must be a sequence");
    PyObject *limits = NULL;
    PyObject *runs = NULL, *singles = NULL, *result = NULL;
    Py_buffer *views = NULL;
    Py_ssize_t *lengths = NULL;
    unsigned char **dests = NULL;
    Py_ssize_t held = 0, sent = 0;
    if (packets == NULL)
        goto done;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(packets);
    if (limits_object != Py_None) {
        limits = PySequence_Fast(limits_object, "limits must be a sequence or None");
        if (limits == NULL)
            goto done;
        if (PySequence_Fast_GET_SIZE(limits) != count) {
            PyErr_SetString(PyExc_ValueError, "one limit per packet");
            goto done;
        }
    }
    if ((uint64_t)count > UINT64_MAX - counter) {
        PyErr_SetString(PyExc_OverflowError, "the counters would wrap");
        goto done;
    }
    views = PyMem_Calloc((size_t)count + 1, sizeof(Py_buffer));
    lengths = PyMem_Calloc((size_t)count + 1, sizeof(Py_ssize_t));
    dests = PyMem_Calloc((size_t)count + 1, sizeof(unsigned char *));
    runs = PyList_New(0);
    singles = PyList_New(0);
    if (views == NULL || lengths == NULL || dests == NULL || runs == NULL || singles == NULL) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }

    /* With the GIL: take every packet, then lay the runs out and allocate their buffers
     * (lay_out_runs); a datagram carrying a WireGuard message goes alone to ``singles``. */
    for (Py_ssize_t i = 0; i < count; i++) {
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(packets, i), &views[i], PyBUF_SIMPLE) < 0)
            goto done;
        held = i + 1;
        Py_ssize_t size = views[i].len;
        Py_ssize_t limit = mtu;
        if (limits != NULL) {
            limit = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(limits, i));
            if (limit == -1 && PyErr_Occurred())
                goto done;
        }
        if (size > MAX_PLAINTEXT) {
            PyErr_SetString(PyExc_ValueError, "a packet is too large");
            goto done;
        }
        lengths[i] = padded_length(size, limit) + OVERHEAD;
        if (size >= NESTED_CHECK_MIN &&
            carries_wireguard((const unsigned char *)views[i].buf, size)) {
            PyObject *single = PyBytes_FromStringAndSize(NULL, lengths[i]);
            if (single == NULL)
                goto done;
            int failed = PyList_Append(singles, single);
            dests[i] = (unsigned char *)PyBytes_AS_STRING(single);
            Py_DECREF(single);
            if (failed < 0)
                goto done;
            sent += lengths[i];
        }
    }
    if (lay_out_runs(lengths, dests, count, runs, &sent) < 0)
        goto done;

    /* Without the GIL: headers, plaintexts, padding, encryption, tags. */
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    EVP_CIPHER_CTX *ctx = new_context((const unsigned char *)key.buf, 1);
    ok = ctx != NULL;
    for (Py_ssize_t i = 0; ok && i < count; i++) {
        unsigned char *dest = dests[i];
        Py_ssize_t size = views[i].len, padded = lengths[i] - OVERHEAD;
        put_le32(dest, 4);
        put_le32(dest + 4, receiver);
        put_le64(dest + 8, counter + (uint64_t)i);
        if (size)
            memcpy(dest + HEADER_LEN, views[i].buf, (size_t)size);
        memset(dest + HEADER_LEN + size, 0, (size_t)(padded - size));
        ok = seal(ctx, counter + (uint64_t)i, dest + HEADER_LEN, (int)padded);
    }
    EVP_CIPHER_CTX_free(ctx);
    Py_END_ALLOW_THREADS
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to seal");
        goto done;
    }
    result = Py_BuildValue("(OOn)", runs, singles, sent);

done:
    release_all(views, held);
    PyMem_Free(views);
    PyMem_Free(lengths);
    PyMem_Free(dests);
    Py_XDECREF(runs);
    Py_XDECREF(singles);
    Py_XDECREF(limits);
    Py_XDECREF(packets);
    PyBuffer_Release(&key);
    return result;
}

PyDoc_STRVAR(open_batch_doc,
             "open_batch(key, datagrams, receiver=-1, limit=2**64-1)\n"
             "--\n\n"
             "Counters and plaintexts (or statuses) of ``datagrams`` (see "
             "wgpy.batch.pure_open_batch).");

static PyObject *open_batch(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"key", "datagrams", "receiver", "limit", NULL};
    PyObject *key_object, *datagrams_object;
    long long receiver = -1;
    unsigned long long limit = UINT64_MAX;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|LK", keywords, &key_object,
                                     &datagrams_object, &receiver, &limit))
        return NULL;
    Py_buffer key;
    if (get_key(key_object, &key) < 0)
        return NULL;
    PyObject *datagrams = PySequence_Fast(datagrams_object, "datagrams must be a sequence");
    PyObject *counters = NULL, *results = NULL, *answer = NULL;
    Py_buffer *views = NULL;
    int *status = NULL;
    Py_ssize_t held = 0;
    if (datagrams == NULL)
        goto done;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(datagrams);
    views = PyMem_Calloc((size_t)count + 1, sizeof(Py_buffer));
    status = PyMem_Calloc((size_t)count + 1, sizeof(int));
    counters = PyList_New(0);
    results = PyList_New(0);
    if (views == NULL || status == NULL || counters == NULL || results == NULL) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }

    /* With the GIL: headers checked, plaintext buffers allocated; the batch ends with the
     * first datagram that is short or not a data message for ``receiver`` below ``limit``. */
    Py_ssize_t taken = 0;
    while (taken < count) {
        Py_ssize_t i = taken++;
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(datagrams, i), &views[i],
                               PyBUF_SIMPLE) < 0)
            goto done;
        held = i + 1;
        const unsigned char *data = (const unsigned char *)views[i].buf;
        uint64_t counter = 0;
        PyObject *plaintext = NULL;
        if (views[i].len < OVERHEAD) {
            status[i] = STATUS_SHORT;
        } else {
            counter = get_le64(data + 8);
            if (get_le32(data) != 4 || (receiver >= 0 && get_le32(data + 4) != receiver) ||
                counter >= limit || views[i].len - OVERHEAD > MAX_PLAINTEXT) {
                status[i] = STATUS_FOREIGN;
            } else {
                plaintext = PyBytes_FromStringAndSize(NULL, views[i].len - OVERHEAD);
                if (plaintext == NULL)
                    goto done;
            }
        }
        PyObject *number = PyLong_FromUnsignedLongLong(counter);
        if (number == NULL || PyList_Append(counters, number) < 0) {
            Py_XDECREF(number);
            Py_XDECREF(plaintext);
            goto done;
        }
        Py_DECREF(number);
        if (plaintext == NULL) {
            PyObject *code = PyLong_FromLong(status[i]);
            if (code == NULL || PyList_Append(results, code) < 0) {
                Py_XDECREF(code);
                goto done;
            }
            Py_DECREF(code);
            break;
        }
        int failed = PyList_Append(results, plaintext);
        Py_DECREF(plaintext);
        if (failed < 0)
            goto done;
    }

    /* Without the GIL: each candidate opened into its plaintext buffer. */
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    EVP_CIPHER_CTX *ctx = new_context((const unsigned char *)key.buf, 0);
    ok = ctx != NULL;
    for (Py_ssize_t i = 0; ok && i < taken; i++) {
        if (status[i] != STATUS_OK)
            continue;
        const unsigned char *data = (const unsigned char *)views[i].buf;
        PyObject *plaintext = PyList_GET_ITEM(results, i);
        if (!open_one(ctx, get_le64(data + 8), data + HEADER_LEN,
                      (int)(views[i].len - OVERHEAD),
                      (unsigned char *)PyBytes_AS_STRING(plaintext)))
            status[i] = STATUS_BAD_TAG;
    }
    EVP_CIPHER_CTX_free(ctx);
    Py_END_ALLOW_THREADS
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to open");
        goto done;
    }
    for (Py_ssize_t i = 0; i < taken; i++) {
        if (status[i] != STATUS_BAD_TAG)
            continue;
        PyObject *code = PyLong_FromLong(STATUS_BAD_TAG);
        if (code == NULL || PyList_SetItem(results, i, code) < 0)
            goto done;
    }
    answer = PyTuple_Pack(2, counters, results);

done:
    release_all(views, held);
    PyMem_Free(views);
    PyMem_Free(status);
    Py_XDECREF(counters);
    Py_XDECREF(results);
    Py_XDECREF(datagrams);
    PyBuffer_Release(&key);
    return answer;
}

static PyMethodDef methods[] = {
    {"seal_run", (PyCFunction)(void (*)(void))seal_run, METH_VARARGS | METH_KEYWORDS,
     seal_run_doc},
    {"open_batch", (PyCFunction)(void (*)(void))open_batch, METH_VARARGS | METH_KEYWORDS,
     open_batch_doc},
    {"open_run", (PyCFunction)(void (*)(void))wgpy_batch_open_run, METH_VARARGS | METH_KEYWORDS,
     wgpy_batch_open_run_doc},
    {"seal_super", (PyCFunction)(void (*)(void))wgpy_batch_seal_super,
     METH_VARARGS | METH_KEYWORDS, wgpy_batch_seal_super_doc},
    {"coalesce", (PyCFunction)(void (*)(void))wgpy_batch_coalesce, METH_VARARGS | METH_KEYWORDS,
     wgpy_batch_coalesce_doc},
    {"parse_prefixes", (PyCFunction)(void (*)(void))wgpy_batch_parse_prefixes,
     METH_VARARGS | METH_KEYWORDS, wgpy_batch_parse_prefixes_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT,
    .m_name = "wgpy._batch",
    .m_doc = "WireGuard data messages over a whole batch, GIL released (see wgpy.batch).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__batch(void)
{
    PyObject *module = PyModule_Create(&module_definition);
    if (module == NULL)
        return NULL;
    if (PyModule_AddIntConstant(module, "OK", STATUS_OK) < 0 ||
        PyModule_AddIntConstant(module, "SHORT", STATUS_SHORT) < 0 ||
        PyModule_AddIntConstant(module, "BAD_TAG", STATUS_BAD_TAG) < 0 ||
        PyModule_AddIntConstant(module, "FOREIGN", STATUS_FOREIGN) < 0 ||
        PyModule_AddStringConstant(module, "OPENSSL_VERSION",
                                   OpenSSL_version(OPENSSL_VERSION)) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
