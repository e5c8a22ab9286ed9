/* legiond: with no arguments, a whole single-node Legion in one process:
 * the HTTP API and router, the store (SQLite under $LEGION_HOME), the node
 * agent with its warm pools. The only place that logs: one line per event
 * on stderr. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "legiond/daemon.h"
#include "image/mirrors.h"
#include "legiond/tls-cert.h"
#include "lazy/fetcher.h"
#include "net/dns.h"
#include "node/agent.h"
#include "node/node-provider.h"
#include "replay/replay.h"
#include "sandbox/sandbox.h"

#ifndef LG_RUNTIMES_DIR
#define LG_RUNTIMES_DIR "/usr/lib/legion/runtimes"
#endif

void say(const char *fmt, ...) {
        char ts[32];
        time_t now = time(NULL);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
        fprintf(stderr, "%s legiond: ", ts);
        va_list ap;
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

static void usage(FILE *f) {
        fputs("usage: legiond [--home DIR] [--listen HOST:PORT] [--listen-tls HOST:PORT|off] [--runtimes DIR]\n"
              "               [--max-connections N] [--max-connections-per-addr N] [--unauth-idle-timeout-ms MS]\n"
              "               [--network on|off] [--pod-cidr CIDR] [--dns-upstream IP[:PORT]]...\n"
              "               [--net-table NAME] [--net-link-prefix P] [--fn-domain DOMAIN]\n"
              "               [--app-backoff-ms MS] [--app-ready-timeout-ms MS] [--insecure-registry HOST]...\n"
              "               [--registry-mirror HOST:PORT [--registry-mirror-token-file FILE]]...\n"
              "               [--lazy-images auto|never] [--lazy-rate BYTES_PER_S] [--lazy-fetch-timeout-ms MS]\n"
              "               [--job-cpu VCPU] [--job-memory SIZE] [--job-warm N]\n"
              "       legiond [--home DIR] [--network on|off] [--pod-cidr CIDR] [--net-table NAME]\n"
              "               [--net-link-prefix P] --stop-all\n"
              "\n"
              "  --home DIR              state: store, packages, logs (default $LEGION_HOME or ./var/legion)\n"
              "  --listen HOST:PORT      API and function endpoint, plain HTTP (default 127.0.0.1:7070)\n"
              "  --listen-tls HOST:PORT  the same API over HTTPS, for kubectl (default 127.0.0.1:6443;\n"
              "                          `off`: none); certificates in <home>/tls, made at first start\n"
              "  --runtimes DIR          language workers (default: the build's runtimes/)\n"
              "  --max-connections N     open API connections in all (default 4096); when full, the\n"
              "                          unauthenticated one idle longest is closed for a new one\n"
              "  --max-connections-per-addr N\n"
              "                          from one client address, IPv4 or IPv6 /64 (default 256; 0: no\n"
              "                          limit); more are answered 429\n"
              "  --unauth-idle-timeout-ms MS\n"
              "                          a connection that never sent a valid token is closed after this\n"
              "                          long without a request (default 5000; 0: as authenticated\n"
              "                          ones, 60 s)\n"
              "  --network on|off        the sandbox network (default on): an address per sandbox from the\n"
              "                          pod CIDR, NAT'd egress under its namespace's policy, DNS through\n"
              "                          the gateway (docs/networking.md); off: sandboxes have loopback only.\n"
              "                          On, and it cannot be set up: legiond exits saying why\n"
              "  --pod-cidr CIDR         sandbox addresses (default " LG_NET_DEFAULT_CIDR "); the first is the host's\n"
              "  --dns-upstream IP[:PORT]\n"
              "                          where the sandboxes' DNS forwarder sends queries (repeatable, at\n"
              "                          most 8; default: the nameservers of the host's /etc/resolv.conf)\n"
              "  --net-table NAME        the nftables table (family inet) legiond owns (default legion)\n"
              "  --net-link-prefix P     host network links are named P0, P<n> (default lgv; 1-6 chars)\n"
              "  --fn-domain DOMAIN      Host APP.NS.DOMAIN[:port] is app NS/APP's URL (a wildcard DNS\n"
              "                          name *.DOMAIN points at legiond); default: none, and Host\n"
              "                          APP.NS.fn.<anything> is (off once a domain is given)\n"
              "  --app-backoff-ms MS     crash-loop backoff of apps (default 1000): after an app's 2nd\n"
              "                          failed start or early exit in a row, no new instance for MS,\n"
              "                          doubling with each more, at most 32 MS (docs/api.md)\n"
              "  --app-ready-timeout-ms MS\n"
              "                          an image app's instance must open its port (and pass its\n"
              "                          readiness check) within this long (default 60000)\n"
              "  --insecure-registry HOST[:PORT]\n"
              "                          reach this registry over plain HTTP for package images (repeatable,\n"
              "                          at most 16; 127.0.0.1 and localhost always are)\n"
              "  --registry-mirror HOST:PORT\n"
              "                          another legiond (its --listen) or registry that lazy layers'\n"
              "                          blobs are fetched from before their registry (repeatable, at\n"
              "                          most 8, tried in order; plain HTTP; docs/lazy-images.md)\n"
              "  --registry-mirror-token-file FILE\n"
              "                          the API token of the mirror named just before (read at start;\n"
              "                          sent as the password of HTTP Basic)\n"
              "  --lazy-images auto|never\n"
              "                          auto (default): pulls use an image's lazy form when its registry\n"
              "                          has one (layers mounted, read on demand: docs/lazy-images.md)\n"
              "  --lazy-rate BYTES_PER_S the lazy fetcher's background download cap (default 64M; 0: only\n"
              "                          what is read and the recorded prefetch)\n"
              "  --lazy-fetch-timeout-ms MS\n"
              "                          a lazy read whose data cannot be had this long fails with EIO\n"
              "                          (default 10000)\n"
              "  --job-cpu VCPU          vCPUs all running jobs may have at once (their roles' cpu summed;\n"
              "                          default 4 x the CPUs: a quota is a limit, not a reservation);\n"
              "                          a job that needs more is refused, one that needs more than is\n"
              "                          free waits (Pending) (docs/jobs.md)\n"
              "  --job-memory SIZE       memory all running jobs may have at once (default 75% of\n"
              "                          MemTotal), e.g. 16g or 12Gi\n"
              "  --job-warm N            sandboxes kept ready for job roles in the pool `default`\n"
              "                          (default 4; 0: none, every role's sandbox made when it starts)\n"
              "  --stop-all              stop every workload this home left running (function instances,\n"
              "                          sessions, pods, jobs), remove the sandbox network (the table, links\n"
              "                          and rules the network flags name) and exit; with legiond\n"
              "                          stopped. SIGTERM and SIGINT stop legiond but not its workloads:\n"
              "                          the next legiond takes them back (docs/sandbox.md)\n",
              f);
}

/* The admin token: $LEGION_HOME/admin.token (0600), made on first start or
 * whenever the store no longer knows the one in the file. */
