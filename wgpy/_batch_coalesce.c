/*
 * wgpy._batch.coalesce: GRO for decrypted packets, the C twin of wgpy.offload.coalesce (whose
 * docstrings give the rules; tests/unit/test_coalesce_twins.py holds the two equal).
 *
 * Three passes: with the GIL the packets are taken (a private list, so that no other thread
 * can free one while the GIL is released); without it each packet is classified (joins its
 * flow's open super-packet, starts one, or goes alone); with it each TUN write is allocated
 * once at its final size and its held list made; without it the writes are filled in.
 *
 * Every read of a packet is bounds-checked against its own length: the packets come from
 * peers (authenticated, but not trusted to be well-formed).
 */
#include "_batch.h"

#define CO_TCP 6
#define CO_UDP 17
#define CO_PSH 0x08
#define CO_ACK 0x10
#define CO_VNET_LEN 10
#define CO_NEEDS_CSUM 1
#define CO_DATA_VALID 2
#define CO_GSO_TCPV4 1
#define CO_GSO_TCPV6 4
#define CO_GSO_UDP_L4 5
#define CO_MAX_SUPER_PACKET 65535
#define CO_MAX_COALESCE 64
/* shorter packets are never keyed to a flow (wgpy.offload.coalesce) */
#define CO_KEYED_MIN 28
/* the longest flow key: an IPv6 UDP flow's addresses, ports and next header */
#define CO_KEY_MAX 37
#define CO_MATCH_MAX 5

/* A run of packets of one flow being glued into one write. */
typedef struct {
    Py_ssize_t first, last, count; /* packet indices; the held packets chain through next[] */
    Py_ssize_t length;             /* the glued IP packet's length */
    Py_ssize_t header_len, gso_size, ip_len;
    Py_ssize_t ip_a, ip_b; /* TCP: IP bytes [0, ip_a) and [6, ip_b) must match */
    Py_ssize_t chain;      /* the next open flow in this one's hash bucket, or -1 */
    uint32_t next_seq;
    uint32_t hash;
    int protocol, push;
    int key_len, match_len;
    unsigned char key[CO_KEY_MAX];
    unsigned char match[CO_MATCH_MAX]; /* UDP: the IP bytes every datagram must share */
} Flow;

/* The open flows: a chained hash table over Flow.key; only open flows are in it. */
typedef struct {
    Flow *flows;
    Py_ssize_t *buckets;
    size_t mask;
} Table;

/* A packet as the classification reads it. */
typedef struct {
    const unsigned char *data;
    Py_ssize_t size;
} Packet;

static inline unsigned get_be16(const unsigned char *in)
{
    return (unsigned)in[0] << 8 | in[1];
}

static inline uint32_t get_be32(const unsigned char *in)
{
    return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 | (uint32_t)in[2] << 8 | in[3];
}

static inline void put_be16(unsigned char *out, unsigned value)
{
    out[0] = (unsigned char)(value >> 8);
    out[1] = (unsigned char)value;
}

static inline void put_le16(unsigned char *out, unsigned value)
{
    out[0] = (unsigned char)value;
    out[1] = (unsigned char)(value >> 8);
}

/* The sum of big-endian 16-bit words of an even ``length`` (not reduced). */
static inline uint64_t word_sum(const unsigned char *data, Py_ssize_t length)
{
    uint64_t total = 0;
    for (Py_ssize_t i = 0; i + 1 < length; i += 2)
        total += get_be16(data + i);
    return total;
}

static uint32_t key_hash(const unsigned char *key, int length)
{
    uint32_t hash = 2166136261u; /* FNV-1a */
    for (int i = 0; i < length; i++)
        hash = (hash ^ key[i]) * 16777619u;
    return hash ^ (uint32_t)length;
}

static Py_ssize_t table_find(const Table *table, const unsigned char *key, int key_len,
                             uint32_t hash)
{
    for (Py_ssize_t at = table->buckets[hash & table->mask]; at >= 0;
         at = table->flows[at].chain) {
        const Flow *flow = &table->flows[at];
        if (flow->hash == hash && flow->key_len == key_len &&
            !memcmp(flow->key, key, (size_t)key_len))
            return at;
    }
    return -1;
}

static void table_remove(Table *table, Py_ssize_t which)
{
    Py_ssize_t *link = &table->buckets[table->flows[which].hash & table->mask];
    while (*link >= 0) {
        if (*link == which) {
            *link = table->flows[which].chain;
            table->flows[which].chain = -1;
            return;
        }
        link = &table->flows[*link].chain;
    }
}

