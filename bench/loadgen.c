/*
 * Clarion benchmark load generator: one thread, one epoll loop, no dependencies but libc.
 *
 * One invocation is one run against one server:
 *   1. read the server's RSS and CPU time (/proc/PID/...),
 *   2. connect N WebSocket subscribers (at most --concurrency handshakes in flight): each
 *      upgrades, waits for pusher:connection_established, sends pusher:subscribe and waits
 *      for pusher_internal:subscription_succeeded; the phase is timed,
 *   3. stay idle for --settle seconds, then read the server's RSS again,
 *   4. publish through the signed HTTP API (POST /apps/ID/events, Pusher signature with
 *      HMAC-SHA256 and body_md5 computed here for every request), either as fast as the
 *      deliveries come back (--publish flood: at most --inflight requests in flight per
 *      publisher connection and at most --lag events not yet delivered to every
 *      subscriber) or at a fixed rate (--publish rate --rate DELIVERIES_PER_S),
 *   5. after --warmup seconds count, for --duration seconds, deliveries (frames of event
 *      bench-event received by subscribers), publish responses, and the publish->deliver
 *      latency of every delivery (each event's data carries its send time in
 *      CLOCK_MONOTONIC microseconds), with the CPU time of the server and of this process,
 *   6. wait for every outstanding delivery, close every socket with RST (SO_LINGER 0) and
 *      print one JSON object on stdout.
 *
 * Server pings (pusher:ping and WebSocket pings) are answered; close frames, pusher:error
 * and unexpected disconnects are counted by code and reported.
 *
 * Other runs (bench/README.md, "More scenarios"), instead of or besides publishing:
 *   --channel private-X / presence-X   subscribers authorise (HMAC of socket_id:channel
 *                                      [:channel_data], as an app's auth endpoint would)
 *   --distinct-channels                subscriber i subscribes to CHANNEL-i
 *   --churn-rate R (0: as fast as it goes)   presence churn: an observer and
 *        --churn-members - 1 members on --churn-channel; new members join (connect +
 *        presence subscribe) at R/s and the oldest leaves (RST) as each new one is in;
 *        the observer times every member_added and member_removed
 *   --query list|channel|both          signed GET /apps/ID/channels[/NAME]?info=... one at
 *        a time on one keep-alive connection, latency per request kind
 *   --side-churn R / --side-client-events R   while publishing or querying: subscribe +
 *        unsubscribe of a new channel R/s (channel_occupied/vacated webhooks), client events R/s on
 *        private-side (client_event webhooks)
 *   --pub-port P                       publish / query through another node
 *   --group G (with --distinct-channels)   subscriber i subscribes to CHANNEL-(i/G): groups
 *        of G, e.g. presence rooms; publishes (--publish rate, --rate in deliveries/s) go
 *        round-robin over the groups' channels
 *   --client-rate R                    while publishing: every subscribed connection sends
 *        R client events/s (client-mix, data {"t": send time}) on its channel, open loop;
 *        their deliveries to the other members are counted and timed apart ("client")
 *   --markers                          print "idle-start", "idle-end", "window-start",
 *        "window-end" on stderr as the run passes them (bench/curves.py samples Redis then)
 *   --server-pid A,B,...  --aux-pid C,...   CPU (and RSS) summed over several processes
 *   --receiver                         no load: a webhook receiver on --port answering 200
 *        to every request until SIGTERM, then one JSON line of what it received
 *
 * Build: gcc -O2 -o loadgen loadgen.c   (bench/run.py does this)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------- */
/* MD5 and HMAC-SHA256 for Pusher request signing, from OpenSSL's libcrypto                */
/* ------------------------------------------------------------------------------------- */

static const char *hmac_key = "";
static int hmac_key_len;

static void md5(const uint8_t *data, size_t len, uint8_t out[16]) {
    unsigned int n = 16;
    EVP_Digest(data, len, out, &n, EVP_md5(), NULL);
}

static void hmac_setup(const char *key) {
    hmac_key = key;
    hmac_key_len = (int)strlen(key);
}

static void hmac_sha256(const uint8_t *msg, size_t len, uint8_t out[32]) {
    unsigned int n = 32;
    HMAC(EVP_sha256(), hmac_key, hmac_key_len, msg, len, out, &n);
}

static void hexify(const uint8_t *p, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = 0;
}

/* ------------------------------------------------------------------------------------- */
/* options and state                                                                      */
/* ------------------------------------------------------------------------------------- */

enum { PUB_NONE, PUB_FLOOD, PUB_RATE };

enum { Q_NONE, Q_LIST, Q_CHANNEL, Q_BOTH };
#define MAX_PIDS 16

static struct {
    const char *host;
    int port;
    const char *app_id, *key, *secret, *channel, *event;
    int subs, concurrency, publishers, inflight, lag, pad, server_pid, pub_mode, nap_us;
    double rate, settle, warmup, duration, timeout;
    /* the scenarios of bench/README.md "More scenarios" (zero: off) */
    int pub_port, distinct, churn_members, churn_inflight, query, receiver;
    double churn_rate, side_churn, side_ce;
    const char *churn_channel, *query_info;
    int server_pids[MAX_PIDS], n_server_pids, aux_pids[MAX_PIDS], n_aux_pids;
    /* the mixed workload (bench/curves.py): rooms of --group, client events per user */
    int group, markers;
    double client_rate;
} opt = {"127.0.0.1", 6001, "1", "app-key", "app-secret", "bench", "bench-event",
         0, 256, 4, 2, 32, 32, 0, PUB_NONE, 0, 20000, 1.0, 1.0, 5.0, 120.0};

enum { KIND_SUB = 1, KIND_PUB = 2, KIND_QUERY = 3, KIND_LISTEN = 4, KIND_RECV = 5 };
/* what a WebSocket connection (KIND_SUB) is for */
enum { ROLE_MAIN, ROLE_OBSERVER, ROLE_JOINER, ROLE_SIDE_CHURN, ROLE_SIDE_CE };
enum { ST_CONNECTING, ST_HANDSHAKE, ST_WAIT_ESTABLISHED, ST_WAIT_SUBSCRIBED, ST_SUBSCRIBED,
       ST_HTTP, ST_DEAD };

typedef struct conn {
    int fd;
    uint8_t kind, state, counted_dead, role;
    int idx;                /* subscriber / member number */
    char sid[40];           /* socket id from pusher:connection_established */
    uint8_t q_kind;         /* query: the request in flight */
    int64_t q_sent_us;
    char *in;
    uint32_t in_len, in_cap;
    char *out;
    uint32_t out_len, out_cap;
    uint32_t inflight;      /* publisher: requests awaiting a response */
    uint64_t delivered;     /* subscriber: bench events received since publishing began */
    struct conn *next_dead; /* freed after the current epoll batch */
} conn_t;

#define MAX_CODES 16
typedef struct {
    int code[MAX_CODES];
    uint64_t count[MAX_CODES];
    int n;
} code_counter;

static void count_code(code_counter *cc, int code) {
    for (int i = 0; i < cc->n; i++)
        if (cc->code[i] == code) {
            cc->count[i]++;
            return;
        }
    if (cc->n < MAX_CODES) {
        cc->code[cc->n] = code;
        cc->count[cc->n++] = 1;
    }
}

#define HIST_BUCKET_US 10
#define HIST_N (1 << 20)

/* Latencies in 10 us buckets up to ~10 s (allocated at the first sample). */
typedef struct {
    uint32_t *b;
    uint64_t n, over;
    double max_us;
    int64_t sum_us;
} hist_t;

#define MAX_SIDE 64

static struct {
    int epfd;
    conn_t **subs;
    int subs_started, subs_failed, subs_live;
    int subscribed; /* currently subscribed subscribers */
    int handshaking;
    conn_t **pubs;
    int n_pubs;
    conn_t *dead;
    /* publishing */
    int publishing, measuring;
    uint64_t sent, responses, http_errors, deliveries, pub_deliveries, other_frames;
    uint64_t expected; /* deliveries owed: sum over publishes of live subscribers then */
    uint64_t pings_answered, ws_pings_answered, unexpected_eof, connect_errors;
    code_counter closes, pusher_errors, sub_errors, http_status;
    char first_error[256];
    /* window */
    hist_t lat;
    /* groups (--group): subscribed members per group; client events (--client-rate) */
    int n_groups, *grp_subscribed, pub_group, ce_rr;
    double ce_next, ce_interval;
    uint64_t ce_sent, ce_deliveries, ce_expected;
    hist_t ce_lat, all_lat; /* client events; publishes and client events together */
    /* side traffic while publishing (webhook scenario) */
    conn_t *side[MAX_SIDE];
    int n_side, side_ready, side_k, side_phase, side_rr;
    double side_next_churn, side_next_ce;
    uint64_t side_subscribes, side_unsubscribes, side_client_events;
    /* queries */
    int querying;
    uint64_t q_count, q_responses;
    size_t q_list_bytes;
    hist_t q_list, q_channel;
} g;

/* presence churn */
static struct {
    conn_t *observer;
    int observer_ready;
    int started, inflight, completed, failed;
    conn_t **fifo; /* subscribed members, oldest first (a ring) */
    int fifo_head, fifo_len, fifo_cap;
    int64_t *connect_us, *sub_sent_us, *leave_us; /* by member number */
    int cap;
    uint64_t leaves, added_seen, removed_seen, late;
    uint64_t w_joins, w_added, w_removed; /* in the window */
    hist_t added, removed, join;
} ch;

