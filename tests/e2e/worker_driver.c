/* Test driver for the session worker (tests/e2e/test_session_runtime.py), a
 * copy of worker_driver.c with three more options:
 *
 *   --data DIR      DIR is bound read-write at /mnt/data and, once the
 *                   sandbox exists, chowned (recursively) to the host uid its
 *                   root maps to, so the session can write there as the
 *                   node agent's writable /mnt/data allows;
 *   --pids N        pids limit of the sandbox (cgroup);
 *   --cpu MILLIS    cpu quota.
 *
 * What follows is worker_driver.c's description. Runs one real sandbox with a worker
 * control channel, set up the way the node agent sets up a placeholder
 * (read-only root, /code made as a mount point and mounted only when
 * specialize is sent), and relays the legion-init control protocol between
 * it and the test (tests/e2e/test_runtimes.py), which talks to us in the
 * same framing on fd 0/1 (one end of a socketpair).
 *
 *   worker_driver [--bind SRC:DST[:ro]]... [--env K=V]... [--stdout FILE]
 *                 [--stderr FILE] [--listen PATH] [--listen-mode specialize|inherit]
 *                 [--mount-at-specialize SRC:DST] [--memory BYTES] -- ARGV...
 *   worker_driver --gc          (lg_sandbox_gc of $LEGION_RUN_DIR)
 *
 * To the test (each frame gets t_ns=<CLOCK_MONOTONIC ns> appended):
 *   op=driver event=begin|created|started        sandbox lifecycle
 *   <every frame from legion-init>               relayed
 *   op=driver event=sent op2=specialize          when a specialize went out
 *   op=driver event=stats memory=N cpu_ns=N      reply to op=stats
 *   op=driver event=exit status=...              the sandbox ended
 *   op=driver event=error message=...            setup failed
 * From the test: op=specialize (the listening socket bound at --listen is
 * attached in --listen-mode specialize, or was given to the sandbox as fd 4
 * with LEGION_LISTEN_FD=4 in --listen-mode inherit; with
 * --mount-at-specialize the code is mounted read-only into the running
 * sandbox first), op=stats, anything else is passed to legion-init as is.
 * A specialize with nofd=1 goes without the socket. EOF on stdin destroys
 * the sandbox.
 *
 * Built by the test fixture with:
 *   cc -Isrc worker_driver.c build/liblegion-sandbox.a build/liblegion-common.a -lseccomp */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/proto.h"
#include "sandbox/sandbox.h"

#define MAX_ITEMS 32

static unsigned long long now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (unsigned long long) ts.tv_sec * 1000000000ull + (unsigned long long) ts.tv_nsec;
}

static lg_sandbox *g_sb;

/* The test went away: leave nothing behind. */
static _Noreturn void bail(int code) {
        lg_sandbox_destroy(g_sb);
        _exit(code);
}

static void emit(struct lg_msg *m) {
        lg_msg_addf(m, "t_ns", "%llu", now_ns());
        if (lg_msg_send(1, m) < 0)
                bail(3);
}

static void event(const char *ev, const char *k1, const char *v1) {
        struct lg_msg m;
        lg_msg_init(&m);
        lg_msg_add(&m, "op", "driver");
        lg_msg_add(&m, "event", ev);
        if (k1)
                lg_msg_add(&m, k1, v1);
        emit(&m);
        lg_msg_free(&m);
}

static int make_listener(const char *path) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(a.sun_path))
                return -ENAMETOOLONG;
        strcpy(a.sun_path, path);
        unlink(path);
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
                return -errno;
        if (bind(s, (struct sockaddr *) &a, sizeof(a)) < 0 || listen(s, 1024) < 0) {
                int r = -errno;
                close(s);
                return r;
        }
        return s;
}

