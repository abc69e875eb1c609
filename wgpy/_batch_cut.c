/*
 * seal_super: a TCP TSO super-packet read from a TUN (virtio-net header + one IP and TCP header +
 * up to 64 KiB of payload) cut into its segments and sealed into data messages in one call, the
 * segments written straight into the run buffers: no per-segment Python object. The result is
 * byte for byte seal_run(split(frame)) (wgpy.batch.pure_seal_super is that composition); frames
 * it does not handle give None and take the Python way (wgpy.offload.split).
 */
#include "_batch.h"

#define VNET_LEN 10
#define GSO_TCPV4 1
#define GSO_TCPV6 4
#define GSO_ECN 0x80
#define MAX_SUPER_PACKET 65535
#define MAX_SEGMENTS 1024
#define PROTOCOL_TCP 6
#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_CWR 0x80

/* The shape of a super-packet this call cuts (offload._split_segments' checks passed). */
typedef struct {
    const unsigned char *packet; /* after the virtio-net header */
    Py_ssize_t ip_len, header_len, payload, gso_size, count;
    int is_v6;
} Shape;

static inline uint16_t get_be16(const unsigned char *in)
{
    return (uint16_t)(in[0] << 8 | in[1]);
}

static inline void put_be16(unsigned char *out, uint32_t value)
{
    out[0] = (unsigned char)(value >> 8);
    out[1] = (unsigned char)value;
}

/* 1 when ``frame`` is a TCP super-packet that offload.split cuts into 2 segments or more,
 * with every check of offload.split and offload._split_segments; 0 for anything else. */
static int tcp_shape(const unsigned char *frame, Py_ssize_t length, Shape *shape)
{
    if (length < VNET_LEN)
        return 0;
    int gso = frame[1] & ~GSO_ECN;
    Py_ssize_t gso_size = frame[4] | frame[5] << 8;
    Py_ssize_t csum_start = frame[6] | frame[7] << 8;
    Py_ssize_t csum_offset = frame[8] | frame[9] << 8;
    const unsigned char *packet = frame + VNET_LEN;
    Py_ssize_t size = length - VNET_LEN;
    if (size > MAX_SUPER_PACKET || (gso != GSO_TCPV4 && gso != GSO_TCPV6))
        return 0;
    Py_ssize_t ip_len;
    if (gso == GSO_TCPV6) {
        if (size < 40 || packet[0] >> 4 != 6 || packet[6] != PROTOCOL_TCP)
            return 0;
        ip_len = 40;
    } else {
        if (size < 20 || packet[0] >> 4 != 4)
            return 0;
        ip_len = (Py_ssize_t)(packet[0] & 0x0F) * 4;
        if (ip_len < 20 || ip_len > size || packet[9] != PROTOCOL_TCP ||
            (get_be16(packet + 6) & 0x3FFF))
            return 0;
    }
    if (csum_start != ip_len || csum_offset != 16 || ip_len + 20 > size)
        return 0;
    Py_ssize_t header_len = ip_len + (Py_ssize_t)(packet[ip_len + 12] >> 4) * 4;
    if (header_len < ip_len + 20 || header_len > size || gso_size == 0)
        return 0;
    Py_ssize_t payload = size - header_len;
    Py_ssize_t count = (payload + gso_size - 1) / gso_size;
    if (count > MAX_SEGMENTS || count < 2)
        return 0;
    shape->packet = packet;
    shape->ip_len = ip_len;
    shape->header_len = header_len;
    shape->payload = payload;
    shape->gso_size = gso_size;
    shape->count = count;
    shape->is_v6 = gso == GSO_TCPV6;
    return 1;
}

/* A number congruent modulo 0xFFFF to the sum of ``data``'s big-endian 16-bit words (an odd
 * last byte padded with zero). Native words are summed, 32 bits at a time (2**16 ≡ 1); on a
 * little-endian machine that is the byte-swapped sum, and swapping a word's bytes multiplies
 * it by 256 modulo 0xFFFF. */
