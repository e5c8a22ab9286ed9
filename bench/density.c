/* density: start N idle sandboxes, measure what they add to the host's
 * memory, then destroy them and check nothing is left.
 *
 *   density [-n N] [-s SETTLE] [-o OWNERS] [-H] legion ROOTFS
 *       N legion placeholders through the library: lg_sandbox_create +
 *       lg_sandbox_start with no argv (legion-init idles), own network
 *       namespace (the host's with -H), memory 128M, pids 64, ROOTFS as
 *       the only layer, one after another. $LEGION_RUN_DIR,
 *       $LEGION_UID_DIR and $LEGION_CGROUP_PARENT apply.
 *       The sandboxes are held by owner processes (forked from here), as
 *       many as the owner's hard RLIMIT_NOFILE allows per owner (16 fds
 *       budgeted per sandbox), or OWNERS of them; owners start their
 *       shares in turn, never at the same time.
 *   density [-n N] [-s SETTLE] [-c COMM] cmd -- CMD [ARGS...]
 *       N copies of a command (the peer, e.g. bwrap ... sleep), each in its
 *       own process group and killed as a group. With -c COMM the start is
 *       over when N more processes named COMM exist than before (the
 *       workloads run); without, it only covers the spawns.
 *
 * N defaults to $DENSITY_N or 2000. Memory is read from /proc/meminfo before
 * starting (after SETTLE seconds, default 2, of quiet) and SETTLE seconds
 * after the last start: MemAvailable (everything: user and kernel), Slab,
 * percpu, page tables, kernel stacks, shmem (tmpfs). Also the summed Pss of
 * the sandbox processes (smaps_rollup), for legion the memory cgroup's own
 * usage (user + kernel charges), and the fds and RSS the owners gained.
 *
 * Prints one JSON object on stdout. Exits 1 if a start failed (the JSON then
 * has "error" and what was reached) or something was left behind. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox/sandbox.h"
#include "lib/stats.h"

extern char **environ;

static const char *const mem_keys[] = {
        "MemTotal", "MemFree", "MemAvailable", "Slab", "SReclaimable", "SUnreclaim",
        "KernelStack", "PageTables", "Shmem", "Percpu", "VmallocUsed", "AnonPages",
};
#define N_KEYS (sizeof(mem_keys) / sizeof(mem_keys[0]))

struct meminfo {
        long long kb[N_KEYS];
};

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void read_meminfo(struct meminfo *m) {
        for (size_t i = 0; i < N_KEYS; i++)
                m->kb[i] = -1;
        FILE *f = fopen("/proc/meminfo", "re");
        if (!f)
                return;
        char line[256];
        while (fgets(line, sizeof(line), f)) {
                char *colon = strchr(line, ':');
                if (!colon)
                        continue;
                *colon = '\0';
                for (size_t i = 0; i < N_KEYS; i++)
                        if (!strcmp(line, mem_keys[i]))
                                m->kb[i] = strtoll(colon + 1, NULL, 10);
        }
        fclose(f);
}

static long long read_ll(const char *path) {
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        long long v = -1;
        if (fscanf(f, "%lld", &v) != 1)
                v = -1;
        fclose(f);
        return v;
}

static long long status_kb(const char *key) {
        FILE *f = fopen("/proc/self/status", "re");
        if (!f)
                return -1;
        char line[256];
        long long v = -1;
        size_t kl = strlen(key);
        while (fgets(line, sizeof(line), f))
                if (!strncmp(line, key, kl) && line[kl] == ':')
                        v = strtoll(line + kl + 1, NULL, 10);
        fclose(f);
        return v;
}

/* Pss and Rss (kB) of pid and all its descendants. */
static void tree_mem(pid_t pid, long long *pss, long long *rss, long *nproc) {
        char path[64], line[256];
        snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int) pid);
        FILE *f = fopen(path, "re");
        if (f) {
                (*nproc)++;
                while (fgets(line, sizeof(line), f)) {
                        if (!strncmp(line, "Pss:", 4))
                                *pss += strtoll(line + 4, NULL, 10);
                        else if (!strncmp(line, "Rss:", 4))
                                *rss += strtoll(line + 4, NULL, 10);
                }
                fclose(f);
        }
        snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int) pid, (int) pid);
        f = fopen(path, "re");
        if (!f)
                return;
        int child;
        while (fscanf(f, "%d", &child) == 1)
                tree_mem(child, pss, rss, nproc);
        fclose(f);
}

