/*
 * proxy._native: the per-command work in C: splitting a client's requests, the stored
 * name's HMAC, the AES-GCM value envelope, and packing the upstream request.
 *
 * Each part has a Python twin that stays the reference (resp/reader.py, hashing.py,
 * envelope.py, resp/writer.py); tests/test_native.py checks that both give the same
 * results for the same inputs, tests/resp/test_reader_vs_redis.py checks the request
 * framing against redis-server itself, and `CACHECLOAK_NATIVE=0` runs the proxy on the
 * twins.  The proxy uses this module when it was built (a C compiler and OpenSSL's
 * headers at install time) and says at startup which one runs (proxy/speedups.py).
 *
 * Why C: under load the proxy spent about half of its CPU per request in Python around
 * these four small computations, each a handful of calls into C with Python objects
 * made in between.  Done here in one call each, they cost a fraction of that.
 * Dispatch, reply ordering and everything that decides what a command means stay in
 * Python.  Also here: the upstream reply reader (ReplyReader, hiredis.Reader's results),
 * and the fast path of the simplest commands (Forwarder, Single, Batch, ReplyReader.take
 * and take_singles, ClientCore), which does for them what the Python table and decoders
 * would and stops at anything else (tests/test_native_forward.py,
 * tests/test_native_replies.py, tests/test_client_core.py).
 *
 * Must never: log, keep a plaintext after returning, or put a key, a value or key
 * material into an exception message.  Key material lives in OpenSSL contexts and in
 * SHA-256 states, which are wiped when the object is freed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <pthread.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

/* Same layout as proxy/crypto/hashing.py: 24-byte name digest, 9-byte tag digest,
 * both in unpadded base64url (multiples of 3 bytes: no padding). */
#define NAME_DIGEST_BYTES 24
#define NAME_DIGEST_CHARS 32
#define TAG_DIGEST_BYTES 9
#define TAG_DIGEST_CHARS 12

/* Same layout as proxy/crypto/envelope.py. */
#define HEADER_BYTES 5
#define NONCE_BYTES 12
#define TAG_BYTES 16
#define OVERHEAD (HEADER_BYTES + NONCE_BYTES + TAG_BYTES)

/* A GC type's traverse, clear and dealloc from the list of its object fields (an X-macro
 * such as SINGLE_OBJECT_FIELDS), so the three can never disagree about a field. */
#define GC_VISIT_FIELD(field) Py_VISIT(self->field);
#define GC_CLEAR_FIELD(field) Py_CLEAR(self->field);
#define GC_FIELD_FUNCTIONS(prefix, Type, FIELDS)                                   \
    static int prefix##_traverse(Type *self, visitproc visit, void *arg) {         \
        FIELDS(GC_VISIT_FIELD)                                                     \
        return 0;                                                                  \
    }                                                                              \
    static int prefix##_clear(Type *self) {                                        \
        FIELDS(GC_CLEAR_FIELD)                                                     \
        return 0;                                                                  \
    }                                                                              \
    static void prefix##_dealloc(Type *self) {                                     \
        PyObject_GC_UnTrack(self);                                                 \
        prefix##_clear(self);                                                      \
        Py_TYPE(self)->tp_free((PyObject *)self);                                  \
    }

/* collections.deque's append and popleft, looked up once at import: called with the
 * deque as their first argument they skip a method lookup per call.  Anything that is
 * not exactly a deque is called by name. */
static PyTypeObject *deque_type;
static PyObject *deque_append, *deque_popleft, *s_append, *s_popleft;

static int load_deque(void) {
    PyObject *collections = PyImport_ImportModule("collections");
    if (!collections) return -1;
    deque_type = (PyTypeObject *)PyObject_GetAttrString(collections, "deque");
    Py_DECREF(collections);
    if (!deque_type) return -1;
    if (!(s_append = PyUnicode_InternFromString("append")) ||
        !(s_popleft = PyUnicode_InternFromString("popleft")) ||
        !(deque_append = PyObject_GetAttr((PyObject *)deque_type, s_append)) ||
        !(deque_popleft = PyObject_GetAttr((PyObject *)deque_type, s_popleft)))
        return -1;
    return 0;
}

/* queue.append(item) */
static PyObject *queue_append(PyObject *queue, PyObject *item) {
    if (Py_IS_TYPE(queue, deque_type)) {
        PyObject *args[2] = {queue, item};
        return PyObject_Vectorcall(deque_append, args, 2, NULL);
    }
    return PyObject_CallMethodOneArg(queue, s_append, item);
}

/* queue.popleft() */
static PyObject *queue_popleft(PyObject *queue) {
    if (Py_IS_TYPE(queue, deque_type)) return PyObject_Vectorcall(deque_popleft, &queue, 1, NULL);
    return PyObject_CallMethodNoArgs(queue, s_popleft);
}

/* queue[0], a new reference, in *head: 1; 0 when the queue is empty; -1 on an error. */
static int queue_head(PyObject *queue, PyObject **head) {
    Py_ssize_t left = PyObject_Size(queue);
    if (left <= 0) return left < 0 ? -1 : 0;
    *head = PySequence_GetItem(queue, 0);
    return *head ? 1 : -1;
}

/* 1 when `o` is true, 0 when false, -1 on an error (the common objects without a call). */
static inline int truth(PyObject *o) {
    if (o == Py_False || o == Py_None) return 0;
    if (o == Py_True) return 1;
    return PyObject_IsTrue(o);
}

/* time.monotonic() and time.perf_counter() on Linux: the same clock. */
static double monotonic_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char B64URL[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void b64url(const unsigned char *in, size_t n, char *out) {
    /* n is a multiple of 3 */
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = ((unsigned)in[i] << 16) | ((unsigned)in[i + 1] << 8) | in[i + 2];
        *out++ = B64URL[(v >> 18) & 63];
        *out++ = B64URL[(v >> 12) & 63];
        *out++ = B64URL[(v >> 6) & 63];
        *out++ = B64URL[v & 63];
    }
}

/* A RESP header line: kind, decimal n, CRLF. */
static char *put_header(char *p, char kind, Py_ssize_t n) {
    char digits[24];
    int d = 0;
    *p++ = kind;
    if (n >= 0 && n < 100) { /* most headers: an argument count, a name's or a key's length */
        if (n >= 10) *p++ = (char)('0' + n / 10);
        *p++ = (char)('0' + n % 10);
        *p++ = '\r';
        *p++ = '\n';
        return p;
    }
    do {
        digits[d++] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    while (d > 0) *p++ = digits[--d];
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/* ---------------------------------------------------------------- Hasher ---------- */

/* HMAC-SHA256 with the inner state (after the padded key and the domain) and the outer
 * state (after the padded key) computed once per logical db, as hashing._Hmac does.
 * OpenSSL's SHA256_CTX is a plain struct: copying it is a memcpy, where an EVP digest
 * context would be allocated and freed per copy. */
typedef struct {
    SHA256_CTX inner;
    SHA256_CTX outer;
} HmacState;

typedef struct {
    PyObject_HEAD
    Py_ssize_t databases;
    HmacState *key_macs;  /* one per db */
    HmacState *tag_macs;  /* one per db */
    PyObject *namespaces; /* tuple of bytes, one per db */
} HasherObject;

static void hmac_prepare(HmacState *state, const unsigned char *key, size_t key_len,
                         const char *domain, Py_ssize_t domain_len) {
    unsigned char pad[SHA256_CBLOCK];
    memset(pad, 0, sizeof pad);
    memcpy(pad, key, key_len);
    for (size_t i = 0; i < sizeof pad; i++) pad[i] ^= 0x36;
    SHA256_Init(&state->inner);
    SHA256_Update(&state->inner, pad, sizeof pad);
    SHA256_Update(&state->inner, domain, (size_t)domain_len);
    for (size_t i = 0; i < sizeof pad; i++) pad[i] ^= 0x36 ^ 0x5C;
    SHA256_Init(&state->outer);
    SHA256_Update(&state->outer, pad, sizeof pad);
    OPENSSL_cleanse(pad, sizeof pad);
}

static void hmac_digest(const HmacState *state, const char *msg, size_t n,
                        unsigned char out[SHA256_DIGEST_LENGTH]) {
    SHA256_CTX ctx;
    unsigned char inner[SHA256_DIGEST_LENGTH];
    memcpy(&ctx, &state->inner, sizeof ctx);
    SHA256_Update(&ctx, msg, n);
    SHA256_Final(inner, &ctx);
    memcpy(&ctx, &state->outer, sizeof ctx);
    SHA256_Update(&ctx, inner, sizeof inner);
    SHA256_Final(out, &ctx);
    OPENSSL_cleanse(&ctx, sizeof ctx);
}

static void Hasher_dealloc(HasherObject *self) {
    if (self->key_macs) {
        OPENSSL_cleanse(self->key_macs, sizeof(HmacState) * (size_t)self->databases);
        PyMem_Free(self->key_macs);
    }
    if (self->tag_macs) {
        OPENSSL_cleanse(self->tag_macs, sizeof(HmacState) * (size_t)self->databases);
        PyMem_Free(self->tag_macs);
    }
    Py_XDECREF(self->namespaces);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Hasher(hmac_key, key_domains, tag_domains, namespaces): the three sequences have one
 * bytes item per logical db (see KeyHasher). */
static int Hasher_init(HasherObject *self, PyObject *args, PyObject *kwds) {
    Py_buffer key;
    PyObject *key_domains, *tag_domains, *namespaces;
    if (!PyArg_ParseTuple(args, "y*OOO:Hasher", &key, &key_domains, &tag_domains,
                          &namespaces))
        return -1;
    int rc = -1;
    PyObject *kd = NULL, *td = NULL, *ns = NULL;
    if (key.len > SHA256_CBLOCK) {
        PyErr_SetString(PyExc_ValueError, "the HMAC key must be at most 64 bytes");
        goto done;
    }
    kd = PySequence_Tuple(key_domains);
    td = kd ? PySequence_Tuple(tag_domains) : NULL;
    ns = td ? PySequence_Tuple(namespaces) : NULL;
    if (!ns) goto done;
    Py_ssize_t n = PyTuple_GET_SIZE(ns);
    if (PyTuple_GET_SIZE(kd) != n || PyTuple_GET_SIZE(td) != n || n < 1) {
        PyErr_SetString(PyExc_ValueError, "one domain and namespace per database");
        goto done;
    }
    if (self->key_macs || self->tag_macs) {
        PyErr_SetString(PyExc_RuntimeError, "Hasher is already initialised");
        goto done;
    }
    self->key_macs = PyMem_Calloc((size_t)n, sizeof(HmacState));
    self->tag_macs = PyMem_Calloc((size_t)n, sizeof(HmacState));
    if (!self->key_macs || !self->tag_macs) {
        PyErr_NoMemory();
        goto done;
    }
    self->databases = n;
    for (Py_ssize_t db = 0; db < n; db++) {
        PyObject *k = PyTuple_GET_ITEM(kd, db), *t = PyTuple_GET_ITEM(td, db);
        PyObject *p = PyTuple_GET_ITEM(ns, db);
        if (!PyBytes_Check(k) || !PyBytes_Check(t) || !PyBytes_Check(p)) {
            PyErr_SetString(PyExc_TypeError, "domains and namespaces must be bytes");
            goto done;
        }
        hmac_prepare(&self->key_macs[db], key.buf, (size_t)key.len, PyBytes_AS_STRING(k),
                     PyBytes_GET_SIZE(k));
        hmac_prepare(&self->tag_macs[db], key.buf, (size_t)key.len, PyBytes_AS_STRING(t),
                     PyBytes_GET_SIZE(t));
    }
    Py_XSETREF(self->namespaces, ns);
    ns = NULL;
    rc = 0;
done:
    PyBuffer_Release(&key);
    Py_XDECREF(kd);
    Py_XDECREF(td);
    Py_XDECREF(ns);
    return rc;
}

static PyObject *hasher_name(HasherObject *self, Py_ssize_t db, PyObject *key_bytes);

/* stored_key(db, key) -> the stored name, as KeyHasher.stored_key with hashing on. */
static PyObject *Hasher_stored_key(HasherObject *self, PyObject *const *args,
                                   Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "stored_key(db, key)");
        return NULL;
    }
    Py_ssize_t db = PyLong_AsSsize_t(args[0]);
    if (db == -1 && PyErr_Occurred()) return NULL;
    if (db < 0 || db >= self->databases) {
        PyErr_SetString(PyExc_IndexError, "logical db out of range");
        return NULL;
    }
    if (!PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "the key must be bytes");
        return NULL;
    }
    return hasher_name(self, db, args[1]);
}

/* The stored name of key_bytes (bytes) in logical db `db` (in range). */
static PyObject *hasher_name(HasherObject *self, Py_ssize_t db, PyObject *key_bytes) {
    const char *key = PyBytes_AS_STRING(key_bytes);
    Py_ssize_t n = PyBytes_GET_SIZE(key_bytes);
    PyObject *ns = PyTuple_GET_ITEM(self->namespaces, db);
    Py_ssize_t ns_len = PyBytes_GET_SIZE(ns);

    /* Redis Cluster's hash tag: the bytes between the first '{' and the next '}'. */
    const char *tag = NULL;
    Py_ssize_t tag_len = 0;
    const char *open = memchr(key, '{', (size_t)n);
    if (open) {
        const char *close = memchr(open + 1, '}', (size_t)(key + n - open - 1));
        if (close && close > open + 1) {
            tag = open + 1;
            tag_len = close - tag;
        }
    }
    Py_ssize_t size = ns_len + NAME_DIGEST_CHARS + (tag ? TAG_DIGEST_CHARS + 2 : 0);
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (!out) return NULL;
    char *p = PyBytes_AS_STRING(out);
    memcpy(p, PyBytes_AS_STRING(ns), (size_t)ns_len);
    p += ns_len;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    if (tag) {
        hmac_digest(&self->tag_macs[db], tag, (size_t)tag_len, digest);
        *p++ = '{';
        b64url(digest, TAG_DIGEST_BYTES, p);
        p += TAG_DIGEST_CHARS;
        *p++ = '}';
    }
    hmac_digest(&self->key_macs[db], key, (size_t)n, digest);
    b64url(digest, NAME_DIGEST_BYTES, p);
    return out;
}