static int ensure_admin_token(struct lg_daemon *d, struct lg_error *err) {
        char path[4096], buf[256];
        snprintf(path, sizeof(path), "%s/admin.token", d->home);
        struct lg_token t;
        if (lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) > 0 && lg_store_token_lookup(d->store, buf, &t, NULL) == 0)
                return 0;
        char secret[LG_TOKEN_SECRET_SIZE];
        int r = lg_store_token_create(d->store, LG_TOKEN_ADMIN, "admin (made by legiond at first start)", 0, &t,
                                      secret, err);
        if (r < 0)
                return r;
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return lg_error_set(err, errno, "write `%s`", path);
        fchmod(fd, 0600);
        r = lg_write_all(fd, secret, strlen(secret));
        if (r >= 0)
                r = lg_write_all(fd, "\n", 1);
        close(fd);
        if (r < 0)
                return lg_error_set(err, r, "write `%s`", path);
        say("admin token written to %s", path);
        return 0;
}

/* First start: a `default` namespace and a warm pool per runtime. */
static int bootstrap(struct lg_daemon *d, struct lg_error *err) {
        int r = lg_store_apply(d->store, LG_KEY("Namespace", "", "default"), NULL, NULL, NULL, err);
        if (r < 0)
                return r;
        struct lg_resource_list l = {0};
        r = lg_store_list(d->store, "PoolGroup", "", NULL, &l, err);
        size_t n = l.n;
        lg_resource_list_free(&l);
        if (r < 0 || n > 0)
                return r;
        static const struct { const char *name; int ready; } pools[] = {
                {"python3", 2}, {"node", 1}, {"custom", 0},
        };
        for (size_t i = 0; i < ARRAY_SIZE(pools); i++) {
                json_t *spec = json_pack("{s:s, s:i, s:s, s:s, s:{s:s, s:i}}", "runtime", pools[i].name, "ready",
                                         pools[i].ready, "cpu", "1000m", "memory", "256Mi", "startupBoost", "cpu",
                                         "2000m", "seconds", 10);
                r = lg_store_apply(d->store, LG_KEY("PoolGroup", "", pools[i].name), NULL, spec, NULL, err);
                json_decref(spec);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* A decimal number in [min, max]; false when it is not one. */
static bool parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *ret) {
        long long v;
        if (lg_parse_int(s, (long long) min, (long long) max, &v) < 0)
                return false;
        *ret = (unsigned long) v;
        return true;
}

static int bad_number(const char *flag, const char *value) {
        fprintf(stderr, "legiond: --%s wants a number, got `%s`\n", flag, value);
        return 2;
}

/* "HOST:PORT" into host and port; false when malformed. */
static bool parse_hostport(const char *s, char *host, size_t cap, unsigned *port) {
        const char *colon = strrchr(s, ':');
        if (!colon || colon == s || (size_t) (colon - s) >= cap || sscanf(colon + 1, "%u", port) != 1 || *port == 0 ||
            *port > 65535)
                return false;
        snprintf(host, cap, "%.*s", (int) (colon - s), s);
        /* "[::1]:6443" */
        size_t l = strlen(host);
        if (l >= 2 && host[0] == '[' && host[l - 1] == ']') {
                memmove(host, host + 1, l - 2);
                host[l - 2] = '\0';
        }
        return true;
}

/* --registry-mirror and the --registry-mirror-token-file after it. */
struct mirror_opt {
        const char *host, *token_file;
};

/* Each mirror with the token in its token file (the password of HTTP
 * Basic, which a legiond's /v2 takes), plain HTTP. */
static int set_mirrors(lg_image_store *images, const struct mirror_opt *o, size_t n, struct lg_error *err) {
        struct lg_mirrors m = {0};
        int r = 0;
        for (size_t i = 0; r >= 0 && i < n; i++) {
                char token[512] = "";
                if (o[i].token_file) {
                        ssize_t k = lg_read_file_at(AT_FDCWD, o[i].token_file, token, sizeof(token));
                        if (k <= 0) {
                                r = lg_error_set(err, k < 0 ? (int) -k : EINVAL, "--registry-mirror-token-file `%s`",
                                                 o[i].token_file);
                                break;
                        }
                }
                r = lg_mirrors_add(&m, o[i].host, token[0] ? "legion" : NULL, token, true, err);
                explicit_bzero(token, sizeof(token));
        }
        if (r >= 0)
                r = lg_image_store_set_mirrors(images, &m, err);
        lg_mirrors_clear(&m);
        return r;
}

/* The TLS listener with <home>/tls/server.{crt,key}, made (with their CA)
 * when missing. */
static int listen_tls(struct lg_daemon *d, const char *host, unsigned port, struct lg_error *err) {
        char dir[4096], hostname[256] = "";
        snprintf(dir, sizeof(dir), "%s/tls", d->home);
        if (gethostname(hostname, sizeof(hostname) - 1) < 0)
                hostname[0] = '\0';
        struct lg_tls_files files;
        int made = 0;
        int r = lg_tls_ensure(dir, hostname, &files, &made, err);
        if (r < 0)
                return r;
        if (made == 2)
                say("TLS: new CA %s and server certificate %s", files.ca_crt, files.server_crt);
        else if (made == 1)
                say("TLS: new server certificate %s", files.server_crt);
        return lg_http_server_listen_tls(d->http, host, (uint16_t) port, files.server_crt, files.server_key, err);
}

/* Sessions whose sandbox a previous legiond left: the session goes on, or
 * answers that it was lost. */
static void adopt_session(const char *app, unsigned revision, const char *identifier, const char *lost_why,
                          void *ud) {
        struct lg_daemon *d = ud;
        (void) revision;
        char ns[256], pool[256];
        const char *slash = strchr(app, '/'), *slash2 = slash ? strchr(slash + 1, '/') : NULL;
        if (!identifier || !slash2 || (size_t) (slash - app) >= sizeof(ns) ||
            (size_t) (slash2 - slash - 1) >= sizeof(pool))
                return;
        snprintf(ns, sizeof(ns), "%.*s", (int) (slash - app), app);
        snprintf(pool, sizeof(pool), "%.*s", (int) (slash2 - slash - 1), slash + 1);
        struct lg_error err = {0};
        /* -ENOENT: the pool is gone, its sandbox goes unclaimed. */
        int r = lg_sessions_adopt(d->sessions, ns, pool, identifier, lost_why != NULL, &err);
        if (r < 0 && r != -ENOENT)
                say("session `%s` of pool %s/%s: %s", identifier, ns, pool, err.msg);
}

static void adopted_log(const char *app, const char *line, void *ud) {
        struct lg_daemon *d = ud;
        say("%s: %s", app, line);
        lg_apps_log(app, line, d->apps);
}

/* The sandbox network's flags. */
struct net_opts {
        bool off;
        struct lg_net_config cfg;
        const char *upstreams[LG_DNS_UPSTREAMS_MAX + 1]; /* NULL-terminated; none = resolv.conf's */
        size_t n_upstreams;
};

/* "a, b, c" of the forwarder's upstreams, for the log. */
static void upstreams_text(const struct net_opts *o, const char *gateway, char *buf, size_t cap) {
        char found[LG_DNS_UPSTREAMS_MAX][LG_DNS_ADDR_MAX];
        const char *list[LG_DNS_UPSTREAMS_MAX];
        size_t n = o->n_upstreams;
        for (size_t i = 0; i < n; i++)
                list[i] = o->upstreams[i];
        if (!n) {
                /* What lg_dns_new read a moment ago. */
                struct lg_error err = {0};
                int r = lg_dns_resolv_conf(NULL, gateway, 53, found, LG_DNS_UPSTREAMS_MAX, &err);
                if (r < 0) {
                        snprintf(buf, cap, "unknown (%s)", err.msg);
                        return;
                }
                for (int i = 0; i < r; i++)
                        list[n++] = found[i];
        }
        size_t len = 0;
        buf[0] = '\0';
        for (size_t i = 0; i < n && len < cap; i++)
                len += (size_t) snprintf(buf + len, cap - len, "%s%s", i ? ", " : "", list[i]);
        if (n && !o->n_upstreams && len < cap)
                snprintf(buf + len, cap - len, " (/etc/resolv.conf)");
}

/* The node's sandbox network and the DNS forwarder on its gateway. */
static int network_up(struct lg_daemon *d, const struct net_opts *o, struct lg_error *err) {
        int r = lg_net_new(&o->cfg, &d->net, err);
        if (r < 0)
                return r;
        const char *gw = lg_net_gateway(d->net);
        r = lg_dns_new(d->loop, gw, 53, o->n_upstreams ? o->upstreams : NULL, &d->dns, err);
        if (r < 0)
                return lg_error_wrap(err, r, "DNS forwarder on %s", gw);
        char ups[512];
        upstreams_text(o, gw, ups, sizeof(ups));
        say("network: pod CIDR %s, gateway %s, DNS upstream %s", lg_net_cidr(d->net), gw, ups);
        return 0;
}

/* --stop-all: the network's table, dummy link, rules and every host end
 * its flags name (found by lg_net_new, then removed). */
static int network_teardown(const struct net_opts *o) {
        struct lg_error err = {0};
        lg_net *net = NULL;
        int r = lg_net_new(&o->cfg, &net, &err);
        if (r >= 0)
                r = lg_net_teardown(net, &err);
        lg_net_free(net);
        if (r < 0) {
                say("network: %s", err.msg);
                return r;
        }
        say("removed the sandbox network (table %s)", o->cfg.table ? o->cfg.table : "legion");
        return 0;
}

/* --stop-all: every sandbox of this home, adopted and destroyed, and the
 * instance records and sockets that went with them. */
static int stop_all(const char *home, const struct net_opts *net) {
        static const char *const roots[] = {"run/sandboxes-root", "run/pod-sandboxes", "run/job-sandboxes"};
        int stopped = 0, failed = 0;
        char path[4200];
        /* Before the sandboxes: a sandbox blocked in a read of a lazy layer
         * that the fetcher took and will not answer cannot be killed until
         * the FUSE connection is aborted. */
        int lazy = lg_daemon_lazy_stop_all(home);
        for (size_t i = 0; i < ARRAY_SIZE(roots); i++) {
                snprintf(path, sizeof(path), "%s/%s", home, roots[i]);
                struct lg_error err = {0};
                lg_sandbox_gc(path, NULL);
                char **ids = NULL;
                if (lg_sandbox_list(path, &ids, &err) < 0) {
                        say("%s", err.msg);
                        return 1;
                }
                for (char **id = ids; *id; id++) {
                        lg_sandbox *sb = NULL;
                        if (lg_sandbox_adopt(path, *id, &sb, &err) < 0) {
                                say("%s", err.msg);
                                failed++;
                        } else if (lg_sandbox_destroy(sb) < 0) {
                                failed++;
                        } else {
                                stopped++;
                        }
                }
                lg_sandbox_list_free(ids);
        }
        static const char *const dirs[] = {"run/instances", "run/sockets"};
        for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
                snprintf(path, sizeof(path), "%s/%s", home, dirs[i]);
                lg_rm_rf(path);
        }
        say("stopped %d sandbox%s of %s%s", stopped, stopped == 1 ? "" : "es", home,
            failed ? " (some could not be adopted, and were destroyed)" : "");
        return (net->off || network_teardown(net) >= 0) && lazy >= 0 ? 0 : 1;
}