static void table_insert(Table *table, Py_ssize_t which)
{
    Py_ssize_t *bucket = &table->buckets[table->flows[which].hash & table->mask];
    table->flows[which].chain = *bucket;
    *bucket = which;
}

/* wgpy.offload._flow_key of a packet of at least CO_KEYED_MIN bytes; its length. */
static int flow_key(const unsigned char *p, Py_ssize_t size, unsigned char *key)
{
    int length;
    if (p[0] >> 4 == 6) {
        Py_ssize_t end = size < 44 ? size : 44;
        length = (int)(end - 8);
        memcpy(key, p + 8, (size_t)length);
        if (p[6] != CO_TCP)
            key[length++] = p[6];
        return length;
    }
    Py_ssize_t start = (Py_ssize_t)(p[0] & 0x0F) * 4;
    memcpy(key, p + 12, 8);
    length = 8;
    if (start < size) {
        Py_ssize_t take = size - start < 4 ? size - start : 4;
        memcpy(key + length, p + start, (size_t)take);
        length += (int)take;
    }
    if (!(p[9] == CO_TCP && start == 20))
        key[length++] = p[9];
    return length;
}

/* wgpy.offload._tcp_shape: the headers' length of a TCP segment that may start a glued run,
 * or -1. ``p`` is an IPv4 packet starting 0x45 of CO_KEYED_MIN bytes or more, or an IPv6 one
 * of 60 bytes or more. */
static Py_ssize_t tcp_shape(const unsigned char *p, Py_ssize_t size)
{
    Py_ssize_t ip_len;
    if (p[0] == 0x45) {
        if ((p[6] & 0x3F) || p[7] || (Py_ssize_t)get_be16(p + 2) != size)
            return -1;
        ip_len = 20;
    } else if ((Py_ssize_t)get_be16(p + 4) + 40 == size) {
        ip_len = 40;
    } else {
        return -1;
    }
    if (size < ip_len + 20)
        return -1;
    Py_ssize_t header_len = ip_len + (Py_ssize_t)(p[ip_len + 12] >> 4) * 4;
    if ((p[ip_len + 13] & ~CO_PSH) != CO_ACK || header_len < ip_len + 20)
        return -1;
    if (size <= header_len)
        return -1;
    return header_len;
}

/* wgpy.offload._udp_shape: the IP header's length of a UDP datagram that may be glued (and
 * the bytes it must share with its flow in ``match``), or -1. ``size`` >= CO_KEYED_MIN. */
static Py_ssize_t udp_shape(const unsigned char *p, Py_ssize_t size, unsigned char *match,
                            int *match_len)
{
    Py_ssize_t ip_len;
    if (p[0] == 0x45) {
        if (p[9] != CO_UDP || size < 29 || (p[6] & 0x3F) || p[7])
            return -1;
        if ((Py_ssize_t)get_be16(p + 2) != size)
            return -1;
        ip_len = 20;
        match[0] = p[1];
        match[1] = p[6];
        match[2] = p[8];
        *match_len = 3;
    } else if (p[0] >> 4 == 6) {
        if (p[6] != CO_UDP || size < 49 || (Py_ssize_t)get_be16(p + 4) + 40 != size)
            return -1;
        ip_len = 40;
        memcpy(match, p, 4);
        match[4] = p[7];
        *match_len = 5;
    } else {
        return -1;
    }
    if ((Py_ssize_t)get_be16(p + ip_len + 4) != size - ip_len)
        return -1;
    return ip_len;
}

/* Whether TCP segment ``p`` (with a payload after the flow's headers) continues ``flow``:
 * the next sequence number, at most the first segment's payload, room left, and every header
 * byte equal to the first segment's but lengths, IPv4 ID, checksums, sequence number, PSH. */