static PyMethodDef Hasher_methods[] = {
    {"stored_key", (PyCFunction)(void (*)(void))Hasher_stored_key, METH_FASTCALL,
     "stored_key(db, key) -> the stored name (hashing on)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HasherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proxy._native.Hasher",
    .tp_basicsize = sizeof(HasherObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Stored names: HMAC-SHA256 with precomputed states (see hashing.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Hasher_init,
    .tp_dealloc = (destructor)Hasher_dealloc,
    .tp_methods = Hasher_methods,
};

/* ---------------------------------------------------------------- Gcm ------------- */

/* One AES-256-GCM key and the envelope header (version and key id) it writes.  The key
 * schedule is set up once in each context; every call only sets the nonce. */
typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *enc;
    EVP_CIPHER_CTX *dec;
    unsigned char header[HEADER_BYTES];
    unsigned long long encryptions;
} GcmObject;

static void Gcm_dealloc(GcmObject *self) {
    EVP_CIPHER_CTX_free(self->enc); /* frees wipe the key schedule */
    EVP_CIPHER_CTX_free(self->dec);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Gcm(aes_key: 32 bytes, header: 5 bytes) */
static int Gcm_init(GcmObject *self, PyObject *args, PyObject *kwds) {
    Py_buffer key, header;
    if (!PyArg_ParseTuple(args, "y*y*:Gcm", &key, &header)) return -1;
    int rc = -1;
    if (key.len != 32 || header.len != HEADER_BYTES) {
        PyErr_SetString(PyExc_ValueError, "Gcm takes a 32-byte key and a 5-byte header");
        goto done;
    }
    if (self->enc || self->dec) {
        PyErr_SetString(PyExc_RuntimeError, "Gcm is already initialised");
        goto done;
    }
    self->enc = EVP_CIPHER_CTX_new();
    self->dec = EVP_CIPHER_CTX_new();
    if (!self->enc || !self->dec ||
        EVP_EncryptInit_ex(self->enc, EVP_aes_256_gcm(), NULL, key.buf, NULL) != 1 ||
        EVP_DecryptInit_ex(self->dec, EVP_aes_256_gcm(), NULL, key.buf, NULL) != 1) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not set up AES-256-GCM");
        goto done;
    }
    memcpy(self->header, header.buf, HEADER_BYTES);
    rc = 0;
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&header);
    return rc;
}

/* The associated data: header || db (2 bytes, big endian) || stored name
 * [|| NUL || context].  Gathered into one buffer when it is short (the usual case):
 * each update is a call through OpenSSL's provider dispatch, about as costly as
 * hashing the bytes themselves.  GCM also takes it in pieces, for the long ones. */
#define AAD_GATHER_BYTES 512

static int feed_aad(EVP_CIPHER_CTX *ctx, const unsigned char *header, Py_ssize_t db,
                    PyObject *stored, PyObject *context) {
    int len;
    unsigned char db2[2] = {(unsigned char)((db >> 8) & 0xFF), (unsigned char)(db & 0xFF)};
    Py_ssize_t stored_len = PyBytes_GET_SIZE(stored);
    Py_ssize_t context_len = context != Py_None ? PyBytes_GET_SIZE(context) : -1;
    Py_ssize_t total = HEADER_BYTES + 2 + stored_len + (context_len >= 0 ? 1 + context_len : 0);
    if (total <= AAD_GATHER_BYTES) {
        unsigned char aad[AAD_GATHER_BYTES];
        unsigned char *p = aad;
        memcpy(p, header, HEADER_BYTES);
        p += HEADER_BYTES;
        memcpy(p, db2, 2);
        p += 2;
        memcpy(p, PyBytes_AS_STRING(stored), (size_t)stored_len);
        p += stored_len;
        if (context_len >= 0) {
            *p++ = 0;
            memcpy(p, PyBytes_AS_STRING(context), (size_t)context_len);
        }
        return EVP_CipherUpdate(ctx, NULL, &len, aad, (int)total) == 1 ? 0 : -1;
    }
    if (EVP_CipherUpdate(ctx, NULL, &len, header, HEADER_BYTES) != 1) return -1;
    if (EVP_CipherUpdate(ctx, NULL, &len, db2, 2) != 1) return -1;
    if (stored_len > 0 &&
        EVP_CipherUpdate(ctx, NULL, &len, (unsigned char *)PyBytes_AS_STRING(stored),
                         (int)stored_len) != 1)
        return -1;
    if (context_len >= 0) {
        static const unsigned char nul = 0;
        if (EVP_CipherUpdate(ctx, NULL, &len, &nul, 1) != 1) return -1;
        if (context_len > 0 &&
            EVP_CipherUpdate(ctx, NULL, &len, (unsigned char *)PyBytes_AS_STRING(context),
                             (int)context_len) != 1)
            return -1;
    }
    return 0;
}

static int parse_envelope_args(PyObject *const *args, Py_ssize_t nargs, const char *name,
                               Py_ssize_t *db, PyObject **context) {
    if (nargs < 3 || nargs > 4) {
        PyErr_Format(PyExc_TypeError, "%s(db, stored_key, data, context=None)", name);
        return -1;
    }
    *db = PyLong_AsSsize_t(args[0]);
    if (*db == -1 && PyErr_Occurred()) return -1;
    if (*db < 0 || *db > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "logical db out of range");
        return -1;
    }
    *context = nargs == 4 ? args[3] : Py_None;
    if (!PyBytes_Check(args[1]) || !PyBytes_Check(args[2]) ||
        (*context != Py_None && !PyBytes_Check(*context))) {
        PyErr_Format(PyExc_TypeError, "%s: stored_key, data and context must be bytes", name);
        return -1;
    }
    if (PyBytes_GET_SIZE(args[1]) > INT_MAX || PyBytes_GET_SIZE(args[2]) > INT_MAX - OVERHEAD ||
        (*context != Py_None && PyBytes_GET_SIZE(*context) > INT_MAX)) {
        PyErr_Format(PyExc_OverflowError, "%s: argument too long", name);
        return -1;
    }
    return 0;
}

/* Nonces are drawn from OpenSSL's CSPRNG 256 at a time: one RAND_bytes call costs
 * about as much as a 100-byte encryption, however many bytes it returns.  Each nonce is
 * handed out once (the GIL is held); a forked child starts with an empty pool, so a
 * nonce the parent drew is never used by both processes. */
#define NONCES_PER_DRAW 256
static unsigned char nonce_pool[NONCE_BYTES * NONCES_PER_DRAW];
static size_t nonce_left = 0;

static void nonce_pool_forget(void) {
    OPENSSL_cleanse(nonce_pool, sizeof nonce_pool);
    nonce_left = 0;
}

static int next_nonce(unsigned char *out) {
    if (nonce_left == 0) {
        if (RAND_bytes(nonce_pool, sizeof nonce_pool) != 1) return -1;
        nonce_left = NONCES_PER_DRAW;
    }
    nonce_left--;
    unsigned char *nonce = nonce_pool + nonce_left * NONCE_BYTES;
    memcpy(out, nonce, NONCE_BYTES);
    OPENSSL_cleanse(nonce, NONCE_BYTES);
    return 0;
}

/* seal(db, stored_key, value, context=None) -> envelope, as ValueSealer.seal. */
static PyObject *gcm_seal(GcmObject *self, Py_ssize_t db, PyObject *stored, PyObject *value,
                          PyObject *context);

static PyObject *Gcm_seal(GcmObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t db;
    PyObject *context;
    if (parse_envelope_args(args, nargs, "seal", &db, &context) < 0) return NULL;
    return gcm_seal(self, db, args[1], args[2], context);
}

/* The envelope of `value` (bytes, checked by the caller for size) under stored name
 * `stored` in logical db `db`, with `context` (bytes or Py_None) in the AAD. */
static PyObject *gcm_seal(GcmObject *self, Py_ssize_t db, PyObject *stored, PyObject *value,
                          PyObject *context) {
    Py_ssize_t n = PyBytes_GET_SIZE(value);
    PyObject *out = PyBytes_FromStringAndSize(NULL, n + OVERHEAD);
    if (!out) return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    unsigned char *nonce = p + HEADER_BYTES;
    memcpy(p, self->header, HEADER_BYTES);
    if (next_nonce(nonce) < 0) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL could not produce a random nonce");
        return NULL;
    }
    EVP_CIPHER_CTX *ctx = self->enc;
    int len = 0, fin = 0;
    if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, nonce) != 1 ||
        feed_aad(ctx, self->header, db, stored, context) < 0 ||
        (n > 0 && EVP_EncryptUpdate(ctx, p + HEADER_BYTES + NONCE_BYTES, &len,
                                    (unsigned char *)PyBytes_AS_STRING(value), (int)n) != 1) ||
        EVP_EncryptFinal_ex(ctx, p + HEADER_BYTES + NONCE_BYTES + (n > 0 ? len : 0), &fin) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_BYTES,
                            p + HEADER_BYTES + NONCE_BYTES + n) != 1) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to encrypt a value");
        return NULL;
    }
    self->encryptions++;
    return out;
}

/* Decrypt `blob` into a new bytes object with `before` bytes of room in front of the
 * plaintext and `after` behind it.  Returns NULL with an exception set on an OpenSSL
 * failure, and Py_None (a new reference) when the envelope is not this key's (header),
 * is too short, or does not authenticate. */
static PyObject *gcm_open_into(GcmObject *self, Py_ssize_t db, PyObject *stored,
                               const unsigned char *b, Py_ssize_t total, PyObject *context,
                               Py_ssize_t before, Py_ssize_t after, Py_ssize_t *plain_len) {
    if (total < OVERHEAD || memcmp(b, self->header, HEADER_BYTES) != 0) Py_RETURN_NONE;
    Py_ssize_t n = total - OVERHEAD;
    PyObject *out = PyBytes_FromStringAndSize(NULL, before + n + after);
    if (!out) return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out) + before;
    EVP_CIPHER_CTX *ctx = self->dec;
    int len = 0, fin = 0;
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, b + HEADER_BYTES) != 1 ||
        feed_aad(ctx, self->header, db, stored, context) < 0 ||
        (n > 0 && EVP_DecryptUpdate(ctx, p, &len, b + HEADER_BYTES + NONCE_BYTES, (int)n) != 1) ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_BYTES,
                            (void *)(b + HEADER_BYTES + NONCE_BYTES + n)) != 1) {
        OPENSSL_cleanse(p, (size_t)n);
        Py_DECREF(out);
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL failed to decrypt a value");
        return NULL;
    }
    if (EVP_DecryptFinal_ex(ctx, p + (n > 0 ? len : 0), &fin) != 1) {
        /* Not authentic: what was decrypted must not survive. */
        OPENSSL_cleanse(p, (size_t)n);
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    *plain_len = n;
    return out;
}

/* open(db, stored_key, envelope, context=None) -> plaintext, or None when the envelope
 * is not this key's (header), too short, or does not authenticate. */
static PyObject *Gcm_open(GcmObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t db, n;
    PyObject *context;
    if (parse_envelope_args(args, nargs, "open", &db, &context) < 0) return NULL;
    return gcm_open_into(self, db, args[1], (const unsigned char *)PyBytes_AS_STRING(args[2]),
                         PyBytes_GET_SIZE(args[2]), context, 0, 0, &n);
}

/* The envelope b[0:total] opened into "$<n>\r\n<plaintext>\r\n", or None (see above). */
static PyObject *gcm_open_bulk(GcmObject *self, Py_ssize_t db, PyObject *stored,
                               const unsigned char *b, Py_ssize_t total) {
    Py_ssize_t n = 0, plain = total - OVERHEAD;
    char head[24];
    char *end = put_header(head, '$', plain > 0 ? plain : 0);
    Py_ssize_t head_len = end - head;
    PyObject *out = gcm_open_into(self, db, stored, b, total, Py_None, head_len, 2, &n);
    if (out == NULL || out == Py_None) return out;
    char *p = PyBytes_AS_STRING(out);
    memcpy(p, head, (size_t)head_len);
    p[head_len + n] = '\r';
    p[head_len + n + 1] = '\n';
    return out;
}

/* open_bulk(db, stored_key, envelope) -> the plaintext as a RESP bulk string reply
 * ("$<n>\r\n<plaintext>\r\n", the same in RESP2 and RESP3), or None as open() does.
 * A GET's whole reply in one call: no plaintext object in between. */
static PyObject *Gcm_open_bulk(GcmObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t db;
    PyObject *context;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "open_bulk(db, stored_key, envelope)");
        return NULL;
    }
    if (parse_envelope_args(args, nargs, "open_bulk", &db, &context) < 0) return NULL;
    return gcm_open_bulk(self, db, args[1], (const unsigned char *)PyBytes_AS_STRING(args[2]),
                         PyBytes_GET_SIZE(args[2]));
}