/* The application modules' view of the node and the router (their ops
 * tables): the router goes first at shutdown, so it may be NULL. */
static int wire_pool_set(void *ud, const struct lg_pool_spec *spec, struct lg_error *err) {
        struct lg_daemon *d = ud;
        return lg_node_pool_set(d->node, spec, err);
}

static void wire_pool_delete(void *ud, const char *name) {
        struct lg_daemon *d = ud;
        lg_node_pool_delete(d->node, name);
}

static int wire_pool_stats(void *ud, const char *name, struct lg_pool_stats *ret) {
        struct lg_daemon *d = ud;
        return lg_node_pool_stats(d->node, name, ret);
}

static int wire_route_set(void *ud, const struct lg_route_config *cfg, struct lg_error *err) {
        struct lg_daemon *d = ud;
        if (!d->router)
                return lg_error_setm(err, ESHUTDOWN, "legiond is stopping");
        return lg_router_set(d->router, cfg, err);
}

static void wire_route_remove(void *ud, const char *key) {
        struct lg_daemon *d = ud;
        if (d->router)
                lg_router_remove(d->router, key);
}

static int wire_route_stats(void *ud, const char *key, struct lg_route_stats *ret) {
        struct lg_daemon *d = ud;
        return d->router ? lg_router_stats(d->router, key, ret) : -ENOENT;
}

