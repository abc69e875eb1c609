/*
 * What the C files of wgpy._batch share: the data message's layout, the statuses, and small
 * helpers (byte order, padding, OpenSSL's AEAD). Each wgpy/_batch*.c file is compiled into the
 * one extension module (setup.py takes them all); wgpy/_batch.c holds the module table.
 */
#ifndef WGPY_BATCH_H
#define WGPY_BATCH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <stdint.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define KEY_LEN 32
#define HEADER_LEN 16
#define TAG_LEN 16
#define OVERHEAD (HEADER_LEN + TAG_LEN)
#define RUN_MAX_DATAGRAMS 64
#define RUN_MAX_BYTES 65000
/* below this size a packet is never checked for a WireGuard message inside (576 - 60) */
#define NESTED_CHECK_MIN 516
/* plaintexts past this size are refused (EVP takes int lengths) */
#define MAX_PLAINTEXT (1 << 30)

enum { STATUS_OK = 0, STATUS_SHORT = 1, STATUS_BAD_TAG = 2, STATUS_FOREIGN = 3 };

static inline void put_le32(unsigned char *out, uint32_t value)
{
    for (int i = 0; i < 4; i++)
        out[i] = (unsigned char)(value >> (8 * i));
}

static inline void put_le64(unsigned char *out, uint64_t value)
{
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(value >> (8 * i));
}

static inline uint32_t get_le32(const unsigned char *in)
{
    return (uint32_t)in[0] | (uint32_t)in[1] << 8 | (uint32_t)in[2] << 16 | (uint32_t)in[3] << 24;
}

static inline uint64_t get_le64(const unsigned char *in)
{
    return (uint64_t)get_le32(in) | (uint64_t)get_le32(in + 4) << 32;
}

static inline void make_nonce(unsigned char nonce[12], uint64_t counter)
{
    memset(nonce, 0, 4);
    put_le64(nonce + 4, counter);
}

/* wgpy.messages.padded_length: to a multiple of 16, never past the MTU */
static inline Py_ssize_t padded_length(Py_ssize_t length, Py_ssize_t mtu)
{
    if (mtu <= 0)
        return (length + 15) & ~(Py_ssize_t)15;
    Py_ssize_t last_unit = length > mtu ? length % mtu : length;
    Py_ssize_t padded = (last_unit + 15) & ~(Py_ssize_t)15;
    if (padded > mtu)
        padded = mtu;
    return length - last_unit + padded;
}

/* wgpy.batch.carries_wireguard: a UDP datagram (first fragment) holding a WireGuard
 * message header (type 1-4, three zero bytes) */
static inline int carries_wireguard(const unsigned char *packet, Py_ssize_t size)
{
    Py_ssize_t offset;
    int version = packet[0] >> 4;
    if (version == 4) {
        if (size < 20 || packet[9] != 17 || (packet[6] & 0x1F) || packet[7])
            return 0;
        offset = (Py_ssize_t)(packet[0] & 0x0F) * 4 + 8;
    } else if (version == 6) {
        if (size < 40 || packet[6] != 17)
            return 0;
        offset = 48;
    } else {
        return 0;
    }
    if (offset + 4 > size)
        return 0;
    return packet[offset] >= 1 && packet[offset] <= 4 && !packet[offset + 1] &&
           !packet[offset + 2] && !packet[offset + 3];
}

static inline EVP_CIPHER_CTX *new_context(const unsigned char *key, int encrypt)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL)
        return NULL;
    if (EVP_CipherInit_ex(ctx, EVP_chacha20_poly1305(), NULL, key, NULL, encrypt) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Seal ``length`` bytes at ``data`` in place; the tag goes right after them. */
static inline int seal(EVP_CIPHER_CTX *ctx, uint64_t counter, unsigned char *data, int length)
{
    unsigned char nonce[12];
    int out = 0, last = 0;
    make_nonce(nonce, counter);
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1)
        return 0;
    if (length > 0 && EVP_EncryptUpdate(ctx, data, &out, data, length) != 1)
        return 0;
    if (EVP_EncryptFinal_ex(ctx, data + out, &last) != 1)
        return 0;
    return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, data + length) == 1;
}