static int tcp_continues(const Flow *flow, const unsigned char *first, const unsigned char *p,
                         Py_ssize_t size, Py_ssize_t ip_len)
{
    Py_ssize_t header_len = flow->header_len;
    Py_ssize_t payload = size - header_len;
    Py_ssize_t at = ip_len + 8;
    if (flow->protocol != CO_TCP || flow->ip_len != ip_len)
        return 0; /* a key of this length belongs to a TCP flow of this family */
    if (payload <= 0 || payload > flow->gso_size || flow->length + payload > CO_MAX_SUPER_PACKET)
        return 0;
    /* from here, size > header_len >= at + 12 */
    return get_be32(p + ip_len + 4) == flow->next_seq && !memcmp(p + at, first + at, 5) &&
           !memcmp(p + at + 6, first + at + 6, 2) &&
           !memcmp(p + at + 10, first + at + 10, (size_t)(header_len - at - 10)) &&
           !memcmp(p, first, (size_t)flow->ip_a) &&
           !memcmp(p + 6, first + 6, (size_t)(flow->ip_b - 6)) &&
           (p[at + 5] & ~CO_PSH) == CO_ACK;
}

typedef struct {
    const Packet *packets;
    Py_ssize_t count;
    int udp;
    Table table;
    Py_ssize_t *next;  /* per packet: the next packet held by its flow, or -1 */
    Py_ssize_t *items; /* the writes in order: a packet index, or -(flow + 1) */
    Py_ssize_t item_count, flow_count;
} Classifier;

static void close_flow(Classifier *c, Py_ssize_t which)
{
    table_remove(&c->table, which);
}

static void hold(Classifier *c, Flow *flow, Py_ssize_t index, Py_ssize_t payload)
{
    c->next[flow->last] = index;
    flow->last = index;
    flow->count++;
    flow->length += payload;
}

static Flow *new_flow(Classifier *c, Py_ssize_t index, const unsigned char *key, int key_len,
                      uint32_t hash)
{
    Py_ssize_t which = c->flow_count++;
    Flow *flow = &c->table.flows[which];
    memset(flow, 0, sizeof(*flow));
    flow->first = flow->last = index;
    flow->count = 1;
    flow->length = c->packets[index].size;
    flow->chain = -1;
    flow->hash = hash;
    flow->key_len = key_len;
    memcpy(flow->key, key, (size_t)key_len);
    c->items[c->item_count++] = -(which + 1);
    return flow;
}

static void classify(Classifier *c)
{
    unsigned char key_buffer[CO_KEY_MAX + 1];
    unsigned char match[CO_MATCH_MAX];
    for (Py_ssize_t i = 0; i < c->count; i++) {
        const unsigned char *p = c->packets[i].data;
        Py_ssize_t size = c->packets[i].size;
        int first = size >= CO_KEYED_MIN ? p[0] : 0;
        const unsigned char *key = NULL;
        int key_len = 0;
        Py_ssize_t ip_len = 0;
        c->next[i] = -1;
        /* the common case first: a TCP segment, maybe the next of an open flow */
        if (first == 0x45 && p[9] == CO_TCP) {
            key = p + 12;
            key_len = 12;
            ip_len = 20;
        } else if (first >> 4 == 6 && size >= 60 && p[6] == CO_TCP) {
            key = p + 8;
            key_len = 36;
            ip_len = 40;
        }
        if (key != NULL) {
            uint32_t hash = key_hash(key, key_len);
            Py_ssize_t which = table_find(&c->table, key, key_len, hash);
            if (which >= 0) {
                Flow *flow = &c->table.flows[which];
                const unsigned char *head = c->packets[flow->first].data;
                if (tcp_continues(flow, head, p, size, ip_len)) {
                    Py_ssize_t payload = size - flow->header_len;
                    hold(c, flow, i, payload);
                    flow->next_seq += (uint32_t)payload;
                    int push = p[ip_len + 13] & CO_PSH;
                    if (push || payload < flow->gso_size || flow->count >= CO_MAX_COALESCE) {
                        flow->push = push != 0;
                        close_flow(c, which);
                    }
                    continue;
                }
                close_flow(c, which); /* what follows in this flow comes after this packet */
            }
            Py_ssize_t header_len = tcp_shape(p, size);
            if (header_len < 0) {
                c->items[c->item_count++] = i;
                continue;
            }
            Flow *flow = new_flow(c, i, key, key_len, hash);
            flow->protocol = CO_TCP;
            flow->ip_len = ip_len;
            flow->header_len = header_len;
            flow->gso_size = size - header_len;
            flow->next_seq = get_be32(p + ip_len + 4) + (uint32_t)flow->gso_size;
            flow->push = (p[ip_len + 13] & CO_PSH) != 0;
            flow->ip_a = ip_len == 20 ? 2 : 4;
            flow->ip_b = ip_len == 20 ? 9 : 8;
            if (!flow->push)
                table_insert(&c->table, flow - c->table.flows);
            continue;
        }
        if (!c->udp || size < CO_KEYED_MIN) {
            if (size >= CO_KEYED_MIN) {
                key_len = flow_key(p, size, key_buffer);
                Py_ssize_t which =
                    table_find(&c->table, key_buffer, key_len, key_hash(key_buffer, key_len));
                if (which >= 0)
                    close_flow(c, which);
            }
            c->items[c->item_count++] = i;
            continue;
        }
        key_len = flow_key(p, size, key_buffer);
        uint32_t hash = key_hash(key_buffer, key_len);
        Py_ssize_t which = table_find(&c->table, key_buffer, key_len, hash);
        int match_len = 0;
        ip_len = udp_shape(p, size, match, &match_len);
        if (ip_len < 0) {
            if (which >= 0)
                close_flow(c, which);
            c->items[c->item_count++] = i;
            continue;
        }
        Py_ssize_t payload = size - ip_len - 8;
        if (which >= 0) {
            Flow *flow = &c->table.flows[which];
            if (flow->protocol == CO_UDP && payload <= flow->gso_size &&
                flow->match_len == match_len && !memcmp(flow->match, match, (size_t)match_len) &&
                flow->length + payload <= CO_MAX_SUPER_PACKET) {
                hold(c, flow, i, payload);
                if (payload < flow->gso_size || flow->count >= CO_MAX_COALESCE)
                    close_flow(c, which);
                continue;
            }
            close_flow(c, which); /* replaced by the new flow below */
        }
        Flow *flow = new_flow(c, i, key_buffer, key_len, hash);
        flow->protocol = CO_UDP;
        flow->ip_len = ip_len;
        flow->header_len = ip_len + 8;
        flow->gso_size = payload;
        flow->match_len = match_len;
        memcpy(flow->match, match, (size_t)match_len);
        table_insert(&c->table, flow - c->table.flows);
    }
}

