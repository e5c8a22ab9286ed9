/* `legion sandbox run`: a one-off sandbox in the foreground, like `runc run`
 * or `bwrap`: output streams to the terminal, signals are forwarded, the exit
 * status is the workload's (128 + signal when killed, 137 on OOM).
 * `legion sandbox gc`: remove what sandboxes of dead owners left behind. */
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <linux/capability.h>

#include "cli/cli.h"
#include "sandbox/sandbox.h"

#define MAX_ITEMS 128

static void run_usage(FILE *f) {
        fputs("usage: legion sandbox run [options] -- CMD [ARGS...]\n"
              "\n"
              "  --host-rootfs          root is a tmpfs with the host's /usr read-only (default)\n"
              "  --rootfs DIR           root is DIR (read-only) under a writable tmpfs overlay\n"
              "  --layer DIR            add a read-only layer below the previous ones\n"
              "  --ro                   make the root read-only (/tmp stays writable)\n"
              "  --disk SIZE            size of the writable layer and /tmp (default 64M)\n"
              "  --memory SIZE          memory limit, e.g. 64M (swap is off)\n"
              "  --cpus N               CPU quota in CPUs, e.g. 0.5\n"
              "  --cpu-weight N         CPU weight 1..10000 (default 100)\n"
              "  --pids N               maximum number of processes\n"
              "  --nofile N             open file limit (default 1024)\n"
              "  --bind SRC:DST[:ro]    bind a host path into the sandbox\n"
              "  --env K=V              set an environment variable\n"
              "  --cwd DIR              working directory (default /)\n"
              "  --hostname NAME        hostname (default: the sandbox id)\n"
              "  --net none|host        own loopback-only network (default) or the host's\n"
              "  --cap NAME             keep a capability, e.g. --cap CAP_CHOWN\n"
              "  --id ID                sandbox id (default: random)\n"
              "  --logs                 capture output to the sandbox's log files, print them at exit\n"
              "  --no-seccomp           disable the seccomp filter (debugging only)\n",
              f);
}

static const char *const cap_names[] = {
        "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL",
        "SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE",
        "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
        "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
        "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
        "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL",
        "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
        "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
};

static int parse_cap(const char *s, uint64_t *mask) {
        if (!strncasecmp(s, "CAP_", 4))
                s += 4;
        for (size_t i = 0; i < ARRAY_SIZE(cap_names); i++)
                if (!strcasecmp(s, cap_names[i])) {
                        *mask |= 1ULL << i;
                        return 0;
                }
        return -EINVAL;
}

static int parse_u64(const char *s, uint64_t *ret) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || end == s || *end || *s == '-')
                return -EINVAL;
        *ret = v;
        return 0;
}

/* SRC:DST[:ro|:rw] */
static int parse_bind(char *s, struct lg_bind *b) {
        char *dst = strchr(s, ':');
        if (!dst)
                return -EINVAL;
        *dst++ = '\0';
        char *mode = strchr(dst, ':');
        b->readonly = false;
        if (mode) {
                *mode++ = '\0';
                if (!strcmp(mode, "ro"))
                        b->readonly = true;
                else if (strcmp(mode, "rw"))
                        return -EINVAL;
        }
        b->src = s;
        b->dst = dst;
        return *s && *dst ? 0 : -EINVAL;
}

/* The default environment, with --env entries replacing same-named ones. */
static int add_env(const char **env, size_t *n, const char *kv) {
        const char *eq = strchr(kv, '=');
        if (!eq || eq == kv)
                return -EINVAL;
        size_t klen = (size_t) (eq - kv) + 1;
        for (size_t i = 0; i < *n; i++)
                if (!strncmp(env[i], kv, klen)) {
                        env[i] = kv;
                        return 0;
                }
        if (*n + 1 >= MAX_ITEMS)
                return -E2BIG;
        env[(*n)++] = kv;
        env[*n] = NULL;
        return 0;
}

static void print_file(const char *path, FILE *to) {
        FILE *f = fopen(path, "re");
        if (!f)
                return;
        char buf[8192];
        size_t n;
        while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
                fwrite(buf, 1, n, to);
        fclose(f);
}

