/* Size-capped log file writer (see logcap.h). legion-init feeds the
 * workload's stdout/stderr pipes through this so a chatty workload cannot
 * fill the host's disk, while the newest output — the part people read —
 * survives.
 *
 * Think of the data as one stream S = (file contents) ++ (new data). On
 * overflow we keep the newest cap/2 - strlen(marker) bytes of S, moved
 * forward to the first complete line if a line break is near, write them at
 * the front of the file behind the marker, and truncate. Keeping half (not
 * "just enough") makes compaction rare: its cost is amortised over at least
 * cap/2 bytes of appends. */
#include "init/logcap.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "common/util.h"

#define MARKER_LEN (sizeof(LG_LOGCAP_MARKER) - 1)
/* How far we look for a line start before accepting a cut mid-line. */
#define ALIGN_WINDOW 4096u

/* Position of the first '\n' in S[from, to), -ENOENT if none, or -errno. */
static int64_t find_newline(const struct lg_logcap *lc, const char *data, uint64_t from, uint64_t to) {
        while (from < to && from < lc->size) {
                char chunk[512];
                uint64_t end = to < lc->size ? to : lc->size;
                size_t n = end - from < sizeof(chunk) ? (size_t) (end - from) : sizeof(chunk);
                ssize_t k = lg_pread_all(lc->fd, chunk, n, (off_t) from);
                if (k < 0)
                        return k;
                if (k == 0)
                        return -ENOENT; /* shorter than we thought: give up aligning */
                const char *nl = memchr(chunk, '\n', (size_t) k);
                if (nl)
                        return (int64_t) (from + (uint64_t) (nl - chunk));
                from += (uint64_t) k;
        }
        if (from < to) {
                const char *p = data + (from - lc->size);
                const char *nl = memchr(p, '\n', (size_t) (to - from));
                if (nl)
                        return (int64_t) (from + (uint64_t) (nl - p));
        }
        return -ENOENT;
}

/* Replace the file by marker + the newest part of S. */
static int compact(struct lg_logcap *lc, const char *data, size_t len) {
        uint64_t keep = lc->cap / 2 - MARKER_LEN;
        uint64_t total = lc->size + len;
        uint64_t start = total > keep ? total - keep : 0;
        if (!lc->keep_old && start < lc->size)
                start = lc->size;

        /* Start on a line boundary if one is close, so the first line after
         * the marker is not a fragment. */
        if (start > 0 && start < total) {
                char prev = '\n';
                if (start - 1 >= lc->size)
                        prev = data[start - 1 - lc->size];
                else if (lc->keep_old && lg_pread_all(lc->fd, &prev, 1, (off_t) (start - 1)) != 1)
                        prev = '\n';
                if (prev != '\n') {
                        uint64_t to = total - start > ALIGN_WINDOW ? start + ALIGN_WINDOW : total;
                        int64_t nl = find_newline(lc, data, start, to);
                        if (nl >= 0)
                                start = (uint64_t) nl + 1;
                }
        }

        int r;
        uint64_t dst = MARKER_LEN;
        if (lc->keep_old) {
                /* Move the kept file part forward in chunks. start > dst, so
                 * a chunk never overwrites bytes not yet read. */
                char buf[32768];
                for (uint64_t src = start; src < lc->size;) {
                        size_t n = lc->size - src < sizeof(buf) ? (size_t) (lc->size - src) : sizeof(buf);
                        ssize_t k = lg_pread_all(lc->fd, buf, n, (off_t) src);
                        if (k < 0)
                                return (int) k;
                        if ((size_t) k != n)
                                return -EIO; /* the file shrank under us */
                        r = lg_pwrite_all(lc->fd, buf, n, (off_t) dst);
                        if (r < 0)
                                return r;
                        src += n;
                        dst += n;
                }
        } else if (ftruncate(lc->fd, 0) < 0) {
                /* Without keeping old data (write-only or append-only fd),
                 * truncate first: with O_APPEND every pwrite lands at EOF. */
                return -errno;
        } else {
                lc->size = 0;
        }

        r = lg_pwrite_all(lc->fd, LG_LOGCAP_MARKER, MARKER_LEN, (off_t) 0);
        if (r < 0)
                return r;
        uint64_t from_data = start > total - len ? start - (total - len) : 0;
        r = lg_pwrite_all(lc->fd, data + from_data, len - from_data, (off_t) dst);
        if (r < 0)
                return r;
        dst += len - from_data;
        if (lc->keep_old && ftruncate(lc->fd, (off_t) dst) < 0)
                return -errno;
        lc->size = dst;
        return 0;
}

static void resync(struct lg_logcap *lc) {
        struct stat st;
        if (fstat(lc->fd, &st) == 0)
                lc->size = (uint64_t) st.st_size;
}

int lg_logcap_init(struct lg_logcap *lc, int fd, uint64_t cap) {
        struct stat st;
        if (cap < LG_LOGCAP_MIN)
                return -EINVAL;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0)
                return -errno;

        *lc = (struct lg_logcap){ .fd = fd, .cap = cap, .size = (uint64_t) st.st_size };
        /* Moving data in place needs pread (so not O_WRONLY) and pwrite at
         * an offset (so not O_APPEND, which Linux honours even for pwrite).
         * The log fd is ours alone once the workload writes into a pipe. */
        lc->keep_old = (fl & O_ACCMODE) == O_RDWR;
        if (lc->keep_old && (fl & O_APPEND) && fcntl(fd, F_SETFL, fl & ~O_APPEND) < 0)
                lc->keep_old = false; /* append-only inode (chattr +a) */

        if (lc->size > cap) {
                int r = compact(lc, "", 0);
                if (r < 0) {
                        resync(lc);
                        return r;
                }
        }
        return 0;
}

int lg_logcap_write(struct lg_logcap *lc, const void *buf, size_t len) {
        int r;
        if (len == 0)
                return 0;
        if (lc->size <= lc->cap && len <= lc->cap - lc->size) {
                r = lg_pwrite_all(lc->fd, buf, len, (off_t) lc->size);
                if (r >= 0) {
                        lc->size += len;
                        return 0;
                }
        } else {
                r = compact(lc, buf, len);
                if (r >= 0)
                        return 0;
        }
        resync(lc);
        return r;
}

int lg_logpipe_open(struct lg_logpipe *lp, int fd, uint64_t cap) {
        int r = lg_logcap_init(&lp->lc, fd, cap);
        if (r < 0)
                return r;
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        /* Only our end is non-blocking; the writer keeps normal semantics. */
        if (fcntl(p[0], F_SETFL, O_NONBLOCK) < 0) {
                r = -errno;
                close(p[0]);
                close(p[1]);
                return r;
        }
        lp->rfd = p[0];
        return p[1];
}

void lg_logpipe_pump(struct lg_logpipe *lp, bool drain) {
        static char buf[65536]; /* init is single-threaded */
        for (int rounds = 0; drain || rounds < 4; rounds++) {
                ssize_t n = read(lp->rfd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return;
                (void) lg_logcap_write(&lp->lc, buf, (size_t) n);
        }
}
