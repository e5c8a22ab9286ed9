/* lgbench: time a command run N times, sequentially or in P parallel workers.
 *
 *   lgbench [-n N] [-p P] [-w WARMUP] [-l LABEL] [-q] [-e NAME=VALUE]... -- CMD [ARGS...]
 *
 * Each run is posix_spawn + waitpid of the whole command, timed with
 * CLOCK_MONOTONIC from just before the spawn to the return of waitpid: the
 * CLI's own start-up is part of the figure, as it is for runc and bwrap.
 * An argument containing %ID% gets it replaced by an id unique to the run
 * (runc needs one per container). -e sets an environment variable for the
 * runs, with %W% in VALUE replaced by the worker's number (0.., and "warmup"
 * for the warm-up runs): e.g. a state directory per worker.
 *
 * Every run must exit 0: on the first that does not, its command line, wait
 * status and output (stdout and stderr go to a memfd per worker, emptied
 * before each run) are printed to stderr, the other workers are stopped and
 * lgbench exits 1.
 *
 * With -p P, P worker processes each make N runs, started together after the
 * warm-up; runs/s is P * N over the wall time from the start signal to the
 * end of the last worker. Sequential is -p 1.
 *
 * Output on stdout, one JSON object: configuration, wall time, runs/s, p50,
 * p90, p99, mean, min, max, stdev (milliseconds) and, unless -q, every
 * latency in microseconds ("lat_us", worker-major) for later merging. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/stats.h"

extern char **environ;

#define MAX_ENV 16

struct opts {
        long n, p, warmup;
        const char *env[MAX_ENV];
        int n_env;
        const char *label;
        bool quiet;
        char **argv;
        int argc;
};

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void usage(void) {
        fputs("usage: lgbench [-n N] [-p P] [-w WARMUP] [-l LABEL] [-q] [-e NAME=VALUE]... -- CMD [ARGS...]\n",
              stderr);
        exit(2);
}

/* Apply the -e settings for worker w (-1: warm-up). */
static void apply_env(const struct opts *o, long w) {
        char num[32];
        if (w < 0)
                snprintf(num, sizeof(num), "warmup");
        else
                snprintf(num, sizeof(num), "%ld", w);
        for (int i = 0; i < o->n_env; i++) {
                const char *kv = o->env[i], *eq = strchr(kv, '=');
                char name[256], value[4096];
                snprintf(name, sizeof(name), "%.*s", (int) (eq - kv), kv);
                const char *v = eq + 1, *hit = strstr(v, "%W%");
                if (hit)
                        snprintf(value, sizeof(value), "%.*s%s%s", (int) (hit - v), v, num, hit + 3);
                else
                        snprintf(value, sizeof(value), "%s", v);
                if (setenv(name, value, 1) < 0) {
                        perror("lgbench: setenv");
                        exit(1);
                }
        }
}

static long parse_long(const char *s, long min) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || *end || v < min)
                usage();
        return v;
}

/* argv with every %ID% replaced by id (free with free_argv). */
static char **subst_argv(char **argv, int argc, const char *id) {
        char **v = calloc((size_t) argc + 1, sizeof(char *));
        if (!v)
                return NULL;
        for (int i = 0; i < argc; i++) {
                const char *a = argv[i], *hit = strstr(a, "%ID%");
                if (!hit) {
                        v[i] = argv[i];
                        continue;
                }
                size_t len = strlen(a) - 4 + strlen(id) + 1;
                v[i] = malloc(len);
                if (!v[i])
                        return NULL;
                snprintf(v[i], len, "%.*s%s%s", (int) (hit - a), a, id, hit + 4);
        }
        return v;
}

static void free_argv(char **v, char **orig, int argc) {
        for (int i = 0; i < argc; i++)
                if (v[i] != orig[i])
                        free(v[i]);
        free(v);
}

static void dump_failure(char **v, int argc, int status, int outfd) {
        fprintf(stderr, "lgbench: run failed:");
        for (int i = 0; i < argc; i++)
                fprintf(stderr, " %s", v[i]);
        if (WIFEXITED(status))
                fprintf(stderr, "\nlgbench: exit status %d; output:\n", WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
                fprintf(stderr, "\nlgbench: killed by signal %d; output:\n", WTERMSIG(status));
        else
                fprintf(stderr, "\nlgbench: wait status 0x%x; output:\n", status);
        char buf[4096];
        ssize_t n;
        lseek(outfd, 0, SEEK_SET);
        while ((n = read(outfd, buf, sizeof(buf))) > 0)
                (void) !write(2, buf, (size_t) n);
        fprintf(stderr, "lgbench: (end of output)\n");
}

/* One run; returns its latency in seconds, or -1 after reporting a failure. */
static double run_once(const struct opts *o, int worker, long i, int outfd) {
        char id[64];
        snprintf(id, sizeof(id), "lgb%dw%dr%ld", (int) getpid(), worker, i);
        char **v = subst_argv(o->argv, o->argc, id);
        if (!v) {
                perror("lgbench: allocate argv");
                return -1;
        }
        if (ftruncate(outfd, 0) < 0 || lseek(outfd, 0, SEEK_SET) < 0) {
                perror("lgbench: reset output buffer");
                free_argv(v, o->argv, o->argc);
                return -1;
        }
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, outfd, 1);
        posix_spawn_file_actions_adddup2(&fa, outfd, 2);

        pid_t pid;
        int status = 0;
        double t0 = now_s();
        int r = posix_spawnp(&pid, v[0], &fa, NULL, v, environ);
        if (r == 0) {
                while (waitpid(pid, &status, 0) < 0) {
                        if (errno != EINTR) {
                                r = errno;
                                break;
                        }
                }
        }
        double t1 = now_s();
        posix_spawn_file_actions_destroy(&fa);
        if (r != 0) {
                fprintf(stderr, "lgbench: spawn `%s`: %s\n", v[0], strerror(r));
                free_argv(v, o->argv, o->argc);
                return -1;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                dump_failure(v, o->argc, status, outfd);
                free_argv(v, o->argv, o->argc);
                return -1;
        }
        free_argv(v, o->argv, o->argc);
        return t1 - t0;
}