/* Processes on the host whose comm is name. */
static long count_comm(const char *name) {
        DIR *d = opendir("/proc");
        if (!d)
                return -1;
        long n = 0;
        struct dirent *de;
        char path[300], comm[64];
        while ((de = readdir(d))) {
                if (!isdigit((unsigned char) de->d_name[0]))
                        continue;
                snprintf(path, sizeof(path), "/proc/%s/comm", de->d_name);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                ssize_t k = read(fd, comm, sizeof(comm) - 1);
                close(fd);
                if (k <= 0)
                        continue;
                comm[k] = '\0';
                comm[strcspn(comm, "\n")] = '\0';
                if (!strcmp(comm, name))
                        n++;
        }
        closedir(d);
        return n;
}

/* Entries (other than . and ..) in a directory; -1 if it does not exist. */
static long count_entries(const char *path, bool dirs_only) {
        DIR *d = opendir(path);
        if (!d)
                return -1;
        long n = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.' && (!de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2])))
                        continue;
                if (dirs_only && de->d_type != DT_DIR)
                        continue;
                n++;
        }
        closedir(d);
        return n;
}

/* Memory of every slab cache (slabs * pages per slab), for the biggest
 * growers between two snapshots. */
#define MAX_SLABS 1024
struct slabsnap {
        size_t n;
        char name[MAX_SLABS][48];
        long long bytes[MAX_SLABS];
};

static void read_slabinfo(struct slabsnap *s) {
        s->n = 0;
        FILE *f = fopen("/proc/slabinfo", "re");
        if (!f)
                return;
        char line[512];
        long page = sysconf(_SC_PAGESIZE);
        while (fgets(line, sizeof(line), f) && s->n < MAX_SLABS) {
                char name[64];
                long long active, num, objsize, perslab, pages, tl, tb, ts, aslabs, nslabs;
                if (sscanf(line, "%63s %lld %lld %lld %lld %lld : tunables %lld %lld %lld : slabdata %lld %lld",
                           name, &active, &num, &objsize, &perslab, &pages, &tl, &tb, &ts, &aslabs,
                           &nslabs) != 11)
                        continue;
                snprintf(s->name[s->n], sizeof(s->name[0]), "%s", name);
                s->bytes[s->n] = nslabs * pages * page;
                s->n++;
        }
        fclose(f);
}

static void print_slab_growth(const struct slabsnap *a, const struct slabsnap *b, size_t top) {
        static long long delta[MAX_SLABS];
        static bool used[MAX_SLABS];
        for (size_t i = 0; i < b->n; i++) {
                delta[i] = b->bytes[i];
                used[i] = false;
                for (size_t j = 0; j < a->n; j++)
                        if (!strcmp(a->name[j], b->name[i])) {
                                delta[i] -= a->bytes[j];
                                break;
                        }
        }
        printf("\"slab_growth_bytes\": [");
        for (size_t k = 0; k < top; k++) {
                long best = -1;
                for (size_t i = 0; i < b->n; i++)
                        if (!used[i] && (best < 0 || delta[i] > delta[best]))
                                best = (long) i;
                if (best < 0 || delta[best] <= 0)
                        break;
                used[best] = true;
                printf("%s[\"%s\", %lld]", k ? ", " : "", b->name[best], delta[best]);
        }
        printf("]");
}


static void print_meminfo(const char *name, const struct meminfo *m) {
        printf("\"%s\": {", name);
        for (size_t i = 0; i < N_KEYS; i++)
                printf("%s\"%s\": %lld", i ? ", " : "", mem_keys[i], m->kb[i]);
        printf("}");
}