static char rbuf[1 << 18];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static double pid_cpu_s(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long ut = 0, st = 0;
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds of the server: the sum over its processes (workers). */
static double server_cpu_s(void) {
    double total = 0;
    for (int i = 0; i < opt.n_server_pids; i++) {
        double t = pid_cpu_s(opt.server_pids[i]);
        if (t < 0) return -1;
        total += t;
    }
    return total;
}

static long pid_rss_kib(int pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kib;
}

static long server_rss_kib(void) {
    if (!opt.n_server_pids) return 0;
    long total = 0;
    for (int i = 0; i < opt.n_server_pids; i++) {
        long kib = pid_rss_kib(opt.server_pids[i]);
        if (kib < 0) return -1;
        total += kib;
    }
    return total;
}

static int parse_pids(const char *text, int *out) {
    int n = 0;
    for (const char *p = text; *p && n < MAX_PIDS;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) break;
        if (v > 0) out[n++] = (int)v;
        p = *end == ',' ? end + 1 : end;
    }
    return n;
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void note_error(const char *fmt, ...) {
    if (g.first_error[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g.first_error, sizeof g.first_error, fmt, ap);
    va_end(ap);
}

static void hist_add(hist_t *h, int64_t lat_us) {
    if (!h->b) {
        h->b = calloc(HIST_N, sizeof *h->b);
        if (!h->b) die("out of memory");
    }
    if (lat_us < 0) lat_us = 0;
    h->n++;
    h->sum_us += lat_us;
    if ((double)lat_us > h->max_us) h->max_us = (double)lat_us;
    uint64_t b = (uint64_t)lat_us / HIST_BUCKET_US;
    if (b >= HIST_N)
        h->over++;
    else
        h->b[b]++;
}

static double hist_pct(const hist_t *h, double q) {
    if (!h->n) return -1;
    uint64_t want = (uint64_t)(q * (double)h->n + 0.999999);
    if (want < 1) want = 1;
    uint64_t seen = 0;
    for (uint64_t b = 0; b < HIST_N; b++) {
        seen += h->b[b];
        if (seen >= want) return ((double)b + 0.5) * HIST_BUCKET_US / 1000.0;
    }
    return h->max_us / 1000.0;
}

static void json_hist(const char *name, const hist_t *h) {
    printf("\"%s\":{\"n\":%llu,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,"
           "\"max\":%.3f,\"mean\":%.3f}",
           name, (unsigned long long)h->n, hist_pct(h, 0.50), hist_pct(h, 0.90),
           hist_pct(h, 0.99), hist_pct(h, 0.999), h->max_us / 1000.0,
           h->n ? (double)h->sum_us / (double)h->n / 1000.0 : -1.0);
}

/* ------------------------------------------------------------------------------------- */
/* sockets                                                                                */
/* ------------------------------------------------------------------------------------- */

static void buf_append(char **buf, uint32_t *len, uint32_t *cap, const char *p, size_t n) {
    if (*len + n > *cap) {
        uint32_t want = *cap ? *cap : 512;
        while (want < *len + n) want *= 2;
        *buf = realloc(*buf, want);
        if (!*buf) die("out of memory");
        *cap = want;
    }
    memcpy(*buf + *len, p, n);
    *len += (uint32_t)n;
}

static void set_events(conn_t *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(g.epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void kill_conn(conn_t *c) {
    if (c->state == ST_DEAD) return;
    if (c->kind == KIND_SUB && c->role == ROLE_JOINER && c->state != ST_SUBSCRIBED) {
        ch.inflight--;
        ch.failed++;
    } else if (c->kind == KIND_SUB && c->role == ROLE_MAIN) {
        if (c->state == ST_SUBSCRIBED) {
            g.subscribed--;
            if (opt.group) g.grp_subscribed[c->idx / opt.group]--;
            /* what it will never receive is no longer owed (with --group the publishes
             * went to one group each: the undelivered count stays an upper bound) */
            if (g.publishing && !opt.group) g.expected -= g.sent - c->delivered;
        } else {
            g.handshaking--;
            g.subs_failed++;
        }
        g.subs_live--;
    }
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c->fd);
    c->state = ST_DEAD;
    c->next_dead = g.dead;
    g.dead = c;
}

static void reap(void) {
    while (g.dead) {
        conn_t *c = g.dead;
        g.dead = c->next_dead;
        free(c->in);
        free(c->out);
        c->in = c->out = NULL;
        c->in_len = c->in_cap = c->out_len = c->out_cap = 0;
        /* the conn_t itself stays in g.subs/g.pubs (marked dead) */
    }
}

static void flush_out(conn_t *c) {
    while (c->out_len) {
        ssize_t n = write(c->fd, c->out, c->out_len);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) break;
            g.unexpected_eof++;
            note_error("write: %s", strerror(errno));
            kill_conn(c);
            return;
        }
        memmove(c->out, c->out + n, c->out_len - (size_t)n);
        c->out_len -= (uint32_t)n;
    }
    set_events(c, c->out_len ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static void send_bytes(conn_t *c, const char *p, size_t n) {
    if (c->out_len == 0) {
        ssize_t w = write(c->fd, p, n);
        if (w == (ssize_t)n) return;
        if (w < 0) {
            if (errno != EAGAIN && errno != EINTR) {
                g.unexpected_eof++;
                note_error("write: %s", strerror(errno));
                kill_conn(c);
                return;
            }
            w = 0;
        }
        p += w;
        n -= (size_t)w;
    }
    buf_append(&c->out, &c->out_len, &c->out_cap, p, n);
    set_events(c, EPOLLIN | EPOLLOUT);
}

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* A masked client frame (FIN set) with a payload shorter than 64 KiB. */
static void send_ws(conn_t *c, int opcode, const char *payload, size_t n) {
    char frame[1024 + 8];
    size_t h = 0;
    if (n > 1024) n = 1024;
    frame[h++] = (char)(0x80 | opcode);
    if (n < 126) {
        frame[h++] = (char)(0x80 | n);
    } else {
        frame[h++] = (char)(0x80 | 126);
        frame[h++] = (char)(n >> 8);
        frame[h++] = (char)(n & 0xff);
    }
    memcpy(frame + h, MASK, 4);
    h += 4;
    for (size_t i = 0; i < n; i++) frame[h + i] = (char)(payload[i] ^ MASK[i & 3]);
    send_bytes(c, frame, h + n);
}

static int new_socket(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s (raise ulimit -n?)", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static struct sockaddr_in server_addr, pub_addr;

static conn_t *open_conn(int kind) {
    conn_t *c = calloc(1, sizeof *c);
    if (!c) die("out of memory");
    c->kind = (uint8_t)kind;
    c->fd = new_socket();
    /* HTTP requests may go to another node than the WebSockets (--pub-port) */
    struct sockaddr_in *to = kind == KIND_SUB ? &server_addr : &pub_addr;
    int r = connect(c->fd, (struct sockaddr *)to, sizeof *to);
    if (r < 0 && errno != EINPROGRESS) {
        g.connect_errors++;
        note_error("connect: %s", strerror(errno));
        close(c->fd);
        c->fd = -1;
        c->state = ST_DEAD;
        return c;
    }
    c->state = ST_CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    return c;
}

/* ------------------------------------------------------------------------------------- */
/* subscribers                                                                            */
/* ------------------------------------------------------------------------------------- */

static char upgrade_req[512];
static size_t upgrade_len;
static char subscribe_msg[256];
static size_t subscribe_len;
static char event_prefix[128];
static size_t event_prefix_len;

#define EVENT_IS(p, n, lit) ((n) >= sizeof(lit) - 1 && memcmp((p), (lit), sizeof(lit) - 1) == 0)

static void record_latency(const char *p, size_t n) {
    /* data is a JSON string: ...\"t\":123456... */
    const char *t = memmem(p, n, "\\\"t\\\":", 6);
    if (!t) return;
    int64_t lat = now_us() - strtoll(t + 6, NULL, 10);
    hist_add(&g.lat, lat);
    if (opt.client_rate > 0) hist_add(&g.all_lat, lat);
}

/* A client event's data is forwarded as the sender's JSON object: ..."t":123456... */
static void record_client_latency(const char *p, size_t n) {
    const char *t = memmem(p, n, "\"t\":", 4);
    if (!t) return;
    int64_t lat = now_us() - strtoll(t + 4, NULL, 10);
    hist_add(&g.ce_lat, lat);
    hist_add(&g.all_lat, lat);
}

static int json_int_after(const char *p, size_t n, const char *key) {
    const char *k = memmem(p, n, key, strlen(key));
    if (!k) return -1;
    return atoi(k + strlen(key));
}

static int starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The channel a WebSocket connection subscribes to. */
static void channel_of(const conn_t *c, char *out, size_t cap) {
    if (c->role == ROLE_OBSERVER || c->role == ROLE_JOINER)
        snprintf(out, cap, "%s", opt.churn_channel);
    else if (c->role == ROLE_SIDE_CE)
        snprintf(out, cap, "private-side");
    else if (opt.distinct)
        snprintf(out, cap, "%s-%d", opt.channel, opt.group ? c->idx / opt.group : c->idx);
    else
        snprintf(out, cap, "%s", opt.channel);
}

/* pusher:subscribe, with the auth an app's auth endpoint gives for private and presence
 * channels: key:HMAC-SHA256(secret, socket_id:channel[:channel_data]). */
static void send_subscribe(conn_t *c) {
    if (c->role == ROLE_MAIN && !opt.distinct && subscribe_len) {
        send_ws(c, 1, subscribe_msg, subscribe_len);
        return;
    }
    char chan[160], msg[1024], text[512], hex[65], cdata[160], esc[320];
    uint8_t d[32];
    int n;
    channel_of(c, chan, sizeof chan);
    if (starts_with(chan, "presence-")) {
        char uid[32];
        if (c->role == ROLE_OBSERVER)
            snprintf(uid, sizeof uid, "observer");
        else
            snprintf(uid, sizeof uid, "%c%d", c->role == ROLE_JOINER ? 'u' : 's', c->idx);
        int cl = snprintf(cdata, sizeof cdata,
                          "{\"user_id\":\"%s\",\"user_info\":{\"name\":\"%s\"}}", uid, uid);
        int tl = snprintf(text, sizeof text, "%s:%s:%s", c->sid, chan, cdata);
        hmac_sha256((const uint8_t *)text, (size_t)tl, d);
        hexify(d, 32, hex);
        size_t e = 0;
        for (int i = 0; i < cl; i++) {
            if (cdata[i] == '"') esc[e++] = '\\';
            esc[e++] = cdata[i];
        }
        esc[e] = 0;
        n = snprintf(msg, sizeof msg,
                     "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"%s\","
                     "\"auth\":\"%s:%s\",\"channel_data\":\"%s\"}}",
                     chan, opt.key, hex, esc);
    } else if (starts_with(chan, "private-")) {
        int tl = snprintf(text, sizeof text, "%s:%s", c->sid, chan);
        hmac_sha256((const uint8_t *)text, (size_t)tl, d);
        hexify(d, 32, hex);
        n = snprintf(msg, sizeof msg,
                     "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"%s\","
                     "\"auth\":\"%s:%s\"}}",
                     chan, opt.key, hex);
    } else {
        n = snprintf(msg, sizeof msg,
                     "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"%s\"}}", chan);
    }
    send_ws(c, 1, msg, (size_t)n);
}

/* --- presence churn ------------------------------------------------------------------ */

static void churn_grow(int idx) {
    if (idx < ch.cap) return;
    int cap = ch.cap ? ch.cap : 4096;
    while (cap <= idx) cap *= 2;
    int64_t **arrays[] = {&ch.connect_us, &ch.sub_sent_us, &ch.leave_us};
    for (size_t i = 0; i < sizeof arrays / sizeof *arrays; i++) {
        int64_t *a = realloc(*arrays[i], (size_t)cap * sizeof *a);
        if (!a) die("out of memory");
        memset(a + ch.cap, 0, (size_t)(cap - ch.cap) * sizeof *a);
        *arrays[i] = a;
    }
    ch.cap = cap;
}

static void fifo_push(conn_t *c) {
    if (ch.fifo_len == ch.fifo_cap) {
        int cap = ch.fifo_cap ? ch.fifo_cap * 2 : 256;
        conn_t **f = malloc((size_t)cap * sizeof *f);
        if (!f) die("out of memory");
        for (int i = 0; i < ch.fifo_len; i++) f[i] = ch.fifo[(ch.fifo_head + i) % ch.fifo_cap];
        free(ch.fifo);
        ch.fifo = f;
        ch.fifo_cap = cap;
        ch.fifo_head = 0;
    }
    ch.fifo[(ch.fifo_head + ch.fifo_len++) % ch.fifo_cap] = c;
}

static conn_t *fifo_pop(void) {
    conn_t *c = ch.fifo[ch.fifo_head];
    ch.fifo_head = (ch.fifo_head + 1) % ch.fifo_cap;
    ch.fifo_len--;
    return c;
}

/* A new member: connect, then (on connection_established) the presence subscribe. */
static void start_joiner(void) {
    int idx = ch.started++;
    churn_grow(idx);
    conn_t *c = open_conn(KIND_SUB);
    c->role = ROLE_JOINER;
    c->idx = idx;
    ch.connect_us[idx] = now_us();
    if (c->state == ST_DEAD) {
        ch.failed++;
        return;
    }
    ch.inflight++;
}

/* A member is in (its subscription_succeeded): the oldest leaves, abruptly (RST), as a
 * closed tab or a lost network does, so the channel stays at --churn-members. */
static void joiner_in(conn_t *c) {
    int64_t now = now_us();
    ch.inflight--;
    ch.completed++;
    if (g.measuring) {
        ch.w_joins++;
        hist_add(&ch.join, now - ch.connect_us[c->idx]);
    }
    fifo_push(c);
    while (ch.fifo_len > opt.churn_members - 1) {
        conn_t *old = fifo_pop();
        if (old->state == ST_DEAD) continue;
        ch.leave_us[old->idx] = now_us();
        ch.leaves++;
        kill_conn(old);
    }
}

/* member_added / member_removed at the observer: time it from the member's subscribe
 * (added) or from its reset (removed). */
static void observer_saw(const char *p, size_t n, int added) {
    const char *u = memmem(p, n, "user_id\\\":\\\"u", 13);
    if (!u) return;
    long idx = strtol(u + 13, NULL, 10);
    if (idx < 0 || idx >= ch.started) return;
    int64_t now = now_us();
    if (added) {
        ch.added_seen++;
        if (g.measuring) {
            ch.w_added++;
            if (ch.sub_sent_us[idx]) hist_add(&ch.added, now - ch.sub_sent_us[idx]);
        }
    } else {
        ch.removed_seen++;
        if (g.measuring) {
            ch.w_removed++;
            if (ch.leave_us[idx]) hist_add(&ch.removed, now - ch.leave_us[idx]);
        }
    }
}

/* --- side traffic while publishing (webhooks) ---------------------------------------- */

static void start_side(void) {
    if (opt.side_churn > 0) {
        conn_t *c = open_conn(KIND_SUB);
        c->role = ROLE_SIDE_CHURN;
        g.side[g.n_side++] = c;
    }
    if (opt.side_ce > 0) {
        /* at most 5 client events/s per connection: the default limit is 10 */
        int k = (int)((opt.side_ce + 4.999) / 5.0);
        if (k < 2) k = 2;
        for (int i = 0; i < k && g.n_side < MAX_SIDE; i++) {
            conn_t *c = open_conn(KIND_SUB);
            c->role = ROLE_SIDE_CE;
            c->idx = i;
            g.side[g.n_side++] = c;
        }
    }
}

static void side_pump(double now) {
    char msg[256];
    int n;
    if (opt.side_churn > 0 && g.side[0]->state == ST_SUBSCRIBED) {
        conn_t *c = g.side[0];
        while (now >= g.side_next_churn && c->state == ST_SUBSCRIBED) {
            if (!g.side_phase) {
                n = snprintf(msg, sizeof msg,
                             "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"side-%d\"}}",
                             g.side_k);
                g.side_subscribes++;
            } else {
                n = snprintf(msg, sizeof msg,
                             "{\"event\":\"pusher:unsubscribe\",\"data\":{\"channel\":\"side-%d\"}}",
                             g.side_k++);
                g.side_unsubscribes++;
            }
            g.side_phase ^= 1;
            send_ws(c, 1, msg, (size_t)n);
            g.side_next_churn += 0.5 / opt.side_churn;
        }
    }
    if (opt.side_ce > 0) {
        while (now >= g.side_next_ce) {
            g.side_next_ce += 1.0 / opt.side_ce;
            for (int k = 0; k < g.n_side; k++) {
                conn_t *c = g.side[g.side_rr++ % g.n_side];
                if (c->role != ROLE_SIDE_CE || c->state != ST_SUBSCRIBED) continue;
                n = snprintf(msg, sizeof msg,
                             "{\"event\":\"client-bench\",\"channel\":\"private-side\","
                             "\"data\":{\"n\":%llu}}",
                             (unsigned long long)g.side_client_events);
                send_ws(c, 1, msg, (size_t)n);
                g.side_client_events++;
                break;
            }
        }
    }
}

static void sub_text(conn_t *c, const char *p, size_t n) {
    if (n >= event_prefix_len && memcmp(p, event_prefix, event_prefix_len) == 0) {
        g.deliveries++;
        if (g.publishing) {
            c->delivered++;
            g.pub_deliveries++;
        }
        if (g.measuring) record_latency(p, n);
        return;
    }
    if (EVENT_IS(p, n, "{\"event\":\"client-mix\"")) {
        g.ce_deliveries++;
        if (g.measuring) record_client_latency(p, n);
        return;
    }
    if (EVENT_IS(p, n, "{\"event\":\"pusher_internal:member_added\"")) {
        if (c->role == ROLE_OBSERVER)
            observer_saw(p, n, 1);
        else
            g.other_frames++;
    } else if (EVENT_IS(p, n, "{\"event\":\"pusher_internal:member_removed\"")) {
        if (c->role == ROLE_OBSERVER)
            observer_saw(p, n, 0);
        else
            g.other_frames++;
    } else if (EVENT_IS(p, n, "{\"event\":\"pusher:connection_established\"")) {
        if (c->state == ST_WAIT_ESTABLISHED) {
            /* data: "{\"socket_id\":\"123.456\",...}" */
            const char *s = memmem(p, n, "socket_id\\\":\\\"", 14);
            size_t k = 0;
            if (s)
                for (s += 14; s < p + n && k + 1 < sizeof c->sid &&
                              ((*s >= '0' && *s <= '9') || *s == '.');
                     s++)
                    c->sid[k++] = *s;
            c->sid[k] = 0;
            if (c->role == ROLE_SIDE_CHURN) {
                c->state = ST_SUBSCRIBED; /* it subscribes later, on the side schedule */
                g.side_ready++;
            } else {
                c->state = ST_WAIT_SUBSCRIBED;
                if (c->role == ROLE_JOINER) ch.sub_sent_us[c->idx] = now_us();
                send_subscribe(c);
            }
        }
    } else if (EVENT_IS(p, n, "{\"event\":\"pusher_internal:subscription_succeeded\"")) {
        if (c->state == ST_WAIT_SUBSCRIBED) {
            c->state = ST_SUBSCRIBED;
            if (c->role == ROLE_MAIN) {
                g.subscribed++;
                g.handshaking--;
                if (opt.group) g.grp_subscribed[c->idx / opt.group]++;
            } else if (c->role == ROLE_OBSERVER) {
                ch.observer_ready = 1;
            } else if (c->role == ROLE_JOINER) {
                joiner_in(c);
            } else {
                g.side_ready++;
            }
        }
    } else if (EVENT_IS(p, n, "{\"event\":\"pusher:ping\"")) {
        static const char pong[] = "{\"event\":\"pusher:pong\",\"data\":{}}";
        send_ws(c, 1, pong, sizeof pong - 1);
        g.pings_answered++;
    } else if (EVENT_IS(p, n, "{\"event\":\"pusher:error\"")) {
        count_code(&g.pusher_errors, json_int_after(p, n, "\"code\":"));
        note_error("pusher:error %.*s", (int)(n > 200 ? 200 : n), p);
    } else if (EVENT_IS(p, n, "{\"event\":\"pusher:subscription_error\"")) {
        count_code(&g.sub_errors, json_int_after(p, n, "\"status\":"));
        note_error("subscription_error %.*s", (int)(n > 200 ? 200 : n), p);
    } else {
        g.other_frames++;
    }
}

static void sub_frame(conn_t *c, int opcode, const char *p, size_t n) {
    switch (opcode) {
    case 1:
        sub_text(c, p, n);
        break;
    case 8: {
        int code = n >= 2 ? ((uint8_t)p[0] << 8 | (uint8_t)p[1]) : 1005;
        count_code(&g.closes, code);
        note_error("close frame %d: %.*s", code, (int)(n > 2 ? n - 2 : 0), p + 2);
        kill_conn(c);
        break;
    }
    case 9:
        send_ws(c, 10, p, n);
        g.ws_pings_answered++;
        break;
    default:
        break;
    }
}

/* Parse the WebSocket frames in p[0..n); return how many bytes were consumed. */
static size_t sub_frames(conn_t *c, const char *p, size_t n) {
    size_t off = 0;
    while (n - off >= 2 && c->state != ST_DEAD) {
        const uint8_t *h = (const uint8_t *)p + off;
        int opcode = h[0] & 0x0f;
        uint64_t plen = h[1] & 0x7f;
        size_t hl = 2;
        if (plen == 126) {
            if (n - off < 4) break;
            plen = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (plen == 127) {
            if (n - off < 10) break;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = plen << 8 | h[2 + i];
            hl = 10;
        }
        if (h[1] & 0x80) hl += 4; /* servers never mask; tolerate it anyway */
        if (n - off < hl + plen) break;
        sub_frame(c, opcode, p + off + hl, (size_t)plen);
        off += hl + (size_t)plen;
    }
    return off;
}

static const char ACCEPT[] = "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

static void sub_readable(conn_t *c) {
    ssize_t r = read(c->fd, rbuf, sizeof rbuf);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        g.unexpected_eof++;
        note_error("subscriber disconnected (%s)", r == 0 ? "EOF" : strerror(errno));
        kill_conn(c);
        return;
    }
    const char *p = rbuf;
    size_t n = (size_t)r;
    if (c->in_len) {
        buf_append(&c->in, &c->in_len, &c->in_cap, rbuf, n);
        p = c->in;
        n = c->in_len;
    }
    size_t off = 0;
    if (c->state == ST_HANDSHAKE) {
        const char *end = memmem(p, n, "\r\n\r\n", 4);
        if (!end) {
            if (p == rbuf) buf_append(&c->in, &c->in_len, &c->in_cap, p, n);
            return;
        }
        size_t head = (size_t)(end - p) + 4;
        if (n < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0 || !memmem(p, head, ACCEPT, sizeof ACCEPT - 1)) {
            note_error("bad upgrade response: %.*s", (int)(head > 200 ? 200 : head), p);
            count_code(&g.http_status, n >= 12 ? atoi(p + 9) : -1);
            kill_conn(c);
            return;
        }
        c->state = ST_WAIT_ESTABLISHED;
        off = head;
    }
    off += sub_frames(c, p + off, n - off);
    if (c->state == ST_DEAD) return;
    size_t left = n - off;
    if (p == rbuf) {
        if (left) buf_append(&c->in, &c->in_len, &c->in_cap, p + off, left);
    } else {
        memmove(c->in, c->in + off, left);
        c->in_len = (uint32_t)left;
        if (!left && c->in_cap > 65536) {
            free(c->in);
            c->in = NULL;
            c->in_cap = 0;
        }
    }
}

static void start_sub(void) {
    conn_t *c = open_conn(KIND_SUB);
    c->idx = g.subs_started;
    g.subs[g.subs_started++] = c;
    if (c->state == ST_DEAD) {
        g.subs_failed++;
        return;
    }
    g.subs_live++;
    g.handshaking++;
}

/* ------------------------------------------------------------------------------------- */
/* publishers                                                                             */
/* ------------------------------------------------------------------------------------- */

static char pad_str[1024];

static void send_publish(conn_t *c) {
    char body[1400], query[256], sts[400], req[2048], md5hex[33], sighex[65];
    uint8_t digest[32];
    char chan[160];
    uint64_t owed = (uint64_t)g.subscribed;
    if (opt.group) {
        /* one room after the other */
        int k = g.pub_group++ % g.n_groups;
        snprintf(chan, sizeof chan, "%s-%d", opt.channel, k);
        owed = (uint64_t)g.grp_subscribed[k];
    } else {
        snprintf(chan, sizeof chan, "%s", opt.channel);
    }
    int blen = snprintf(body, sizeof body,
                        "{\"name\":\"%s\",\"channel\":\"%s\",\"data\":\"{\\\"t\\\":%lld,"
                        "\\\"p\\\":\\\"%s\\\"}\"}",
                        opt.event, chan, (long long)now_us(), pad_str);
    md5((const uint8_t *)body, (size_t)blen, digest);
    hexify(digest, 16, md5hex);
    int qlen = snprintf(query, sizeof query,
                        "auth_key=%s&auth_timestamp=%ld&auth_version=1.0&body_md5=%s", opt.key,
                        (long)time(NULL), md5hex);
    int slen = snprintf(sts, sizeof sts, "POST\n/apps/%s/events\n%.*s", opt.app_id, qlen, query);
    hmac_sha256((const uint8_t *)sts, (size_t)slen, digest);
    hexify(digest, 32, sighex);
    int rlen = snprintf(req, sizeof req,
                        "POST /apps/%s/events?%s&auth_signature=%s HTTP/1.1\r\n"
                        "Host: %s:%d\r\nContent-Type: application/json\r\n"
                        "Content-Length: %d\r\n\r\n%s",
                        opt.app_id, query, sighex, opt.host, opt.port, blen, body);
    c->inflight++;
    g.sent++;
    g.expected += owed;
    send_bytes(c, req, (size_t)rlen);
}

/* --client-rate: every subscribed connection sends R client events/s on its channel, on
 * an open-loop schedule (connections in turn, one every 1 / (R * subscribed) s). */
static void client_pump(double now) {
    char chan[160], msg[320];
    while (now >= g.ce_next) {
        g.ce_next += g.ce_interval;
        for (int k = 0; k < g.subs_started; k++) {
            conn_t *c = g.subs[g.ce_rr++ % g.subs_started];
            if (c->state != ST_SUBSCRIBED) continue;
            channel_of(c, chan, sizeof chan);
            int n = snprintf(msg, sizeof msg,
                             "{\"event\":\"client-mix\",\"channel\":\"%s\","
                             "\"data\":{\"t\":%lld,\"p\":\"%s\"}}",
                             chan, (long long)now_us(), pad_str);
            send_ws(c, 1, msg, (size_t)n);
            g.ce_sent++;
            if (opt.group) g.ce_expected += (uint64_t)(g.grp_subscribed[c->idx / opt.group] - 1);
            break;
        }
    }
}

static void marker(const char *what) {
    if (!opt.markers) return;
    fprintf(stderr, "%s\n", what);
    fflush(stderr);
}

/* --- HTTP state queries -------------------------------------------------------------- */

/* One signed GET: /apps/ID/channels or /apps/ID/channels/NAME (a random one of the
 * --distinct-channels), with ?info=--query-info, as the Pusher libraries sign it. */
static void send_query(conn_t *c) {
    int kind = opt.query == Q_BOTH ? (g.q_count % 2 ? Q_CHANNEL : Q_LIST) : opt.query;
    g.q_count++;
    char path[256], query[256], text[600], req[1200], hex[65];
    uint8_t d[32];
    if (kind == Q_LIST)
        snprintf(path, sizeof path, "/apps/%s/channels", opt.app_id);
    else if (opt.distinct)
        snprintf(path, sizeof path, "/apps/%s/channels/%s-%d", opt.app_id, opt.channel,
                 (int)(random() % (opt.subs > 0 ? opt.subs : 1)));
    else
        snprintf(path, sizeof path, "/apps/%s/channels/%s", opt.app_id, opt.channel);
    int ql = snprintf(query, sizeof query, "auth_key=%s&auth_timestamp=%ld&auth_version=1.0%s%s",
                      opt.key, (long)time(NULL), opt.query_info[0] ? "&info=" : "",
                      opt.query_info);
    int tl = snprintf(text, sizeof text, "GET\n%s\n%.*s", path, ql, query);
    hmac_sha256((const uint8_t *)text, (size_t)tl, d);
    hexify(d, 32, hex);
    int rl = snprintf(req, sizeof req, "GET %s?%s&auth_signature=%s HTTP/1.1\r\nHost: %s:%d\r\n\r\n",
                      path, query, hex, opt.host, opt.pub_port);
    c->q_kind = (uint8_t)kind;
    c->q_sent_us = now_us();
    c->inflight++;
    send_bytes(c, req, (size_t)rl);
}

static void query_done(conn_t *c, size_t bytes) {
    int64_t lat = now_us() - c->q_sent_us;
    g.q_responses++;
    if (c->q_kind == Q_LIST) g.q_list_bytes = bytes;
    if (g.measuring) hist_add(c->q_kind == Q_LIST ? &g.q_list : &g.q_channel, lat);
    if (g.querying && c->state == ST_HTTP) send_query(c);
}

static void pub_readable(conn_t *c) {
    ssize_t r = read(c->fd, rbuf, sizeof rbuf);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        g.unexpected_eof++;
        note_error("publisher disconnected (%s)", r == 0 ? "EOF" : strerror(errno));
        kill_conn(c);
        return;
    }
    buf_append(&c->in, &c->in_len, &c->in_cap, rbuf, (size_t)r);
    size_t off = 0;
    for (;;) {
        const char *p = c->in + off;
        size_t n = c->in_len - off;
        const char *end = memmem(p, n, "\r\n\r\n", 4);
        if (!end) break;
        size_t head = (size_t)(end - p) + 4;
        const char *cl = memmem(p, head, "Content-Length:", 15);
        if (!cl) cl = memmem(p, head, "content-length:", 15);
        size_t blen = cl ? (size_t)strtoul(cl + 15, NULL, 10) : 0;
        if (n < head + blen) break;
        int status = n >= 12 ? atoi(p + 9) : -1;
        if (status != 200) {
            g.http_errors++;
            count_code(&g.http_status, status);
            note_error("HTTP %d: %.*s", status, (int)(blen > 200 ? 200 : blen), p + head);
        }
        if (c->inflight) c->inflight--;
        g.responses++;
        if (c->kind == KIND_QUERY) query_done(c, head + blen);
        off += head + blen;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= (uint32_t)off;
}

static int gate_open(void) {
    if (g.subscribed == 0) return 1;
    uint64_t owed = g.expected - g.pub_deliveries;
    return owed <= (uint64_t)opt.lag * (uint64_t)g.subscribed;
}

static int rr_next;
static double next_send, send_interval;

static void pump(double now) {
    if (opt.pub_mode == PUB_FLOOD) {
        for (int i = 0; i < g.n_pubs; i++) {
            conn_t *c = g.pubs[i];
            while (c->state == ST_HTTP && c->inflight < (uint32_t)opt.inflight && gate_open())
                send_publish(c);
        }
    } else if (opt.pub_mode == PUB_RATE) {
        while (now >= next_send) {
            for (int k = 0; k < g.n_pubs; k++) {
                conn_t *c = g.pubs[rr_next++ % g.n_pubs];
                if (c->state == ST_HTTP) {
                    send_publish(c);
                    break;
                }
            }
            next_send += send_interval;
        }
    }
}

/* ------------------------------------------------------------------------------------- */
/* the loop                                                                               */
/* ------------------------------------------------------------------------------------- */

/* --- the webhook receiver (--receiver) ----------------------------------------------- */

static struct {
    uint64_t connections, requests, bytes, events, occupied, vacated, client, added, removed;
} rx;
static volatile sig_atomic_t rx_stop;

static void on_stop(int sig) {
    (void)sig;
    rx_stop = 1;
}

static uint64_t count_in(const char *p, size_t n, const char *needle) {
    uint64_t k = 0;
    size_t len = strlen(needle);
    for (const char *at; n >= len && (at = memmem(p, n, needle, len)); k++) {
        n -= (size_t)(at - p) + len;
        p = at + len;
    }
    return k;
}

/* The value of a header (case-insensitive name) in a request head, or -1. */
static long header_long(const char *p, size_t n, const char *name) {
    size_t len = strlen(name);
    for (const char *line = p; line < p + n;) {
        const char *eol = memmem(line, (size_t)(p + n - line), "\r\n", 2);
        if (!eol) break;
        if ((size_t)(eol - line) > len && strncasecmp(line, name, len) == 0 && line[len] == ':')
            return strtol(line + len + 1, NULL, 10);
        line = eol + 2;
    }
    return -1;
}

static void recv_readable(conn_t *c) {
    ssize_t r = read(c->fd, rbuf, sizeof rbuf);
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        kill_conn(c);
        return;
    }
    buf_append(&c->in, &c->in_len, &c->in_cap, rbuf, (size_t)r);
    size_t off = 0;
    for (;;) {
        const char *p = c->in + off;
        size_t n = c->in_len - off;
        const char *end = memmem(p, n, "\r\n\r\n", 4);
        if (!end) break;
        size_t head = (size_t)(end - p) + 4;
        long cl = header_long(p, head, "content-length");
        size_t blen = cl > 0 ? (size_t)cl : 0;
        if (n < head + blen) break;
        const char *body = p + head;
        rx.requests++;
        rx.bytes += blen;
        rx.events += count_in(body, blen, "\"name\":");
        rx.occupied += count_in(body, blen, "\"channel_occupied\"");
        rx.vacated += count_in(body, blen, "\"channel_vacated\"");
        rx.client += count_in(body, blen, "\"client_event\"");
        rx.added += count_in(body, blen, "\"member_added\"");
        rx.removed += count_in(body, blen, "\"member_removed\"");
        static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        send_bytes(c, ok, sizeof ok - 1);
        off += head + blen;
        if (c->state == ST_DEAD) return;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= (uint32_t)off;
}

static void accept_all(conn_t *l) {
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_t *c = calloc(1, sizeof *c);
        if (!c) die("out of memory");
        c->kind = KIND_RECV;
        c->state = ST_HTTP;
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
        rx.connections++;
    }
}

static void on_event(conn_t *c, uint32_t ev) {
    if (c->state == ST_DEAD) return;
    if (c->kind == KIND_LISTEN) {
        accept_all(c);
        return;
    }
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            g.connect_errors++;
            note_error("connect: %s", strerror(err));
            kill_conn(c);
            return;
        }
        if (!(ev & EPOLLOUT)) return;
        set_events(c, EPOLLIN);
        if (c->kind == KIND_SUB) {
            c->state = ST_HANDSHAKE;
            send_bytes(c, upgrade_req, upgrade_len);
        } else {
            c->state = ST_HTTP;
        }
        return;
    }
    if (ev & EPOLLOUT) {
        flush_out(c);
        if (c->state == ST_DEAD) return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        if (c->kind == KIND_SUB)
            sub_readable(c);
        else if (c->kind == KIND_RECV)
            recv_readable(c);
        else
            pub_readable(c);
    }
}

#define MAX_EVENTS 1024

/* The presence observer is read before anything else and every 64 events, so that the
 * ~100 members' own frames (read in epoll order) add little to the latency it times. */
static void observer_first(void) {
    conn_t *o = ch.observer;
    if (o && o->state == ST_SUBSCRIBED) sub_readable(o);
}

static int poll_once(int timeout_ms) {
    static struct epoll_event evs[MAX_EVENTS];
    int n = epoll_wait(g.epfd, evs, MAX_EVENTS, timeout_ms);
    if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        if (ch.observer && (i & 63) == 0) observer_first();
        on_event(evs[i].data.ptr, evs[i].events);
    }
    reap();
    return n;
}