static PyMethodDef Gcm_methods[] = {
    {"seal", (PyCFunction)(void (*)(void))Gcm_seal, METH_FASTCALL,
     "seal(db, stored_key, value, context=None) -> envelope"},
    {"open", (PyCFunction)(void (*)(void))Gcm_open, METH_FASTCALL,
     "open(db, stored_key, envelope, context=None) -> plaintext or None"},
    {"open_bulk", (PyCFunction)(void (*)(void))Gcm_open_bulk, METH_FASTCALL,
     "open_bulk(db, stored_key, envelope) -> RESP bulk reply of the plaintext, or None"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Gcm_members[] = {
    {"encryptions", T_ULONGLONG, offsetof(GcmObject, encryptions), 0,
     "values sealed by this object (for the nonce-limit warning)"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject GcmType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proxy._native.Gcm",
    .tp_basicsize = sizeof(GcmObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One AES-256-GCM key writing and opening envelopes (see envelope.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Gcm_init,
    .tp_dealloc = (destructor)Gcm_dealloc,
    .tp_methods = Gcm_methods,
    .tp_members = Gcm_members,
};

/* ---------------------------------------------------------------- packing --------- */

/* One argument as hiredis.pack_command writes it: bytes as they are, str as UTF-8,
 * int in decimal, float by repr().  A new reference to a bytes-like owner and its
 * buffer, or NULL with TypeError for anything else. */
static PyObject *argument_bytes(PyObject *item) {
    if (PyBytes_CheckExact(item)) {
        Py_INCREF(item);
        return item;
    }
    if (PyUnicode_Check(item)) return PyUnicode_AsUTF8String(item);
    if ((PyLong_Check(item) && !PyBool_Check(item)) || PyFloat_Check(item)) {
        PyObject *text = PyFloat_Check(item) ? PyObject_Repr(item) : PyObject_Str(item);
        if (!text) return NULL;
        PyObject *encoded = PyUnicode_AsUTF8String(text);
        Py_DECREF(text);
        return encoded;
    }
    if (PyBytes_Check(item)) return PyBytes_FromObject(item); /* a bytes subclass */
    PyErr_Format(PyExc_TypeError, "cannot pack an argument of type %.100s",
                 Py_TYPE(item)->tp_name);
    return NULL;
}

static PyObject *pack_bytes(PyObject **items, Py_ssize_t count);

/* pack_command(args: list or tuple) -> a RESP array of bulk strings (writer.command),
 * the same bytes as hiredis.pack_command for the same arguments. */
static PyObject *pack_command(PyObject *module, PyObject *args) {
    if (!PyList_CheckExact(args) && !PyTuple_CheckExact(args)) {
        PyErr_SetString(PyExc_TypeError, "pack_command takes a list or a tuple");
        return NULL;
    }
    Py_ssize_t count = PySequence_Fast_GET_SIZE(args);
    PyObject **items = PySequence_Fast_ITEMS(args);
    PyObject *converted = NULL; /* a tuple of bytes, only when something was not bytes */
    for (Py_ssize_t i = 0; i < count; i++) {
        if (!PyBytes_CheckExact(items[i])) {
            converted = PyTuple_New(count);
            if (!converted) return NULL;
            for (Py_ssize_t j = 0; j < count; j++) {
                PyObject *b = argument_bytes(items[j]);
                if (!b) {
                    Py_DECREF(converted);
                    return NULL;
                }
                PyTuple_SET_ITEM(converted, j, b);
            }
            items = PySequence_Fast_ITEMS(converted);
            break;
        }
    }
    PyObject *out = pack_bytes(items, count);
    Py_XDECREF(converted);
    return out;
}

/* How many decimal digits put_header writes for n >= 0. */
static inline Py_ssize_t decimal_digits(Py_ssize_t n) {
    Py_ssize_t digits = 1;
    for (; n >= 10000; n /= 10000) digits += 4;
    return digits + (n >= 10) + (n >= 100) + (n >= 1000);
}

/* items[0:count] (all bytes) as a RESP array of bulk strings. */
static PyObject *pack_bytes(PyObject **items, Py_ssize_t count) {
    /* The exact size: the object is made once, never resized. */
    Py_ssize_t size = 3 + decimal_digits(count);
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t n = PyBytes_GET_SIZE(items[i]);
        size += 5 + decimal_digits(n) + n;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out) {
        char *start = PyBytes_AS_STRING(out), *p = start;
        p = put_header(p, '*', count);
        for (Py_ssize_t i = 0; i < count; i++) {
            Py_ssize_t n = PyBytes_GET_SIZE(items[i]);
            p = put_header(p, '$', n);
            memcpy(p, PyBytes_AS_STRING(items[i]), (size_t)n);
            p += n;
            *p++ = '\r';
            *p++ = '\n';
        }
        if (p - start != size) { /* the size above is exact: never */
            Py_DECREF(out);
            PyErr_SetString(PyExc_SystemError, "pack_bytes: the request's size was misjudged");
            return NULL;
        }
    }
    return out;
}

/* ---------------------------------------------------------------- requests -------- */

/* A client's byte stream split into commands exactly as Redis splits it
 * (processInlineBuffer and processMultibulkBuffer in Redis's networking.c): a command
 * starting with '*' is a RESP array of bulk strings, anything else an inline line.
 * The Python twin is proxy/resp/reader.py's PythonRequestParser; tests/test_native.py
 * feeds both the same bytes, split the same ways, and compares.
 *
 * As Redis: header lines are found with strchr, so a NUL before the '\r' (or, inline,
 * before the '\n') means "not complete yet"; an array element's trailing two bytes are
 * skipped without being checked; a count of 0 or less is an empty command, skipped.
 * Unlike hiredis, nothing is reserved from what a header declares: an argument list
 * grows as the arguments arrive. */

#define REQ_NONE 0
#define REQ_INLINE 1
#define REQ_MULTIBULK 2

typedef struct {
    PyObject_HEAD
    char *buf;             /* bytes not yet consumed: buf[pos:len] */
    Py_ssize_t len, cap, pos;
    int reqtype;
    long long multibulklen; /* arguments still to read in the current array */
    long long bulklen;      /* length of the argument being read, -1: its header next */
    PyObject *args;         /* the current array's arguments so far */
    Py_ssize_t pending;     /* bytes taken for the current command so far */
    Py_ssize_t max_request_bytes, max_bulk_bytes, max_arguments, max_inline_bytes;
    PyObject *split_inline; /* callable(line: bytes) -> list[bytes] */
    PyObject *error_type;   /* what split_inline raises for unbalanced quotes */
    PyObject *error;        /* None, or the protocol error's text (str) */
} ParserObject;

static void Parser_reset_command(ParserObject *self) {
    self->reqtype = REQ_NONE;
    self->multibulklen = 0;
    self->bulklen = -1;
    self->pending = 0;
    Py_CLEAR(self->args);
}

static void Parser_dealloc(ParserObject *self) {
    PyMem_Free(self->buf);
    Py_XDECREF(self->args);
    Py_XDECREF(self->split_inline);
    Py_XDECREF(self->error_type);
    Py_XDECREF(self->error);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* RequestParser(split_inline, error_type, max_request_bytes, max_bulk_bytes,
 *               max_arguments, max_inline_bytes) */
static int Parser_init(ParserObject *self, PyObject *args, PyObject *kwds) {
    PyObject *split, *etype;
    Py_ssize_t mreq, mbulk, margs, minline;
    if (!PyArg_ParseTuple(args, "OOnnnn:RequestParser", &split, &etype, &mreq, &mbulk,
                          &margs, &minline))
        return -1;
    if (!PyCallable_Check(split) || !PyExceptionClass_Check(etype)) {
        PyErr_SetString(PyExc_TypeError, "split_inline must be callable, error_type a class");
        return -1;
    }
    Py_INCREF(split);
    Py_INCREF(etype);
    Py_XSETREF(self->split_inline, split);
    Py_XSETREF(self->error_type, etype);
    Py_INCREF(Py_None);
    Py_XSETREF(self->error, Py_None);
    self->max_request_bytes = mreq;
    self->max_bulk_bytes = mbulk;
    self->max_arguments = margs;
    self->max_inline_bytes = minline;
    Parser_reset_command(self);
    return 0;
}

static int Parser_fail(ParserObject *self, const char *text) {
    /* Redis's text, its bytes as Latin-1 (a got '%c' may be any byte). */
    char line[96];
    snprintf(line, sizeof line, "Protocol error: %s", text);
    PyObject *message = PyUnicode_DecodeLatin1(line, (Py_ssize_t)strlen(line), NULL);
    if (!message) return -1;
    Py_XSETREF(self->error, message);
    return 0;
}

/* Redis's string2ll over p[0:n]: "0", or an optional '-' then 1-9 and digits, within
 * a signed 64-bit integer. */
static int strict_ll(const char *p, Py_ssize_t n, long long *out) {
    if (n == 0 || n >= 21) return 0;
    if (n == 1 && p[0] == '0') {
        *out = 0;
        return 1;
    }
    int negative = p[0] == '-';
    Py_ssize_t i = negative;
    if (i >= n || p[i] < '1' || p[i] > '9') return 0;
    unsigned long long v = 0;
    if (n - i <= 18) { /* below 10^18: cannot overflow, no check per digit */
        for (; i < n; i++) {
            unsigned digit = (unsigned)(unsigned char)p[i] - '0';
            if (digit > 9) return 0;
            v = v * 10 + digit;
        }
    }
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return 0;
        unsigned long long digit = (unsigned long long)(p[i] - '0');
        if (v > (ULLONG_MAX - digit) / 10) return 0;
        v = v * 10 + digit;
    }
    if (negative) {
        if (v > (unsigned long long)LLONG_MAX + 1) return 0;
        *out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
    } else {
        if (v > (unsigned long long)LLONG_MAX) return 0;
        *out = (long long)v;
    }
    return 1;
}

/* strchr(p, c) over p[0:n] as on a NUL-terminated buffer: NULL if a NUL comes first. */
static const char *c_strchr(const char *p, Py_ssize_t n, char c) {
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] == c) return p + i;
        if (p[i] == '\0') return NULL;
    }
    return NULL;
}

/* The header line at q: 1 with *cr at its CR, or 0 while the line (and the byte after
 * its CR, which Redis skips unchecked) is not all there; past the inline limit that is
 * the protocol error `too_big` (0, with self->error set).  -1 on a Python error. */
static int header_end(ParserObject *self, const char *q, Py_ssize_t avail,
                      const char *too_big, const char **cr) {
    *cr = c_strchr(q, avail, '\r');
    if (!*cr) {
        return avail > self->max_inline_bytes ? Parser_fail(self, too_big) : 0;
    }
    return *cr - q <= avail - 2;
}

/* Parse from p[*pos:n].  Complete commands go to `commands`.  Returns 0 when it needs
 * more bytes or found a protocol error (self->error), -1 on a Python error. */
static int Parser_parse(ParserObject *self, const char *p, Py_ssize_t n, Py_ssize_t *pos,
                        PyObject *commands) {
    while (*pos < n) {
        const char *q = p + *pos;
        Py_ssize_t avail = n - *pos;
        if (self->reqtype == REQ_NONE) self->reqtype = q[0] == '*' ? REQ_MULTIBULK : REQ_INLINE;

        if (self->reqtype == REQ_INLINE) {
            const char *newline = c_strchr(q, avail, '\n');
            if (!newline) {
                if (avail > self->max_inline_bytes) return Parser_fail(self, "too big inline request");
                return 0;
            }
            Py_ssize_t linefeed = 1;
            if (newline != q && newline[-1] == '\r') {
                newline--;
                linefeed = 2;
            }
            Py_ssize_t length = newline - q; /* as Redis: no limit once the line is whole */
            PyObject *line = PyBytes_FromStringAndSize(q, length);
            if (!line) return -1;
            PyObject *argv = PyObject_CallOneArg(self->split_inline, line);
            Py_DECREF(line);
            if (!argv) {
                if (!PyErr_ExceptionMatches(self->error_type)) return -1;
                PyObject *type, *value, *tb;
                PyErr_Fetch(&type, &value, &tb);
                PyObject *text = value ? PyObject_Str(value) : NULL;
                Py_XDECREF(type);
                Py_XDECREF(value);
                Py_XDECREF(tb);
                if (!text) return -1;
                Py_XSETREF(self->error, text);
                return 0;
            }
            *pos += length + linefeed;
            int rc = PyList_Check(argv) && PyList_GET_SIZE(argv) > 0 ? PyList_Append(commands, argv) : 0;
            Py_DECREF(argv);
            Parser_reset_command(self);
            if (rc < 0) return -1;
            continue;
        }

        if (self->multibulklen == 0) { /* the array header */
            const char *cr;
            int found = header_end(self, q, avail, "too big mbulk count string", &cr);
            if (found <= 0) return found;
            long long count;
            if (!strict_ll(q + 1, cr - (q + 1), &count) || count > self->max_arguments)
                return Parser_fail(self, "invalid multibulk length");
            *pos += cr - q + 2;
            self->pending += cr - q + 2;
            if (count <= 0) { /* an empty command: Redis skips it */
                Parser_reset_command(self);
                continue;
            }
            self->multibulklen = count;
            self->bulklen = -1;
            self->args = PyList_New(0);
            if (!self->args) return -1;
            continue;
        }

        if (self->bulklen == -1) { /* an argument's header */
            const char *cr;
            int found = header_end(self, q, avail, "too big bulk count string", &cr);
            if (found <= 0) return found;
            if (q[0] != '$') {
                /* As Redis's reply: CR and LF become spaces, a NUL ends the text. */
                char got = q[0] == '\r' || q[0] == '\n' ? ' ' : q[0];
                char text[32];
                snprintf(text, sizeof text, "expected '$', got '%c'", got);
                return Parser_fail(self, text);
            }
            long long length;
            if (!strict_ll(q + 1, cr - (q + 1), &length) || length < 0 ||
                length > self->max_bulk_bytes)
                return Parser_fail(self, "invalid bulk length");
            *pos += cr - q + 2;
            self->pending += cr - q + 2;
            self->bulklen = length;
            continue;
        }

        /* an argument's bytes, then two bytes Redis skips unchecked */
        if (avail < self->bulklen + 2) {
            if (self->pending + avail > self->max_request_bytes)
                return Parser_fail(self, "invalid bulk length");
            return 0;
        }
        PyObject *arg = PyBytes_FromStringAndSize(q, (Py_ssize_t)self->bulklen);
        if (!arg) return -1;
        int rc = PyList_Append(self->args, arg);
        Py_DECREF(arg);
        if (rc < 0) return -1;
        *pos += (Py_ssize_t)self->bulklen + 2;
        self->pending += (Py_ssize_t)self->bulklen + 2;
        self->bulklen = -1;
        if (self->pending > self->max_request_bytes && self->multibulklen > 1)
            return Parser_fail(self, "invalid bulk length"); /* many arguments adding up */
        if (--self->multibulklen == 0) {
            rc = PyList_Append(commands, self->args);
            Parser_reset_command(self);
            if (rc < 0) return -1;
        }
    }
    return 0;
}

/* Keep p[0:n] (what parsing left over) in self->buf. */
static int Parser_keep(ParserObject *self, const char *p, Py_ssize_t n) {
    if (n > self->cap) {
        Py_ssize_t cap = self->cap ? self->cap : 4096;
        while (cap < n) cap *= 2;
        char *grown = PyMem_Realloc(self->buf, (size_t)cap);
        if (!grown) {
            PyErr_NoMemory();
            return -1;
        }
        self->buf = grown;
        self->cap = cap;
    }
    if (n > 0) memmove(self->buf, p, (size_t)n); /* buf is NULL while nothing is held */
    self->len = n;
    self->pos = 0;
    return 0;
}

/* The read buffer: clients' requests and Redis's replies are read into it (asyncio's
 * BufferedProtocol: get_buffer, then buffer_updated(n)), so the event loop makes no bytes
 * object of each read: feed(n) parses a request read where it lies and keeps only an
 * unfinished command's tail (Parser_keep), as it does with bytes; ReplyReader.feed copies
 * a reply read into its own buffer.  One buffer per thread (an event
 * loop lives in one thread, and the loop may read for one connection while another
 * thread's loop reads too); a connection holds none, so idle clients cost nothing.  A
 * thread's buffer lives as long as the process. */
#define READ_BUFFER_BYTES 262144
static _Thread_local PyObject *read_array; /* bytearray of READ_BUFFER_BYTES */
static _Thread_local PyObject *read_view;  /* memoryview of it, what get_buffer returns */

static PyObject *get_read_buffer(void) {
    if (read_view == NULL) {
        PyObject *array = PyByteArray_FromStringAndSize(NULL, READ_BUFFER_BYTES);
        if (!array) return NULL;
        PyObject *view = PyMemoryView_FromObject(array);
        if (!view) {
            Py_DECREF(array);
            return NULL;
        }
        read_array = array;
        read_view = view;
    }
    Py_INCREF(read_view);
    return read_view;
}

static PyObject *Parser_get_buffer(ParserObject *self, PyObject *sizehint) {
    return get_read_buffer();
}

/* read_buffer(sizehint): the same buffer, for the upstream connections' replies
 * (proxy.backends.redis.connection reads into it too; ReplyReader.feed copies from it). */
static PyObject *module_read_buffer(PyObject *module, PyObject *sizehint) {
    return get_read_buffer();
}

/* feed(data) -> the complete commands, in order.  `data` is bytes, or the count of bytes
 * just read into get_buffer's buffer.  After a protocol error `error` holds its text; the
 * commands before it are still returned, and nothing more may be fed. */
static PyObject *Parser_feed(ParserObject *self, PyObject *data) {
    const char *in;
    Py_ssize_t n;
    if (PyBytes_Check(data)) {
        in = PyBytes_AS_STRING(data);
        n = PyBytes_GET_SIZE(data);
    } else if (PyLong_CheckExact(data)) {
        n = PyLong_AsSsize_t(data);
        if (n < 0 || n > READ_BUFFER_BYTES || read_array == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "feed(n): n bytes of get_buffer's buffer");
            return NULL;
        }
        in = PyByteArray_AS_STRING(read_array);
    } else {
        PyErr_SetString(PyExc_TypeError, "feed takes bytes or a count of bytes read");
        return NULL;
    }
    if (self->error != Py_None) {
        PyErr_SetString(PyExc_RuntimeError, "the request stream already failed");
        return NULL;
    }
    PyObject *commands = PyList_New(0);
    if (!commands) return NULL;
    Py_ssize_t pos = 0;
    int rc;
    if (self->len == self->pos) {
        /* Nothing held back: parse the read itself, keep only its unfinished tail. */
        rc = Parser_parse(self, in, n, &pos, commands);
        if (rc == 0 && self->error == Py_None) rc = Parser_keep(self, in + pos, n - pos);
    } else {
        Py_ssize_t held = self->len - self->pos;
        if (held + n > self->cap || self->pos > 0) {
            if (Parser_keep(self, self->buf + self->pos, held) < 0) {
                Py_DECREF(commands);
                return NULL;
            }
            if (held + n > self->cap) {
                Py_ssize_t cap = self->cap;
                while (cap < held + n) cap *= 2;
                char *grown = PyMem_Realloc(self->buf, (size_t)cap);
                if (!grown) {
                    Py_DECREF(commands);
                    return PyErr_NoMemory();
                }
                self->buf = grown;
                self->cap = cap;
            }
        }
        memcpy(self->buf + self->len, in, (size_t)n);
        self->len += n;
        rc = Parser_parse(self, self->buf, self->len, &self->pos, commands);
    }
    if (rc < 0) {
        Py_DECREF(commands);
        return NULL;
    }
    if (self->error != Py_None) { /* nothing more is read from this stream */
        self->len = self->pos = 0;
    }
    /* An idle connection keeps no large buffer (10,000 idle clients must stay small). */
    if (self->len == self->pos && self->cap > 16384) {
        PyMem_Free(self->buf);
        self->buf = NULL;
        self->cap = self->len = self->pos = 0;
    }
    return commands;
}

static PyObject *Parser_get_error(ParserObject *self, void *closure) {
    Py_INCREF(self->error);
    return self->error;
}

static PyObject *Parser_buffered(ParserObject *self, PyObject *unused) {
    return PyLong_FromSsize_t(self->len - self->pos);
}