static void usage(void) {
        fputs("usage: density [-n N] [-s SETTLE] [-o OWNERS] [-H] legion ROOTFS\n"
              "       density [-n N] [-s SETTLE] [-c COMM] cmd -- CMD [ARGS...]\n", stderr);
        exit(2);
}

static long count_fds(void) {
        return count_entries("/proc/self/fd", false);
}

/* What an owner tells the driver once its share is up, followed by
 * `started` doubles (seconds per create + start). */
struct owner_report {
        long started;
        double wall;
        long long rss0_kb, rss1_kb;
        long fds0, fds1;
        long long nofile;
        char err[512];
};
struct owner_done {
        double wall;
        int errors;
};

static int read_full(int fd, void *buf, size_t len) {
        char *p = buf;
        while (len) {
                ssize_t k = read(fd, p, len);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return -1;
                p += k;
                len -= (size_t) k;
        }
        return 0;
}

static int write_full(int fd, const void *buf, size_t len) {
        return lg_write_all(fd, buf, len);
}

/* One owner process: creates and starts sandboxes first..first+count-1 when
 * told 'S', reports, destroys them all when told 'D', reports, exits. */
static _Noreturn void owner_main(long first, long count, const char *rootfs, bool net_host, int in,
                                 int out) {
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);

        lg_sandbox **sbs = calloc((size_t) count, sizeof(*sbs));
        double *lat = calloc((size_t) count, sizeof(double));
        struct owner_report rep = {0};
        rep.nofile = (long long) rl.rlim_cur;
        char go;
        if (!sbs || !lat || read_full(in, &go, 1) < 0 || go != 'S')
                _exit(1);
        rep.rss0_kb = status_kb("VmRSS");
        rep.fds0 = count_fds();
        double t0 = now_s();
        for (long i = 0; i < count; i++) {
                struct lg_sandbox_spec spec;
                lg_sandbox_spec_init(&spec);
                char id[32];
                snprintf(id, sizeof(id), "dens-%ld", first + i);
                const char *layers[] = {rootfs};
                spec.id = id;
                spec.layers = layers;
                spec.n_layers = 1;
                spec.memory_bytes = 128ull << 20;
                spec.pids_max = 64;
                spec.share_net = net_host;
                struct lg_error err = {0};
                double a = now_s();
                if (lg_sandbox_create(&spec, &sbs[i], &err) < 0 || lg_sandbox_start(sbs[i], &err) < 0) {
                        snprintf(rep.err, sizeof(rep.err), "sandbox %ld (owner's #%ld, %ld fds open, "
                                 "RLIMIT_NOFILE %lld): %s", first + i, i, count_fds(), rep.nofile, err.msg);
                        lg_sandbox_destroy(sbs[i]);
                        sbs[i] = NULL;
                        break;
                }
                lat[i] = now_s() - a;
                rep.started++;
        }
        rep.wall = now_s() - t0;
        rep.rss1_kb = status_kb("VmRSS");
        rep.fds1 = count_fds();
        if (write_full(out, &rep, sizeof(rep)) < 0 ||
            write_full(out, lat, (size_t) rep.started * sizeof(double)) < 0)
                _exit(1);
        if (read_full(in, &go, 1) < 0 || go != 'D')
                _exit(1);
        struct owner_done done = {0};
        t0 = now_s();
        for (long i = 0; i < rep.started; i++)
                if (lg_sandbox_destroy(sbs[i]) < 0)
                        done.errors++;
        done.wall = now_s() - t0;
        (void) write_full(out, &done, sizeof(done));
        _exit(0);
}

struct owner {
        pid_t pid;
        int to, from;
        long first, count;
        struct owner_report rep;
};