/* One glued write: the virtio-net header, the first packet's headers with the glued lengths,
 * IPv4 header checksum, PSH and the pseudo-header's partial checksum, then every payload. */
static void glue(const Flow *flow, const Packet *packets, const Py_ssize_t *next,
                 unsigned char *out)
{
    Py_ssize_t ip_len = flow->ip_len, header_len = flow->header_len;
    Py_ssize_t l4_length = flow->length - ip_len;
    const Packet *first = &packets[flow->first];
    unsigned char *head = out + CO_VNET_LEN;
    unsigned where, gso_type;
    memcpy(head, first->data, (size_t)header_len);
    if (ip_len == 40) {
        put_be16(head + 4, (unsigned)l4_length);
    } else {
        put_be16(head + 2, (unsigned)flow->length);
        put_be16(head + 10, 0);
        unsigned sum = (unsigned)(word_sum(head, 20) % 0xFFFF);
        put_be16(head + 10, 0xFFFF - (sum ? sum : 0xFFFF));
    }
    if (flow->protocol == CO_TCP) {
        if (flow->push)
            head[ip_len + 13] |= CO_PSH;
        where = (unsigned)ip_len + 16;
        gso_type = ip_len == 40 ? CO_GSO_TCPV6 : CO_GSO_TCPV4;
    } else {
        put_be16(head + ip_len + 4, (unsigned)l4_length);
        where = (unsigned)ip_len + 6;
        gso_type = CO_GSO_UDP_L4;
    }
    /* NEEDS_CSUM: the field holds the pseudo-header's sum, the kernel completes the rest */
    uint64_t pseudo = (uint64_t)flow->protocol + (uint64_t)l4_length +
                      (head[0] >> 4 == 4 ? word_sum(head + 12, 8) : word_sum(head + 8, 32));
    unsigned partial = (unsigned)(pseudo % 0xFFFF);
    put_be16(head + where, partial ? partial : 0xFFFF);
    out[0] = CO_NEEDS_CSUM;
    out[1] = (unsigned char)gso_type;
    put_le16(out + 2, (unsigned)header_len);
    put_le16(out + 4, (unsigned)flow->gso_size);
    put_le16(out + 6, (unsigned)ip_len);
    put_le16(out + 8, where - (unsigned)ip_len);
    unsigned char *at = head + header_len;
    for (Py_ssize_t i = flow->first; i >= 0; i = next[i]) {
        Py_ssize_t payload = packets[i].size - header_len;
        memcpy(at, packets[i].data + header_len, (size_t)payload);
        at += payload;
    }
}

