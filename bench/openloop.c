/* The open-loop generator of bench/openloop.py, in C.
 *
 * Same load, same schedule, same figures as the Python generator in that module (read its
 * docstring first): requests sent on a fixed schedule over a few connections, round robin,
 * each timed from its scheduled send time and from its actual send time.  The Python
 * generator spends about 20 us of interpreter time per request; on a 2-core machine at the
 * benchmark's rate that alone takes half a core, which the targets then lack, and the
 * percentiles measure the shared machine more than the target.  This one spends well under
 * a microsecond of its own per request; what is left is the kernel's share of a send and a
 * receive, the same for every target.
 *
 * bench/openloop.py compiles it with the system's C compiler when the benchmark runs (into
 * bench/.build/, keyed by this file's hash) and falls back to the Python generator when
 * there is no compiler.  Usage (one process; the module starts several):
 *
 *   openloop PORT RATE COUNT FIRST MEASURED_FROM CONNECTIONS KEYSPACE SIZE SET_RATIO SEED OUT
 *
 *   RATE           requests per second of this process
 *   COUNT          requests to send
 *   FIRST          CLOCK_MONOTONIC seconds of the first scheduled send (Python's
 *                  time.monotonic() reads the same clock)
 *   MEASURED_FROM  samples of requests scheduled before this time are dropped (warm-up)
 *   OUT            file for the results: six little-endian int64 (sent, errors, lost, and
 *                  the counts of the three arrays that follow), then the arrays of
 *                  doubles: latency from the scheduled time, latency from the send time,
 *                  send lag (how late each send was), all in seconds.
 *
 * Keys and commands are bench/keyspace.py's: SET or GET of "key:%012d", the key drawn
 * uniformly below KEYSPACE, the value SIZE bytes of 'v'.  Replies are framed just enough to
 * count them (simple strings, errors, integers, bulk strings); anything else stops the run
 * with an error.  Loopback only: it connects to 127.0.0.1.  Bounded: COUNT requests, then at
 * most DRAIN_SECONDS for the replies still due.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define DRAIN_SECONDS 5.0   /* bench/openloop.py's DRAIN_TIMEOUT */
#define READ_SIZE 262144
#define MAX_LINE 64          /* longest reply header line we accept ("$<len>\r\n", "+OK\r\n") */

typedef struct { double *v; size_t n, cap; } Doubles;

typedef struct {
    double sched, sent;
} Pending;

typedef struct {
    int fd;
    int want_out;            /* registered for EPOLLOUT */
    char *out; size_t out_len, out_off, out_cap;
    Pending *q; size_t q_head, q_len, q_cap;   /* a ring of requests awaiting replies */
    char line[MAX_LINE]; size_t line_len;       /* a reply header line read so far */
    long long skip;                             /* bulk bytes (with CRLF) still to skip */
} Conn;

static void die(const char *what) {
    fprintf(stderr, "openloop: %s: %s\n", what, errno ? strerror(errno) : "failed");
    exit(2);
}

static void fail(const char *message) {
    fprintf(stderr, "openloop: %s\n", message);
    exit(2);
}

static void *grow(void *p, size_t size) {
    void *q = realloc(p, size);
    if (q == NULL) fail("out of memory");
    return q;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void push(Doubles *d, double x) {
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 65536;
        d->v = grow(d->v, d->cap * sizeof(double));
    }
    d->v[d->n++] = x;
}