struct address_visit {
        void (*fn)(const char *address, void *ud);
        void *ud;
};

static void visit_address(const struct lg_router_instance *inst, void *ud) {
        struct address_visit *v = ud;
        if (inst->ready && inst->net_address[0])
                v->fn(inst->net_address, v->ud);
}

static void wire_route_addresses(void *ud, const char *key, void (*fn)(const char *address, void *fud), void *fud) {
        struct lg_daemon *d = ud;
        struct address_visit v = {fn, fud};
        if (d->router)
                lg_router_each_instance(d->router, key, visit_address, &v);
}

static int wire_route_sandboxes(void *ud, const char *key) {
        struct lg_route_stats st;
        int r = wire_route_stats(ud, key, &st);
        return r < 0 ? r : (int) (st.instances + st.starting);
}

static void wire_log(void *ud, const char *pool_key, const char *line) {
        struct lg_daemon *d = ud;
        lg_apps_log(pool_key, line, d->apps);
}

static const struct lg_sessions_ops sessions_ops = {
        .pool_set = wire_pool_set,
        .pool_delete = wire_pool_delete,
        .pool_stats = wire_pool_stats,
        .route_set = wire_route_set,
        .route_remove = wire_route_remove,
        .route_sandboxes = wire_route_sandboxes,
        .route_addresses = wire_route_addresses,
        .log = wire_log,
};

static const struct lg_apps_ops apps_ops = {
        .pool_set = wire_pool_set,
        .pool_delete = wire_pool_delete,
        .pool_stats = wire_pool_stats,
        .route_set = wire_route_set,
        .route_remove = wire_route_remove,
        .route_stats = wire_route_stats,
        .route_addresses = wire_route_addresses,
};

/* The image jobs' view of the sandboxes of pods and of the node (function
 * and container app instances, pool groups' placeholders) and of the
 * images apps and pool groups use: those layers are kept by GC as long as
 * a sandbox runs on them or a pool group or an app's latest revision names
 * the image (and while warm: any time, since a pool refills and an app
 * scales from zero). */
static int wire_layers_in_use(void *ud, bool warm, char ***ret, size_t *n) {
        struct lg_daemon *d = ud;
        struct lg_strlist layers = {0}, ids = {0};
        lg_pods_layers_in_use(d->pods, warm, &layers);
        lg_node_images_in_use(d->node, warm, &ids, &layers);
        if (warm)
                lg_apps_layers_in_use(d->apps, &layers);
        lg_strlist_clear(&ids);
        /* Without the whole list GC must not run: take fails then. */
        return lg_strlist_take(&layers, ret, n);
}

static int wire_image_user(void *ud, const char *image_id, char *who, size_t cap) {
        struct lg_daemon *d = ud;
        return lg_apps_image_user(d->apps, image_id, who, cap);
}

/* The images pool groups, app revisions and the node's sandboxes run by
 * id: GC keeps them indexed after their tag moved (dangling), so that they
 * start again after a restart. */
static int wire_images_in_use(void *ud, char ***ret, size_t *n) {
        struct lg_daemon *d = ud;
        struct lg_strlist ids = {0};
        lg_apps_images_in_use(d->apps, &ids);
        lg_node_images_in_use(d->node, true, &ids, NULL);
        return lg_strlist_take(&ids, ret, n);
}