int main(int argc, char **argv) {
        long n = 2000, owners = 0;
        bool net_host = false;
        double settle = 2.0;
        const char *comm = NULL;
        const char *env = getenv("DENSITY_N");
        if (env && *env)
                n = strtol(env, NULL, 10);
        int c;
        while ((c = getopt(argc, argv, "+n:s:c:o:H")) != -1) {
                switch (c) {
                case 'H': net_host = true; break;
                case 'n': n = strtol(optarg, NULL, 10); break;
                case 's': settle = strtod(optarg, NULL); break;
                case 'c': comm = optarg; break;
                case 'o': owners = strtol(optarg, NULL, 10); break;
                default: usage();
                }
        }
        if (n < 1 || optind >= argc)
                usage();
        const char *mode = argv[optind++];
        bool legion = !strcmp(mode, "legion");
        if (legion && optind != argc - 1)
                usage();
        if (!legion && optind < argc && !strcmp(argv[optind], "--"))
                optind++;
        if (!legion && (strcmp(mode, "cmd") || optind >= argc))
                usage();
        const char *rootfs = legion ? argv[optind] : NULL;
        char **cmd = legion ? NULL : argv + optind;

        const char *parent = getenv("LEGION_CGROUP_PARENT");
        if (!parent || !*parent)
                parent = "legion";
        const char *run_dir = getenv("LEGION_RUN_DIR");
        if (!run_dir || !*run_dir)
                run_dir = "/run/legion";

        /* An owner keeps some fds open per sandbox (pidfd, control socket,
         * cgroup directories). One owner holds as many as its hard
         * RLIMIT_NOFILE allows at FDS_BUDGET each; more go to more owners,
         * which run one after another, never at the same time. */
        enum { FDS_BUDGET = 16 };
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        long per_owner = rl.rlim_max == RLIM_INFINITY ? n : ((long) rl.rlim_max - 64) / FDS_BUDGET;
        if (per_owner < 1)
                per_owner = 1;
        if (owners <= 0)
                owners = (n + per_owner - 1) / per_owner;
        if (!legion)
                owners = 0;

        pid_t *pids = calloc((size_t) n, sizeof(pid_t));
        double *lat = calloc((size_t) n, sizeof(double));
        struct owner *own = calloc((size_t) (owners ? owners : 1), sizeof(*own));
        if (!pids || !lat || !own)
                return 1;
        for (long k = 0; k < owners; k++) {
                own[k].first = n * k / owners;
                own[k].count = n * (k + 1) / owners - own[k].first;
                int a[2], b[2];
                if (pipe2(a, O_CLOEXEC) < 0 || pipe2(b, O_CLOEXEC) < 0) {
                        perror("density: pipe");
                        return 1;
                }
                fflush(stdout);
                pid_t pid = fork();
                if (pid < 0) {
                        perror("density: fork");
                        return 1;
                }
                if (pid == 0) {
                        close(a[1]);
                        close(b[0]);
                        owner_main(own[k].first, own[k].count, rootfs, net_host, a[0], b[1]);
                }
                close(a[0]);
                close(b[1]);
                own[k].pid = pid;
                own[k].to = a[1];
                own[k].from = b[0];
        }

        long comm_base = comm ? count_comm(comm) : 0;
        struct timespec ts = {(time_t) settle, (long) ((settle - (double) (time_t) settle) * 1e9)};
        nanosleep(&ts, NULL);
        struct meminfo before, after, destroyed;
        static struct slabsnap slab_before, slab_after;
        read_slabinfo(&slab_before);
        read_meminfo(&before);

        char errmsg[700] = "";
        long started = 0;
        double t0 = now_s();
        if (legion) {
                for (long k = 0; k < owners && !errmsg[0]; k++) {
                        struct owner_report *r = &own[k].rep;
                        if (write_full(own[k].to, "S", 1) < 0 || read_full(own[k].from, r, sizeof(*r)) < 0 ||
                            read_full(own[k].from, lat + started, (size_t) r->started * sizeof(double)) < 0) {
                                snprintf(errmsg, sizeof(errmsg), "owner %ld died", k);
                                break;
                        }
                        started += r->started;
                        if (r->err[0])
                                snprintf(errmsg, sizeof(errmsg), "%s", r->err);
                }
        } else {
                for (long i = 0; i < n; i++) {
                        double a = now_s();
                        posix_spawnattr_t at;
                        posix_spawnattr_init(&at);
                        posix_spawnattr_setpgroup(&at, 0);
                        posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
                        posix_spawn_file_actions_t fa;
                        posix_spawn_file_actions_init(&fa);
                        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
                        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
                        int r = posix_spawnp(&pids[i], cmd[0], &fa, &at, cmd, environ);
                        posix_spawn_file_actions_destroy(&fa);
                        posix_spawnattr_destroy(&at);
                        if (r != 0) {
                                snprintf(errmsg, sizeof(errmsg), "instance %ld: spawn `%s`: %s", i, cmd[0],
                                         strerror(r));
                                break;
                        }
                        lat[i] = now_s() - a;
                        started++;
                }
                /* The peer is started when its workload runs: wait for the processes. */
                if (comm && !errmsg[0]) {
                        double deadline = now_s() + 300;
                        while (count_comm(comm) < comm_base + started && now_s() < deadline) {
                                struct timespec w = {0, 20 * 1000 * 1000};
                                nanosleep(&w, NULL);
                        }
                        long have = count_comm(comm) - comm_base;
                        if (have < started)
                                snprintf(errmsg, sizeof(errmsg), "only %ld of %ld `%s` processes came up",
                                         have, started, comm);
                }
                /* Anything that died early is a failure too. */
                for (long i = 0; i < started && !errmsg[0]; i++) {
                        int st;
                        if (waitpid(pids[i], &st, WNOHANG) == pids[i]) {
                                snprintf(errmsg, sizeof(errmsg), "instance %ld exited early (status 0x%x)", i, st);
                                pids[i] = 0;
                        }
                }
        }
        double start_wall = now_s() - t0;

        nanosleep(&ts, NULL);
        read_meminfo(&after);
        read_slabinfo(&slab_after);
        /* The sandboxes' processes: the owners' children (legion-init), or
         * each peer instance's tree. */
        long long pss = 0, rss = 0;
        long nproc = 0;
        if (legion) {
                for (long k = 0; k < owners; k++) {
                        char path[64];
                        snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int) own[k].pid,
                                 (int) own[k].pid);
                        FILE *f = fopen(path, "re");
                        int child;
                        while (f && fscanf(f, "%d", &child) == 1)
                                tree_mem(child, &pss, &rss, &nproc);
                        if (f)
                                fclose(f);
                }
        } else {
                for (long i = 0; i < started; i++)
                        if (pids[i] > 0)
                                tree_mem(pids[i], &pss, &rss, &nproc);
        }
        char path[4096];
        long long cg_usage = -1, cg_kmem = -1;
        if (legion) {
                snprintf(path, sizeof(path), "/sys/fs/cgroup/memory/%s/memory.usage_in_bytes", parent);
                cg_usage = read_ll(path);
                snprintf(path, sizeof(path), "/sys/fs/cgroup/memory/%s/memory.kmem.usage_in_bytes", parent);
                cg_kmem = read_ll(path);
        }

        double d0 = now_s();
        int destroy_errors = 0;
        if (legion) {
                for (long k = 0; k < owners; k++) {
                        struct owner_done done;
                        if (write_full(own[k].to, "D", 1) < 0 || read_full(own[k].from, &done, sizeof(done)) < 0) {
                                destroy_errors++;
                                continue;
                        }
                        destroy_errors += done.errors;
                }
        } else {
                for (long i = 0; i < started; i++) {
                        if (pids[i] <= 0)
                                continue;
                        kill(-pids[i], SIGKILL);
                        while (waitpid(pids[i], NULL, 0) < 0 && errno == EINTR)
                                ;
                }
        }
        double destroy_wall = now_s() - d0;
        for (long k = 0; k < owners; k++) {
                int st;
                while (waitpid(own[k].pid, &st, 0) < 0 && errno == EINTR)
                        ;
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                        destroy_errors++;
        }
        nanosleep(&ts, NULL);
        read_meminfo(&destroyed);

        /* Nothing may be left: no group in any hierarchy, no state, no uids. */
        static const char *const ctrls[] = {"memory", "cpu", "cpuacct", "pids", "freezer"};
        long left_cg = 0, left_sb = 0, left_uids = 0;
        if (legion) {
                for (size_t i = 0; i < sizeof(ctrls) / sizeof(ctrls[0]); i++) {
                        snprintf(path, sizeof(path), "/sys/fs/cgroup/%s/%s", ctrls[i], parent);
                        long k = count_entries(path, true);
                        if (k > 0)
                                left_cg += k;
                }
                snprintf(path, sizeof(path), "%s/sandboxes", run_dir);
                left_sb = count_entries(path, false);
                const char *uids = getenv("LEGION_UID_DIR");
                if (uids && uids[0] == '/')
                        snprintf(path, sizeof(path), "%s", uids);
                else
                        snprintf(path, sizeof(path), "/run/legion/uids");
                left_uids = count_entries(path, false);
                if (left_sb < 0)
                        left_sb = 0;
                if (left_uids < 0)
                        left_uids = 0;
        }

        long long orss = 0;
        long fds = 0, nofile = 0;
        for (long k = 0; k < owners; k++) {
                orss += own[k].rep.rss1_kb - own[k].rep.rss0_kb;
                fds += own[k].rep.fds1 - own[k].rep.fds0;
                nofile = (long) own[k].rep.nofile;
        }

        qsort(lat, (size_t) (started ? started : 1), sizeof(double), bench_cmp_double);
        printf("{\"mode\": \"%s\", \"net_host\": %s, \"requested\": %ld, \"started\": %ld, "
               "\"settle_s\": %.1f, ", legion ? "legion" : "cmd", net_host ? "true" : "false", n, started,
               settle);
        printf("\"argv\": [");
        if (legion) {
                printf("\"lg_sandbox_create+start\", ");
                bench_json_str(rootfs);
        } else {
                for (char **a = cmd; *a; a++) {
                        printf("%s", a == cmd ? "" : ", ");
                        bench_json_str(*a);
                }
        }
        printf("], \"error\": ");
        if (errmsg[0])
                bench_json_str(errmsg);
        else
                printf("null");
        printf(", \"owners\": %ld, \"owner_nofile\": %ld, \"owner_fds_added\": %ld, \"owner_rss_added_kb\": %lld, ",
               owners, nofile, fds, orss);
        printf("\"start_wall_s\": %.4f, \"start_per_s\": %.2f, ", start_wall,
               started ? (double) started / start_wall : 0.0);
        if (started)
                printf("\"start_p50_ms\": %.3f, \"start_p99_ms\": %.3f, \"start_max_ms\": %.3f, ",
                       lat[bench_rank((size_t) started, 50)] * 1e3, lat[bench_rank((size_t) started, 99)] * 1e3,
                       lat[started - 1] * 1e3);
        printf("\"destroy_wall_s\": %.4f, \"destroy_per_s\": %.2f, \"destroy_errors\": %d, ",
               destroy_wall, started ? (double) started / destroy_wall : 0.0, destroy_errors);
        printf("\"pss_kb\": %lld, \"rss_kb\": %lld, \"processes\": %ld, ", pss, rss, nproc);
        printf("\"cgroup_usage_bytes\": %lld, \"cgroup_kmem_bytes\": %lld, ", cg_usage, cg_kmem);
        printf("\"leftover_cgroups\": %ld, \"leftover_sandboxes\": %ld, \"leftover_uid_slots\": %ld, ",
               left_cg, left_sb, left_uids);
        print_meminfo("before", &before);
        printf(", ");
        print_meminfo("after", &after);
        printf(", ");
        print_meminfo("after_destroy", &destroyed);
        printf(", ");
        print_slab_growth(&slab_before, &slab_after, 15);
        printf("}\n");
        fflush(stdout);
        free(pids);
        free(lat);
        free(own);
        return errmsg[0] || destroy_errors || left_cg || left_sb || left_uids ? 1 : 0;
}