static void idle_for(double seconds) {
    double end = now_s() + seconds;
    for (double t = now_s(); t < end; t = now_s()) {
        int ms = (int)((end - t) * 1000) + 1;
        poll_once(ms > 50 ? 50 : ms);
    }
}

/* ------------------------------------------------------------------------------------- */
/* reporting                                                                              */
/* ------------------------------------------------------------------------------------- */

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void json_codes(const char *name, const code_counter *cc) {
    printf("\"%s\":{", name);
    for (int i = 0; i < cc->n; i++) printf("%s\"%d\":%llu", i ? "," : "", cc->code[i],
                                           (unsigned long long)cc->count[i]);
    printf("}");
}

#define MAX_CPUS 8
typedef struct {
    double t, scpu, gcpu;
    uint64_t deliveries, responses, sent, ce_sent, ce_deliveries;
    int ncpu;
    unsigned long long busy[MAX_CPUS], total[MAX_CPUS], steal[MAX_CPUS];
    double each[MAX_PIDS], aux[MAX_PIDS]; /* CPU s of each server process, of each --aux-pid */
} snap_t;

/* Per-core jiffies from /proc/stat: everything but idle and iowait counts as busy. */
static void read_cpus(snap_t *s) {
    FILE *f = fopen("/proc/stat", "r");
    char line[512];
    s->ncpu = 0;
    if (!f) return;
    while (fgets(line, sizeof line, f) && s->ncpu < MAX_CPUS) {
        int id;
        unsigned long long v[8] = {0};
        if (strncmp(line, "cpu", 3) != 0 || line[3] < '0' || line[3] > '9') continue;
        if (sscanf(line + 3, "%d %llu %llu %llu %llu %llu %llu %llu %llu", &id, &v[0], &v[1],
                   &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) < 9 || id != s->ncpu)
            continue;
        unsigned long long total = 0;
        for (int k = 0; k < 8; k++) total += v[k];
        s->total[id] = total;
        s->busy[id] = total - v[3] - v[4];
        s->steal[id] = v[7];
        s->ncpu++;
    }
    fclose(f);
}

