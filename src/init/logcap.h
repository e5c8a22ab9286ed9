/* Size-capped log file writer used by legion-init for the workload's
 * stdout/stderr (see docs/init-protocol.md, "Log capping").
 *
 * The file never grows beyond cap bytes. When a write would cross the cap,
 * the newest half of the data is kept: it is moved to the front of the file
 * behind a one-line marker (LG_LOGCAP_MARKER) and the file is truncated
 * after it; appending then continues. init is the only writer of the file,
 * so the size is tracked here rather than re-read with fstat. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LG_LOGCAP_MARKER "[legion: log truncated, older output dropped]\n"
/* Smallest cap we accept: the marker plus a useful amount of output. */
#define LG_LOGCAP_MIN 256u

struct lg_logcap {
        int fd;         /* regular file, not owned */
        uint64_t cap;   /* the file never exceeds this many bytes */
        uint64_t size;  /* current file size */
        bool keep_old;  /* false when the fd is write-only or stuck in
                         * O_APPEND: compaction then drops all old data */
};

/* Set up lc for fd (must be a regular file). Clears O_APPEND on the open
 * file description so older data can be moved in place, and compacts a file
 * that is already larger than cap. Returns 0 or -errno (-EINVAL for a cap
 * below LG_LOGCAP_MIN or a fd that is not a regular file). */
int lg_logcap_init(struct lg_logcap *lc, int fd, uint64_t cap);

/* Append len bytes, compacting first if needed. Returns 0 or -errno; after
 * an error the size is re-read from the file so later writes stay capped. */
int lg_logcap_write(struct lg_logcap *lc, const void *buf, size_t len);

/* A pipe whose content init copies into a capped file: the workload writes
 * into the pipe, never into the file. */
struct lg_logpipe {
        int rfd; /* read end, O_NONBLOCK */
        struct lg_logcap lc;
};

/* Set up lp->lc for fd and a pipe feeding it. Returns the pipe's write end
 * (O_CLOEXEC, blocking, for the workload) or -errno. */
int lg_logpipe_open(struct lg_logpipe *lp, int fd, uint64_t cap);

/* Copy what the pipe holds into the file: a few reads, or until the pipe
 * is empty when drain is set. Write errors drop the data: a full disk must
 * not stall the workload. */
void lg_logpipe_pump(struct lg_logpipe *lp, bool drain);