static void wire_image_removed(void *ud, const char *image_id) {
        struct lg_daemon *d = ud;
        lg_pods_image_removed(d->pods, image_id);
}

/* Package images' lazy layers go in the same GC, before the chunk GC. */
static int wire_extra_gc_prepare(void *ud, void **job, struct lg_error *err) {
        struct lg_daemon *d = ud;
        return lg_apps_package_gc_prepare(d->apps, job, err);
}

static const struct lg_image_jobs_ops image_jobs_ops = {
        .layers_in_use = wire_layers_in_use,
        .image_removed = wire_image_removed,
        .image_user = wire_image_user,
        .images_in_use = wire_images_in_use,
        .extra_gc_prepare = wire_extra_gc_prepare,
        .extra_gc_run = lg_apps_package_gc_run,
        .extra_gc_free = lg_apps_package_gc_free,
};

/* An object of the store that could not be made live at start. */
static void replay_report(const char *kind, const struct lg_resource *r, const struct lg_error *why, void *ud) {
        (void) ud;
        say("restore: %s %s%s%s: %s", kind, r->namespace, r->namespace[0] ? "/" : "", r->name, why->msg);
}

static struct lg_daemon daemon_state;
static uv_signal_t sig_term, sig_int;
static int stopping;

static void on_closed(void *ud) {
        struct lg_daemon *d = ud;
        uv_stop(d->loop);
}

static void on_signal(uv_signal_t *h, int signum) {
        struct lg_daemon *d = h->data;
        if (stopping++) {
                say("second signal: exiting now");
                exit(1);
        }
        say("%s: shutting down; workloads keep running (legiond --stop-all stops them)", strsignal(signum));
        lg_api_stop(d->api);
        lg_node_detach_all(d->node);
        lg_pods_detach_all(d->pods);
        if (d->jobs)
                lg_jobs_detach_all(d->jobs);
        lg_router_free(d->router);
        d->router = NULL;
        lg_http_server_close(d->http, on_closed, d);
}