static snap_t snap(void) {
    snap_t s;
    memset(&s, 0, sizeof s);
    s.t = now_s();
    s.scpu = server_cpu_s();
    s.gcpu = self_cpu_s();
    s.deliveries = g.deliveries;
    s.responses = g.responses;
    s.sent = g.sent;
    s.ce_sent = g.ce_sent;
    s.ce_deliveries = g.ce_deliveries;
    for (int i = 0; i < opt.n_server_pids; i++) s.each[i] = pid_cpu_s(opt.server_pids[i]);
    for (int i = 0; i < opt.n_aux_pids; i++) s.aux[i] = pid_cpu_s(opt.aux_pids[i]);
    read_cpus(&s);
    return s;
}

static void json_cores(const snap_t *a, const snap_t *b) {
    printf("\"core_busy_pct\":[");
    for (int i = 0; i < a->ncpu && i < b->ncpu; i++) {
        double dt = (double)(b->total[i] - a->total[i]);
        printf("%s%.1f", i ? "," : "", dt > 0 ? 100.0 * (double)(b->busy[i] - a->busy[i]) / dt : 0);
    }
    printf("],\"core_steal_pct\":[");
    for (int i = 0; i < a->ncpu && i < b->ncpu; i++) {
        double dt = (double)(b->total[i] - a->total[i]);
        printf("%s%.1f", i ? "," : "", dt > 0 ? 100.0 * (double)(b->steal[i] - a->steal[i]) / dt : 0);
    }
    double dt = b->t - a->t;
    printf("],\"server_cpu_pct_each\":[");
    for (int i = 0; i < opt.n_server_pids; i++)
        printf("%s%.1f", i ? "," : "", dt > 0 ? 100.0 * (b->each[i] - a->each[i]) / dt : 0);
    printf("],\"aux_cpu_pct\":[");
    for (int i = 0; i < opt.n_aux_pids; i++)
        printf("%s%.1f", i ? "," : "", dt > 0 ? 100.0 * (b->aux[i] - a->aux[i]) / dt : 0);
    printf("]");
}