static PyMethodDef Parser_methods[] = {
    {"feed", (PyCFunction)Parser_feed, METH_O,
     "feed(data) -> list of commands; data: bytes, or how many bytes were read into "
     "get_buffer()'s buffer"},
    {"get_buffer", (PyCFunction)Parser_get_buffer, METH_O,
     "get_buffer(sizehint) -> this thread's read buffer (asyncio.BufferedProtocol)"},
    {"buffered", (PyCFunction)Parser_buffered, METH_NOARGS,
     "bytes held back for an unfinished command (for tests)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Parser_getset[] = {
    {"error", (getter)Parser_get_error, NULL, "None, or the protocol error's text", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ParserType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proxy._native.RequestParser",
    .tp_basicsize = sizeof(ParserObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A client's requests as Redis splits them (see proxy/resp/reader.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Parser_init,
    .tp_dealloc = (destructor)Parser_dealloc,
    .tp_methods = Parser_methods,
    .tp_getset = Parser_getset,
};

/* ---- Redis's replies: ReplyReader ---------------------------------------------------
 *
 * Reads the replies of one upstream connection (RESP2: cachecloak never sends HELLO 3
 * upstream).  gets() returns the next reply as hiredis.Reader does (bytes, int, None,
 * list, hiredis.ReplyError; hiredis.ProtocolError raised for an invalid stream), and it
 * is tested against hiredis.Reader for that; one difference: an error line's bytes that
 * are not UTF-8 become surrogate escapes, not U+FFFD, so they reach the client intact.  take() is the fast path of a client's
 * batch (proxy.server.client.Batch): it turns the replies of the batch's commands
 * straight into the client's bytes, as the Python decoders named by `kinds` would, and
 * stops before the first reply it does not handle (an error reply, an envelope that
 * does not open under the current key, a reply of an unexpected type): gets() and the
 * Python decoder take that one.
 */

#define KIND_PYTHON 0
#define KIND_VALUE 1          /* replies.value: nil, or a bulk envelope opened */
#define KIND_STATUS_OR_NIL 2  /* replies.status_or_nil: +status, or nil */
#define KIND_STATUS 3         /* replies.status */
#define KIND_INTEGER 4        /* replies.integer */
#define MAX_REPLY_DEPTH 512

typedef struct {
    PyObject_HEAD
    /* buf[pos:len] is what the reader has not yet returned.  buf is the reader's own
     * buffer (cap bytes), except while a read is lent to it (reader_lend): then buf is
     * the read buffer itself, and own/own_cap hold the reader's buffer until
     * reader_settle gives it back. */
    char *buf;
    Py_ssize_t len, pos, cap;
    char *own;
    Py_ssize_t own_cap;
    int lent;
    PyObject *error_class;     /* hiredis.ReplyError */
    PyObject *protocol_error;  /* hiredis.ProtocolError */
    PyObject *null_bulk[2];    /* RESP2 $-1, RESP3 _ */
} ReplyReaderObject;

static void ReplyReader_dealloc(ReplyReaderObject *self) {
    PyMem_Free(self->lent ? self->own : self->buf);
    Py_XDECREF(self->error_class);
    Py_XDECREF(self->protocol_error);
    Py_XDECREF(self->null_bulk[0]);
    Py_XDECREF(self->null_bulk[1]);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ReplyReader(reply_error_class, protocol_error_class) */
static int ReplyReader_init(ReplyReaderObject *self, PyObject *args, PyObject *kwds) {
    PyObject *error_class, *protocol_error;
    if (!PyArg_ParseTuple(args, "OO:ReplyReader", &error_class, &protocol_error)) return -1;
    Py_INCREF(error_class);
    Py_XSETREF(self->error_class, error_class);
    Py_INCREF(protocol_error);
    Py_XSETREF(self->protocol_error, protocol_error);
    if (!self->null_bulk[0]) {
        self->null_bulk[0] = PyBytes_FromStringAndSize("$-1\r\n", 5);
        self->null_bulk[1] = PyBytes_FromStringAndSize("_\r\n", 3);
        if (!self->null_bulk[0] || !self->null_bulk[1]) return -1;
    }
    return 0;
}

/* feed(data, offset=0, length=len(data)-offset) */
static PyObject *ReplyReader_feed_bytes(ReplyReaderObject *self, const char *data,
                                        Py_ssize_t size, PyObject *const *args,
                                        Py_ssize_t nargs);
static int reader_append(ReplyReaderObject *self, const char *data, Py_ssize_t n);

/* feed(data, offset=0, length=None): data is bytes or any buffer (the read buffer's
 * memoryview), as hiredis.Reader.feed takes. */
static PyObject *ReplyReader_feed(ReplyReaderObject *self, PyObject *const *args,
                                  Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "feed(data, offset=0, length=None)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *done = ReplyReader_feed_bytes(self, view.buf, view.len, args, nargs);
    PyBuffer_Release(&view);
    return done;
}

static PyObject *ReplyReader_feed_bytes(ReplyReaderObject *self, const char *data,
                                        Py_ssize_t size, PyObject *const *args,
                                        Py_ssize_t nargs) {
    Py_ssize_t offset = 0, n;
    if (nargs > 1 && (offset = PyLong_AsSsize_t(args[1])) == -1 && PyErr_Occurred()) return NULL;
    n = size - offset;
    if (nargs > 2 && (n = PyLong_AsSsize_t(args[2])) == -1 && PyErr_Occurred()) return NULL;
    if (offset < 0 || n < 0 || offset > size || n > size - offset) {
        PyErr_SetString(PyExc_ValueError, "offset and length must lie within data");
        return NULL;
    }
    if (reader_append(self, data + offset, n) < 0) return NULL;
    Py_RETURN_NONE;
}

static int reader_settle(ReplyReaderObject *self);

/* Append data[:n] to what the reader has not yet returned. */
static int reader_append(ReplyReaderObject *self, const char *data, Py_ssize_t n) {
    if (self->lent && reader_settle(self) < 0) return -1;
    if (self->pos == self->len) self->pos = self->len = 0;
    if (self->len + n > self->cap && self->pos > 0) { /* move the unread rest to the front */
        memmove(self->buf, self->buf + self->pos, (size_t)(self->len - self->pos));
        self->len -= self->pos;
        self->pos = 0;
    }
    if (self->len + n > self->cap) {
        Py_ssize_t cap = self->cap ? self->cap : 16384;
        while (cap < self->len + n) cap *= 2;
        char *grown = PyMem_Realloc(self->buf, (size_t)cap);
        if (!grown) {
            PyErr_NoMemory();
            return -1;
        }
        self->buf = grown;
        self->cap = cap;
    }
    if (n > 0) memcpy(self->buf + self->len, data, (size_t)n);
    self->len += n;
    return 0;
}

/* Read data[:n] where it lies, without copying it in (UpstreamCore.buffer_updated, for
 * the read buffer): only while the reader holds nothing unread.  Replies are taken from
 * it in place; reader_settle must run before the data changes or returns to Python,
 * and copies in what is left of it (an incomplete reply, one for Python). */
static void reader_lend(ReplyReaderObject *self, const char *data, Py_ssize_t n) {
    self->own = self->buf;
    self->own_cap = self->cap;
    self->buf = (char *)data;
    self->len = self->cap = n;
    self->pos = 0;
    self->lent = 1;
}

static int reader_settle(ReplyReaderObject *self) {
    if (!self->lent) return 0;
    const char *rest = self->buf + self->pos;
    Py_ssize_t n = self->len - self->pos;
    self->buf = self->own;
    self->cap = self->own_cap;
    self->own = NULL;
    self->own_cap = 0;
    self->pos = self->len = 0;
    self->lent = 0;
    return reader_append(self, rest, n);
}

/* The CR of the first CRLF in b[from:len], or -1 (as hiredis, a lone CR is text). */
static Py_ssize_t line_end(const char *b, Py_ssize_t from, Py_ssize_t len) {
    while (from < len - 1) {
        const char *cr = memchr(b + from, '\r', (size_t)(len - 1 - from));
        if (!cr) return -1;
        if (cr[1] == '\n') return cr - b;
        from = cr - b + 1;
    }
    return -1;
}

/* Where the reply at b[pos:len] ends: 1 with *end set, 0 when incomplete, -1 for an
 * invalid stream (with *why). */
static int scan_reply(const char *b, Py_ssize_t len, Py_ssize_t pos, Py_ssize_t *end,
                      const char **why) {
    Py_ssize_t pending = 1;
    long long n;
    while (pending > 0) {
        if (pos >= len) return 0;
        char type = b[pos];
        if (type != '+' && type != '-' && type != ':' && type != '$' && type != '*') {
            *why = "Protocol error: unexpected reply type byte"; /* at once, as hiredis */
            return -1;
        }
        Py_ssize_t cr = line_end(b, pos + 1, len);
        if (cr < 0) return 0;
        Py_ssize_t next = cr + 2;
        pending--;
        switch (type) {
        case '+':
        case '-':
            /* As hiredis: a simple string holds no CR or LF. */
            if (memchr(b + pos + 1, '\r', (size_t)(cr - pos - 1)) ||
                memchr(b + pos + 1, '\n', (size_t)(cr - pos - 1))) {
                *why = "Bad simple string value";
                return -1;
            }
            break;
        case ':':
            if (!strict_ll(b + pos + 1, cr - pos - 1, &n)) {
                *why = "Bad integer value";
                return -1;
            }
            break;
        case '$':
            if (!strict_ll(b + pos + 1, cr - pos - 1, &n) || n < -1 ||
                n > PY_SSIZE_T_MAX / 2) {
                *why = "Bad bulk string length";
                return -1;
            }
            if (n >= 0) {
                if (next + n + 2 > len) return 0;
                next += (Py_ssize_t)n + 2;
            }
            break;
        case '*':
            if (!strict_ll(b + pos + 1, cr - pos - 1, &n) || n < -1 ||
                n > PY_SSIZE_T_MAX / 4 - pending) {
                *why = "Bad multi-bulk length";
                return -1;
            }
            if (n > 0) pending += (Py_ssize_t)n;
            break;
        default:
            *why = "Protocol error: unexpected reply type byte";
            return -1;
        }
        pos = next;
    }
    *end = pos;
    return 1;
}

/* The reply at b[*pos] (complete: scan_reply said so) as a Python object. */
static PyObject *build_reply(ReplyReaderObject *self, const char *b, Py_ssize_t len,
                             Py_ssize_t *pos, int depth) {
    Py_ssize_t p = *pos;
    Py_ssize_t cr = line_end(b, p + 1, len);
    const char *text = b + p + 1;
    Py_ssize_t text_len = cr - p - 1;
    long long n = 0;
    *pos = cr + 2;
    switch (b[p]) {
    case '+':
        return PyBytes_FromStringAndSize(text, text_len);
    case '-': {
        /* Not hiredis's "replace": bytes that are not UTF-8 (an option Redis echoes)
         * stay surrogate escapes, which writer.error turns back into those bytes. */
        PyObject *message = PyUnicode_DecodeUTF8(text, text_len, "surrogateescape");
        if (!message) return NULL;
        PyObject *error = PyObject_CallOneArg(self->error_class, message);
        Py_DECREF(message);
        return error;
    }
    case ':':
        strict_ll(text, text_len, &n);
        return PyLong_FromLongLong(n);
    case '$':
        strict_ll(text, text_len, &n);
        if (n < 0) Py_RETURN_NONE;
        *pos += (Py_ssize_t)n + 2;
        return PyBytes_FromStringAndSize(b + cr + 2, (Py_ssize_t)n);
    default: { /* '*' */
        strict_ll(text, text_len, &n);
        if (n < 0) Py_RETURN_NONE;
        if (depth >= MAX_REPLY_DEPTH) {
            PyErr_SetString(self->protocol_error, "Protocol error: replies nested too deep");
            return NULL;
        }
        PyObject *list = PyList_New((Py_ssize_t)n);
        if (!list) return NULL;
        for (Py_ssize_t i = 0; i < (Py_ssize_t)n; i++) {
            PyObject *item = build_reply(self, b, len, pos, depth + 1);
            if (!item) {
                Py_DECREF(list);
                return NULL;
            }
            PyList_SET_ITEM(list, i, item);
        }
        return list;
    }
    }
}

static void ReplyReader_consumed(ReplyReaderObject *self, Py_ssize_t pos) {
    self->pos = pos;
    if (pos == self->len && !self->lent) {
        self->pos = self->len = 0;
        if (self->cap > 65536) { /* a large reply passed: do not keep its buffer */
            PyMem_Free(self->buf);
            self->buf = NULL;
            self->cap = 0;
        }
    }
}

/* gets() -> the next reply, or False while it is incomplete. */
static PyObject *ReplyReader_gets(ReplyReaderObject *self, PyObject *unused) {
    Py_ssize_t end;
    const char *why = NULL;
    if (reader_settle(self) < 0) return NULL; /* Python only sees the reader's own buffer */
    int rc = scan_reply(self->buf, self->len, self->pos, &end, &why);
    if (rc == 0) Py_RETURN_FALSE;
    if (rc < 0) {
        PyErr_SetString(self->protocol_error, why);
        return NULL;
    }
    Py_ssize_t pos = self->pos;
    PyObject *reply = build_reply(self, self->buf, self->len, &pos, 0);
    if (!reply) return NULL;
    ReplyReader_consumed(self, end);
    return reply;
}

/* ---- a read's single command: Single -------------------------------------------------
 *
 * The reply position (proxy.server.client.Slot's fields) of a read that held one
 * command simple enough for Forwarder.one, made by it; proxy.server.client.Single
 * subclasses it with the Python methods a Slot has (complete, fail).  Fields the Python
 * side reads or sets are members; `kind` says what its reply holds (KIND_*), so
 * ReplyReader.take_singles can decode runs of their replies without Python.
 */

typedef struct {
    PyObject_HEAD
    PyObject *client, *request, *ctx, *decode, *cache, *gcm;
    PyObject *data, *stat, *start, *t0;
    Py_ssize_t db;
    int proto;
    int kind;
} SingleObject;

/* Every object field, once (GC_FIELD_FUNCTIONS). */
#define SINGLE_OBJECT_FIELDS(X) \
    X(client) X(request) X(ctx) X(decode) X(cache) X(gcm) X(data) X(stat) X(start) X(t0)

GC_FIELD_FUNCTIONS(Single, SingleObject, SINGLE_OBJECT_FIELDS)

static PyMemberDef Single_members[] = {
    {"client", T_OBJECT, offsetof(SingleObject, client), READONLY, NULL},
    {"request", T_OBJECT, offsetof(SingleObject, request), READONLY,
     "the packed command for Redis"},
    {"ctx", T_OBJECT, offsetof(SingleObject, ctx), READONLY, "the stored name"},
    {"decode", T_OBJECT, offsetof(SingleObject, decode), READONLY, NULL},
    {"cache", T_OBJECT, offsetof(SingleObject, cache), READONLY, NULL},
    {"gcm", T_OBJECT, offsetof(SingleObject, gcm), READONLY, NULL},
    {"db", T_PYSSIZET, offsetof(SingleObject, db), READONLY, NULL},
    {"proto", T_INT, offsetof(SingleObject, proto), READONLY, NULL},
    {"kind", T_INT, offsetof(SingleObject, kind), READONLY, NULL},
    {"data", T_OBJECT, offsetof(SingleObject, data), 0, NULL},
    {"stat", T_OBJECT, offsetof(SingleObject, stat), 0, NULL},
    {"start", T_OBJECT, offsetof(SingleObject, start), 0, NULL},
    {"t0", T_OBJECT, offsetof(SingleObject, t0), 0, NULL},
    {NULL},
};

/* A new instance of `type` (Single or a subclass); steals nothing. */
static PyObject *single_new(PyTypeObject *type, PyObject *client, PyObject *request,
                            PyObject *ctx, PyObject *decode, int kind, PyObject *cache,
                            PyObject *gcm, Py_ssize_t db, int proto) {
    SingleObject *self = (SingleObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->client = Py_NewRef(client);
    self->request = Py_NewRef(request);
    self->ctx = Py_NewRef(ctx);
    self->decode = Py_NewRef(decode);
    self->cache = Py_NewRef(cache);
    self->gcm = Py_NewRef(gcm);
    self->kind = kind;
    self->db = db;
    self->proto = proto;
    return (PyObject *)self;
}

/* Single(client, request, ctx, decode, kind, cache, gcm, db, proto): for tests;
 * Forwarder.one makes them in the proxy. */
static PyObject *Single_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *client, *request, *ctx, *decode, *cache, *gcm;
    int kind, proto;
    Py_ssize_t db;
    if (!PyArg_ParseTuple(args, "OOOOiOOni:Single", &client, &request, &ctx, &decode, &kind,
                          &cache, &gcm, &db, &proto))
        return NULL;
    if (gcm != Py_None && !PyObject_TypeCheck(gcm, &GcmType)) {
        PyErr_SetString(PyExc_TypeError, "Single: gcm must be a Gcm or None");
        return NULL;
    }
    return single_new(type, client, request, ctx, decode, kind, cache, gcm, db, proto);
}

static PyTypeObject SingleType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proxy._native.Single",
    .tp_basicsize = sizeof(SingleObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The reply position of a read's single simple command (see proxy/_native.c).",
    .tp_new = Single_tp_new,
    .tp_dealloc = (destructor)Single_dealloc,
    .tp_traverse = (traverseproc)Single_traverse,
    .tp_clear = (inquiry)Single_clear,
    .tp_members = Single_members,
};

/* ---- a read's run of simple commands: Batch -----------------------------------------
 *
 * The reply position of a run of forwarded commands from one read (see
 * proxy.server.client.PythonBatch, its twin and the reference, for what it is).
 * proxy.server.client.Batch subclasses it with the Python methods (complete, fail,
 * _done, take_replies).  Its fields are PythonBatch's attributes; db, proto, count, t0
 * and in_c are C numbers so that take_batch and ClientCore read them without a call.
 * Batch(client) is what PythonBatch(client) is; ClientCore makes them itself for a read
 * of several commands that Forwarder takes (client_batch).
 */

typedef struct {
    PyObject_HEAD
    PyObject *client, *decoders, *ctxs, *packed, *parts, *data, *cache, *gcm, *stats,
        *names, *start, *kinds;
    Py_ssize_t db, count;
    double t0;
    int proto;
    char in_c;
} BatchObject;

#define BATCH_OBJECT_FIELDS(X) \
    X(client) X(decoders) X(ctxs) X(packed) X(parts) X(data) X(cache) X(gcm) X(stats) \
    X(names) X(start) X(kinds)

GC_FIELD_FUNCTIONS(Batch, BatchObject, BATCH_OBJECT_FIELDS)

#define BATCH_MEMBER(name, type, field, doc) \
    {name, type, offsetof(BatchObject, field), 0, doc},

static PyMemberDef Batch_members[] = {
    BATCH_MEMBER("client", T_OBJECT_EX, client, NULL)
    BATCH_MEMBER("decoders", T_OBJECT_EX, decoders, "each command's reply decoder")
    BATCH_MEMBER("ctxs", T_OBJECT_EX, ctxs, "each command's stored name")
    BATCH_MEMBER("packed", T_OBJECT_EX, packed, "the requests for Redis, until submitted")
    BATCH_MEMBER("parts", T_OBJECT_EX, parts, "the client's bytes of each reply so far")
    BATCH_MEMBER("data", T_OBJECT_EX, data, "parts, once every reply is there")
    BATCH_MEMBER("cache", T_OBJECT_EX, cache, NULL)
    BATCH_MEMBER("gcm", T_OBJECT_EX, gcm, NULL)
    BATCH_MEMBER("stats", T_OBJECT_EX, stats, NULL)
    BATCH_MEMBER("names", T_OBJECT_EX, names, "with metrics: each command's name")
    BATCH_MEMBER("start", T_OBJECT_EX, start, NULL)
    BATCH_MEMBER("kinds", T_OBJECT_EX, kinds, "each reply's KIND_*")
    BATCH_MEMBER("db", T_PYSSIZET, db, NULL)
    BATCH_MEMBER("count", T_PYSSIZET, count, NULL)
    BATCH_MEMBER("t0", T_DOUBLE, t0, NULL)
    BATCH_MEMBER("proto", T_INT, proto, NULL)
    BATCH_MEMBER("in_c", T_BOOL, in_c, NULL)
    {NULL},
};

static PyObject *s_stats; /* "stats", interned at module init */

/* A new, empty batch of `type` (Batch or a subclass) for `client`, as PythonBatch's
 * __init__ makes one; `stats` is the client's (None: no metrics). */
static PyObject *batch_new(PyTypeObject *type, PyObject *client, PyObject *stats) {
    BatchObject *self = (BatchObject *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->client = Py_NewRef(client);
    self->stats = Py_NewRef(stats);
    self->data = Py_NewRef(Py_None);
    self->start = Py_NewRef(Py_None);
    self->cache = Py_NewRef(Py_None);
    self->gcm = Py_NewRef(Py_None);
    self->proto = 2;
    if (stats != Py_None) {
        self->t0 = monotonic_seconds(); /* from the read to the replies */
        self->names = PyList_New(0);
    } else {
        self->names = Py_NewRef(Py_None);
    }
    self->decoders = PyList_New(0);
    self->ctxs = PyList_New(0);
    self->packed = PyList_New(0);
    self->parts = PyList_New(0);
    self->kinds = PyByteArray_FromStringAndSize(NULL, 0);
    if (!self->names || !self->decoders || !self->ctxs || !self->packed || !self->parts ||
        !self->kinds) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* Batch(client) */
static PyObject *Batch_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *client;
    if (!PyArg_ParseTuple(args, "O:Batch", &client)) return NULL;
    PyObject *stats = PyObject_GetAttr(client, s_stats);
    if (!stats) return NULL;
    PyObject *batch = batch_new(type, client, stats);
    Py_DECREF(stats);
    return batch;
}

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proxy._native.Batch",
    .tp_basicsize = sizeof(BatchObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The reply position of a read's run of simple commands (see proxy/_native.c).",
    .tp_new = Batch_tp_new,
    .tp_dealloc = (destructor)Batch_dealloc,
    .tp_traverse = (traverseproc)Batch_traverse,
    .tp_clear = (inquiry)Batch_clear,
    .tp_members = Batch_members,
};

/* The client's bytes for the reply at b[*pos] of a command whose reply is of `kind`
 * (KIND_*), stored under `stored`, as the Python decoder of that kind would make them;
 * *pos moves past it.  NULL without an exception: not one for C (incomplete, an error
 * reply, an envelope of an old key or that does not authenticate, anything else), and
 * gets() and the Python decoder take it.  NULL with an exception: a Python error. */
static inline __attribute__((always_inline)) PyObject *take_reply(ReplyReaderObject *self, int kind, PyObject *stored, int resp3,
                            GcmObject *gcm, Py_ssize_t db, Py_ssize_t *pos) {
    const char *b = self->buf;
    Py_ssize_t len = self->len, at = *pos;
    long long n;
    if (at >= len || kind == KIND_PYTHON) return NULL;
    Py_ssize_t cr = line_end(b, at + 1, len);
    if (cr < 0) return NULL;
    char type = b[at];
    Py_ssize_t next = cr + 2;
    PyObject *part = NULL;
    if (type == '$') {
        if (kind != KIND_VALUE && kind != KIND_STATUS_OR_NIL) return NULL;
        if (!strict_ll(b + at + 1, cr - at - 1, &n) || n < -1) return NULL; /* gets() says */
        if (n == -1) {
            part = self->null_bulk[resp3];
            Py_INCREF(part);
        } else {
            if (kind != KIND_VALUE || n > PY_SSIZE_T_MAX / 2) return NULL;
            if (next + n + 2 > len) return NULL; /* not all here yet */
            Py_ssize_t total = next + (Py_ssize_t)n + 2;
            if (b[total - 2] != '\r' || b[total - 1] != '\n') return NULL;
            if (gcm == NULL) {
                part = PyBytes_FromStringAndSize(b + at, total - at);
            } else {
                if (!PyBytes_Check(stored)) return NULL;
                part = gcm_open_bulk(gcm, db, stored, (const unsigned char *)b + next,
                                     (Py_ssize_t)n);
                if (part == Py_None) { /* old key or not authentic: Python decides */
                    Py_DECREF(part);
                    return NULL;
                }
            }
            next = total;
        }
    } else if (type == '+') {
        if (kind != KIND_STATUS && kind != KIND_STATUS_OR_NIL) return NULL;
        part = PyBytes_FromStringAndSize(b + at, next - at);
    } else if (type == ':') {
        if (kind != KIND_INTEGER || !strict_ll(b + at + 1, cr - at - 1, &n)) return NULL;
        part = PyBytes_FromStringAndSize(b + at, next - at);
    } else {
        return NULL; /* error replies, arrays, anything else: gets() and Python */
    }
    if (part) *pos = next;
    return part;
}

/* take()'s work (types checked by the caller): -1 with an exception set, or how many
 * replies it took. */
static Py_ssize_t reader_take(ReplyReaderObject *self, PyObject *parts, PyObject *kinds_obj,
                              PyObject *ctxs, long proto, GcmObject *gcm, Py_ssize_t db) {
    const unsigned char *kinds = (const unsigned char *)PyByteArray_AS_STRING(kinds_obj);
    Py_ssize_t count = PyByteArray_GET_SIZE(kinds_obj);
    if (PyList_GET_SIZE(ctxs) < count) count = PyList_GET_SIZE(ctxs);
    Py_ssize_t pos = self->pos, taken = 0;
    for (Py_ssize_t i = PyList_GET_SIZE(parts); i < count; i++) {
        PyObject *part = take_reply(self, kinds[i], PyList_GET_ITEM(ctxs, i), proto == 3,
                                    gcm, db, &pos);
        if (!part) {
            if (PyErr_Occurred()) return -1;
            break;
        }
        int rc = PyList_Append(parts, part);
        Py_DECREF(part);
        if (rc < 0) return -1;
        taken++;
    }
    ReplyReader_consumed(self, pos);
    return taken;
}

/* take(parts, kinds, ctxs, proto, gcm, db) -> how many replies it took.
 *
 * The batch's next reply is number len(parts); kinds[i] (a bytearray of KIND_*) says
 * what command i's reply holds, ctxs[i] its stored name, `gcm` the cache's current Gcm
 * (None: values are stored as they are).  Each reply taken appends the client's bytes
 * for it to `parts`, exactly as the Python decoder of its kind would. */
static PyObject *ReplyReader_take(ReplyReaderObject *self, PyObject *const *args,
                                  Py_ssize_t nargs) {
    if (nargs != 6 || !PyList_Check(args[0]) || !PyByteArray_Check(args[1]) ||
        !PyList_Check(args[2]) ||
        (args[4] != Py_None && !PyObject_TypeCheck(args[4], &GcmType))) {
        PyErr_SetString(PyExc_TypeError,
                        "take(parts: list, kinds: bytearray, ctxs: list, proto, gcm, db)");
        return NULL;
    }
    if (reader_settle(self) < 0) return NULL;
    long proto = PyLong_AsLong(args[3]);
    Py_ssize_t db = PyLong_AsSsize_t(args[5]);
    if (PyErr_Occurred()) return NULL;
    GcmObject *gcm = args[4] == Py_None ? NULL : (GcmObject *)args[4];
    Py_ssize_t taken = reader_take(self, args[0], args[1], args[2], proto, gcm, db);
    return taken < 0 ? NULL : PyLong_FromSsize_t(taken);
}

/* take_singles(waiters, touched) -> how many replies it took.
 *
 * For the Singles at the head of an upstream connection's FIFO (a deque), one after
 * another: decode the reply in C (take_reply), fill the Single (and tell its metrics
 * entry, `stat.finish(t0, data)`), pop it, and append its client to `touched` unless it
 * is already the last one there.  Stops at the first waiter that is not a Single or
 * whose reply is not one for C: the connection's Python loop takes that one. */
static PyObject *s_finish; /* "finish", interned at module init */

static Py_ssize_t take_singles(ReplyReaderObject *self, PyObject *waiters, PyObject *touched) {
    Py_ssize_t taken = 0;
    for (;;) {
        PyObject *head;
        int found = queue_head(waiters, &head);
        if (found <= 0) {
            if (found < 0) return -1;
            break;
        }
        if (!PyObject_TypeCheck(head, &SingleType)) {
            Py_DECREF(head);
            break;
        }
        SingleObject *single = (SingleObject *)head;
        Py_ssize_t pos = self->pos;
        PyObject *part = take_reply(self, single->kind, single->ctx, single->proto == 3,
                                    single->gcm == Py_None ? NULL : (GcmObject *)single->gcm,
                                    single->db, &pos);
        if (!part) {
            Py_DECREF(head);
            if (PyErr_Occurred()) return -1;
            break;
        }
        ReplyReader_consumed(self, pos);
        Py_XSETREF(single->data, part);
        taken++;
        PyObject *popped = queue_popleft(waiters);
        if (!popped) {
            Py_DECREF(head);
            return -1;
        }
        Py_DECREF(popped);
        Py_ssize_t n = PyList_GET_SIZE(touched);
        if (single->client != Py_None &&
            (n == 0 || PyList_GET_ITEM(touched, n - 1) != single->client) &&
            PyList_Append(touched, single->client) < 0) {
            Py_DECREF(head);
            return -1;
        }
        if (single->stat && single->stat != Py_None) {
            PyObject *done = PyObject_CallMethodObjArgs(
                single->stat, s_finish, single->t0 ? single->t0 : Py_None, part, NULL);
            if (!done) {
                Py_DECREF(head);
                return -1;
            }
            Py_DECREF(done);
        }
        Py_DECREF(head);
    }
    return taken;
}

static PyObject *batch__done; /* "_done", interned with the module's other names */

/* take_batch(waiters, touched): when the waiter at the head of an upstream connection's
 * FIFO is a Batch whose replies C decodes (its `in_c`), what Batch.take_replies and the
 * connection's Python loop do with it: take what is here of its next replies (as take()),
 * pop a FIFO entry per reply taken, finish the batch (_done) when that was its last, and
 * append its client to `touched` unless it is already the last one there.  Returns how
 * many replies it took (0: not such a batch, or its next reply is not one for C), or -1
 * with an exception set.  With this module built every client batch is a Batch
 * (proxy.server.client.Batch subclasses it); anything else is for Python. */
static Py_ssize_t take_batch(ReplyReaderObject *self, PyObject *waiters, PyObject *touched) {
    PyObject *head;
    int found = queue_head(waiters, &head);
    if (found <= 0) return found;
    Py_ssize_t taken = 0;
    BatchObject *b = (BatchObject *)head;
    if (!PyObject_TypeCheck(head, &BatchType) || !b->in_c || !b->parts || !b->kinds ||
        !b->ctxs || !b->gcm || !b->stats || !b->client || !PyList_Check(b->parts) ||
        !PyByteArray_Check(b->kinds) || !PyList_Check(b->ctxs) ||
        (b->gcm != Py_None && !PyObject_TypeCheck(b->gcm, &GcmType)))
        goto done; /* not for C, or not as made: Python's take_replies says what is wrong */
    taken = reader_take(self, b->parts, b->kinds, b->ctxs, b->proto,
                        b->gcm == Py_None ? NULL : (GcmObject *)b->gcm, b->db);
    if (taken <= 0) goto done;
    if (PyList_GET_SIZE(b->parts) == b->count) {
        if (b->stats == Py_None) { /* _done without metrics: the parts are the data */
            Py_XSETREF(b->data, Py_NewRef(b->parts));
        } else {
            PyObject *finished = PyObject_CallMethodNoArgs(head, batch__done);
            if (!finished) goto fail;
            Py_DECREF(finished);
        }
    }
    for (Py_ssize_t i = 0; i < taken; i++) {
        PyObject *popped = queue_popleft(waiters);
        if (!popped) goto fail;
        Py_DECREF(popped);
    }
    Py_ssize_t n = PyList_GET_SIZE(touched);
    if ((n == 0 || PyList_GET_ITEM(touched, n - 1) != b->client) &&
        PyList_Append(touched, b->client) < 0)
        goto fail;
    goto done;
fail:
    taken = -1;
done:
    Py_DECREF(head);
    return taken;
}

static PyObject *ReplyReader_take_singles(ReplyReaderObject *self, PyObject *const *args,
                                          Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "take_singles(waiters: deque, touched: list)");
        return NULL;
    }
    if (reader_settle(self) < 0) return NULL;
    Py_ssize_t taken = take_singles(self, args[0], args[1]);
    return taken < 0 ? NULL : PyLong_FromSsize_t(taken);
}

static PyObject *ReplyReader_buffered(ReplyReaderObject *self, PyObject *unused) {
    if (reader_settle(self) < 0) return NULL;
    return PyLong_FromSsize_t(self->len - self->pos);
}

static PyMethodDef ReplyReader_methods[] = {
    {"feed", (PyCFunction)(void (*)(void))ReplyReader_feed, METH_FASTCALL,
     "feed(data, offset=0, length=None)"},
    {"gets", (PyCFunction)ReplyReader_gets, METH_NOARGS,
     "gets() -> the next reply, or False"},
    {"take", (PyCFunction)(void (*)(void))ReplyReader_take, METH_FASTCALL,
     "take(parts, kinds, ctxs, proto, gcm, db) -> replies taken for a batch"},
    {"take_singles", (PyCFunction)(void (*)(void))ReplyReader_take_singles, METH_FASTCALL,
     "take_singles(waiters, touched) -> replies taken for the Singles at the head"},
    {"buffered", (PyCFunction)ReplyReader_buffered, METH_NOARGS,
     "bytes read but not yet returned (for tests)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReplyReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proxy._native.ReplyReader",
    .tp_basicsize = sizeof(ReplyReaderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Redis's RESP2 replies, as hiredis.Reader reads them, plus a batch fast path.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)ReplyReader_init,
    .tp_dealloc = (destructor)ReplyReader_dealloc,
    .tp_methods = ReplyReader_methods,
};

/* ---- forwarding a batch's simple commands: Forwarder --------------------------------
 *
 * proxy.commands.table.forward for the simplest commands, for a client's batch
 * (proxy.server.client.Batch): one key at 1, at most one value at a fixed offset from
 * it, nothing else to check.  `table` (built by proxy.commands.table.simple_table) maps
 * a command name as sent to (arity, value offset, decoder, reply kind).  forward()
 * hashes the key, seals the value, packs the command and appends to the batch's lists
 * what client.forward would, for commands[start:] until the first one it does not
 * handle (not in the table, wrong arity, anything unusual): the Python dispatch takes
 * that one, with the error reply it may deserve.  tests/test_native_forward.py checks it
 * against the Python path.
 */

#define FORWARD_MAX_ARGS 16

typedef struct {
    PyObject_HEAD
    PyObject *table;
    HasherObject *hasher;  /* NULL: hashing off, the name is namespace + key */
    PyObject *namespaces;  /* tuple of bytes, one per logical db */
    GcmObject *gcm;        /* NULL: encryption off, values go as they are */
    PyTypeObject *single;  /* what one() makes: Single or a subclass */
    PyTypeObject *batch;   /* what ClientCore makes of a read of several: Batch or a
                            * subclass; NULL: Python makes those */
} ForwarderObject;

static void Forwarder_dealloc(ForwarderObject *self) {
    Py_XDECREF(self->table);
    Py_XDECREF(self->hasher);
    Py_XDECREF(self->namespaces);
    Py_XDECREF(self->gcm);
    Py_XDECREF(self->single);
    Py_XDECREF(self->batch);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Forwarder(table: dict, hasher: Hasher | None, namespaces: list[bytes], gcm: Gcm | None,
 *           single: type = Single, batch: type | None = None) */
static int Forwarder_init(ForwarderObject *self, PyObject *args, PyObject *kwds) {
    PyObject *table, *hasher, *namespaces, *gcm, *single = (PyObject *)&SingleType,
             *batch = Py_None;
    if (!PyArg_ParseTuple(args, "O!OOO|OO:Forwarder", &PyDict_Type, &table, &hasher,
                          &namespaces, &gcm, &single, &batch))
        return -1;
    if (!PyType_Check(single) || !PyType_IsSubtype((PyTypeObject *)single, &SingleType)) {
        PyErr_SetString(PyExc_TypeError, "Forwarder: single must be Single or a subclass");
        return -1;
    }
    if (batch != Py_None &&
        (!PyType_Check(batch) || !PyType_IsSubtype((PyTypeObject *)batch, &BatchType))) {
        PyErr_SetString(PyExc_TypeError, "Forwarder: batch must be Batch, a subclass or None");
        return -1;
    }
    if ((hasher != Py_None && !PyObject_TypeCheck(hasher, &HasherType)) ||
        (gcm != Py_None && !PyObject_TypeCheck(gcm, &GcmType))) {
        PyErr_SetString(PyExc_TypeError, "Forwarder(table, Hasher or None, namespaces, "
                                         "Gcm or None)");
        return -1;
    }
    PyObject *names = PySequence_Tuple(namespaces);
    if (!names) return -1;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        if (!PyBytes_CheckExact(PyTuple_GET_ITEM(names, i))) {
            Py_DECREF(names);
            PyErr_SetString(PyExc_TypeError, "namespaces must be bytes");
            return -1;
        }
    }
    Py_INCREF(table);
    Py_XSETREF(self->table, table);
    Py_XSETREF(self->namespaces, names);
    Py_XSETREF(self->hasher, hasher == Py_None ? NULL : (Py_INCREF(hasher), (HasherObject *)hasher));
    Py_XSETREF(self->gcm, gcm == Py_None ? NULL : (Py_INCREF(gcm), (GcmObject *)gcm));
    Py_INCREF(single);
    Py_XSETREF(self->single, (PyTypeObject *)single);
    Py_XSETREF(self->batch, batch == Py_None ? NULL : (PyTypeObject *)Py_NewRef(batch));
    return 0;
}

/* One command's request and stored name (new references) and its table entry
 * (borrowed): 1, or 0 when Python must take it (-1 on a Python error). */
static inline __attribute__((always_inline)) int prepare_one(ForwarderObject *self, PyObject *command, Py_ssize_t db,
                       PyObject **request_out, PyObject **stored_out, PyObject **entry_out) {
    if (!PyList_CheckExact(command)) return 0;
    Py_ssize_t argc = PyList_GET_SIZE(command);
    if (argc < 2 || argc > FORWARD_MAX_ARGS) return 0;
    PyObject **args = PySequence_Fast_ITEMS(command);
    for (Py_ssize_t i = 0; i < argc; i++) {
        if (!PyBytes_CheckExact(args[i])) return 0;
    }
    PyObject *entry = PyDict_GetItemWithError(self->table, args[0]);
    if (!entry) return PyErr_Occurred() ? -1 : 0;
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 4) return 0;
    long arity = PyLong_AsLong(PyTuple_GET_ITEM(entry, 0));
    long offset = PyLong_AsLong(PyTuple_GET_ITEM(entry, 1));
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(entry, 3));
    if (PyErr_Occurred()) return -1;
    if (arity > 0 ? argc != arity : argc < -arity) return 0; /* Python answers the error */
    if (offset < 0 || 1 + offset >= argc || kind < 0 || kind > 255) return 0;
    if (PyBytes_GET_SIZE(args[1 + offset]) > INT_MAX - OVERHEAD ||
        PyBytes_GET_SIZE(args[1]) > INT_MAX / 2)
        return 0;

    PyObject *stored;
    if (self->hasher) {
        stored = hasher_name(self->hasher, db, args[1]);
    } else {
        PyObject *ns = PyTuple_GET_ITEM(self->namespaces, db);
        Py_ssize_t ns_len = PyBytes_GET_SIZE(ns), key_len = PyBytes_GET_SIZE(args[1]);
        stored = PyBytes_FromStringAndSize(NULL, ns_len + key_len);
        if (stored) {
            memcpy(PyBytes_AS_STRING(stored), PyBytes_AS_STRING(ns), (size_t)ns_len);
            memcpy(PyBytes_AS_STRING(stored) + ns_len, PyBytes_AS_STRING(args[1]),
                   (size_t)key_len);
        }
    }
    if (!stored) return -1;
    PyObject *sealed = NULL;
    if (offset && self->gcm) {
        sealed = gcm_seal(self->gcm, db, stored, args[1 + offset], Py_None);
        if (!sealed) {
            Py_DECREF(stored);
            return -1;
        }
    }
    PyObject *items[FORWARD_MAX_ARGS];
    for (Py_ssize_t i = 0; i < argc; i++) items[i] = args[i];
    items[1] = stored;
    if (sealed) items[1 + offset] = sealed;
    PyObject *request = pack_bytes(items, argc);
    Py_XDECREF(sealed);
    if (!request) {
        Py_DECREF(stored);
        return -1;
    }
    *request_out = request;
    *stored_out = stored;
    *entry_out = entry;
    return 1;
}

/* Whether db is one the forwarder can name keys in (else Python answers). */
static int forward_db_ok(ForwarderObject *self, Py_ssize_t db) {
    return db >= 0 && db < PyTuple_GET_SIZE(self->namespaces) &&
           (!self->hasher || db < self->hasher->databases);
}

/* One command appended to a batch's lists, or 0 when Python must take it (-1 on a
 * Python error). */
static int forward_one(ForwarderObject *self, PyObject *command, Py_ssize_t db,
                       PyObject *packed, PyObject *decoders, PyObject *ctxs, PyObject *kinds) {
    PyObject *request, *stored, *entry;
    int rc = prepare_one(self, command, db, &request, &stored, &entry);
    if (rc <= 0) return rc;
    rc = -1;
    Py_ssize_t kinds_len = PyByteArray_GET_SIZE(kinds);
    if (PyList_Append(packed, request) == 0 &&
        PyList_Append(decoders, PyTuple_GET_ITEM(entry, 2)) == 0 &&
        PyList_Append(ctxs, stored) == 0 &&
        PyByteArray_Resize(kinds, kinds_len + 1) == 0) {
        PyByteArray_AS_STRING(kinds)[kinds_len] =
            (char)PyLong_AsLong(PyTuple_GET_ITEM(entry, 3));
        rc = 1;
    }
    Py_DECREF(request);
    Py_DECREF(stored);
    return rc;
}

/* one()'s work: a new Single, None (a new reference) when Python must take it, or NULL
 * on a Python error. */
static PyObject *forwarder_single(ForwarderObject *self, PyObject *command, PyObject *db_obj,
                                  PyObject *proto_obj, PyObject *client, PyObject *cache) {
    Py_ssize_t db = PyLong_AsSsize_t(db_obj);
    if (db == -1 && PyErr_Occurred()) return NULL;
    long proto = PyLong_AsLong(proto_obj);
    if (proto == -1 && PyErr_Occurred()) return NULL;
    if (!forward_db_ok(self, db)) Py_RETURN_NONE;
    PyObject *request, *stored, *entry;
    int rc = prepare_one(self, command, db, &request, &stored, &entry);
    if (rc < 0) return NULL;
    if (rc == 0) Py_RETURN_NONE;
    long kind = PyLong_AsLong(PyTuple_GET_ITEM(entry, 3));
    PyObject *single = single_new(self->single, client, request, stored,
                                  PyTuple_GET_ITEM(entry, 2), (int)kind, cache,
                                  self->gcm ? (PyObject *)self->gcm : Py_None, db, (int)proto);
    Py_DECREF(request);
    Py_DECREF(stored);
    return single;
}

/* one(command, db, proto, client, cache) -> a Single (the Forwarder's `single` type)
 * holding the request, or None when Python must take it: the same work as forward() for
 * a read that holds one command; the Single's reply is opened with the current key. */
static PyObject *Forwarder_one(ForwarderObject *self, PyObject *const *args,
                               Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "one(command: list, db, proto, client, cache)");
        return NULL;
    }
    return forwarder_single(self, args[0], args[1], args[2], args[3], args[4]);
}

/* forward(commands, start, db, packed, decoders, ctxs, kinds) -> the index of the first
 * command left to Python (len(commands) when it took them all). */
static PyObject *Forwarder_forward(ForwarderObject *self, PyObject *const *args,
                                   Py_ssize_t nargs) {
    if (nargs != 7 || !PyList_Check(args[0]) || !PyList_Check(args[3]) ||
        !PyList_Check(args[4]) || !PyList_Check(args[5]) || !PyByteArray_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "forward(commands: list, start, db, packed: list, "
                                         "decoders: list, ctxs: list, kinds: bytearray)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    Py_ssize_t db = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t count = PyList_GET_SIZE(args[0]);
    if (!forward_db_ok(self, db) || start < 0) {
        return PyLong_FromSsize_t(start < 0 ? 0 : start);
    }
    Py_ssize_t i = start;
    for (; i < count; i++) {
        int rc = forward_one(self, PyList_GET_ITEM(args[0], i), db, args[3], args[4], args[5],
                             args[6]);
        if (rc < 0) return NULL;
        if (rc == 0) break;
    }
    return PyLong_FromSsize_t(i);
}

static PyMethodDef Forwarder_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))Forwarder_forward, METH_FASTCALL,
     "forward(commands, start, db, packed, decoders, ctxs, kinds) -> next index"},
    {"one", (PyCFunction)(void (*)(void))Forwarder_one, METH_FASTCALL,
     "one(command, db, proto, client, cache) -> a Single, or None"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ForwarderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proxy._native.Forwarder",
    .tp_basicsize = sizeof(ForwarderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "table.forward for a batch's simplest commands (see proxy/_native.c).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Forwarder_init,
    .tp_dealloc = (destructor)Forwarder_dealloc,
    .tp_methods = Forwarder_methods,
};

/* ------------------------------------------------------------------------------------
 * IOStats: the byte counters of one listener, shared by its clients (proxy/metrics.py
 * keeps the Python twin).  In C so ClientCore counts a read or a write with an add.
 */

typedef struct {
    PyObject_HEAD
    long long received;
    long long sent;
} IOStatsObject;

static PyMemberDef IOStats_members[] = {
    {"received", T_LONGLONG, offsetof(IOStatsObject, received), 0, "bytes read from clients"},
    {"sent", T_LONGLONG, offsetof(IOStatsObject, sent), 0, "bytes written to clients"},
    {NULL},
};

static PyTypeObject IOStatsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proxy._native.IOStats",
    .tp_basicsize = sizeof(IOStatsObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Bytes read from and written to the clients of one listener.",
    .tp_new = PyType_GenericNew,
    .tp_members = IOStats_members,
};

/* ------------------------------------------------------------------------------------
 * UpstreamCore: an upstream connection's hot methods, in C for the common case
 * (proxy.backends.redis.connection.UpstreamConnection derives from it;
 * PythonUpstreamCore is the twin).  The fields are the connection's attributes that
 * they use; Python code reads and sets them as before.
 *
 * submit_one(request, waiter): on a READY connection, queue the request and its waiter
 *   and make sure the queue is written at the end of this event-loop iteration
 *   (_write_queued); in any other state, call UpstreamConnection._submit_one, which
 *   connects or fails the waiter.
 * _write_queued(): write what was queued, with one transport.writelines.
 * get_buffer(sizehint): the thread's read buffer (read_buffer), which replies are read
 *   into.
 * buffer_updated(n): n bytes of replies were read into it.  Lent to the reader a slice
 *   of FEED_BYTES at a time (reader_lend: taken where they lie, not copied); the replies
 *   of the Singles at the head of the FIFO (take_singles) and of batches whose replies
 *   C decodes (take_batch) are taken here, and at the first reply that is not one of
 *   those (an error, a value of an old key, anything for Python) the rest of the read
 *   goes to UpstreamConnection._replies_read, which continues from where C stopped.
 *   Then each client whose replies were taken is flushed.
 */

#define UPSTREAM_FEED_BYTES (16 * 1024) /* proxy.backends.redis.connection.FEED_BYTES */

typedef struct {
    PyObject_HEAD
    PyObject *state, *waiters, *wbuf, *flush_scheduled, *last_progress, *loop, *reader,
        *transport;
} UpstreamCoreObject;

#define UPSTREAM_OBJECT_FIELDS(X) \
    X(state) X(waiters) X(wbuf) X(flush_scheduled) X(last_progress) X(loop) X(reader) \
    X(transport)

GC_FIELD_FUNCTIONS(UpstreamCore, UpstreamCoreObject, UPSTREAM_OBJECT_FIELDS)

static PyObject *s_ready, *s_submit_one_python, *s_call_soon, *s_write_queued,
    *s_writelines, *s_replies_read, *s_client_flush, *s_feed, *s_submit_packed;

/* client.flush(): ClientCore's directly (defined with it, below). */
static PyObject *flush_client(PyObject *client);
static PyTypeObject ClientCoreType;

static int upstream_schedule(UpstreamCoreObject *self);

static PyObject *UpstreamCore_submit_one(UpstreamCoreObject *self, PyObject *const *args,
                                         Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "submit_one(request, waiter)");
        return NULL;
    }
    /* READY is the interned "ready" (connection.py); anything else, Python. */
    if (self->state != s_ready || !self->waiters || !self->wbuf || !PyList_Check(self->wbuf) ||
        !self->flush_scheduled || !self->loop)
        return PyObject_VectorcallMethod(s_submit_one_python,
                                         (PyObject *[]){(PyObject *)self, args[0], args[1]},
                                         3, NULL);
    Py_ssize_t waiting = PyObject_Size(self->waiters);
    if (waiting < 0) return NULL;
    if (waiting == 0) {
        PyObject *now = PyFloat_FromDouble(monotonic_seconds());
        if (!now) return NULL;
        Py_XSETREF(self->last_progress, now);
    }
    if (PyList_Append(self->wbuf, args[0]) < 0) return NULL;
    PyObject *done = queue_append(self->waiters, args[1]);
    if (!done) return NULL;
    Py_DECREF(done);
    return upstream_schedule(self) < 0 ? NULL : Py_NewRef(Py_None);
}