static int split_pair(char *arg, struct lg_bind *b) {
        char *c = strchr(arg, ':');
        if (!c)
                return -1;
        *c = '\0';
        b->src = arg;
        b->dst = c + 1;
        b->readonly = false;
        char *c2 = strchr(c + 1, ':');
        if (c2) {
                *c2 = '\0';
                b->readonly = !strcmp(c2 + 1, "ro");
        }
        return 0;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"bind", required_argument, NULL, 'b'}, {"env", required_argument, NULL, 'e'},
                {"stdout", required_argument, NULL, 'o'}, {"stderr", required_argument, NULL, 'E'},
                {"listen", required_argument, NULL, 'l'}, {"listen-mode", required_argument, NULL, 'L'},
                {"mount-at-specialize", required_argument, NULL, 'M'},
                {"memory", required_argument, NULL, 'm'}, {"data", required_argument, NULL, 'D'},
                {"pids", required_argument, NULL, 'P'}, {"cpu", required_argument, NULL, 'C'},
                {0, 0, 0, 0},
        };
        struct lg_bind binds[MAX_ITEMS];
        const char *env[MAX_ITEMS + 4] = {
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root", "LANG=C.UTF-8", NULL,
        };
        size_t n_env = 3, n_binds = 0;
        const char *out_path = NULL, *err_path = NULL, *listen_path = NULL, *mode = "specialize";
        struct lg_bind late = {0};
        bool have_late = false;
        unsigned long long memory = 0, pids = 0, cpu = 0;
        const char *data_dir = NULL;
        int c;

        signal(SIGPIPE, SIG_IGN);
        if (argc == 2 && !strcmp(argv[1], "--gc")) {
                /* Remove what dead owners left under $LEGION_RUN_DIR. */
                struct lg_error e = {0};
                int r = lg_sandbox_gc(NULL, &e);
                if (r < 0)
                        fprintf(stderr, "worker_driver: gc: %s\n", e.msg);
                return r < 0;
        }
        while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
                switch (c) {
                case 'b':
                        if (n_binds >= MAX_ITEMS || split_pair(optarg, &binds[n_binds]) < 0)
                                return 2;
                        n_binds++;
                        break;
                case 'e':
                        if (n_env >= MAX_ITEMS)
                                return 2;
                        env[n_env++] = optarg;
                        env[n_env] = NULL;
                        break;
                case 'o': out_path = optarg; break;
                case 'E': err_path = optarg; break;
                case 'l': listen_path = optarg; break;
                case 'L': mode = optarg; break;
                case 'M':
                        if (split_pair(optarg, &late) < 0)
                                return 2;
                        late.readonly = true;
                        have_late = true;
                        break;
                case 'm': memory = strtoull(optarg, NULL, 10); break;
                case 'P': pids = strtoull(optarg, NULL, 10); break;
                case 'C': cpu = strtoull(optarg, NULL, 10); break;
                case 'D':
                        if (n_binds >= MAX_ITEMS)
                                return 2;
                        data_dir = optarg;
                        binds[n_binds].src = optarg;
                        binds[n_binds].dst = "/mnt/data";
                        binds[n_binds].readonly = false;
                        n_binds++;
                        break;
                default: return 2;
                }
        }
        if (optind >= argc)
                return 2;
        bool inherit = !strcmp(mode, "inherit");

        struct lg_error err = {0};
        struct lg_sandbox_spec spec;
        lg_sandbox_spec_init(&spec);
        spec.binds = binds;
        spec.n_binds = n_binds;
        spec.argv = (const char *const *) argv + optind;
        spec.worker_control = true;
        spec.memory_bytes = memory;
        spec.pids_max = pids;
        spec.cpu_millis = cpu;
        int outfd = -1, errfd = -1, lfd = -1;
        if (out_path && (outfd = open(out_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
                return 2;
        if (err_path && (errfd = open(err_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
                return 2;
        spec.stdio_fds[1] = outfd;
        spec.stdio_fds[2] = errfd;
        if (listen_path) {
                lfd = make_listener(listen_path);
                if (lfd < 0) {
                        event("error", "message", strerror(-lfd));
                        return 1;
                }
        }
        if (inherit) {
                spec.extra_fds = &lfd;
                spec.n_extra_fds = 1;
                env[n_env++] = "LEGION_LISTEN_FD=4";
                env[n_env] = NULL;
        }
        spec.envp = env;
        spec.readonly_root = true;
        const char *mount_points[1];
        if (have_late) {
                mount_points[0] = late.dst;
                spec.mount_points = mount_points;
                spec.n_mount_points = 1;
        }

        event("begin", NULL, NULL);
        lg_sandbox *sb = NULL;
        if (lg_sandbox_create(&spec, &g_sb, &err) < 0) {
                event("error", "message", err.msg);
                return 1;
        }
        sb = g_sb;
        if (data_dir) {
                char cmd[4200];
                snprintf(cmd, sizeof(cmd), "chown -R %u:%u '%s'", (unsigned) lg_sandbox_host_uid(sb),
                         (unsigned) lg_sandbox_host_uid(sb), data_dir);
                if (system(cmd) != 0) {
                        event("error", "message", "chown of --data failed");
                        bail(1);
                }
        }
        event("created", NULL, NULL);
        if (lg_sandbox_start(sb, &err) < 0) {
                event("error", "message", err.msg);
                bail(1);
        }
        event("started", NULL, NULL);
        if (outfd >= 0)
                close(outfd);
        if (errfd >= 0)
                close(errfd);

        int ctl = lg_sandbox_control_fd(sb);
        for (;;) {
                struct pollfd p[2] = {{0, POLLIN, 0}, {ctl, POLLIN, 0}};
                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                struct lg_msg m;
                lg_msg_init(&m);
                if (p[1].revents) {
                        int r = lg_msg_recv(ctl, &m);
                        if (r <= 0) {
                                lg_msg_free(&m);
                                struct lg_sandbox_status st = {0};
                                lg_sandbox_wait(sb, &st);
                                char buf[64], code[16];
                                lg_sandbox_status_string(&st, buf, sizeof(buf));
                                snprintf(code, sizeof(code), "%d", st.shell_status);
                                struct lg_msg e;
                                lg_msg_init(&e);
                                lg_msg_add(&e, "op", "driver");
                                lg_msg_add(&e, "event", "exit");
                                lg_msg_add(&e, "status", buf);
                                lg_msg_add(&e, "code", code);
                                emit(&e);
                                lg_msg_free(&e);
                                lg_sandbox_destroy(sb);
                                g_sb = NULL;
                                return 0;
                        }
                        emit(&m);
                        lg_msg_free(&m);
                        continue;
                }
                if (p[0].revents) {
                        int r = lg_msg_recv(0, &m);
                        if (r <= 0) {
                                lg_msg_free(&m);
                                break;
                        }
                        const char *op = lg_msg_get(&m, "op");
                        if (!strcmp(op, "stats")) {
                                struct lg_sandbox_stats st = {0};
                                lg_sandbox_stats(sb, &st);
                                struct lg_msg e;
                                lg_msg_init(&e);
                                lg_msg_add(&e, "op", "driver");
                                lg_msg_add(&e, "event", "stats");
                                lg_msg_addf(&e, "memory", "%llu", (unsigned long long) st.memory_current);
                                lg_msg_addf(&e, "cpu_ns", "%llu", (unsigned long long) st.cpu_usage_ns);
                                emit(&e);
                                lg_msg_free(&e);
                                lg_msg_free(&m);
                                continue;
                        }
                        bool spec_op = !strcmp(op, "specialize");
                        if (spec_op && have_late) {
                                unsigned long long t = now_ns();
                                if (lg_sandbox_mount(sb, late.src, late.dst, true, &err) < 0) {
                                        event("error", "message", err.msg);
                                } else {
                                        char ms[32];
                                        snprintf(ms, sizeof(ms), "%.3f", (double) (now_ns() - t) / 1e6);
                                        event("mounted", "ms", ms);
                                }
                                have_late = false;
                        }
                        if (spec_op && lfd >= 0 && !inherit && !lg_msg_get(&m, "nofd")) {
                                m.fds[0] = dup(lfd);
                                m.nfds = 1;
                        }
                        unsigned long long t = now_ns();
                        r = lg_msg_send(ctl, &m);
                        lg_msg_free(&m);
                        if (spec_op) {
                                char buf[32];
                                snprintf(buf, sizeof(buf), "%llu", t);
                                struct lg_msg e;
                                lg_msg_init(&e);
                                lg_msg_add(&e, "op", "driver");
                                lg_msg_add(&e, "event", "sent");
                                lg_msg_add(&e, "op2", "specialize");
                                lg_msg_add(&e, "sent_ns", buf);
                                emit(&e);
                                lg_msg_free(&e);
                        }
                        if (r < 0)
                                break;
                }
        }
        lg_sandbox_destroy(sb);
        g_sb = NULL;
        return 0;
}