/* ------------------------------------------------------------------------------------- */
/* main                                                                                   */
/* ------------------------------------------------------------------------------------- */

static void selftest(void) {
    static const char *inputs[] = {"", "abc", "0123456789012345678901234567890123456789012345678901234",
                                   "01234567890123456789012345678901234567890123456789012345",
                                   "0123456789012345678901234567890123456789012345678901234567890123",
                                   "POST\n/apps/1/events\nauth_key=app-key&auth_timestamp=1700000000"
                                   "&auth_version=1.0&body_md5=0123456789abcdef0123456789abcdef"};
    hmac_setup(opt.secret);
    for (size_t i = 0; i < sizeof inputs / sizeof *inputs; i++) {
        uint8_t d[32];
        char hex[65];
        md5((const uint8_t *)inputs[i], strlen(inputs[i]), d);
        hexify(d, 16, hex);
        printf("%s ", hex);
        hmac_sha256((const uint8_t *)inputs[i], strlen(inputs[i]), d);
        hexify(d, 32, hex);
        printf("%s\n", hex);
    }
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen [--host H] [--port P] [--app-id ID] [--key K] [--secret S]\n"
            "  [--channel C] [--subs N] [--concurrency C] [--settle S]\n"
            "  [--publish none|flood|rate] [--publishers P] [--inflight K] [--lag L]\n"
            "  [--rate DELIVERIES_PER_S] [--warmup S] [--duration S] [--pad BYTES]\n"
            "  [--server-pid PID[,PID...]] [--aux-pid PID[,PID...]] [--cpu N] [--timeout S]\n"
            "  [--nap-us US] [--pub-port P] [--distinct-channels]\n"
            "  [--churn-rate JOINS_PER_S (0: flood)] [--churn-members M] [--churn-inflight C]\n"
            "  [--churn-channel presence-X] [--query list|channel|both] [--query-info I]\n"
            "  [--side-churn PER_S] [--side-client-events PER_S]\n"
            "  [--group G] [--client-rate PER_S_PER_CONN] [--markers]\n"
            "  | --receiver [--port P]   | --selftest\n");
    exit(2);
}