/* A READY connection's queue is written at the end of this event-loop iteration, once. */
static int upstream_schedule(UpstreamCoreObject *self) {
    int scheduled = truth(self->flush_scheduled);
    if (scheduled != 0) return scheduled < 0 ? -1 : 0;
    Py_XSETREF(self->flush_scheduled, Py_NewRef(Py_True));
    PyObject *write = PyObject_GetAttr((PyObject *)self, s_write_queued);
    if (!write) return -1;
    PyObject *done = PyObject_CallMethodOneArg(self->loop, s_call_soon, write);
    Py_DECREF(write);
    if (!done) return -1;
    Py_DECREF(done);
    return 0;
}

/* UpstreamConnection.submit_packed(packed, waiter, count) followed by its flush(): on a
 * READY connection, done here (the requests queued, the waiter in the FIFO once per
 * command, the write scheduled); in any other state, by those two Python methods, which
 * connect or fail the waiter. */
static int upstream_submit_packed(UpstreamCoreObject *self, PyObject *packed, PyObject *waiter,
                                  Py_ssize_t count) {
    if (self->state != s_ready || !self->waiters || !self->wbuf || !PyList_Check(self->wbuf) ||
        !self->flush_scheduled || !self->loop || !PyList_Check(packed)) {
        PyObject *n = PyLong_FromSsize_t(count);
        if (!n) return -1;
        PyObject *done = PyObject_VectorcallMethod(
            s_submit_packed, (PyObject *[]){(PyObject *)self, packed, waiter, n}, 4, NULL);
        Py_DECREF(n);
        if (!done) return -1;
        Py_DECREF(done);
        done = PyObject_CallMethodNoArgs((PyObject *)self, s_client_flush); /* route.flush() */
        if (!done) return -1;
        Py_DECREF(done);
        return 0;
    }
    Py_ssize_t waiting = PyObject_Size(self->waiters);
    if (waiting < 0) return -1;
    if (waiting == 0) {
        PyObject *now = PyFloat_FromDouble(monotonic_seconds());
        if (!now) return -1;
        Py_XSETREF(self->last_progress, now);
    }
    if (PyList_SetSlice(self->wbuf, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, packed) < 0) return -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *done = queue_append(self->waiters, waiter);
        if (!done) return -1;
        Py_DECREF(done);
    }
    return upstream_schedule(self);
}