static void write_alone(const Packet *packet, unsigned char *out)
{
    memset(out, 0, CO_VNET_LEN);
    out[0] = CO_DATA_VALID;
    if (packet->size > 0)
        memcpy(out + CO_VNET_LEN, packet->data, (size_t)packet->size);
}

const char wgpy_batch_coalesce_doc[] =
    "coalesce(packets, *, udp=False)\n"
    "--\n\n"
    "TUN writes gluing decrypted packets of one flow (see wgpy.offload.coalesce).";

PyObject *wgpy_batch_coalesce(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"packets", "udp", NULL};
    PyObject *packets_object;
    int udp = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|$p", keywords, &packets_object, &udp))
        return NULL;
    /* a list of our own: no other thread can drop a packet while the GIL is released */
    PyObject *list = PySequence_List(packets_object);
    if (list == NULL)
        return NULL;
    Py_ssize_t count = PyList_GET_SIZE(list);
    PyObject *result = NULL, *answer = NULL;
    Classifier c;
    memset(&c, 0, sizeof(c));
    Packet *packets = PyMem_Calloc((size_t)count + 1, sizeof(Packet));
    unsigned char **outputs = PyMem_Calloc((size_t)count + 1, sizeof(unsigned char *));
    size_t buckets = 8;
    while (buckets < (size_t)count * 2)
        buckets <<= 1;
    c.table.flows = PyMem_Calloc((size_t)count + 1, sizeof(Flow));
    c.table.buckets = PyMem_Malloc(buckets * sizeof(Py_ssize_t));
    c.table.mask = buckets - 1;
    c.next = PyMem_Calloc((size_t)count + 1, sizeof(Py_ssize_t));
    c.items = PyMem_Calloc((size_t)count + 1, sizeof(Py_ssize_t));
    if (packets == NULL || outputs == NULL || c.table.flows == NULL || c.table.buckets == NULL ||
        c.next == NULL || c.items == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (size_t i = 0; i < buckets; i++)
        c.table.buckets[i] = -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "packets must be bytes, not %.100s",
                         Py_TYPE(item)->tp_name);
            goto done;
        }
        packets[i].data = (const unsigned char *)PyBytes_AS_STRING(item);
        packets[i].size = PyBytes_GET_SIZE(item);
    }
    c.packets = packets;
    c.count = count;
    c.udp = udp;

    Py_BEGIN_ALLOW_THREADS
    classify(&c);
    Py_END_ALLOW_THREADS

    result = PyList_New(c.item_count);
    if (result == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < c.item_count; k++) {
        Py_ssize_t item = c.items[k];
        const Flow *flow = item < 0 ? &c.table.flows[-item - 1] : NULL;
        Py_ssize_t held_count = flow != NULL ? flow->count : 1;
        Py_ssize_t first = flow != NULL ? flow->first : item;
        Py_ssize_t size = held_count > 1 ? flow->length : packets[first].size;
        PyObject *frame = PyBytes_FromStringAndSize(NULL, CO_VNET_LEN + size);
        PyObject *held = PyList_New(held_count);
        PyObject *pair = frame != NULL && held != NULL ? PyTuple_Pack(2, frame, held) : NULL;
        Py_XDECREF(frame);
        Py_XDECREF(held);
        if (pair == NULL)
            goto done;
        PyList_SET_ITEM(result, k, pair);
        outputs[k] = (unsigned char *)PyBytes_AS_STRING(frame);
        Py_ssize_t at = 0;
        for (Py_ssize_t i = first; i >= 0 && at < held_count; i = c.next[i])
            PyList_SET_ITEM(held, at++, Py_NewRef(PyList_GET_ITEM(list, i)));
    }

    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; k < c.item_count; k++) {
        Py_ssize_t item = c.items[k];
        const Flow *flow = item < 0 ? &c.table.flows[-item - 1] : NULL;
        if (flow != NULL && flow->count > 1)
            glue(flow, packets, c.next, outputs[k]);
        else
            write_alone(&packets[flow != NULL ? flow->first : item], outputs[k]);
    }
    Py_END_ALLOW_THREADS
    answer = result;
    result = NULL;

done:
    Py_XDECREF(result);
    Py_DECREF(list);
    PyMem_Free(packets);
    PyMem_Free(outputs);
    PyMem_Free(c.table.flows);
    PyMem_Free(c.table.buckets);
    PyMem_Free(c.next);
    PyMem_Free(c.items);
    return answer;
}