static int wait_for(int *count, int want, double seconds, const char *what) {
    double t = now_s();
    while (*count < want) {
        if (now_s() - t > seconds) {
            note_error("%s: %d of %d ready after %.0f s", what, *count, want, seconds);
            return 0;
        }
        poll_once(10);
    }
    return 1;
}

static int run_receiver(void) {
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    g.epfd = epoll_create1(EPOLL_CLOEXEC);
    conn_t *l = calloc(1, sizeof *l);
    if (!l) die("out of memory");
    l->kind = KIND_LISTEN;
    l->state = ST_HTTP;
    l->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l->fd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0 ||
        listen(l->fd, 128) < 0)
        die("receiver: cannot listen on %s:%d: %s", opt.host, opt.port, strerror(errno));
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
    epoll_ctl(g.epfd, EPOLL_CTL_ADD, l->fd, &ev);
    double t0 = now_s(), c0 = self_cpu_s();
    while (!rx_stop) poll_once(100);
    double secs = now_s() - t0;
    printf("{\"ok\":true,\"receiver\":{\"seconds\":%.3f,\"cpu_s\":%.3f,\"connections\":%llu,"
           "\"requests\":%llu,\"bytes\":%llu,\"events\":%llu,\"channel_occupied\":%llu,"
           "\"channel_vacated\":%llu,\"client_event\":%llu,\"member_added\":%llu,"
           "\"member_removed\":%llu}}\n",
           secs, self_cpu_s() - c0, (unsigned long long)rx.connections,
           (unsigned long long)rx.requests, (unsigned long long)rx.bytes,
           (unsigned long long)rx.events, (unsigned long long)rx.occupied,
           (unsigned long long)rx.vacated, (unsigned long long)rx.client,
           (unsigned long long)rx.added, (unsigned long long)rx.removed);
    fflush(stdout);
    return 0;
}

static void json_window(const snap_t *a, const snap_t *b) {
    double ws = b->t - a->t;
    printf("\"window_s\":%.4f,\"server_cpu_pct\":%.1f,\"gen_cpu_pct\":%.1f,", ws,
           100.0 * (b->scpu - a->scpu) / ws, 100.0 * (b->gcpu - a->gcpu) / ws);
    json_cores(a, b);
}