int main(int argc, char **argv) {
        struct opts o = {.n = 100, .p = 1, .warmup = 10, .label = ""};
        int c;
        while ((c = getopt(argc, argv, "+n:p:w:l:qe:")) != -1) {
                switch (c) {
                case 'e':
                        if (o.n_env >= MAX_ENV || !strchr(optarg, '=') || optarg[0] == '=')
                                usage();
                        o.env[o.n_env++] = optarg;
                        break;
                case 'n': o.n = parse_long(optarg, 1); break;
                case 'p': o.p = parse_long(optarg, 1); break;
                case 'w': o.warmup = parse_long(optarg, 0); break;
                case 'l': o.label = optarg; break;
                case 'q': o.quiet = true; break;
                default: usage();
                }
        }
        if (optind >= argc)
                usage();
        o.argv = argv + optind;
        o.argc = argc - optind;

        int outfd = memfd_create("lgbench-out", MFD_CLOEXEC);
        if (outfd < 0) {
                perror("lgbench: memfd_create");
                return 1;
        }
        /* Untimed warm-up: page cache, dentries, lazy kernel state. */
        apply_env(&o, -1);
        for (long i = 0; i < o.warmup; i++)
                if (run_once(&o, 99, i, outfd) < 0)
                        return 1;

        size_t total = (size_t) (o.n * o.p);
        double *lat = mmap(NULL, total * sizeof(double), PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (lat == MAP_FAILED) {
                perror("lgbench: mmap");
                return 1;
        }
        int go[2];
        if (pipe2(go, O_CLOEXEC) < 0) {
                perror("lgbench: pipe");
                return 1;
        }
        pid_t *workers = calloc((size_t) o.p, sizeof(pid_t));
        if (!workers)
                return 1;
        for (long w = 0; w < o.p; w++) {
                pid_t pid = fork();
                if (pid < 0) {
                        perror("lgbench: fork");
                        return 1;
                }
                if (pid == 0) {
                        close(go[1]);
                        char b;
                        apply_env(&o, w);
                        (void) !read(go[0], &b, 1); /* EOF = go */
                        int fd = memfd_create("lgbench-out", MFD_CLOEXEC);
                        if (fd < 0)
                                _exit(1);
                        for (long i = 0; i < o.n; i++) {
                                double t = run_once(&o, (int) w, i, fd);
                                if (t < 0)
                                        _exit(1);
                                lat[w * o.n + i] = t;
                        }
                        _exit(0);
                }
                workers[w] = pid;
        }
        close(go[0]);
        double t0 = now_s();
        close(go[1]);
        int failed = 0;
        for (long done = 0; done < o.p; done++) {
                int status;
                pid_t pid = wait(&status);
                if (pid < 0) {
                        if (errno == EINTR) {
                                done--;
                                continue;
                        }
                        break;
                }
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                        if (!failed)
                                for (long w = 0; w < o.p; w++)
                                        if (workers[w] != pid)
                                                kill(workers[w], SIGTERM);
                        failed = 1;
                }
        }
        double wall = now_s() - t0;
        if (failed) {
                fprintf(stderr, "lgbench: %s: aborted after a failed run\n", o.label);
                return 1;
        }

        double *sorted = malloc(total * sizeof(double));
        if (!sorted)
                return 1;
        memcpy(sorted, lat, total * sizeof(double));
        qsort(sorted, total, sizeof(double), bench_cmp_double);
        double sum = 0, sq = 0;
        for (size_t i = 0; i < total; i++)
                sum += sorted[i];
        double mean = sum / (double) total;
        for (size_t i = 0; i < total; i++)
                sq += (sorted[i] - mean) * (sorted[i] - mean);
        double stdev = total > 1 ? sqrt(sq / (double) (total - 1)) : 0;

        printf("{\"label\": ");
        bench_json_str(o.label);
        printf(", \"argv\": [");
        for (int i = 0; i < o.argc; i++) {
                if (i)
                        printf(", ");
                bench_json_str(o.argv[i]);
        }
        printf("], \"n\": %ld, \"parallel\": %ld, \"warmup\": %ld, \"runs\": %zu, "
               "\"wall_s\": %.6f, \"runs_per_s\": %.2f, "
               "\"p50_ms\": %.4f, \"p90_ms\": %.4f, \"p99_ms\": %.4f, \"mean_ms\": %.4f, "
               "\"min_ms\": %.4f, \"max_ms\": %.4f, \"stdev_ms\": %.4f",
               o.n, o.p, o.warmup, total, wall, (double) total / wall,
               sorted[bench_rank(total, 50)] * 1e3, sorted[bench_rank(total, 90)] * 1e3,
               sorted[bench_rank(total, 99)] * 1e3, mean * 1e3, sorted[0] * 1e3,
               sorted[total - 1] * 1e3, stdev * 1e3);
        if (!o.quiet) {
                printf(", \"lat_us\": [");
                for (size_t i = 0; i < total; i++)
                        printf("%s%.1f", i ? ", " : "", lat[i] * 1e6);
                printf("]");
        }
        printf("}\n");
        free(sorted);
        free(workers);
        munmap(lat, total * sizeof(double));
        return 0;
}