static PyObject *UpstreamCore_write_queued(UpstreamCoreObject *self, PyObject *unused) {
    Py_XSETREF(self->flush_scheduled, Py_NewRef(Py_False));
    if (!self->wbuf || !self->state || !self->transport) {
        PyErr_SetString(PyExc_AttributeError,
                        "UpstreamCore: _wbuf, state or transport is unset");
        return NULL;
    }
    int queued = truth(self->wbuf);
    if (queued <= 0 || self->state != s_ready) return queued < 0 ? NULL : Py_NewRef(Py_None);
    /* writelines: large values are not copied into one bytes object first (uvloop
     * writes the list with one writev; the SSL transport joins it). */
    PyObject *fresh = PyList_New(0);
    if (!fresh) return NULL;
    PyObject *wbuf = self->wbuf;
    self->wbuf = fresh;
    PyObject *done = PyObject_CallMethodOneArg(self->transport, s_writelines, wbuf);
    Py_DECREF(wbuf);
    return done;
}

static PyObject *UpstreamCore_get_buffer(UpstreamCoreObject *self, PyObject *sizehint) {
    return get_read_buffer();
}

/* After C took what it could of a read: flush the clients in `touched`, in order (a
 * client twice, its replies interleaved with another's, is harmless: the second flush
 * finds nothing left to write). */
static PyObject *flush_touched(PyObject *touched) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(touched); i++) {
        PyObject *done = flush_client(PyList_GET_ITEM(touched, i));
        if (!done) return NULL;
        Py_DECREF(done);
    }
    Py_RETURN_NONE;
}