int main(int argc, char **argv) {
    static struct option longopts[] = {
        {"host", 1, 0, 'h'},        {"port", 1, 0, 'p'},       {"app-id", 1, 0, 'a'},
        {"key", 1, 0, 'k'},         {"secret", 1, 0, 's'},     {"channel", 1, 0, 'c'},
        {"subs", 1, 0, 'n'},        {"concurrency", 1, 0, 'C'}, {"settle", 1, 0, 'S'},
        {"publish", 1, 0, 'm'},     {"publishers", 1, 0, 'P'}, {"inflight", 1, 0, 'i'},
        {"lag", 1, 0, 'l'},         {"rate", 1, 0, 'r'},       {"warmup", 1, 0, 'w'},
        {"duration", 1, 0, 'd'},    {"pad", 1, 0, 'x'},        {"server-pid", 1, 0, 'z'},
        {"cpu", 1, 0, 'u'},         {"timeout", 1, 0, 'T'},    {"selftest", 0, 0, 'Z'},
        {"nap-us", 1, 0, 'N'},      {"pub-port", 1, 0, 'Q'},   {"distinct-channels", 0, 0, 'D'},
        {"churn-rate", 1, 0, 'R'},  {"churn-members", 1, 0, 'M'},
        {"churn-inflight", 1, 0, 'I'}, {"churn-channel", 1, 0, 'H'},
        {"query", 1, 0, 'q'},       {"query-info", 1, 0, 'o'}, {"side-churn", 1, 0, 'y'},
        {"side-client-events", 1, 0, 'e'}, {"receiver", 0, 0, 'V'}, {"aux-pid", 1, 0, 'A'},
        {"group", 1, 0, 'G'},       {"client-rate", 1, 0, 'E'}, {"markers", 0, 0, 'K'},
        {0, 0, 0, 0}};
    int o, cpu = -1;
    opt.churn_rate = -1;
    opt.churn_members = 100;
    opt.churn_inflight = 16;
    opt.churn_channel = "presence-churn";
    opt.query_info = "subscription_count";
    while ((o = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (o) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'a': opt.app_id = optarg; break;
        case 'k': opt.key = optarg; break;
        case 's': opt.secret = optarg; break;
        case 'c': opt.channel = optarg; break;
        case 'n': opt.subs = atoi(optarg); break;
        case 'C': opt.concurrency = atoi(optarg); break;
        case 'S': opt.settle = atof(optarg); break;
        case 'm':
            if (!strcmp(optarg, "none")) opt.pub_mode = PUB_NONE;
            else if (!strcmp(optarg, "flood")) opt.pub_mode = PUB_FLOOD;
            else if (!strcmp(optarg, "rate")) opt.pub_mode = PUB_RATE;
            else usage();
            break;
        case 'P': opt.publishers = atoi(optarg); break;
        case 'i': opt.inflight = atoi(optarg); break;
        case 'l': opt.lag = atoi(optarg); break;
        case 'r': opt.rate = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'x': opt.pad = atoi(optarg); break;
        case 'z':
            opt.n_server_pids = parse_pids(optarg, opt.server_pids);
            opt.server_pid = opt.n_server_pids ? opt.server_pids[0] : 0;
            break;
        case 'A': opt.n_aux_pids = parse_pids(optarg, opt.aux_pids); break;
        case 'u': cpu = atoi(optarg); break;
        case 'T': opt.timeout = atof(optarg); break;
        case 'N': opt.nap_us = atoi(optarg); break;
        case 'Q': opt.pub_port = atoi(optarg); break;
        case 'D': opt.distinct = 1; break;
        case 'R': opt.churn_rate = atof(optarg); break;
        case 'M': opt.churn_members = atoi(optarg); break;
        case 'I': opt.churn_inflight = atoi(optarg); break;
        case 'H': opt.churn_channel = optarg; break;
        case 'q':
            if (!strcmp(optarg, "list")) opt.query = Q_LIST;
            else if (!strcmp(optarg, "channel")) opt.query = Q_CHANNEL;
            else if (!strcmp(optarg, "both")) opt.query = Q_BOTH;
            else usage();
            break;
        case 'o': opt.query_info = optarg; break;
        case 'y': opt.side_churn = atof(optarg); break;
        case 'e': opt.side_ce = atof(optarg); break;
        case 'V': opt.receiver = 1; break;
        case 'G': opt.group = atoi(optarg); break;
        case 'E': opt.client_rate = atof(optarg); break;
        case 'K': opt.markers = 1; break;
        case 'Z': selftest(); return 0;
        default: usage();
        }
    }
    if (optind != argc || opt.subs < 0 || opt.concurrency < 1 || opt.publishers < 1 ||
        opt.inflight < 1 || opt.lag < 1 || opt.rate <= 0 || opt.pad < 0 || opt.pad > 1000 ||
        opt.churn_members < 2 || opt.churn_inflight < 1 || opt.side_churn < 0 || opt.side_ce < 0 ||
        opt.group < 0 || (opt.group && !opt.distinct) || opt.client_rate < 0)
        usage();
    if (!opt.pub_port) opt.pub_port = opt.port;
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) < 0) die("sched_setaffinity: %s", strerror(errno));
    }
    signal(SIGPIPE, SIG_IGN);
    memset(&server_addr, 0, sizeof server_addr);
    server_addr.sin_family = AF_INET;
    server_addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &server_addr.sin_addr) != 1) die("bad --host %s", opt.host);
    pub_addr = server_addr;
    pub_addr.sin_port = htons((uint16_t)opt.pub_port);
    if (opt.receiver) return run_receiver();

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    int extra = opt.publishers + MAX_SIDE + 256 +
                (opt.churn_rate >= 0 ? opt.churn_members + opt.churn_inflight + 256 : 0);
    rlim_t need = (rlim_t)opt.subs * 2 + (rlim_t)extra;
    if (rl.rlim_cur < need) {
        rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur < (rlim_t)opt.subs + opt.publishers + 16)
        die("RLIMIT_NOFILE hard limit %lu is too low for %d connections (raise ulimit -Hn)",
            (unsigned long)rl.rlim_max, opt.subs + opt.publishers);

    hmac_setup(opt.secret);
    srandom(12345);
    memset(pad_str, 'x', (size_t)opt.pad);
    pad_str[opt.pad] = 0;
    upgrade_len = (size_t)snprintf(
        upgrade_req, sizeof upgrade_req,
        "GET /app/%s?protocol=7&client=clarion-bench&version=1.0&flash=false HTTP/1.1\r\n"
        "Host: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        opt.key, opt.host, opt.port);
    /* a public channel: one message for every subscriber (else built per connection) */
    if (!starts_with(opt.channel, "private-") && !starts_with(opt.channel, "presence-"))
        subscribe_len = (size_t)snprintf(
            subscribe_msg, sizeof subscribe_msg,
            "{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"%s\"}}", opt.channel);
    event_prefix_len = (size_t)snprintf(event_prefix, sizeof event_prefix, "{\"event\":\"%s\"",
                                        opt.event);

    g.epfd = epoll_create1(EPOLL_CLOEXEC);
    int cap = opt.subs * 2 + 100;
    g.subs = calloc((size_t)cap, sizeof *g.subs);
    g.pubs = calloc((size_t)opt.publishers, sizeof *g.pubs);
    if (!g.subs || !g.pubs) die("out of memory");
    if (opt.group) {
        g.n_groups = (opt.subs + opt.group - 1) / opt.group;
        g.grp_subscribed = calloc((size_t)g.n_groups + 1, sizeof *g.grp_subscribed);
        if (!g.grp_subscribed) die("out of memory");
    }
    int ok = 1;

    /* 1-2. connect and subscribe */
    long rss_before = server_rss_kib();
    snap_t c0 = snap();
    while (g.subscribed < opt.subs) {
        while (g.handshaking < opt.concurrency && g.subscribed + g.handshaking < opt.subs &&
               g.subs_started < cap)
            start_sub();
        if (g.handshaking == 0 && g.subs_started >= cap) {
            note_error("gave up connecting after %d attempts", g.subs_started);
            ok = 0;
            break;
        }
        poll_once(10);
        if (now_s() - c0.t > opt.timeout) {
            note_error("connect phase timed out with %d of %d subscribed", g.subscribed, opt.subs);
            ok = 0;
            break;
        }
    }
    snap_t c1 = snap();
    int subscribed_after_connect = g.subscribed;

    /* side connections (subscribed before the window) */
    if (ok && (opt.side_churn > 0 || opt.side_ce > 0)) {
        start_side();
        ok = wait_for(&g.side_ready, g.n_side, 10, "side connections");
    }

    /* 3. idle */
    marker("idle-start");
    idle_for(opt.settle);
    long rss_idle = server_rss_kib();
    marker("idle-end");

    /* 4-5. publish */
    snap_t w0 = {0}, w1 = {0};
    uint64_t undelivered = 0;
    double drain_s = 0;
    if (ok && opt.pub_mode != PUB_NONE) {
        g.n_pubs = opt.publishers;
        for (int i = 0; i < g.n_pubs; i++) g.pubs[i] = open_conn(KIND_PUB);
        double t = now_s();
        for (;;) {
            int ready = 0;
            for (int i = 0; i < g.n_pubs; i++) ready += g.pubs[i]->state == ST_HTTP;
            if (ready == g.n_pubs) break;
            if (now_s() - t > 10) die("publisher connections did not open");
            poll_once(10);
        }
        g.publishing = 1;
        double start = now_s();
        double t_w0 = start + opt.warmup, t_w1 = t_w0 + opt.duration;
        /* --rate is in deliveries/s: a publish reaches a group (--group) or everybody */
        send_interval = (opt.group ? (double)opt.group
                         : g.subscribed > 0 ? (double)g.subscribed : 1.0) / opt.rate;
        next_send = start;
        if (opt.client_rate > 0 && g.subscribed > 0) {
            g.ce_interval = 1.0 / (opt.client_rate * g.subscribed);
            g.ce_next = start;
        }
        g.side_next_churn = g.side_next_ce = start;
        for (;;) {
            double now = now_s();
            if (!g.measuring && now >= t_w0) {
                w0 = snap();
                g.measuring = 1;
                marker("window-start");
            }
            if (g.measuring && now >= t_w1) {
                w1 = snap();
                g.measuring = 0;
                marker("window-end");
                break;
            }
            pump(now);
            if (g.n_side) side_pump(now);
            if (g.ce_interval > 0) client_pump(now);
            int timeout = 1;
            if (opt.pub_mode == PUB_RATE) {
                double due = g.ce_interval > 0 && g.ce_next < next_send ? g.ce_next : next_send;
                double until = due - now_s();
                timeout = until <= 0 ? 0 : (int)(until * 1000);
                if (timeout > 5) timeout = 5;
            }
            int ready = poll_once(timeout);
            if (opt.nap_us && opt.pub_mode == PUB_FLOOD && ready < MAX_EVENTS) {
                /* Everything ready was read: let frames pile up in the socket buffers so
                 * that each read takes several (and the server is not woken per frame). */
                struct timespec nap = {0, opt.nap_us * 1000L};
                nanosleep(&nap, NULL);
            }
        }
        /* wait for every outstanding delivery and response */
        double d0 = now_s();
        for (;;) {
            uint64_t inflight = 0;
            for (int i = 0; i < g.n_pubs; i++)
                if (g.pubs[i]->state == ST_HTTP) inflight += g.pubs[i]->inflight;
            if (inflight == 0 && g.pub_deliveries >= g.expected &&
                g.ce_deliveries >= g.ce_expected)
                break;
            if (now_s() - d0 > 10) break;
            poll_once(5);
        }
        drain_s = now_s() - d0;
        undelivered = g.expected > g.pub_deliveries ? g.expected - g.pub_deliveries : 0;
    }

    /* queries: one signed GET at a time on one keep-alive connection */
    snap_t q0 = {0}, q1 = {0};
    conn_t *qc = NULL;
    if (ok && opt.query) {
        qc = open_conn(KIND_QUERY);
        double t = now_s();
        while (qc->state != ST_HTTP) {
            if (qc->state == ST_DEAD || now_s() - t > 10) die("query connection did not open");
            poll_once(10);
        }
        g.querying = 1;
        double start = now_s();
        g.side_next_churn = g.side_next_ce = start;
        double t_w0 = start + opt.warmup, t_w1 = t_w0 + opt.duration;
        send_query(qc);
        for (;;) {
            double now = now_s();
            if (!g.measuring && now >= t_w0) {
                q0 = snap();
                g.measuring = 1;
            }
            if (g.measuring && now >= t_w1) {
                q1 = snap();
                g.measuring = 0;
                break;
            }
            if (qc->state == ST_DEAD) {
                ok = 0;
                break;
            }
            if (g.n_side) side_pump(now);
            poll_once(5);
        }
        g.querying = 0;
        double d0 = now_s();
        while (qc->state == ST_HTTP && qc->inflight && now_s() - d0 < 10) poll_once(5);
    }

    /* presence churn */
    snap_t h0 = {0}, h1 = {0};
    if (ok && opt.churn_rate >= 0) {
        conn_t *obs = ch.observer = open_conn(KIND_SUB);
        obs->role = ROLE_OBSERVER;
        ok = wait_for(&ch.observer_ready, 1, 10, "observer");
        /* fill the channel: --churn-members - 1 members besides the observer */
        double t = now_s();
        while (ok && ch.fifo_len < opt.churn_members - 1) {
            while (ch.inflight < 32 && ch.fifo_len + ch.inflight < opt.churn_members - 1)
                start_joiner();
            poll_once(10);
            if (now_s() - t > 30) {
                note_error("presence channel filled to %d of %d", ch.fifo_len,
                           opt.churn_members - 1);
                ok = 0;
            }
        }
        idle_for(0.2);
        double start = now_s();
        double t_w0 = start + opt.warmup, t_w1 = t_w0 + opt.duration;
        double next_join = start, interval = opt.churn_rate > 0 ? 1.0 / opt.churn_rate : 0;
        int cap_inflight = opt.churn_rate > 0 ? 256 : opt.churn_inflight;
        while (ok) {
            double now = now_s();
            if (!g.measuring && now >= t_w0) {
                h0 = snap();
                g.measuring = 1;
            }
            if (g.measuring && now >= t_w1) {
                h1 = snap();
                g.measuring = 0;
                break;
            }
            if (obs->state == ST_DEAD) {
                note_error("the presence observer was disconnected");
                ok = 0;
                break;
            }
            if (opt.churn_rate > 0) {
                /* open loop: a member is due every interval, late or not */
                for (; now >= next_join; next_join += interval) {
                    if (ch.inflight < cap_inflight)
                        start_joiner();
                    else
                        ch.late++;
                }
            } else {
                while (ch.inflight < cap_inflight) start_joiner();
            }
            int timeout = 1;
            if (opt.churn_rate > 0) {
                double until = next_join - now_s();
                timeout = until <= 0 ? 0 : (int)(until * 1000);
                if (timeout > 5) timeout = 5;
            }
            int ready = poll_once(timeout);
            if (opt.nap_us && opt.churn_rate == 0 && ready < MAX_EVENTS) {
                struct timespec nap = {0, opt.nap_us * 1000L};
                nanosleep(&nap, NULL);
            }
        }
        /* no new members: wait for the ones joining and for the observer's last events */
        double d0 = now_s();
        while (ok && now_s() - d0 < 5 && obs->state != ST_DEAD &&
               (ch.inflight > 0 || ch.added_seen < (uint64_t)ch.completed ||
                ch.removed_seen < ch.leaves))
            poll_once(5);
    }
    long rss_after = server_rss_kib();

    /* 6. report and close with RST */
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    printf("{\"ok\":%s,\"subs\":%d,\"subscribed\":%d,\"report_unix_s\":%.3f,",
           ok ? "true" : "false", opt.subs, subscribed_after_connect,
           (double)wall.tv_sec + wall.tv_nsec * 1e-9);
    double cs = c1.t - c0.t;
    printf("\"connect\":{\"seconds\":%.6f,\"per_s\":%.1f,\"server_cpu_s\":%.3f,"
           "\"gen_cpu_s\":%.3f,\"attempts\":%d,\"failed\":%d,\"connect_errors\":%llu,",
           cs, cs > 0 ? subscribed_after_connect / cs : 0, c1.scpu - c0.scpu, c1.gcpu - c0.gcpu,
           g.subs_started, g.subs_failed, (unsigned long long)g.connect_errors);
    json_cores(&c0, &c1);
    printf("},");
    printf("\"rss_kib\":{\"before\":%ld,\"idle\":%ld,\"after\":%ld},", rss_before, rss_idle,
           rss_after);
    if (opt.pub_mode != PUB_NONE && w1.t > 0) {
        double ws = w1.t - w0.t;
        printf("\"publish\":{\"mode\":\"%s\",\"window_s\":%.4f,\"deliveries\":%llu,"
               "\"deliveries_per_s\":%.1f,\"responses\":%llu,\"publishes_per_s\":%.1f,"
               "\"sent_per_s\":%.1f,\"server_cpu_pct\":%.1f,\"gen_cpu_pct\":%.1f,"
               "\"total_sent\":%llu,\"total_responses\":%llu,\"undelivered\":%llu,"
               "\"drain_s\":%.3f,",
               opt.pub_mode == PUB_FLOOD ? "flood" : "rate", ws,
               (unsigned long long)(w1.deliveries - w0.deliveries),
               (w1.deliveries - w0.deliveries) / ws,
               (unsigned long long)(w1.responses - w0.responses),
               (w1.responses - w0.responses) / ws, (w1.sent - w0.sent) / ws,
               100.0 * (w1.scpu - w0.scpu) / ws, 100.0 * (w1.gcpu - w0.gcpu) / ws,
               (unsigned long long)g.sent, (unsigned long long)g.responses,
               (unsigned long long)undelivered, drain_s);
        json_cores(&w0, &w1);
        putchar(',');
        json_hist("latency_ms", &g.lat);
        printf("},");
    }
    if (opt.client_rate > 0 && w1.t > 0) {
        double ws = w1.t - w0.t;
        uint64_t owed = g.ce_expected > g.ce_deliveries ? g.ce_expected - g.ce_deliveries : 0;
        printf("\"client\":{\"sent\":%llu,\"sent_per_s\":%.1f,\"deliveries\":%llu,"
               "\"deliveries_per_s\":%.1f,\"total_sent\":%llu,\"undelivered\":%llu,",
               (unsigned long long)(w1.ce_sent - w0.ce_sent), (w1.ce_sent - w0.ce_sent) / ws,
               (unsigned long long)(w1.ce_deliveries - w0.ce_deliveries),
               (w1.ce_deliveries - w0.ce_deliveries) / ws, (unsigned long long)g.ce_sent,
               (unsigned long long)owed);
        json_hist("latency_ms", &g.ce_lat);
        putchar(',');
        json_hist("all_latency_ms", &g.all_lat);
        printf("},");
    }
    if (g.n_side)
        printf("\"side\":{\"connections\":%d,\"subscribes\":%llu,\"unsubscribes\":%llu,"
               "\"client_events\":%llu},",
               g.n_side, (unsigned long long)g.side_subscribes,
               (unsigned long long)g.side_unsubscribes, (unsigned long long)g.side_client_events);
    if (opt.query && q1.t > 0) {
        printf("\"query\":{\"responses\":%llu,\"list_bytes\":%llu,", (unsigned long long)g.q_responses,
               (unsigned long long)g.q_list_bytes);
        json_window(&q0, &q1);
        putchar(',');
        json_hist("list_ms", &g.q_list);
        putchar(',');
        json_hist("channel_ms", &g.q_channel);
        printf("},");
    }
    if (opt.churn_rate >= 0 && h1.t > 0) {
        double ws = h1.t - h0.t;
        printf("\"churn\":{\"mode\":\"%s\",\"rate\":%.1f,\"members\":%d,\"joins\":%llu,"
               "\"joins_per_s\":%.1f,\"member_added\":%llu,\"member_removed\":%llu,"
               "\"started\":%d,\"completed\":%d,\"failed\":%d,\"leaves\":%llu,\"late\":%llu,"
               "\"added_seen\":%llu,\"removed_seen\":%llu,",
               opt.churn_rate > 0 ? "rate" : "flood", opt.churn_rate, opt.churn_members,
               (unsigned long long)ch.w_joins, (double)ch.w_joins / ws,
               (unsigned long long)ch.w_added, (unsigned long long)ch.w_removed, ch.started,
               ch.completed, ch.failed, (unsigned long long)ch.leaves,
               (unsigned long long)ch.late, (unsigned long long)ch.added_seen,
               (unsigned long long)ch.removed_seen);
        json_window(&h0, &h1);
        putchar(',');
        json_hist("added_ms", &ch.added);
        putchar(',');
        json_hist("removed_ms", &ch.removed);
        putchar(',');
        json_hist("join_ms", &ch.join);
        printf("},");
    }
    printf("\"http_errors\":%llu,\"unexpected_disconnects\":%llu,\"pings_answered\":%llu,"
           "\"ws_pings_answered\":%llu,\"other_frames\":%llu,",
           (unsigned long long)g.http_errors, (unsigned long long)g.unexpected_eof,
           (unsigned long long)g.pings_answered, (unsigned long long)g.ws_pings_answered,
           (unsigned long long)g.other_frames);
    json_codes("closes", &g.closes);
    putchar(',');
    json_codes("pusher_errors", &g.pusher_errors);
    putchar(',');
    json_codes("subscription_errors", &g.sub_errors);
    putchar(',');
    json_codes("bad_http_status", &g.http_status);
    printf(",\"first_error\":");
    json_str(g.first_error);
    printf("}\n");
    fflush(stdout);

    for (int i = 0; i < g.subs_started; i++)
        if (g.subs[i]->state != ST_DEAD) kill_conn(g.subs[i]);
    for (int i = 0; i < g.n_pubs; i++)
        if (g.pubs[i]->state != ST_DEAD) kill_conn(g.pubs[i]);
    for (int i = 0; i < g.n_side; i++) kill_conn(g.side[i]);
    while (ch.fifo_len) kill_conn(fifo_pop());
    if (ch.observer) kill_conn(ch.observer);
    if (qc) kill_conn(qc);
    reap();
    return ok ? 0 : 1;
}