int main(int argc, char **argv) {
        /* The lazy fetcher is a process of its own made of this binary
         * (src/lazy/fetcher.h), with options of its own. */
        if (argc > 1 && !strcmp(argv[1], "lazy-fetcher"))
                return lg_lazy_fetcher_main(argc - 1, argv + 1);
        static const struct option opts[] = {
                {"home", required_argument, NULL, 'h'},
                {"listen", required_argument, NULL, 'l'},
                {"listen-tls", required_argument, NULL, 't'},
                {"runtimes", required_argument, NULL, 'r'},
                {"max-connections", required_argument, NULL, 'c'},
                {"max-connections-per-addr", required_argument, NULL, 'a'},
                {"unauth-idle-timeout-ms", required_argument, NULL, 'u'},
                {"stop-all", no_argument, NULL, 's'},
                {"network", required_argument, NULL, 'N'},
                {"pod-cidr", required_argument, NULL, 'P'},
                {"dns-upstream", required_argument, NULL, 'D'},
                {"net-table", required_argument, NULL, 'T'},
                {"net-link-prefix", required_argument, NULL, 'X'},
                {"fn-domain", required_argument, NULL, 'F'},
                {"app-backoff-ms", required_argument, NULL, 'B'},
                {"app-ready-timeout-ms", required_argument, NULL, 'R'},
                {"insecure-registry", required_argument, NULL, 'I'},
                {"registry-mirror", required_argument, NULL, 'M'},
                {"registry-mirror-token-file", required_argument, NULL, 'K'},
                {"lazy-images", required_argument, NULL, 'z'},
                {"lazy-rate", required_argument, NULL, 'Z'},
                {"lazy-fetch-timeout-ms", required_argument, NULL, 'Y'},
                {"job-cpu", required_argument, NULL, 'j'},
                {"job-memory", required_argument, NULL, 'm'},
                {"job-warm", required_argument, NULL, 'w'},
                {"help", no_argument, NULL, '?' + 256},
                {0, 0, 0, 0},
        };
        const char *insecure[17] = {0}; /* --insecure-registry, NULL-terminated */
        size_t n_insecure = 0;
        const char *home = getenv("LEGION_HOME");
        const char *listen = "127.0.0.1:7070";
        const char *listen_tls_at = "127.0.0.1:6443";
        bool tls_explicit = false, stop = false;
        const char *runtimes = getenv("LEGION_RUNTIMES");
        /* A client that holds idle connections must not lock the API: see
         * docs/api.md, "Connections". */
        unsigned long max_conns = 4096, max_per_addr = 256, unauth_idle_ms = 5000;
        unsigned long app_backoff_ms = 1000, ready_timeout_ms = 60000;
        struct net_opts net = {0};
        const char *fn_domain = NULL;
        struct mirror_opt mirror_opts[LG_MIRRORS_MAX];
        size_t n_mirrors = 0;
        struct lg_daemon_lazy_opts lazy = {.rate = LG_LAZYD_DEFAULT_RATE,
                                           .fetch_timeout_ms = LG_LAZYD_DEFAULT_TIMEOUT_MS};
        unsigned long lazy_timeout_ms;
        /* Jobs' capacity: 0 = the library's default (jobs.h). */
        uint64_t job_cpu_millis = 0, job_memory = 0;
        unsigned long job_warm = 4;
        int c;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                switch (c) {
                case 'h': home = optarg; break;
                case 'l': listen = optarg; break;
                case 't': listen_tls_at = optarg; tls_explicit = true; break;
                case 'r': runtimes = optarg; break;
                case 's': stop = true; break;
                case 'N':
                        if (strcmp(optarg, "on") && strcmp(optarg, "off")) {
                                fprintf(stderr, "legiond: --network wants on or off, got `%s`\n", optarg);
                                return 2;
                        }
                        net.off = !strcmp(optarg, "off");
                        break;
                case 'P': net.cfg.cidr = optarg; break;
                case 'T': net.cfg.table = optarg; break;
                case 'X': net.cfg.link_prefix = optarg; break;
                case 'F': fn_domain = optarg; break;
                case 'I':
                        if (n_insecure >= ARRAY_SIZE(insecure) - 1) {
                                fprintf(stderr, "legiond: at most %zu --insecure-registry\n", ARRAY_SIZE(insecure) - 1);
                                return 2;
                        }
                        insecure[n_insecure++] = optarg;
                        break;
                case 'D':
                        if (net.n_upstreams == LG_DNS_UPSTREAMS_MAX) {
                                fprintf(stderr, "legiond: at most %d --dns-upstream\n", LG_DNS_UPSTREAMS_MAX);
                                return 2;
                        }
                        net.upstreams[net.n_upstreams++] = optarg;
                        break;
                case 'c':
                        if (!parse_uint(optarg, 1, 1000000, &max_conns))
                                return bad_number("max-connections", optarg);
                        break;
                case 'a':
                        if (!parse_uint(optarg, 0, 1000000, &max_per_addr))
                                return bad_number("max-connections-per-addr", optarg);
                        break;
                case 'u':
                        if (!parse_uint(optarg, 0, 86400000, &unauth_idle_ms))
                                return bad_number("unauth-idle-timeout-ms", optarg);
                        break;
                case 'R':
                        if (!parse_uint(optarg, 1, 86400000, &ready_timeout_ms))
                                return bad_number("app-ready-timeout-ms", optarg);
                        break;
                case 'B':
                        if (!parse_uint(optarg, 1, 3600000, &app_backoff_ms))
                                return bad_number("app-backoff-ms", optarg);
                        break;
                case 'M':
                        if (n_mirrors == LG_MIRRORS_MAX) {
                                fprintf(stderr, "legiond: at most %d --registry-mirror\n", LG_MIRRORS_MAX);
                                return 2;
                        }
                        mirror_opts[n_mirrors].host = optarg;
                        mirror_opts[n_mirrors++].token_file = NULL;
                        break;
                case 'K':
                        if (n_mirrors == 0 || mirror_opts[n_mirrors - 1].token_file) {
                                fprintf(stderr, "legiond: --registry-mirror-token-file follows the "
                                                "--registry-mirror it is for\n");
                                return 2;
                        }
                        mirror_opts[n_mirrors - 1].token_file = optarg;
                        break;
                case 'z':
                        if (strcmp(optarg, "auto") && strcmp(optarg, "never")) {
                                fprintf(stderr, "legiond: --lazy-images wants auto or never, got `%s`\n", optarg);
                                return 2;
                        }
                        lazy.never = !strcmp(optarg, "never");
                        break;
                case 'Z':
                        if (lg_parse_size(optarg, &lazy.rate) < 0)
                                return bad_number("lazy-rate", optarg);
                        break;
                case 'Y':
                        if (!parse_uint(optarg, 1, 3600000, &lazy_timeout_ms))
                                return bad_number("lazy-fetch-timeout-ms", optarg);
                        lazy.fetch_timeout_ms = (unsigned) lazy_timeout_ms;
                        break;
                case 'j':
                        if (lg_parse_millis(optarg, 1000000000, &job_cpu_millis) < 0) {
                                fprintf(stderr, "legiond: --job-cpu wants vCPUs (8, 0.5 or 500m), got `%s`\n", optarg);
                                return 2;
                        }
                        break;
                case 'm':
                        if (lg_parse_size(optarg, &job_memory) < 0 || job_memory == 0) {
                                fprintf(stderr, "legiond: --job-memory wants a size (16g, 512Mi), got `%s`\n", optarg);
                                return 2;
                        }
                        break;
                case 'w':
                        if (!parse_uint(optarg, 0, 256, &job_warm))
                                return bad_number("job-warm", optarg);
                        break;
                case '?' + 256: usage(stdout); return 0;
                default: usage(stderr); return 2;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "legiond: unexpected argument `%s`\n", argv[optind]);
                usage(stderr);
                return 2;
        }
        struct lg_error derr = {0};
        if (fn_domain && lg_api_fn_domain_check(fn_domain, &derr) < 0) {
                fprintf(stderr, "legiond: %s\n", derr.msg);
                return 2;
        }
        if (geteuid() != 0) {
                fprintf(stderr, "legiond: must run as root (sandboxes need namespaces, cgroups and mounts)\n");
                return 1;
        }
        char host[256], tls_host[256] = "";
        unsigned port, tls_port = 0;
        if (!parse_hostport(listen, host, sizeof(host), &port)) {
                fprintf(stderr, "legiond: --listen wants HOST:PORT, got `%s`\n", listen);
                return 2;
        }
        if (strcmp(listen_tls_at, "off") != 0 && !parse_hostport(listen_tls_at, tls_host, sizeof(tls_host), &tls_port)) {
                fprintf(stderr, "legiond: --listen-tls wants HOST:PORT or off, got `%s`\n", listen_tls_at);
                return 2;
        }

        struct lg_daemon *d = &daemon_state;
        struct lg_error err = {0};
        d->loop = uv_default_loop();
        if (lg_mkdir_p(home ? home : "var/legion", 0700) < 0 || !(d->home = realpath(home ? home : "var/legion", NULL))) {
                fprintf(stderr, "legiond: cannot create the home directory `%s`: %s\n", home ? home : "var/legion",
                        strerror(errno));
                return 1;
        }
        if (stop)
                return stop_all(d->home, &net);
        if (!runtimes)
                runtimes = LG_RUNTIMES_DIR;
        if (!(d->runtimes_dir = realpath(runtimes, NULL))) {
                fprintf(stderr, "legiond: runtimes directory `%s`: %s\n", runtimes, strerror(errno));
                return 1;
        }
        char path[4096];
        int r = asprintf(&d->logs_dir, "%s/logs", d->home);
        snprintf(path, sizeof(path), "%s/legion.db", d->home);
        if (r >= 0)
                r = lg_store_open(path, NULL, &d->store, &err);
        snprintf(path, sizeof(path), "%s/packages", d->home);
        if (r >= 0)
                r = lg_blobstore_open(path, &d->blobs, &err);
        snprintf(path, sizeof(path), "%s/images", d->home);
        if (r >= 0)
                r = lg_image_store_open(path, &d->images, &err);
        if (r >= 0 && n_mirrors)
                r = set_mirrors(d->images, mirror_opts, n_mirrors, &err);
        if (r >= 0)
                r = lg_daemon_lazy_start(d, &lazy, &err);
        if (r >= 0)
                r = bootstrap(d, &err);
        if (r >= 0)
                r = ensure_admin_token(d, &err);
        snprintf(path, sizeof(path), "%s/run", d->home);
        /* Before the agent: adopting a sandbox takes its address back. */
        if (r >= 0 && !net.off && (r = network_up(d, &net, &err)) < 0) {
                char why[sizeof(err.msg)];
                snprintf(why, sizeof(why), "%s", err.msg);
                lg_error_setm(&err, -r, "cannot set up the sandbox network: %s (--network off runs without one)", why);
        }
        /* One node agent for function instances, sessions and pods: the
         * only code that creates, starts and destroys their sandboxes.
         * Each spec names its own state root; adopt looks in this one. */
        char sandboxes_root[4200];
        snprintf(sandboxes_root, sizeof(sandboxes_root), "%s/sandboxes-root", path);
        if (r >= 0)
                r = lg_agent_local_new(d->loop, sandboxes_root, d->net, &d->agent, &err);
        struct lg_node_config nc = {.loop = d->loop, .agent = d->agent, .net = d->net, .run_dir = path,
                                    .runtimes_dir = d->runtimes_dir, .images = d->images,
                                    .ready_timeout_ms = ready_timeout_ms};
        if (r >= 0)
                r = lg_node_new(&nc, &d->node, &err);
        if (r >= 0)
                r = lg_tenants_new(d->store, d->net, &d->tenants, &err);
        /* Before apps, which pull images through them; their ops reach
         * the pods and apps only when a request comes. */
        char tmp_dir[4096];
        snprintf(tmp_dir, sizeof(tmp_dir), "%s/tmp", d->home);
        struct lg_image_jobs_config ijc = {.loop = d->loop, .images = d->images, .tmp_dir = tmp_dir,
                                           .ops = &image_jobs_ops, .ud = d};
        if (r >= 0)
                r = lg_image_jobs_new(&ijc, &d->image_jobs, &err);
        /* Package images: their lazy layers and mounts live in the lazy
         * store beside the images'. */
        char lazy_dir[4096];
        snprintf(lazy_dir, sizeof(lazy_dir), "%s/lazy", d->home);
        struct lg_apps_config ac = {.loop = d->loop, .store = d->store, .blobs = d->blobs,
                                    .logs_dir = d->logs_dir, .ops = &apps_ops, .ud = d,
                                    .tenants = d->tenants, .images = d->images, .image_jobs = d->image_jobs,
                                    .no_network = net.off, .lazy_dir = lazy_dir,
                                    .lazy_ops = d->lazyd ? &lg_daemon_lazy_ops : NULL, .lazy_ud = d,
                                    .insecure_registries = insecure};
        if (r >= 0)
                r = lg_apps_new(&ac, &d->apps, &err);
        if (r >= 0)
                r = lg_router_new(&(struct lg_router_config){.loop = d->loop, .provider = &lg_node_provider_ops,
                                                             .provider_data = d->node, .log = lg_apps_log,
                                                             .log_data = d->apps,
                                                             .backoff_ms = (unsigned) app_backoff_ms},
                                  &d->router, &err);
        if (r >= 0)
                r = lg_sessions_new(d->loop, d->store, &sessions_ops, d, &d->sessions, &err);
        if (r >= 0)
                lg_sessions_set_tenants(d->sessions, d->tenants);
        char pod_logs[4096];
        snprintf(pod_logs, sizeof(pod_logs), "%s/pods", d->logs_dir ? d->logs_dir : "");
        struct lg_pods_config pc = {.loop = d->loop, .store = d->store, .images = d->images,
                                    .run_dir = path, .logs_dir = pod_logs, .agent = d->agent,
                                    .net = d->net, .tenants = d->tenants};
        if (r >= 0)
                r = lg_pods_new(&pc, &d->pods, &err);
        /* Jobs: their role sandboxes through the same agent, under
         * <run>/job-sandboxes; their files from the uploaded packages. */
        char jobs_dir[4200], packages_dir[4200];
        snprintf(jobs_dir, sizeof(jobs_dir), "%s/jobs", d->home);
        snprintf(packages_dir, sizeof(packages_dir), "%s/packages", d->home);
        struct lg_jobs_config jc = {.loop = d->loop, .store = d->store, .agent = d->agent, .net = d->net,
                                    .images = d->images, .packages = d->blobs, .packages_dir = packages_dir,
                                    .run_dir = path, .jobs_dir = jobs_dir, .runtimes_dir = d->runtimes_dir,
                                    .cpu_capacity_millis = job_cpu_millis, .memory_capacity_bytes = job_memory,
                                    .warm = (unsigned) job_warm};
        if (r >= 0) {
                /* Not fatal, as lazy images are not: without jobs (said in
                 * the log) their API answers 503 and the rest serves. */
                struct lg_error why = {0};
                int k = lg_mkdir_p(jobs_dir, 0700);
                if (k < 0)
                        lg_error_set(&why, -k, "create `%s`", jobs_dir);
                else
                        k = lg_jobs_new(&jc, &d->jobs, &why);
                if (k < 0) {
                        say("jobs: off: %s", why.msg);
                        d->jobs = NULL;
                }
        }
        /* Other nodes fetch blobs and lazy layers from this one at /v2. */
        char images_dir[4200], fuse_dir[4200];
        snprintf(images_dir, sizeof(images_dir), "%s/images", d->home);
        snprintf(fuse_dir, sizeof(fuse_dir), "%s/run/lazy/blobs", d->home);
        struct lg_lazy_serve_config lsc = {.loop = d->loop, .images_dir = images_dir, .lazy_dir = lazy_dir,
                                           .fuse_dir = fuse_dir};
        if (r >= 0)
                r = lg_lazy_serve_new(&lsc, &d->blobs_served, &err);
        struct lg_api_config apic = {.loop = d->loop, .store = d->store, .apps = d->apps, .tenants = d->tenants,
                                     .sessions = d->sessions, .pods = d->pods, .jobs = d->jobs,
                                     .images = d->images,
                                     .image_jobs = d->image_jobs, .router = d->router, .fn_domain = fn_domain,
                                     .blobs = d->blobs_served};
        if (r >= 0)
                r = lg_api_new(&apic, &d->api, &err);
        struct lg_http_server_config hc = {
                .on_head = lg_api_on_head,
                .on_request = lg_api_on_request,
                .userdata = d->api,
                .max_connections = (unsigned) max_conns,
                .max_connections_per_addr = max_per_addr ? (unsigned) max_per_addr : UINT_MAX,
                .unauth_idle_timeout_ms = unauth_idle_ms,
        };
        if (r >= 0)
                r = lg_http_server_new(d->loop, &hc, &d->http, &err);
        if (r >= 0)
                r = lg_http_server_listen_tcp(d->http, host, (uint16_t) port, &err);
        if (r >= 0 && tls_port) {
                r = listen_tls(d, tls_host, tls_port, &err);
                /* The default port may be another legiond's: go on without
                 * TLS then, but not when it was asked for. */
                if (r == -EADDRINUSE && !tls_explicit) {
                        say("warning: no HTTPS listener: %s (see --listen-tls)", err.msg);
                        tls_port = 0;
                        r = 0;
                }
        }
        struct lg_replay_targets rt = {.store = d->store, .tenants = d->tenants, .apps = d->apps,
                                       .sessions = d->sessions, .pods = d->pods};
        if (r >= 0)
                r = lg_replay(&rt, replay_report, NULL, NULL, &err);
        if (r >= 0) {
                /* After the pods' restore (in the replay) and before the
                 * network's sweep: job roles take their addresses back.
                 * Not fatal: a job it could not resume says so in its
                 * status, and legiond serves the rest. */
                struct lg_error why = {0};
                if (d->jobs && lg_jobs_restore(d->jobs, &why) < 0)
                        say("restore: jobs: %s", why.msg);
        }
        if (r >= 0) {
                /* Apps took their instances back in the replay; sessions
                 * now; what nobody took goes. */
                lg_node_each_adopted(d->node, adopt_session, d);
                lg_node_adopted_release(d->node, adopted_log, d);
                /* Every surviving sandbox took its address back: what
                 * was left of the others goes. Not fatal: the leftovers
                 * hold addresses, nothing runs with them. */
                struct lg_error why = {0};
                if (d->net && lg_net_sweep(d->net, &why) < 0)
                        say("network: %s", why.msg);
        }
        if (r < 0) {
                say("%s", err.msg);
                return 1;
        }
        signal(SIGPIPE, SIG_IGN);
        /* Each sandbox holds a dozen fds here (pidfd, control socket,
         * listener, cgroup directories): the default soft limit of 1024
         * would stop a node at a few dozen sandboxes. */
        struct rlimit nofile;
        if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
                nofile.rlim_cur = nofile.rlim_max;
                setrlimit(RLIMIT_NOFILE, &nofile);
        }
        uv_signal_init(d->loop, &sig_term);
        uv_signal_init(d->loop, &sig_int);
        sig_term.data = sig_int.data = d;
        uv_signal_start(&sig_term, on_signal, SIGTERM);
        uv_signal_start(&sig_int, on_signal, SIGINT);
        say("listening on http://%s:%d (home %s)", host, lg_http_server_port(d->http), d->home);
        if (tls_port)
                say("listening on https://%s%s%s:%d (CA %s/tls/ca.crt)", strchr(tls_host, ':') ? "[" : "", tls_host,
                    strchr(tls_host, ':') ? "]" : "", lg_http_server_tls_port(d->http), d->home);
        uv_run(d->loop, UV_RUN_DEFAULT);
        lg_api_free(d->api);
        lg_lazy_serve_free(d->blobs_served); /* every request has ended */
        lg_sessions_free(d->sessions);
        lg_apps_free(d->apps);
        lg_tenants_free(d->tenants);
        lg_image_jobs_free(d->image_jobs);
        lg_pods_free(d->pods);
        if (d->jobs)
                lg_jobs_free(d->jobs); /* every request has ended: no watch is left */
        lg_dns_free(d->dns);
        lg_node_free(d->node);
        lg_agent_free(d->agent);
        lg_net_free(d->net); /* its table and links stay for the sandboxes that run on */
        lg_lazyd_free(d->lazyd); /* the fetcher and its mounts stay too */
        lg_image_store_close(d->images);
        lg_blobstore_close(d->blobs);
        lg_store_close(d->store);
        uv_run(d->loop, UV_RUN_NOWAIT); /* the forwarder's sockets close */
        say("stopped");
        return 0;
}