static PyObject *UpstreamCore_buffer_updated(UpstreamCoreObject *self, PyObject *nbytes) {
    Py_ssize_t n = PyLong_AsSsize_t(nbytes);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (!self->reader || !self->waiters) {
        PyErr_SetString(PyExc_AttributeError, "UpstreamCore: _reader or _waiters is unset");
        return NULL;
    }
    PyObject *view = get_read_buffer();
    if (!view) return NULL;
    if (n < 0 || n > READ_BUFFER_BYTES) {
        Py_DECREF(view);
        PyErr_SetString(PyExc_ValueError, "buffer_updated(n): n bytes of get_buffer's buffer");
        return NULL;
    }
    /* Held for the whole read, as the twin holds them in locals: the Python called from
     * here (metrics, a client's flush) must not pull them away mid-read. */
    PyObject *reader_obj = Py_NewRef(self->reader), *waiters = Py_NewRef(self->waiters);
    ReplyReaderObject *reader = (ReplyReaderObject *)reader_obj;
    int native = Py_IS_TYPE(reader_obj, &ReplyReaderType) && Py_IS_TYPE(waiters, deque_type);
    PyObject *touched = PyList_New(0), *result = NULL;
    if (!touched) goto done;
    Py_ssize_t fed = n < UPSTREAM_FEED_BYTES ? n : UPSTREAM_FEED_BYTES;
    if (native) {
        /* Replies are taken from the read buffer where they lie when the reader holds
         * nothing else at the start of a slice (the usual case), and the slices after it
         * are lent too; what is left when Python takes over or the read ends is copied
         * in (reader_settle). */
        if (reader->pos == reader->len)
            reader_lend(reader, PyByteArray_AS_STRING(read_array), fed);
        else if (reader_append(reader, PyByteArray_AS_STRING(read_array), fed) < 0)
            goto done;
    } else {
        PyObject *args[4] = {reader_obj, view, PyLong_FromLong(0), PyLong_FromSsize_t(fed)};
        PyObject *fed_ok = args[2] && args[3]
                               ? PyObject_VectorcallMethod(s_feed, args, 4, NULL) : NULL;
        Py_XDECREF(args[2]);
        Py_XDECREF(args[3]);
        if (!fed_ok) goto done;
        Py_DECREF(fed_ok);
    }
    PyObject *now = PyFloat_FromDouble(monotonic_seconds());
    if (!now) goto done;
    Py_XSETREF(self->last_progress, now);
    while (native) {
        /* take_singles stops at the first waiter that is not a Single (a batch's, a
         * multi-step operation's) or whose reply is not one for C; take_batch takes a
         * batch's replies that C decodes. */
        Py_ssize_t taken = take_singles(reader, waiters, touched);
        if (taken == 0) taken = take_batch(reader, waiters, touched);
        if (taken < 0) goto done;
        if (taken > 0) continue;
        /* No Single's reply is next, whole: an incomplete reply waits for more bytes
         * (whoever it is for); a whole one (a batch's, an error, one nobody waits for)
         * is for Python. */
        if (reader->pos < reader->len) {
            Py_ssize_t end;
            const char *why = NULL;
            if (scan_reply(reader->buf, reader->len, reader->pos, &end, &why) != 0) break;
        }
        if (fed == n) { /* all of the read taken */
            if (reader_settle(reader) < 0) goto done;
            result = flush_touched(touched);
            goto done;
        }
        Py_ssize_t step = n - fed < UPSTREAM_FEED_BYTES ? n - fed : UPSTREAM_FEED_BYTES;
        if (reader->lent) { /* the read's next bytes follow the lent ones: lend them too */
            reader->len += step;
            reader->cap = reader->len;
        } else if (reader->pos == reader->len) {
            reader_lend(reader, PyByteArray_AS_STRING(read_array) + fed, step);
        } else if (reader_append(reader, PyByteArray_AS_STRING(read_array) + fed, step) < 0) {
            goto done;
        }
        fed += step;
    }
    if (native && reader_settle(reader) < 0) goto done;
    {
        PyObject *args[5] = {(PyObject *)self, view, PyLong_FromSsize_t(fed), nbytes, touched};
        if (args[2]) result = PyObject_VectorcallMethod(s_replies_read, args, 5, NULL);
        Py_XDECREF(args[2]);
    }
done:
    if (native && reader->lent && reader_settle(reader) < 0) Py_CLEAR(result);
    Py_XDECREF(touched);
    Py_DECREF(reader_obj);
    Py_DECREF(waiters);
    Py_DECREF(view);
    return result;
}

static PyMethodDef UpstreamCore_methods[] = {
    {"submit_one", (PyCFunction)(void (*)(void))UpstreamCore_submit_one, METH_FASTCALL,
     "submit_one(request, waiter): queue one packed command, sent at the end of this "
     "loop iteration"},
    {"_write_queued", (PyCFunction)UpstreamCore_write_queued, METH_NOARGS,
     "_write_queued(): write what submit_one queued"},
    {"get_buffer", (PyCFunction)UpstreamCore_get_buffer, METH_O,
     "get_buffer(sizehint) -> the thread's read buffer, which replies are read into"},
    {"buffer_updated", (PyCFunction)UpstreamCore_buffer_updated, METH_O,
     "buffer_updated(nbytes): nbytes of replies were read into the read buffer"},
    {NULL, NULL, 0, NULL},
};

/* An object field as a Python attribute (AttributeError while unset, as a slot). */
#define OBJECT_MEMBER(Type, name, field) {name, T_OBJECT_EX, offsetof(Type, field), 0, NULL},
#define UPSTREAM_MEMBER(name, field) OBJECT_MEMBER(UpstreamCoreObject, name, field)

static PyMemberDef UpstreamCore_members[] = {
    UPSTREAM_MEMBER("state", state)
    UPSTREAM_MEMBER("_waiters", waiters)
    UPSTREAM_MEMBER("_wbuf", wbuf)
    UPSTREAM_MEMBER("_flush_scheduled", flush_scheduled)
    UPSTREAM_MEMBER("_last_progress", last_progress)
    UPSTREAM_MEMBER("loop", loop)
    UPSTREAM_MEMBER("_reader", reader)
    UPSTREAM_MEMBER("transport", transport)
    {NULL},
};

static PyTypeObject UpstreamCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proxy._native.UpstreamCore",
    .tp_basicsize = sizeof(UpstreamCoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "An upstream connection's hot methods for the common case (see proxy/_native.c).",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)UpstreamCore_dealloc,
    .tp_traverse = (traverseproc)UpstreamCore_traverse,
    .tp_clear = (inquiry)UpstreamCore_clear,
    .tp_methods = UpstreamCore_methods,
    .tp_members = UpstreamCore_members,
};

/* ------------------------------------------------------------------------------------
 * ClientCore: a client connection's read and write, in C for the common case.
 *
 * proxy.server.client.ClientConnection derives from it; client.PythonCore is its
 * Python twin and the reference.  The fields are attributes of the connection that
 * Python code reads and sets as before (members); they live here so that the two
 * methods can use them without a lookup.  Each method does what its twin does for the
 * case that is most requests at pipeline depth 1, and calls Python for anything else:
 *
 * buffer_updated(n): n bytes were read into the thread's read buffer.  On a connection
 *   in its plain state (authenticated, no MULTI being queued or recorded, no multi-step
 *   operation running, nothing backlogged), a read holding one command that
 *   Forwarder.one takes is forwarded here as a Single; a read of several commands, when
 *   the route is one Redis connection and there are no per-command metrics, has the
 *   simple commands at its head (those Forwarder takes: usually all) forwarded here as
 *   one Batch (client_batch).  Every other read, and the rest of a read after the first
 *   command C does not take, goes, parsed, to ClientConnection._commands_read(commands).
 * flush(): write the replies that are there, in order.  Replies of Singles and Batches
 *   are written here; anything else at the head of the queue, pending output, a
 *   connection that is closing or paused, goes to ClientConnection._flush(), which does
 *   it all.
 *
 * A state it does not recognise exactly (a field set to something other than what
 * PythonCore sets) sends the work to Python rather than guessing.
 */

#define CLIENT_MAX_INFLIGHT (16 * 1024) /* proxy.server.client.MAX_INFLIGHT */

typedef struct {
    PyObject_HEAD
    PyObject *reader, *slots, *route, *cache, *forwarder, *stats, *io, *transport, *backlog,
        *out;
    PyObject *db, *proto, *authenticated, *multi, *capture;
    PyObject *closing, *closed, *paused, *write_paused, *blocked, *batched;
    double last_active; /* time.monotonic() of the last read: a float, made on request */
} ClientCoreObject;

#define CLIENT_OBJECT_FIELDS(X) \
    X(reader) X(slots) X(route) X(cache) X(forwarder) X(stats) X(io) X(transport) X(backlog) \
    X(out) X(db) X(proto) X(authenticated) X(multi) X(capture) X(closing) X(closed) \
    X(paused) X(write_paused) X(blocked) X(batched)

GC_FIELD_FUNCTIONS(ClientCore, ClientCoreObject, CLIENT_OBJECT_FIELDS)

/* The Python names the methods use, interned once (module init). */
static PyObject *s_submit_one, *s_write, *s_error,
    *s_commands_read, *s_flush, *s_update_reading, *s_entries, *s_get, *s_resolve,
    *s_received, *s_sent;

/* A field read by the methods below: set in ClientConnection.__init__, never deleted. */
static inline int client_has(ClientCoreObject *self) {
    if (self->reader && self->slots && self->route && self->cache && self->forwarder &&
        self->stats && self->io && self->transport && self->backlog && self->out &&
        self->db && self->proto && self->authenticated && self->multi && self->capture &&
        self->closing && self->closed && self->paused && self->write_paused &&
        self->blocked && self->batched)
        return 1;
    PyErr_SetString(PyExc_AttributeError,
                    "ClientCore: a connection field is unset (ClientConnection.__init__ sets them)");
    return 0;
}

/* io.<name> += n */
static int count_io(PyObject *io, PyObject *name, Py_ssize_t n) {
    if (Py_IS_TYPE(io, &IOStatsType)) {
        if (name == s_received) ((IOStatsObject *)io)->received += n;
        else ((IOStatsObject *)io)->sent += n;
        return 0;
    }
    PyObject *old = PyObject_GetAttr(io, name);
    if (!old) return -1;
    PyObject *add = PyLong_FromSsize_t(n);
    PyObject *sum = add ? PyNumber_Add(old, add) : NULL;
    Py_DECREF(old);
    Py_XDECREF(add);
    if (!sum) return -1;
    int rc = PyObject_SetAttr(io, name, sum);
    Py_DECREF(sum);
    return rc;
}

static PyObject *call_self(ClientCoreObject *self, PyObject *name) {
    return PyObject_CallMethodNoArgs((PyObject *)self, name);
}

static PyObject *ClientCore_flush(ClientCoreObject *self, PyObject *unused);

/* 1: the connection is in the state where a read's commands may take the C path. */
static int client_plain_state(ClientCoreObject *self, PyObject *commands) {
    if (!PyObject_TypeCheck(self->forwarder, &ForwarderType) || PyList_GET_SIZE(commands) == 0)
        return 0;
    if (self->multi != Py_None || self->capture != Py_None) return 0;
    PyObject *error = Py_IS_TYPE(self->reader, &ParserType)
                          ? Py_NewRef(((ParserObject *)self->reader)->error)
                          : PyObject_GetAttr(self->reader, s_error);
    if (!error) return -1;
    int failed = error != Py_None;
    Py_DECREF(error);
    if (failed) return 0;
    int t = truth(self->blocked);
    if (t != 0) return t < 0 ? -1 : 0;
    Py_ssize_t backlog = PyObject_Size(self->backlog);
    if (backlog != 0) return backlog < 0 ? -1 : 0;
    t = truth(self->authenticated);
    return t;
}

static int client_check_reading(ClientCoreObject *self);

/* What PythonCore.buffer_updated does after Forwarder.one made `slot` (a Single). */
static int client_submit(ClientCoreObject *self, PyObject *slot, PyObject *command) {
    SingleObject *single = (SingleObject *)slot;
    if (self->stats != Py_None) { /* as _dispatch: from the read to the reply */
        PyObject *t0 = PyFloat_FromDouble(monotonic_seconds());
        if (!t0) return -1;
        Py_XSETREF(single->t0, t0);
        PyObject *name = PyList_GET_ITEM(command, 0);
        PyObject *entries = PyObject_GetAttr(self->stats, s_entries);
        if (!entries) return -1;
        PyObject *entry = PyObject_CallMethodOneArg(entries, s_get, name);
        Py_DECREF(entries);
        if (!entry) return -1;
        int found = truth(entry);
        if (found <= 0) {
            Py_DECREF(entry);
            if (found < 0) return -1;
            entry = PyObject_CallMethodOneArg(self->stats, s_resolve, name);
            if (!entry) return -1;
        }
        Py_XSETREF(single->stat, entry);
    }
    PyObject *done = queue_append(self->slots, slot);
    if (!done) return -1;
    Py_DECREF(done);
    /* sent at the end of the loop iteration */
    PyObject *args[3] = {self->route, single->request, slot};
    /* UpstreamConnection's is UpstreamCore's (tests/test_client_core.py checks that no
     * subclass overrides it): called directly, without a lookup. */
    done = PyObject_TypeCheck(self->route, &UpstreamCoreType)
               ? UpstreamCore_submit_one((UpstreamCoreObject *)self->route, args + 1, 2)
               : PyObject_VectorcallMethod(s_submit_one, args, 3, NULL);
    if (!done) return -1;
    Py_DECREF(done);
    /* Nothing to write unless the route failed it at once (Redis unavailable). */
    if (single->data && single->data != Py_None) {
        done = ClientCore_flush(self, NULL);
        if (!done) return -1;
        Py_DECREF(done);
    }
    return client_check_reading(self);
}

/* What PythonCore's read does last: _update_reading() when reading may have to pause. */
static int client_check_reading(ClientCoreObject *self) {
    PyObject *done;
    int pause = truth(self->paused);
    if (pause == 0) pause = truth(self->write_paused);
    if (pause == 0) {
        Py_ssize_t queued = PyObject_Size(self->slots);
        Py_ssize_t batched = PyLong_AsSsize_t(self->batched);
        if (queued < 0 || (batched == -1 && PyErr_Occurred())) return -1;
        pause = queued + batched > CLIENT_MAX_INFLIGHT;
    }
    if (pause < 0) return -1;
    if (pause) {
        done = call_self(self, s_update_reading);
        if (!done) return -1;
        Py_DECREF(done);
    }
    return 0;
}

/* A read of several commands in the plain state (client_plain_state), on a connection
 * to one Redis (an UpstreamCore route), without metrics: what _commands_read does with
 * the simple commands at its head (those Forwarder takes, usually all of them) and their
 * batch (_forward_simple, _open_batch, end_batch, route.flush and the checks after).
 * Returns how many commands it took (0: none, nothing done), or -1 with an exception. */
static Py_ssize_t client_batch(ClientCoreObject *self, ForwarderObject *forwarder,
                               PyObject *commands) {
    Py_ssize_t db = PyLong_AsSsize_t(self->db);
    long proto = PyLong_AsLong(self->proto);
    if (PyErr_Occurred()) return -1;
    if (!forward_db_ok(forwarder, db)) return 0;
    BatchObject *batch = (BatchObject *)batch_new(forwarder->batch, (PyObject *)self, Py_None);
    if (!batch) return -1;
    Py_ssize_t count = PyList_GET_SIZE(commands), taken = 0;
    for (; taken < count; taken++) {
        int rc = forward_one(forwarder, PyList_GET_ITEM(commands, taken), db, batch->packed,
                             batch->decoders, batch->ctxs, batch->kinds);
        if (rc < 0) goto fail;
        if (rc == 0) break;
    }
    if (taken == 0) {
        Py_DECREF(batch);
        return 0;
    }
    /* _open_batch's fields.  The cache's reply_gcm is the forwarder's Gcm, and its
     * replies_in_c is true whenever it has a forwarder (proxy/cache.py). */
    Py_SETREF(batch->cache, Py_NewRef(self->cache));
    Py_SETREF(batch->gcm, Py_NewRef(forwarder->gcm ? (PyObject *)forwarder->gcm : Py_None));
    batch->db = db;
    batch->proto = (int)proto;
    batch->in_c = 1;
    batch->count = taken;
    /* Its place in the reply order, then to Redis (end_batch). */
    PyObject *done = queue_append(self->slots, (PyObject *)batch);
    if (!done) goto fail;
    Py_DECREF(done);
    if (taken > 1) {
        Py_ssize_t batched = PyLong_AsSsize_t(self->batched);
        if (batched == -1 && PyErr_Occurred()) goto fail;
        PyObject *sum = PyLong_FromSsize_t(batched + taken - 1);
        if (!sum) goto fail;
        Py_SETREF(self->batched, sum);
    }
    PyObject *packed = batch->packed;
    batch->packed = Py_NewRef(Py_None);
    int rc = upstream_submit_packed((UpstreamCoreObject *)self->route, packed,
                                    (PyObject *)batch, taken);
    Py_DECREF(packed);
    if (rc < 0) goto fail;
    /* Nothing to write unless the route failed it at once (Redis unavailable). */
    if (batch->data != Py_None) {
        done = ClientCore_flush(self, NULL);
        if (!done) goto fail;
        Py_DECREF(done);
    }
    Py_DECREF(batch);
    return client_check_reading(self) < 0 ? -1 : taken;
fail:
    Py_DECREF(batch);
    return -1;
}