/* Open ``length`` bytes of ciphertext (and the tag after them) into ``out``: 1 if authentic. */
static inline int open_one(EVP_CIPHER_CTX *ctx, uint64_t counter, const unsigned char *in, int length,
                    unsigned char *out)
{
    unsigned char nonce[12];
    unsigned char tag[TAG_LEN];
    int written = 0, last = 0;
    make_nonce(nonce, counter);
    memcpy(tag, in + length, TAG_LEN);
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1)
        return 0;
    if (length > 0 && EVP_DecryptUpdate(ctx, out, &written, in, length) != 1)
        return 0;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, tag) != 1)
        return 0;
    return EVP_DecryptFinal_ex(ctx, out + written, &last) == 1;
}

static inline int get_key(PyObject *object, Py_buffer *key)
{
    if (PyObject_GetBuffer(object, key, PyBUF_SIMPLE) < 0)
        return -1;
    if (key->len != KEY_LEN) {
        PyBuffer_Release(key);
        PyErr_SetString(PyExc_ValueError, "the key must be 32 bytes");
        return -1;
    }
    return 0;
}

static inline void release_all(Py_buffer *views, Py_ssize_t count)
{
    for (Py_ssize_t i = 0; i < count; i++)
        PyBuffer_Release(&views[i]);
}

/* The datagrams whose ``dests`` entry is still NULL (the others were placed alone) laid out
 * as UDP GSO runs, in order, by wgpy.batch.pure_seal_run's rules: datagrams of one size back
 * to back, a shorter one ends a run, at most RUN_MAX_DATAGRAMS and RUN_MAX_BYTES. Each run
 * gets one bytes buffer, appended to ``runs`` as (buffer, each datagram's size, or 0 for a run
 * of one); each datagram's place in it goes to ``dests``; the bytes are added to ``*sent``.
 * -1 with an exception set if Python runs out of memory. */
static inline int lay_out_runs(const Py_ssize_t *lengths, unsigned char **dests,
                               Py_ssize_t count, PyObject *runs, Py_ssize_t *sent)
{
    Py_ssize_t run_first = 0, run_count = 0, run_size = 0, run_used = 0, capacity = 0;
    for (Py_ssize_t i = 0; i <= count; i++) {
        if (i < count && dests[i] != NULL)
            continue;
        Py_ssize_t length = i < count ? lengths[i] : 0;
        if (i == count || length > run_size || run_count == capacity) {
            if (run_used) { /* the run so far gets its buffer */
                PyObject *buffer = PyBytes_FromStringAndSize(NULL, run_used);
                if (buffer == NULL)
                    return -1;
                PyObject *entry = Py_BuildValue("(Nn)", buffer,
                                                run_used > run_size ? run_size : (Py_ssize_t)0);
                if (entry == NULL)
                    return -1;
                int failed = PyList_Append(runs, entry);
                Py_DECREF(entry);
                if (failed < 0)
                    return -1;
                unsigned char *at = (unsigned char *)PyBytes_AS_STRING(buffer);
                for (Py_ssize_t j = run_first; j < i; j++) {
                    if (dests[j] != NULL)
                        continue; /* placed alone */
                    dests[j] = at;
                    at += lengths[j];
                }
                *sent += run_used;
            }
            if (i == count)
                break;
            run_first = i;
            run_size = length;
            capacity = RUN_MAX_BYTES / length;
            if (capacity > RUN_MAX_DATAGRAMS)
                capacity = RUN_MAX_DATAGRAMS;
            if (capacity < 1)
                capacity = 1;
            run_used = run_count = 0;
        }
        run_used += length;
        run_count++;
        if (length < run_size)
            run_count = capacity; /* a shorter datagram ends a run */
    }
    return 0;
}

/* The calls defined outside wgpy/_batch.c, each in its own wgpy/_batch_*.c file. */
/* wgpy/_batch_receive.c */
extern const char wgpy_batch_open_run_doc[];
PyObject *wgpy_batch_open_run(PyObject *module, PyObject *args, PyObject *kwargs);
/* wgpy/_batch_cut.c */
PyObject *wgpy_batch_seal_super(PyObject *module, PyObject *args, PyObject *kwargs);
extern const char wgpy_batch_seal_super_doc[];
/* wgpy/_batch_coalesce.c: GRO of decrypted packets (wgpy.offload.coalesce's twin) */
extern const char wgpy_batch_coalesce_doc[];
PyObject *wgpy_batch_coalesce(PyObject *module, PyObject *args, PyObject *kwargs);
/* wgpy/_batch_prefixes.c: UAPI allowed_ip lines read into runs of integers */
extern const char wgpy_batch_parse_prefixes_doc[];
PyObject *wgpy_batch_parse_prefixes(PyObject *module, PyObject *args, PyObject *kwargs);

#endif /* WGPY_BATCH_H */
