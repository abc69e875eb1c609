/*
 * parse_prefixes: a run of UAPI "allowed_ip=ADDRESS/LENGTH\n" lines (what `wg setconf` sends
 * in hundreds of thousands) read into runs of integers in one call. The contract and the pure
 * twin are wgpy.batch.pure_parse_prefixes; the addresses are read by the C library's
 * inet_pton, the very function behind Python's socket.inet_pton that the twin calls.
 *
 * It decides nothing: it stops at the first line that is not a well-formed prefix and leaves
 * it to wgpy.uapi's exact path, which accepts it or reports go's error for it.
 */
#include "_batch.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#define LINE_KEY "allowed_ip="
#define LINE_KEY_LEN 11
/* the run's pattern allows at most 64 address characters */
#define ADDRESS_MAX 64

const char wgpy_batch_parse_prefixes_doc[] =
    "parse_prefixes(run, start)\n"
    "--\n\n"
    "The allowed_ip lines of ``run`` from byte ``start`` on, as runs of (version, length,\n"
    "addresses), up to the first that is not a well-formed prefix (see\n"
    "wgpy.batch.pure_parse_prefixes).";

/* The integer of a 4- or 16-byte network-order address. */
static PyObject *address_number(const unsigned char *bytes, int size)
{
    if (size == 4)
        return PyLong_FromUnsignedLong((unsigned long)bytes[0] << 24 |
                                       (unsigned long)bytes[1] << 16 |
                                       (unsigned long)bytes[2] << 8 | bytes[3]);
    return _PyLong_FromByteArray(bytes, 16, 0, 0);
}

PyObject *wgpy_batch_parse_prefixes(PyObject *Py_UNUSED(module), PyObject *args,
                                    PyObject *kwargs)
{
    static char *keywords[] = {"run", "start", NULL};
    Py_buffer run;
    Py_ssize_t start;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "y*n", keywords, &run, &start))
        return NULL;
    PyObject *runs = PyList_New(0), *current = NULL, *answer = NULL;
    if (runs == NULL)
        goto done;
    if (start < 0 || start > run.len) {
        PyErr_SetString(PyExc_IndexError, "start is outside the run");
        goto done;
    }
    const char *text = (const char *)run.buf;
    Py_ssize_t at = start, count = 0;
    int run_version = -1;
    long run_length = -1;
    while (at < run.len) {
        const char *line = text + at;
        const char *end = memchr(line, '\n', (size_t)(run.len - at));
        if (end == NULL || end - line < LINE_KEY_LEN || memcmp(line, LINE_KEY, LINE_KEY_LEN))
            break;
        const char *address = line + LINE_KEY_LEN;
        const char *slash = memchr(address, '/', (size_t)(end - address));
        if (slash == NULL || slash == address || slash - address > ADDRESS_MAX || slash + 1 == end ||
            end - (slash + 1) > 3)
            break;
        int address_ok = 1;
        for (const char *c = address; c < slash; c++) {
            if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f') ||
                  (*c >= 'A' && *c <= 'F') || *c == '.' || *c == ':')) {
                address_ok = 0;
                break;
            }
        }
        if (!address_ok)
            break;
        long length = 0;
        int digits_ok = 1;
        for (const char *digit = slash + 1; digit < end; digit++) {
            if (*digit < '0' || *digit > '9') {
                digits_ok = 0;
                break;
            }
            length = length * 10 + (*digit - '0');
        }
        if (!digits_ok)
            break;
        char copy[ADDRESS_MAX + 1];
        memcpy(copy, address, (size_t)(slash - address));
        copy[slash - address] = '\0';
        unsigned char bytes[16];
        int version = memchr(copy, ':', (size_t)(slash - address)) ? 6 : 4;
        if (length > (version == 6 ? 128 : 32))
            break;
        if (inet_pton(version == 6 ? AF_INET6 : AF_INET, copy, bytes) != 1)
            break;
        if (version != run_version || length != run_length) {
            Py_XDECREF(current);
            current = PyList_New(0);
            PyObject *entry = current == NULL ? NULL : Py_BuildValue("(ilO)", version, length, current);
            if (entry == NULL || PyList_Append(runs, entry) < 0) {
                Py_XDECREF(entry);
                goto done;
            }
            Py_DECREF(entry);
            run_version = version;
            run_length = length;
        }
        PyObject *number = address_number(bytes, version == 6 ? 16 : 4);
        if (number == NULL || PyList_Append(current, number) < 0) {
            Py_XDECREF(number);
            goto done;
        }
        Py_DECREF(number);
        count++;
        at = end - text + 1;
    }
    answer = Py_BuildValue("(nnO)", at, count, runs);

done:
    Py_XDECREF(current);
    Py_XDECREF(runs);
    PyBuffer_Release(&run);
    return answer;
}