static void append(Conn *c, const char *data, size_t len) {
    if (c->out_off && c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->out_len + len > c->out_cap) {
        if (c->out_off) {  /* slide what is left to the front first */
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        while (c->out_len + len > c->out_cap) c->out_cap = c->out_cap ? c->out_cap * 2 : 65536;
        c->out = grow(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

static void enqueue(Conn *c, double sched, double sent) {
    if (c->q_len == c->q_cap) {
        size_t cap = c->q_cap ? c->q_cap * 2 : 256;
        Pending *q = grow(NULL, cap * sizeof(Pending));
        for (size_t k = 0; k < c->q_len; k++) q[k] = c->q[(c->q_head + k) % c->q_cap];
        free(c->q);
        c->q = q; c->q_head = 0; c->q_cap = cap;
    }
    c->q[(c->q_head + c->q_len) % c->q_cap] = (Pending){sched, sent};
    c->q_len++;
}

/* xorshift64*: the keys and the GET/SET mix only need to be spread, not secret. */
static uint64_t rng_state;
static uint64_t rng_next(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

typedef struct {
    Doubles from_sched, from_send, lag;
    long long errors;
    double measured_from;
} Results;

/* One complete reply: match it to the oldest request of its connection. */
static void reply_done(Conn *c, Results *r, double now, int is_error) {
    if (c->q_len == 0) fail("a reply arrived for no request");
    Pending p = c->q[c->q_head];
    c->q_head = (c->q_head + 1) % c->q_cap;
    c->q_len--;
    if (is_error) r->errors++;
    else if (p.sched >= r->measured_from) {
        push(&r->from_sched, now - p.sched);
        push(&r->from_send, now - p.sent);
    }
}

/* Frame the replies in buf; keeps partial lines and bulk bodies across reads. */
static void parse(Conn *c, Results *r, const char *buf, size_t len, double now) {
    size_t i = 0;
    while (i < len) {
        if (c->skip > 0) {
            size_t take = (size_t)c->skip < len - i ? (size_t)c->skip : len - i;
            c->skip -= (long long)take;
            i += take;
            if (c->skip == 0) reply_done(c, r, now, 0);
            continue;
        }
        const char *nl = memchr(buf + i, '\n', len - i);
        size_t part = nl ? (size_t)(nl - (buf + i)) + 1 : len - i;
        if (c->line_len + part > MAX_LINE) fail("a reply line is longer than expected");
        memcpy(c->line + c->line_len, buf + i, part);
        c->line_len += part;
        i += part;
        if (!nl) break;
        if (c->line_len < 3 || c->line[c->line_len - 2] != '\r') fail("a reply line without CRLF");
        c->line[c->line_len - 2] = '\0';
        char kind = c->line[0];
        c->line_len = 0;
        if (kind == '+' || kind == ':') {
            reply_done(c, r, now, 0);
        } else if (kind == '-') {
            reply_done(c, r, now, 1);
        } else if (kind == '$') {
            char *end;
            long long n = strtoll(c->line + 1, &end, 10);
            if (*end != '\0') fail("a bulk reply with a bad length");
            if (n < 0) reply_done(c, r, now, 0);
            else c->skip = n + 2;
        } else {
            fail("a reply of a type GET and SET do not have");
        }
    }
}

static int wait_events(int ep, struct epoll_event *events, int max, double timeout) {
    static int no_pwait2 = 0;
    if (timeout < 0) timeout = 0;
    struct timespec ts = {(time_t)timeout, (long)((timeout - floor(timeout)) * 1e9)};
#ifdef SYS_epoll_pwait2
    if (!no_pwait2) {
        long n = syscall(SYS_epoll_pwait2, ep, events, max, &ts, NULL, 0);
        if (n >= 0 || errno == EINTR) return n < 0 ? 0 : (int)n;
        if (errno != ENOSYS) die("epoll_pwait2");
        no_pwait2 = 1;
    }
#else
    (void)no_pwait2;
#endif
    /* Kernels before 5.11: ppoll sleeps to the nanosecond on the epoll descriptor. */
    struct pollfd pfd = {ep, POLLIN, 0};
    if (ppoll(&pfd, 1, &ts, NULL) < 0 && errno != EINTR) die("ppoll");
    int n = epoll_wait(ep, events, max, 0);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    return n < 0 ? 0 : n;
}

int main(int argc, char **argv) {
    if (argc != 12) {
        fprintf(stderr, "usage: openloop PORT RATE COUNT FIRST MEASURED_FROM CONNECTIONS "
                        "KEYSPACE SIZE SET_RATIO SEED OUT (see bench/openloop.c)\n");
        return 2;
    }
    int port = atoi(argv[1]);
    double rate = atof(argv[2]);
    long long total = atoll(argv[3]);
    double first = atof(argv[4]);
    Results r = {0};
    r.measured_from = atof(argv[5]);
    int nconn = atoi(argv[6]);
    long long keyspace = atoll(argv[7]);
    long size = atol(argv[8]);
    double set_ratio = atof(argv[9]);
    rng_state = (uint64_t)atoll(argv[10]) * 0x9E3779B97F4A7C15ULL + 1;
    if (rng_state == 0) rng_state = 1;  /* xorshift stays at 0 */
    const char *out_path = argv[11];
    if (port <= 0 || rate <= 0 || total < 0 || nconn <= 0 || keyspace <= 0 || size < 0)
        fail("bad arguments");
    double interval = 1.0 / rate;

    Conn *conns = calloc((size_t)nconn, sizeof(Conn));
    if (conns == NULL) fail("out of memory");
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int n = 0; n < nconn; n++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) die("socket");
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect to 127.0.0.1");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conns[n].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)n};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    }

    /* The two commands, with the key's 12 digits at a known offset. */
    char *value = malloc((size_t)size + 1);
    if (value == NULL) fail("out of memory");
    memset(value, 'v', (size_t)size);
    size_t set_len = 0, get_len = 0;
    char head[128];
    int hl = snprintf(head, sizeof head, "*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000000\r\n$%ld\r\n",
                      size);
    char *set_cmd = malloc((size_t)hl + (size_t)size + 2);
    if (set_cmd == NULL) fail("out of memory");
    memcpy(set_cmd, head, (size_t)hl);
    memcpy(set_cmd + hl, value, (size_t)size);
    memcpy(set_cmd + hl + size, "\r\n", 2);
    set_len = (size_t)hl + (size_t)size + 2;
    char get_cmd[] = "*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000000\r\n";
    get_len = sizeof get_cmd - 1;
    /* Where the key's 12 digits go in each. */
    char *set_digits = set_cmd + (strstr(head, "key:") - head) + 4;
    char *get_digits = strstr(get_cmd, "key:") + 4;

    char *inbuf = malloc(READ_SIZE);
    if (inbuf == NULL) fail("out of memory");
    struct epoll_event events[64];
    long long i = 0, sent = 0, pending = 0;
    double drain_until = INFINITY;

    for (;;) {
        double now = now_s();
        while (i < total) {
            double sched = first + (double)i * interval;
            if (sched > now) break;
            Conn *c = &conns[i % nconn];
            uint64_t key = rng_next() % (uint64_t)keyspace;
            int is_set = (double)(rng_next() >> 11) * (1.0 / 9007199254740992.0) < set_ratio;
            char *digits = is_set ? set_digits : get_digits;
            for (int d = 11; d >= 0; d--) { digits[d] = (char)('0' + key % 10); key /= 10; }
            append(c, is_set ? set_cmd : get_cmd, is_set ? set_len : get_len);
            enqueue(c, sched, now);
            if (sched >= r.measured_from) push(&r.lag, now - sched);
            i++; sent++; pending++;
        }
        for (int n = 0; n < nconn; n++) {
            Conn *c = &conns[n];
            if (c->out_off < c->out_len) {
                ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                                 MSG_DONTWAIT | MSG_NOSIGNAL);
                if (w < 0 && errno != EAGAIN && errno != EINTR) die("send");
                if (w > 0) c->out_off += (size_t)w;
            }
            int want = c->out_off < c->out_len;
            if (want != c->want_out) {
                struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0),
                                         .data.u32 = (uint32_t)n};
                if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
                c->want_out = want;
            }
        }
        double timeout;
        if (i >= total) {
            if (drain_until == INFINITY) drain_until = now + DRAIN_SECONDS;
            if (pending == 0 || now >= drain_until) break;
            timeout = drain_until - now;
        } else {
            timeout = first + (double)i * interval - now_s();
        }
        int nev = wait_events(ep, events, 64, timeout);
        if (nev == 0) continue;
        now = now_s();
        for (int e = 0; e < nev; e++) {
            if (!(events[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
            Conn *c = &conns[events[e].data.u32];
            ssize_t got = recv(c->fd, inbuf, READ_SIZE, MSG_DONTWAIT);
            if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (got < 0) die("recv");
            if (got == 0) fail("the target closed a load connection");
            size_t before = c->q_len;
            parse(c, &r, inbuf, (size_t)got, now);
            pending -= (long long)(before - c->q_len);
        }
    }

    FILE *out = fopen(out_path, "wb");
    if (out == NULL) die("open the results file");
    int64_t header[6] = {sent, r.errors, pending, (int64_t)r.from_sched.n,
                         (int64_t)r.from_send.n, (int64_t)r.lag.n};
    if (fwrite(header, sizeof header, 1, out) != 1
            || fwrite(r.from_sched.v, sizeof(double), r.from_sched.n, out) != r.from_sched.n
            || fwrite(r.from_send.v, sizeof(double), r.from_send.n, out) != r.from_send.n
            || fwrite(r.lag.v, sizeof(double), r.lag.n, out) != r.lag.n
            || fclose(out) != 0)
        die("write the results file");
    return 0;
}