static PyObject *ClientCore_buffer_updated(ClientCoreObject *self, PyObject *nbytes) {
    if (!client_has(self)) return NULL;
    int closing = truth(self->closing);
    if (closing != 0) return closing < 0 ? NULL : Py_NewRef(Py_None);
    Py_ssize_t n = PyLong_AsSsize_t(nbytes);
    if (n == -1 && PyErr_Occurred()) return NULL;
    self->last_active = monotonic_seconds();
    if (count_io(self->io, s_received, n) < 0) return NULL;
    PyObject *commands = Py_IS_TYPE(self->reader, &ParserType)
                             ? Parser_feed((ParserObject *)self->reader, nbytes)
                             : PyObject_CallMethodOneArg(self->reader, s_feed, nbytes);
    if (!commands) return NULL;
    if (!PyList_Check(commands)) {
        Py_DECREF(commands);
        PyErr_SetString(PyExc_TypeError, "the request reader's feed must return a list");
        return NULL;
    }
    int plain = client_plain_state(self, commands);
    if (plain < 0) goto fail;
    ForwarderObject *forwarder = (ForwarderObject *)self->forwarder;
    Py_ssize_t count = PyList_GET_SIZE(commands);
    if (plain && count == 1) {
        /* Pipeline depth 1 is mostly this: one command simple enough for C, hashed,
         * sealed and packed as `forward` would (None: Python takes it below). */
        PyObject *command = PyList_GET_ITEM(commands, 0);
        PyObject *slot = forwarder_single(forwarder, command, self->db, self->proto,
                                          (PyObject *)self, self->cache);
        if (!slot) goto fail;
        if (slot != Py_None) {
            int rc = client_submit(self, slot, command);
            Py_DECREF(slot);
            Py_DECREF(commands);
            return rc < 0 ? NULL : Py_NewRef(Py_None);
        }
        Py_DECREF(slot);
    } else if (plain && forwarder->batch && self->stats == Py_None &&
               PyObject_TypeCheck(self->route, &UpstreamCoreType)) {
        /* Deeper pipelines: the simple commands at the head of the read become one
         * Batch here; the rest of the read (usually nothing) goes to Python. */
        Py_ssize_t taken = client_batch(self, forwarder, commands);
        if (taken < 0) goto fail;
        if (taken == count) {
            Py_DECREF(commands);
            Py_RETURN_NONE;
        }
        if (taken > 0) {
            PyObject *rest = PyList_GetSlice(commands, taken, count);
            Py_DECREF(commands);
            if (!rest) return NULL;
            commands = rest;
        }
    }
    PyObject *result = PyObject_CallMethodOneArg((PyObject *)self, s_commands_read, commands);
    Py_DECREF(commands);
    return result;
fail:
    Py_DECREF(commands);
    return NULL;
}

/* The head of the reply queue when C writes it: a Single or a Batch (of this module's
 * types) with no multi-step turn to start.  A new reference, or NULL (no error) for
 * anything else; *empty says whether the queue was empty. */
static PyObject *c_head(ClientCoreObject *self, int *empty) {
    PyObject *head;
    int found = queue_head(self->slots, &head);
    *empty = found == 0;
    if (found <= 0) return NULL;
    int ours = 1;
    PyObject *start = NULL; /* NULL or None: no turn to start */
    if (PyObject_TypeCheck(head, &SingleType)) start = ((SingleObject *)head)->start;
    else if (PyObject_TypeCheck(head, &BatchType)) start = ((BatchObject *)head)->start;
    else ours = 0;
    if (!ours || (start && start != Py_None)) {
        Py_DECREF(head);
        return NULL;
    }
    return head;
}

/* A reply's bytes for the client, gathered in order: the first in *first; from the
 * second on, all of them in the list *parts. */
static int gather(PyObject **first, PyObject **parts, PyObject *data) {
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "a reply's data must be bytes");
        return -1;
    }
    if (!*first) {
        *first = Py_NewRef(data);
        return 0;
    }
    if (!*parts) {
        *parts = PyList_New(1);
        if (!*parts) return -1;
        PyList_SET_ITEM(*parts, 0, Py_NewRef(*first));
    }
    return PyList_Append(*parts, data);
}

/* b"".join(parts) for a list of bytes. */
static PyObject *join_bytes(PyObject *parts) {
    Py_ssize_t total = 0, count = PyList_GET_SIZE(parts);
    for (Py_ssize_t i = 0; i < count; i++) total += PyBytes_GET_SIZE(PyList_GET_ITEM(parts, i));
    PyObject *joined = PyBytes_FromStringAndSize(NULL, total);
    if (!joined) return NULL;
    char *p = PyBytes_AS_STRING(joined);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *part = PyList_GET_ITEM(parts, i);
        memcpy(p, PyBytes_AS_STRING(part), (size_t)PyBytes_GET_SIZE(part));
        p += PyBytes_GET_SIZE(part);
    }
    return joined;
}

#define CLIENT_WRITELINES_PART_BYTES 2048 /* proxy.server.client.WRITELINES_PART_BYTES */

static PyObject *ClientCore_flush(ClientCoreObject *self, PyObject *unused) {
    if (!client_has(self)) return NULL;
    int t = truth(self->closed);
    if (t != 0) return t < 0 ? NULL : Py_NewRef(Py_None);
    int python = truth(self->closing);
    if (python == 0) python = truth(self->paused);
    if (python == 0 && (!PyList_Check(self->out) || PyList_GET_SIZE(self->out) != 0))
        python = 1;
    if (python < 0) return NULL;
    if (python) return call_self(self, s_flush);
    /* Pop the Singles and Batches whose replies are there, in order. */
    PyObject *first = NULL, *parts = NULL;
    Py_ssize_t unbatched = 0; /* _batched's share of the batches popped */
    int empty = 0, other = 0;
    for (;;) {
        PyObject *head = c_head(self, &empty);
        if (!head) {
            if (PyErr_Occurred()) goto fail;
            other = !empty; /* something only Python handles is next */
            break;
        }
        int single = PyObject_TypeCheck(head, &SingleType);
        PyObject *data = single ? ((SingleObject *)head)->data : ((BatchObject *)head)->data;
        if (!data || data == Py_None) {
            Py_DECREF(head);
            break;
        }
        if (!single && !PyList_Check(data)) {
            Py_DECREF(head);
            PyErr_SetString(PyExc_TypeError, "a batch's data must be a list");
            goto fail;
        }
        PyObject *popped = queue_popleft(self->slots);
        if (!popped) {
            Py_DECREF(head);
            goto fail;
        }
        Py_DECREF(popped);
        int rc = 0;
        if (single) {
            rc = gather(&first, &parts, data);
        } else {
            unbatched += ((BatchObject *)head)->count - 1;
            for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(data); i++)
                rc = gather(&first, &parts, PyList_GET_ITEM(data, i));
        }
        Py_DECREF(head);
        if (rc < 0) goto fail;
    }
    if (unbatched) {
        Py_ssize_t batched = PyLong_AsSsize_t(self->batched);
        if (batched == -1 && PyErr_Occurred()) goto fail;
        PyObject *left = PyLong_FromSsize_t(batched - unbatched);
        if (!left) goto fail;
        Py_SETREF(self->batched, left);
    }
    if (other) {
        /* _flush writes what was popped, first, with whatever it takes next. */
        if (first) {
            int rc = parts ? (PyList_SetSlice(self->out, 0, 0, parts))
                           : PyList_Append(self->out, first);
            if (rc < 0) goto fail;
        }
        Py_XDECREF(first);
        Py_XDECREF(parts);
        return call_self(self, s_flush);
    }
    if (first) {
        /* As _flush: one part as it is; large ones as they are (writelines: the
         * transport keeps the parts, not the list); small ones joined. */
        PyObject *done = NULL, *data = first, *method = s_write;
        Py_ssize_t size = PyBytes_GET_SIZE(first);
        if (parts && size >= CLIENT_WRITELINES_PART_BYTES) {
            data = parts;
            method = s_writelines;
            size = 0;
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(parts); i++)
                size += PyBytes_GET_SIZE(PyList_GET_ITEM(parts, i));
        } else if (parts) {
            data = join_bytes(parts);
            if (!data) goto fail;
            size = PyBytes_GET_SIZE(data);
            Py_DECREF(first);
            first = data;
        }
        if (count_io(self->io, s_sent, size) == 0)
            done = PyObject_CallMethodOneArg(self->transport, method, data);
        Py_DECREF(first);
        Py_XDECREF(parts);
        if (!done) return NULL;
        Py_DECREF(done);
    }
    Py_RETURN_NONE;
fail:
    Py_XDECREF(first);
    Py_XDECREF(parts);
    return NULL;
}

static PyObject *flush_client(PyObject *client) {
    /* ClientConnection's flush is ClientCore's (tests/test_client_core.py checks that no
     * subclass overrides it): called directly, without a lookup. */
    if (PyObject_TypeCheck(client, &ClientCoreType))
        return ClientCore_flush((ClientCoreObject *)client, NULL);
    return PyObject_CallMethodNoArgs(client, s_client_flush);
}

static PyMethodDef ClientCore_methods[] = {
    {"buffer_updated", (PyCFunction)ClientCore_buffer_updated, METH_O,
     "buffer_updated(nbytes): nbytes of the client's stream were read into the read buffer"},
    {"flush", (PyCFunction)ClientCore_flush, METH_NOARGS,
     "flush(): write the replies that are there, in order"},
    {NULL, NULL, 0, NULL},
};


#define CLIENT_MEMBER(name, field) OBJECT_MEMBER(ClientCoreObject, name, field)

static PyMemberDef ClientCore_members[] = {
    CLIENT_MEMBER("reader", reader)
    CLIENT_MEMBER("_slots", slots)
    CLIENT_MEMBER("route", route)
    CLIENT_MEMBER("cache", cache)
    CLIENT_MEMBER("_forwarder", forwarder)
    CLIENT_MEMBER("stats", stats)
    CLIENT_MEMBER("io", io)
    CLIENT_MEMBER("transport", transport)
    CLIENT_MEMBER("_backlog", backlog)
    CLIENT_MEMBER("_out", out)
    CLIENT_MEMBER("db", db)
    CLIENT_MEMBER("proto", proto)
    CLIENT_MEMBER("authenticated", authenticated)
    CLIENT_MEMBER("multi", multi)
    CLIENT_MEMBER("capture", capture)
    CLIENT_MEMBER("_closing", closing)
    CLIENT_MEMBER("_closed", closed)
    CLIENT_MEMBER("_paused", paused)
    CLIENT_MEMBER("_write_paused", write_paused)
    CLIENT_MEMBER("_blocked", blocked)
    CLIENT_MEMBER("_batched", batched)
    {"last_active", T_DOUBLE, offsetof(ClientCoreObject, last_active), 0, NULL},
    {NULL},
};

static PyTypeObject ClientCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "proxy._native.ClientCore",
    .tp_basicsize = sizeof(ClientCoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A client connection's read and write for the common case (see proxy/_native.c).",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)ClientCore_dealloc,
    .tp_traverse = (traverseproc)ClientCore_traverse,
    .tp_clear = (inquiry)ClientCore_clear,
    .tp_methods = ClientCore_methods,
    .tp_members = ClientCore_members,
};

static int intern_client_names(void) {
#define INTERN(var, text) if (!(var = PyUnicode_InternFromString(text))) return -1;
    INTERN(s_submit_one, "submit_one")
    INTERN(s_write, "write")
    INTERN(s_feed, "feed")
    INTERN(s_error, "error")
    INTERN(s_commands_read, "_commands_read")
    INTERN(s_flush, "_flush")
    INTERN(s_update_reading, "_update_reading")
    INTERN(s_entries, "entries")
    INTERN(s_get, "get")
    INTERN(s_resolve, "resolve")
    INTERN(s_received, "received")
    INTERN(s_sent, "sent")
    INTERN(s_ready, "ready")
    INTERN(s_submit_one_python, "_submit_one")
    INTERN(s_call_soon, "call_soon")
    INTERN(s_write_queued, "_write_queued")
    INTERN(s_writelines, "writelines")
    INTERN(s_replies_read, "_replies_read")
    INTERN(s_client_flush, "flush")
    INTERN(s_finish, "finish")
    INTERN(s_submit_packed, "submit_packed")
    INTERN(s_stats, "stats")
    INTERN(batch__done, "_done")
#undef INTERN
    return 0;
}

static PyMethodDef module_methods[] = {
    {"read_buffer", module_read_buffer, METH_O,
     "read_buffer(sizehint) -> this thread's read buffer (as RequestParser.get_buffer)"},
    {"pack_command", pack_command, METH_O,
     "pack_command(args) -> RESP array of bulk strings"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT, "proxy._native",
    "Per-command cryptography and request packing in C (see proxy/_native.c).", -1,
    module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&HasherType) < 0 || PyType_Ready(&GcmType) < 0 ||
        PyType_Ready(&ParserType) < 0 || PyType_Ready(&ReplyReaderType) < 0 ||
        PyType_Ready(&ForwarderType) < 0 || PyType_Ready(&SingleType) < 0 ||
        PyType_Ready(&BatchType) < 0 ||
        PyType_Ready(&IOStatsType) < 0 || PyType_Ready(&ClientCoreType) < 0 ||
        PyType_Ready(&UpstreamCoreType) < 0 ||
        intern_client_names() < 0 || load_deque() < 0)
        return NULL;
    if (pthread_atfork(NULL, NULL, nonce_pool_forget) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "could not register the nonce pool's fork hook");
        return NULL;
    }
    PyObject *m = PyModule_Create(&native_module);
    if (!m) return NULL;
    Py_INCREF(&HasherType);
    Py_INCREF(&GcmType);
    Py_INCREF(&ParserType);
    Py_INCREF(&ReplyReaderType);
    Py_INCREF(&ForwarderType);
    Py_INCREF(&SingleType);
    Py_INCREF(&BatchType);
    Py_INCREF(&IOStatsType);
    Py_INCREF(&ClientCoreType);
    Py_INCREF(&UpstreamCoreType);
    if (PyModule_AddObject(m, "Hasher", (PyObject *)&HasherType) < 0 ||
        PyModule_AddObject(m, "Gcm", (PyObject *)&GcmType) < 0 ||
        PyModule_AddObject(m, "RequestParser", (PyObject *)&ParserType) < 0 ||
        PyModule_AddObject(m, "ReplyReader", (PyObject *)&ReplyReaderType) < 0 ||
        PyModule_AddObject(m, "Forwarder", (PyObject *)&ForwarderType) < 0 ||
        PyModule_AddObject(m, "Single", (PyObject *)&SingleType) < 0 ||
        PyModule_AddObject(m, "Batch", (PyObject *)&BatchType) < 0 ||
        PyModule_AddObject(m, "IOStats", (PyObject *)&IOStatsType) < 0 ||
        PyModule_AddObject(m, "ClientCore", (PyObject *)&ClientCoreType) < 0 ||
        PyModule_AddObject(m, "UpstreamCore", (PyObject *)&UpstreamCoreType) < 0 ||
        PyModule_AddIntConstant(m, "CLIENT_MAX_INFLIGHT", CLIENT_MAX_INFLIGHT) < 0 ||
        PyModule_AddIntConstant(m, "UPSTREAM_FEED_BYTES", UPSTREAM_FEED_BYTES) < 0 ||
        PyModule_AddIntConstant(m, "CLIENT_WRITELINES_PART_BYTES",
                                CLIENT_WRITELINES_PART_BYTES) < 0 ||
        PyModule_AddIntConstant(m, "KIND_PYTHON", KIND_PYTHON) < 0 ||
        PyModule_AddIntConstant(m, "KIND_VALUE", KIND_VALUE) < 0 ||
        PyModule_AddIntConstant(m, "KIND_STATUS_OR_NIL", KIND_STATUS_OR_NIL) < 0 ||
        PyModule_AddIntConstant(m, "KIND_STATUS", KIND_STATUS) < 0 ||
        PyModule_AddIntConstant(m, "KIND_INTEGER", KIND_INTEGER) < 0 ||
        PyModule_AddStringConstant(m, "openssl_version", OpenSSL_version(OPENSSL_VERSION)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