/* Paths on the command line may be relative to where the user stands;
 * the library wants absolute ones. A path that does not resolve is passed
 * on as it is, so that the library's error names it. */
static const char *absolute(const char *path) {
        if (path[0] == '/')
                return path;
        char *abs = realpath(path, NULL);
        return abs ? abs : path; /* freed with the process */
}

/* Wait for the sandbox, forwarding the signals a terminal user sends. */
static int wait_forwarding(lg_sandbox *sb, struct lg_sandbox_status *st) {
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGQUIT);
        int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
        if (sfd < 0)
                return -errno;
        struct pollfd pfd[2] = {{lg_sandbox_pidfd(sb), POLLIN, 0}, {sfd, POLLIN, 0}};
        for (;;) {
                if (poll(pfd, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        close(sfd);
                        return -errno;
                }
                if (pfd[1].revents & POLLIN) {
                        struct signalfd_siginfo si;
                        if (read(sfd, &si, sizeof(si)) == sizeof(si))
                                lg_sandbox_signal(sb, (int) si.ssi_signo);
                }
                if (pfd[0].revents)
                        break;
        }
        close(sfd);
        return lg_sandbox_wait(sb, st);
}

static int sandbox_run(int argc, char **argv) {
        static const struct option opts[] = {
                {"host-rootfs", no_argument, NULL, 'H'}, {"rootfs", required_argument, NULL, 'r'},
                {"layer", required_argument, NULL, 'l'}, {"ro", no_argument, NULL, 'R'},
                {"disk", required_argument, NULL, 'd'}, {"memory", required_argument, NULL, 'm'},
                {"cpus", required_argument, NULL, 'c'}, {"cpu-weight", required_argument, NULL, 'w'},
                {"pids", required_argument, NULL, 'p'}, {"nofile", required_argument, NULL, 'n'},
                {"bind", required_argument, NULL, 'b'}, {"env", required_argument, NULL, 'e'},
                {"cwd", required_argument, NULL, 'C'}, {"hostname", required_argument, NULL, 'h'},
                {"net", required_argument, NULL, 'N'}, {"cap", required_argument, NULL, 'K'},
                {"id", required_argument, NULL, 'i'}, {"logs", no_argument, NULL, 'L'},
                {"no-seccomp", no_argument, NULL, 'S'}, {"help", no_argument, NULL, '?' + 256},
                {0, 0, 0, 0},
        };
        struct lg_sandbox_spec spec;
        const char *layers[MAX_ITEMS];
        struct lg_bind binds[MAX_ITEMS];
        const char *env[MAX_ITEMS] = {
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root", "LANG=C.UTF-8", NULL,
        };
        size_t n_env = 3;
        int c;

        lg_sandbox_spec_init(&spec);
        spec.stdio_fds[0] = 0;
        spec.stdio_fds[1] = 1;
        spec.stdio_fds[2] = 2;
        optind = 1;
        while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
                int r = 0;
                const char *what = NULL;
                switch (c) {
                case 'H': spec.n_layers = 0; break;
                case 'r':
                case 'l':
                        if (spec.n_layers >= MAX_ITEMS) { r = -E2BIG; what = "--layer"; break; }
                        layers[spec.n_layers++] = absolute(optarg);
                        break;
                case 'R': spec.readonly_root = true; break;
                case 'd': r = lg_parse_size(optarg, &spec.rootfs_bytes); what = "--disk"; break;
                case 'm': r = lg_parse_size(optarg, &spec.memory_bytes); what = "--memory"; break;
                case 'c': r = lg_parse_millis(optarg, 4096000, &spec.cpu_millis); what = "--cpus"; break;
                case 'w':
                        r = parse_u64(optarg, &spec.cpu_weight);
                        if (r == 0 && (spec.cpu_weight < 1 || spec.cpu_weight > 10000))
                                r = -ERANGE;
                        what = "--cpu-weight";
                        break;
                case 'p': r = parse_u64(optarg, &spec.pids_max); what = "--pids"; break;
                case 'n': r = parse_u64(optarg, &spec.nofile); what = "--nofile"; break;
                case 'b':
                        if (spec.n_binds >= MAX_ITEMS) { r = -E2BIG; what = "--bind"; break; }
                        r = parse_bind(optarg, &binds[spec.n_binds]);
                        if (r == 0)
                                binds[spec.n_binds].src = absolute(binds[spec.n_binds].src), spec.n_binds++;
                        what = "--bind (SRC:DST[:ro])";
                        break;
                case 'e': r = add_env(env, &n_env, optarg); what = "--env (K=V)"; break;
                case 'C': spec.cwd = optarg; break;
                case 'h': spec.hostname = optarg; break;
                case 'N':
                        if (!strcmp(optarg, "host"))
                                spec.share_net = true;
                        else if (strcmp(optarg, "none"))
                                r = -EINVAL;
                        what = "--net (none|host)";
                        break;
                case 'K': r = parse_cap(optarg, &spec.caps_keep); what = "--cap"; break;
                case 'i': spec.id = optarg; break;
                case 'L': spec.capture_logs = true; break;
                case 'S': spec.no_seccomp = true; break;
                case '?' + 256: run_usage(stdout); return 0;
                default: run_usage(stderr); return 2;
                }
                if (r < 0) {
                        fprintf(stderr, "legion: invalid %s value `%s`\n", what, optarg);
                        return 2;
                }
        }
        if (optind >= argc) {
                fprintf(stderr, "legion: no command given\n");
                run_usage(stderr);
                return 2;
        }
        spec.layers = layers;
        spec.binds = binds;
        spec.envp = env;
        spec.argv = (const char *const *) argv + optind;

        struct lg_error err = {0};
        /* Leftovers of owners that died (kill -9) go before we add ours. */
        (void) lg_sandbox_gc(NULL, NULL);

        lg_sandbox *sb = NULL;
        sigset_t mask, old;
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGQUIT);
        sigprocmask(SIG_BLOCK, &mask, &old);
        if (lg_sandbox_create(&spec, &sb, &err) < 0 || lg_sandbox_start(sb, &err) < 0) {
                fprintf(stderr, "legion: %s\n", err.msg);
                lg_sandbox_destroy(sb);
                return 125;
        }
        struct lg_sandbox_status st = {0};
        int r = wait_forwarding(sb, &st);
        if (r < 0) {
                fprintf(stderr, "legion: wait for sandbox `%s`: %s\n", lg_sandbox_id(sb), strerror(-r));
                lg_sandbox_destroy(sb);
                return 125;
        }
        if (spec.capture_logs) {
                char path[4200];
                snprintf(path, sizeof(path), "%s/stdout.log", lg_sandbox_state_dir(sb));
                print_file(path, stdout);
                fflush(stdout);
                snprintf(path, sizeof(path), "%s/stderr.log", lg_sandbox_state_dir(sb));
                print_file(path, stderr);
        }
        if (st.kind == LG_EXIT_OOM)
                fprintf(stderr, "legion: sandbox `%s` OOMKilled (memory limit %llu bytes)\n",
                        lg_sandbox_id(sb), (unsigned long long) spec.memory_bytes);
        r = lg_sandbox_destroy(sb);
        if (r < 0)
                fprintf(stderr, "legion: clean up sandbox: %s\n", strerror(-r));
        return st.shell_status;
}

static int sandbox_gc(int argc, char **argv) {
        (void) argc;
        (void) argv;
        struct lg_error err = {0};
        int r = lg_sandbox_gc(NULL, &err);
        if (r < 0) {
                fprintf(stderr, "legion: %s\n", err.msg);
                return 1;
        }
        printf("cleaned %d sandbox%s\n", r, r == 1 ? "" : "es");
        return 0;
}

int cmd_sandbox(int argc, char **argv) {
        if (argc >= 2 && !strcmp(argv[1], "run"))
                return sandbox_run(argc - 1, argv + 1);
        if (argc >= 2 && !strcmp(argv[1], "gc"))
                return sandbox_gc(argc - 1, argv + 1);
        FILE *f = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? stdout : stderr;
        fprintf(f, "usage: legion sandbox run [options] -- CMD [ARGS...]\n"
                   "       legion sandbox gc\n");
        return f == stdout ? 0 : 2;
}