static inline uint64_t word_sum(const unsigned char *data, Py_ssize_t length)
{
    uint64_t total = 0;
    Py_ssize_t i = 0;
    for (; i + 8 <= length; i += 8) {
        uint64_t word;
        memcpy(&word, data + i, 8);
        total += (word & 0xFFFFFFFFu) + (word >> 32);
    }
    for (; i + 2 <= length; i += 2) {
        uint16_t half;
        memcpy(&half, data + i, 2);
        total += half;
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    if (i < length)
        total += (uint64_t)data[i] << 8;
    return total;
#else
    if (i < length)
        total += data[i];
    return total % 0xFFFF * 256;
#endif
}

/* offload.fold: the checksum field for a sum ``total`` of the rest. */
static inline uint32_t fold_field(uint64_t total)
{
    uint64_t rest = total % 0xFFFF;
    return rest ? (uint32_t)(0xFFFF - rest) : 0;
}

/* Segment ``index`` of ``shape`` written at ``out`` (offload._cut's rules): the headers with
 * IPv4 total length, ID + index and header checksum (or the IPv6 payload length), the TCP
 * sequence number, flags (CWR on the first only, FIN and PSH on the last only) and checksum,
 * then its payload. Returns its length. */
static Py_ssize_t cut_one(const Shape *shape, Py_ssize_t index, unsigned char *out)
{
    const unsigned char *packet = shape->packet;
    Py_ssize_t ip_len = shape->ip_len, header_len = shape->header_len;
    Py_ssize_t start = index * shape->gso_size;
    Py_ssize_t data_len = shape->payload - start;
    if (data_len > shape->gso_size)
        data_len = shape->gso_size;
    Py_ssize_t size = header_len + data_len, l4_length = size - ip_len;
    memcpy(out, packet, (size_t)header_len);
    memcpy(out + header_len, packet + header_len + start, (size_t)data_len);
    unsigned char *tcp = out + ip_len;
    uint32_t seq = (uint32_t)tcp[4] << 24 | (uint32_t)tcp[5] << 16 | (uint32_t)tcp[6] << 8 | tcp[7];
    seq += (uint32_t)start; /* modulo 2**32 */
    tcp[4] = (unsigned char)(seq >> 24);
    tcp[5] = (unsigned char)(seq >> 16);
    tcp[6] = (unsigned char)(seq >> 8);
    tcp[7] = (unsigned char)seq;
    if (index)
        tcp[13] &= (unsigned char)~TCP_CWR;
    if (index != shape->count - 1)
        tcp[13] &= (unsigned char)~(TCP_FIN | TCP_PSH);
    tcp[16] = tcp[17] = 0;
    uint64_t pseudo = PROTOCOL_TCP + (uint64_t)l4_length;
    if (shape->is_v6) {
        put_be16(out + 4, (uint32_t)l4_length);
        pseudo += word_sum(out + 8, 32);
    } else {
        put_be16(out + 2, (uint32_t)size);
        put_be16(out + 4, (uint32_t)(get_be16(packet + 4) + index) & 0xFFFF);
        out[10] = out[11] = 0;
        put_be16(out + 10, fold_field(word_sum(out, ip_len)));
        pseudo += word_sum(out + 12, 8);
    }
    put_be16(tcp + 16, fold_field(pseudo + word_sum(tcp, l4_length)));
    return size;
}

const char wgpy_batch_seal_super_doc[] =
    "seal_super(key, receiver, counter, frame, mtu, limit)\n"
    "--\n\n"
    "A TCP super-packet cut and sealed, or None (see wgpy.batch.pure_seal_super).";

/* A 64-bit unsigned number, else OverflowError (negative or too large) or TypeError. */
static int get_u64(PyObject *object, uint64_t *value)
{
    unsigned long long number = PyLong_AsUnsignedLongLong(object);
    if (number == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *value = (uint64_t)number;
    return 0;
}

PyObject *wgpy_batch_seal_super(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"key", "receiver", "counter", "frame", "mtu", "limit", NULL};
    PyObject *key_object, *receiver_object, *counter_object, *frame_object, *limit_object;
    Py_ssize_t mtu;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOnO", keywords, &key_object,
                                     &receiver_object, &counter_object, &frame_object, &mtu,
                                     &limit_object))
        return NULL;
    Py_buffer key;
    if (get_key(key_object, &key) < 0)
        return NULL;
    uint64_t receiver = 0, counter = 0, limit = 0;
    PyObject *runs = NULL, *result = NULL;
    Py_buffer frame = {0};
    int frame_held = 0;
    Py_ssize_t *lengths = NULL;
    unsigned char **dests = NULL;
    if (get_u64(receiver_object, &receiver) < 0 || receiver > UINT32_MAX) {
        if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_OverflowError))
            goto done;
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "the receiver index is a 32-bit number");
        goto done;
    }
    if (get_u64(counter_object, &counter) < 0 || get_u64(limit_object, &limit) < 0)
        goto done;
    if (PyObject_GetBuffer(frame_object, &frame, PyBUF_SIMPLE) < 0)
        goto done;
    frame_held = 1;
    Shape shape;
    if (!tcp_shape((const unsigned char *)frame.buf, frame.len, &shape) ||
        (uint64_t)shape.count > limit || counter > limit - (uint64_t)shape.count) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    Py_ssize_t count = shape.count;
    lengths = PyMem_Calloc((size_t)count, sizeof(Py_ssize_t));
    dests = PyMem_Calloc((size_t)count, sizeof(unsigned char *));
    runs = PyList_New(0);
    if (lengths == NULL || dests == NULL || runs == NULL) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }

    /* With the GIL: the runs laid out as seal_run lays them (a TCP segment never carries a
     * WireGuard message, so none goes alone) and their buffers allocated. */
    Py_ssize_t sent = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t data_len = shape.payload - i * shape.gso_size;
        if (data_len > shape.gso_size)
            data_len = shape.gso_size;
        lengths[i] = padded_length(shape.header_len + data_len, mtu) + OVERHEAD;
    }
    if (lay_out_runs(lengths, dests, count, runs, &sent) < 0)
        goto done;

    /* Without the GIL (the frame and the run buffers are held): each segment cut into its
     * datagram, padded and sealed in place. */
    int ok = 1;
    Py_BEGIN_ALLOW_THREADS
    EVP_CIPHER_CTX *ctx = new_context((const unsigned char *)key.buf, 1);
    ok = ctx != NULL;
    for (Py_ssize_t i = 0; ok && i < count; i++) {
        unsigned char *dest = dests[i];
        Py_ssize_t padded = lengths[i] - OVERHEAD;
        Py_ssize_t size = cut_one(&shape, i, dest + HEADER_LEN);
        memset(dest + HEADER_LEN + size, 0, (size_t)(padded - size));
        put_le32(dest, 4);
        put_le32(dest + 4, (uint32_t)receiver);
        put_le64(dest + 8, counter + (uint64_t)i);
        ok = seal(ctx, counter + (uint64_t)i, dest + HEADER_LEN, (int)padded);
    }
    EVP_CIPHER_CTX_free(ctx);
    Py_END_ALLOW_THREADS
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to seal");
        goto done;
    }
    result = Py_BuildValue("(O[]nn)", runs, sent, count);

done:
    PyMem_Free(lengths);
    PyMem_Free(dests);
    Py_XDECREF(runs);
    if (frame_held)
        PyBuffer_Release(&frame);
    PyBuffer_Release(&key);
    return result;
}
