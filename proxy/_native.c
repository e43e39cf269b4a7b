/*
 * proxy._native: the per-command cryptography and request packing in C.
 *
 * Each function here has a pure-Python twin that stays the reference (hashing.py,
 * envelope.py, resp/writer.py); tests/test_native.py checks that both give the same
 * bytes for the same inputs, and `CACHECLOAK_NATIVE=0` runs the proxy on the twins.
 * The proxy uses this module when it was built (it needs a C compiler and OpenSSL's
 * headers at install time) and says at startup which path it runs.
 *
 * Why C: under load the proxy spent about 5 of its 10 microseconds per request in
 * Python around three small computations (the stored name's HMAC, the AES-GCM envelope,
 * the upstream request's RESP array), each a handful of calls into C with Python
 * objects made in between.  Done here in one call each, they cost a fraction of that.
 *
 * Must never: log, keep a plaintext after returning, or put a key, a value or key
 * material into an exception message.  Key material lives in OpenSSL contexts and in
 * SHA-256 states, which are wiped when the object is freed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <pthread.h>
#include <string.h>

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
    const char *key = PyBytes_AS_STRING(args[1]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[1]);
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

/* The associated data after the header: db (2 bytes, big endian) || stored name
 * [|| NUL || context], fed to the context in pieces (GCM allows several AAD updates). */
static int feed_aad(EVP_CIPHER_CTX *ctx, Py_ssize_t db, PyObject *stored,
                    PyObject *context) {
    int len;
    unsigned char db2[2] = {(unsigned char)((db >> 8) & 0xFF), (unsigned char)(db & 0xFF)};
    if (EVP_CipherUpdate(ctx, NULL, &len, db2, 2) != 1) return -1;
    if (PyBytes_GET_SIZE(stored) > 0 &&
        EVP_CipherUpdate(ctx, NULL, &len, (unsigned char *)PyBytes_AS_STRING(stored),
                         (int)PyBytes_GET_SIZE(stored)) != 1)
        return -1;
    if (context != Py_None) {
        static const unsigned char nul = 0;
        if (EVP_CipherUpdate(ctx, NULL, &len, &nul, 1) != 1) return -1;
        if (PyBytes_GET_SIZE(context) > 0 &&
            EVP_CipherUpdate(ctx, NULL, &len, (unsigned char *)PyBytes_AS_STRING(context),
                             (int)PyBytes_GET_SIZE(context)) != 1)
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
static PyObject *Gcm_seal(GcmObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t db;
    PyObject *context;
    if (parse_envelope_args(args, nargs, "seal", &db, &context) < 0) return NULL;
    PyObject *value = args[2];
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
        EVP_EncryptUpdate(ctx, NULL, &len, self->header, HEADER_BYTES) != 1 ||
        feed_aad(ctx, db, args[1], context) < 0 ||
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

/* open(db, stored_key, envelope, context=None) -> plaintext, or None when the envelope
 * is not this key's (header), too short, or does not authenticate. */
static PyObject *Gcm_open(GcmObject *self, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t db;
    PyObject *context;
    if (parse_envelope_args(args, nargs, "open", &db, &context) < 0) return NULL;
    PyObject *blob = args[2];
    Py_ssize_t total = PyBytes_GET_SIZE(blob);
    const unsigned char *b = (const unsigned char *)PyBytes_AS_STRING(blob);
    if (total < OVERHEAD || memcmp(b, self->header, HEADER_BYTES) != 0) Py_RETURN_NONE;
    Py_ssize_t n = total - OVERHEAD;
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    if (!out) return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    EVP_CIPHER_CTX *ctx = self->dec;
    int len = 0, fin = 0;
    if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, b + HEADER_BYTES) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &len, self->header, HEADER_BYTES) != 1 ||
        feed_aad(ctx, db, args[1], context) < 0 ||
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
    return out;
}

static PyMethodDef Gcm_methods[] = {
    {"seal", (PyCFunction)(void (*)(void))Gcm_seal, METH_FASTCALL,
     "seal(db, stored_key, value, context=None) -> envelope"},
    {"open", (PyCFunction)(void (*)(void))Gcm_open, METH_FASTCALL,
     "open(db, stored_key, envelope, context=None) -> plaintext or None"},
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

static char *put_header(char *p, char kind, Py_ssize_t n) {
    char digits[24];
    int d = 0;
    *p++ = kind;
    do {
        digits[d++] = (char)('0' + n % 10);
        n /= 10;
    } while (n > 0);
    while (d > 0) *p++ = digits[--d];
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

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
    Py_ssize_t size = 3 + 20;
    for (Py_ssize_t i = 0; i < count; i++) size += PyBytes_GET_SIZE(items[i]) + 3 + 20 + 2;
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
        if (_PyBytes_Resize(&out, p - start) < 0) out = NULL;
    }
    Py_XDECREF(converted);
    return out;
}

static PyMethodDef module_methods[] = {
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
    if (PyType_Ready(&HasherType) < 0 || PyType_Ready(&GcmType) < 0) return NULL;
    if (pthread_atfork(NULL, NULL, nonce_pool_forget) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "could not register the nonce pool's fork hook");
        return NULL;
    }
    PyObject *m = PyModule_Create(&native_module);
    if (!m) return NULL;
    Py_INCREF(&HasherType);
    Py_INCREF(&GcmType);
    if (PyModule_AddObject(m, "Hasher", (PyObject *)&HasherType) < 0 ||
        PyModule_AddObject(m, "Gcm", (PyObject *)&GcmType) < 0 ||
        PyModule_AddStringConstant(m, "openssl_version", OpenSSL_version(OPENSSL_VERSION)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
