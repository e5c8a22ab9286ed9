/* density: start N idle sandboxes, measure what they add to the host's
 * memory, then destroy them and check nothing is left.
 *
 *   density [-n N] [-s SETTLE] legion ROOTFS
 *       N legion placeholders through the library: lg_sandbox_create +
 *       lg_sandbox_start with no argv (legion-init idles), own network
 *       namespace, memory 128M, pids 64, ROOTFS as the only layer.
 *       $LEGION_RUN_DIR and $LEGION_CGROUP_PARENT are honoured as usual.
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
 * the sandbox processes (smaps_rollup) and, for legion, the memory cgroup's
 * own usage (user + kernel charges).
 *
 * Prints one JSON object on stdout. Exits 1 if a start failed (the JSON then
 * has "error" and what was reached) or something was left behind. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
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

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

static double pct(const double *sorted, size_t n, double p) {
        size_t k = (size_t) ceil(p / 100.0 * (double) n);
        return sorted[(k < 1 ? 1 : k) - 1];
}

static void print_meminfo(const char *name, const struct meminfo *m) {
        printf("\"%s\": {", name);
        for (size_t i = 0; i < N_KEYS; i++)
                printf("%s\"%s\": %lld", i ? ", " : "", mem_keys[i], m->kb[i]);
        printf("}");
}

static void json_escape(const char *s) {
        putchar('"');
        for (; *s; s++) {
                unsigned char c = (unsigned char) *s;
                if (c == '"' || c == '\\')
                        printf("\\%c", c);
                else if (c < 0x20)
                        printf("\\u%04x", c);
                else
                        putchar(c);
        }
        putchar('"');
}

static void usage(void) {
        fputs("usage: density [-n N] [-s SETTLE] legion ROOTFS\n"
              "       density [-n N] [-s SETTLE] [-c COMM] cmd -- CMD [ARGS...]\n", stderr);
        exit(2);
}

int main(int argc, char **argv) {
        long n = 2000;
        double settle = 2.0;
        const char *comm = NULL;
        const char *env = getenv("DENSITY_N");
        if (env && *env)
                n = strtol(env, NULL, 10);
        int c;
        while ((c = getopt(argc, argv, "+n:s:c:")) != -1) {
                switch (c) {
                case 'n': n = strtol(optarg, NULL, 10); break;
                case 's': settle = strtod(optarg, NULL); break;
                case 'c': comm = optarg; break;
                default: usage();
                }
        }
        if (n < 1 || optind >= argc)
                usage();
        const char *mode = argv[optind++];
        bool legion = !strcmp(mode, "legion");
        if (legion && optind != argc - 1)
                usage();
        if (!legion && (strcmp(mode, "cmd") || optind >= argc))
                usage();
        const char *rootfs = legion ? argv[optind] : NULL;
        char **cmd = legion ? NULL : argv + optind;

        /* Each legion sandbox keeps a pidfd, its control socket and two fds
         * per cgroup v1 hierarchy open in the owner; leave ample room. */
        struct rlimit rl = {.rlim_cur = (rlim_t) n * 16 + 1024, .rlim_max = (rlim_t) n * 16 + 1024};
        struct rlimit old;
        getrlimit(RLIMIT_NOFILE, &old);
        if (old.rlim_max > rl.rlim_max)
                rl.rlim_max = old.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
                fprintf(stderr, "density: raise RLIMIT_NOFILE to %llu: %s\n",
                        (unsigned long long) rl.rlim_cur, strerror(errno));
                return 1;
        }

        const char *parent = getenv("LEGION_CGROUP_PARENT");
        if (!parent || !*parent)
                parent = "legion";
        const char *run_dir = getenv("LEGION_RUN_DIR");
        if (!run_dir || !*run_dir)
                run_dir = "/run/legion";

        lg_sandbox **sbs = calloc((size_t) n, sizeof(*sbs));
        pid_t *pids = calloc((size_t) n, sizeof(pid_t));
        double *lat = calloc((size_t) n, sizeof(double));
        if (!sbs || !pids || !lat)
                return 1;

        long comm_base = comm ? count_comm(comm) : 0;
        struct timespec ts = {(time_t) settle, (long) ((settle - (double) (time_t) settle) * 1e9)};
        nanosleep(&ts, NULL);
        struct meminfo before, after, destroyed;
        read_meminfo(&before);
        long long owner_rss0 = status_kb("VmRSS");

        char errmsg[600] = "";
        long started = 0;
        double t0 = now_s();
        for (long i = 0; i < n; i++) {
                double a = now_s();
                if (legion) {
                        struct lg_sandbox_spec spec;
                        lg_sandbox_spec_init(&spec);
                        char id[32];
                        snprintf(id, sizeof(id), "dens-%ld", i);
                        const char *layers[] = {rootfs};
                        spec.id = id;
                        spec.layers = layers;
                        spec.n_layers = 1;
                        spec.memory_bytes = 128ull << 20;
                        spec.pids_max = 64;
                        struct lg_error err = {0};
                        if (lg_sandbox_create(&spec, &sbs[i], &err) < 0 ||
                            lg_sandbox_start(sbs[i], &err) < 0) {
                                snprintf(errmsg, sizeof(errmsg), "sandbox %ld: %s", i, err.msg);
                                lg_sandbox_destroy(sbs[i]);
                                sbs[i] = NULL;
                                break;
                        }
                        pids[i] = lg_sandbox_pid(sbs[i]);
                } else {
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
                        snprintf(errmsg, sizeof(errmsg), "only %ld of %ld `%s` processes came up", have,
                                 started, comm);
        }
        double start_wall = now_s() - t0;

        /* Anything that died early (the peer) is a failure too. */
        if (!legion && !errmsg[0])
                for (long i = 0; i < started; i++) {
                        int st;
                        if (waitpid(pids[i], &st, WNOHANG) == pids[i]) {
                                snprintf(errmsg, sizeof(errmsg), "instance %ld exited early (status 0x%x)", i, st);
                                pids[i] = 0;
                                break;
                        }
                }

        nanosleep(&ts, NULL);
        read_meminfo(&after);
        long long owner_rss1 = status_kb("VmRSS");
        long long pss = 0, rss = 0;
        long nproc = 0;
        for (long i = 0; i < started; i++)
                if (pids[i] > 0)
                        tree_mem(pids[i], &pss, &rss, &nproc);
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
        for (long i = 0; i < started; i++) {
                if (legion) {
                        if (lg_sandbox_destroy(sbs[i]) < 0)
                                destroy_errors++;
                } else if (pids[i] > 0) {
                        kill(-pids[i], SIGKILL);
                        while (waitpid(pids[i], NULL, 0) < 0 && errno == EINTR)
                                ;
                }
        }
        double destroy_wall = now_s() - d0;
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
                snprintf(path, sizeof(path), "%s/uids", run_dir);
                left_uids = count_entries(path, false);
                if (left_sb < 0)
                        left_sb = 0;
                if (left_uids < 0)
                        left_uids = 0;
        }

        qsort(lat, (size_t) (started ? started : 1), sizeof(double), cmp_double);
        printf("{\"mode\": \"%s\", \"requested\": %ld, \"started\": %ld, \"settle_s\": %.1f, ",
               legion ? "legion" : "cmd", n, started, settle);
        printf("\"argv\": [");
        if (legion) {
                printf("\"lg_sandbox_create+start\", ");
                json_escape(rootfs);
        } else {
                for (char **a = cmd; *a; a++) {
                        printf("%s", a == cmd ? "" : ", ");
                        json_escape(*a);
                }
        }
        printf("], \"error\": ");
        if (errmsg[0])
                json_escape(errmsg);
        else
                printf("null");
        printf(", \"start_wall_s\": %.4f, \"start_per_s\": %.2f, ", start_wall,
               started ? (double) started / start_wall : 0.0);
        if (started)
                printf("\"start_p50_ms\": %.3f, \"start_p99_ms\": %.3f, \"start_max_ms\": %.3f, ",
                       pct(lat, (size_t) started, 50) * 1e3, pct(lat, (size_t) started, 99) * 1e3,
                       lat[started - 1] * 1e3);
        printf("\"destroy_wall_s\": %.4f, \"destroy_per_s\": %.2f, \"destroy_errors\": %d, ",
               destroy_wall, started ? (double) started / destroy_wall : 0.0, destroy_errors);
        printf("\"pss_kb\": %lld, \"rss_kb\": %lld, \"processes\": %ld, ", pss, rss, nproc);
        printf("\"owner_rss_kb\": [%lld, %lld], ", owner_rss0, owner_rss1);
        printf("\"cgroup_usage_bytes\": %lld, \"cgroup_kmem_bytes\": %lld, ", cg_usage, cg_kmem);
        printf("\"leftover_cgroups\": %ld, \"leftover_sandboxes\": %ld, \"leftover_uid_slots\": %ld, ",
               left_cg, left_sb, left_uids);
        print_meminfo("before", &before);
        printf(", ");
        print_meminfo("after", &after);
        printf(", ");
        print_meminfo("after_destroy", &destroyed);
        printf("}\n");
        fflush(stdout);
        return errmsg[0] || destroy_errors || left_cg || left_sb || left_uids ? 1 : 0;
}
