/* `legiond lazy-fetcher`: the process (fetcher.h). It serves the FUSE
 * connection on --fd until the connection ends (unmounted) or SIGTERM,
 * and logs nothing but one line on a fatal error. */
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "lazy/fetcher.h"

static int fatal(const struct lg_error *err) {
        fprintf(stderr, "legiond lazy-fetcher: %s\n", err->msg);
        return 1;
}

static int usage(FILE *f) {
        fputs("usage: legiond lazy-fetcher --home DIR --fd N [--resume] [--rate BYTES_PER_S] [--timeout-ms MS]\n"
              "\n"
              "  Serves $HOME/run/lazy/blobs (the FUSE connection on fd N, mounted by legiond): each lazy\n"
              "  layer's BLOB from the chunk store, fetching missing chunks from the layer's mirrors and\n"
              "  registry, verified (docs/lazy-images.md). Started by legiond, not by hand.\n"
              "  --resume          the connection was served before: ask the kernel to send again what\n"
              "                    the previous fetcher had read (FUSE_NOTIFY_RESEND), no INIT\n"
              "  --rate B          background download cap, bytes/s (default 64M; 0: no hydration)\n"
              "  --timeout-ms MS   a read whose chunks cannot be had this long fails EIO (default 10000)\n",
              f);
        return f == stdout ? 0 : 2;
}

int lg_lazy_fetcher_main(int argc, char **argv) {
        static const struct option opts[] = {
                {"home", required_argument, NULL, 'h'},
                {"fd", required_argument, NULL, 'f'},
                {"resume", no_argument, NULL, 'r'},
                {"rate", required_argument, NULL, 'R'},
                {"timeout-ms", required_argument, NULL, 't'},
                {"help", no_argument, NULL, 'H'},
                {0, 0, 0, 0},
        };
        struct lg_fetcher_config cfg = {.rate = 64ull << 20, .timeout_ms = 10000};
        long long fd = -1, v;
        bool resume = false;
        struct lg_error err = {0};
        int c;
        optind = 1;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
                switch (c) {
                case 'h': cfg.home = optarg; break;
                case 'f':
                        if (lg_parse_int(optarg, 0, 1 << 20, &fd) < 0)
                                return usage(stderr);
                        break;
                case 'r': resume = true; break;
                case 'R':
                        if (lg_parse_size(optarg, &cfg.rate) < 0)
                                return usage(stderr);
                        break;
                case 't':
                        if (lg_parse_int(optarg, 1, 3600 * 1000, &v) < 0)
                                return usage(stderr);
                        cfg.timeout_ms = (unsigned) v;
                        break;
                case 'H': return usage(stdout);
                default: return usage(stderr);
                }
        }
        if (!cfg.home || fd < 0 || optind != argc)
                return usage(stderr);
        struct stat st;
        /* /dev/fuse is the misc device 10:229. */
        errno = 0;
        if (fstat((int) fd, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(10, 229)) {
                lg_error_set(&err, errno ? errno : EBADF, "--fd %lld: not /dev/fuse", fd);
                return fatal(&err);
        }

        /* SIGTERM and SIGINT end it cleanly, read from a signalfd by this
         * thread; every thread started below inherits the mask. */
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        signal(SIGPIPE, SIG_IGN);
        int sfd = signalfd(-1, &set, SFD_CLOEXEC);
        if (sfd < 0) {
                lg_error_set(&err, errno, "signalfd");
                return fatal(&err);
        }

        char path[4096];
        snprintf(path, sizeof(path), "%s/run/lazy", cfg.home);
        lg_fetcher *f = NULL;
        lg_fetcher_ctl *ctl = NULL;
        lg_fuse_server *srv = NULL;
        int r = lg_mkdir_p(path, 0755);
        if (r < 0)
                lg_error_set(&err, -r, "`%s`", path);
        if (r >= 0)
                r = lg_fetcher_new(&cfg, &f, &err);
        if (r >= 0) {
                snprintf(path, sizeof(path), "%s/run/lazy/fetcher.sock", cfg.home);
                r = lg_fetcher_ctl_start(f, path, &ctl, &err);
        }
        if (r >= 0) {
                struct lg_fuse_config fc = {.fd = (int) fd, .resume = resume, .threads = 8};
                lg_fetcher_fuse_ops(f, &fc.ops);
                r = lg_fuse_server_start(&fc, &srv, &err);
        }
        if (r >= 0) {
                struct pollfd p[2] = {{.fd = sfd, .events = POLLIN},
                                      {.fd = lg_fuse_server_done_fd(srv), .events = POLLIN}};
                while (poll(p, 2, -1) < 0 && errno == EINTR)
                        ;
                r = p[1].revents ? lg_fuse_server_status(srv, &err) : 0;
                lg_fetcher_stop(f);
        }
        lg_fuse_server_free(srv);
        lg_fetcher_ctl_free(ctl);
        lg_fetcher_free(f);
        close(sfd);
        return r < 0 ? fatal(&err) : 0;
}
