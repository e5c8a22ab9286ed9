/* Building tar (and zip) archives in memory with libarchive's writer, for
 * the unit tests of the extractor and of the image store. Static, so each
 * test program has its own copy; include after cmocka.h and archive.h. */
#pragma once

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct buf {
        char *p;
        size_t len, cap;
};

static void buf_add(struct buf *b, const void *d, size_t n) {
        if (b->len + n > b->cap) {
                b->cap = (b->len + n) * 2 + 4096;
                b->p = realloc(b->p, b->cap);
                assert_non_null(b->p);
        }
        memcpy(b->p + b->len, d, n);
        b->len += n;
}

static la_ssize_t wcb(struct archive *a, void *ud, const void *d, size_t n) {
        (void) a;
        buf_add(ud, d, n);
        return (la_ssize_t) n;
}

enum { F = 1, D, L, H, C, P, B };

struct te {
        const char *path;
        int type;
        const char *data; /* F: contents; L, H: target */
        unsigned mode;    /* 0: 0644 / 0755 */
        long uid, gid;
        uint64_t zeros;   /* F: this many zero bytes instead of data */
};

static void add_entry(struct archive *a, const struct te *t) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, t->path);
        archive_entry_set_mtime(e, 1700000000, 0);
        archive_entry_set_uid(e, t->uid);
        archive_entry_set_gid(e, t->gid);
        uint64_t size = 0;
        switch (t->type) {
        case F:
                archive_entry_set_filetype(e, AE_IFREG);
                archive_entry_set_perm(e, t->mode ? t->mode : 0644);
                size = t->zeros ? t->zeros : t->data ? strlen(t->data) : 0;
                archive_entry_set_size(e, (la_int64_t) size);
                break;
        case D:
                archive_entry_set_filetype(e, AE_IFDIR);
                archive_entry_set_perm(e, t->mode ? t->mode : 0755);
                break;
        case L:
                archive_entry_set_filetype(e, AE_IFLNK);
                archive_entry_set_perm(e, 0777);
                archive_entry_set_symlink(e, t->data);
                break;
        case H:
                archive_entry_set_filetype(e, AE_IFREG);
                archive_entry_set_perm(e, 0644);
                archive_entry_set_hardlink(e, t->data);
                archive_entry_set_size(e, 0);
                break;
        case C:
                archive_entry_set_filetype(e, AE_IFCHR);
                archive_entry_set_perm(e, 0666);
                archive_entry_set_rdevmajor(e, 1);
                archive_entry_set_rdevminor(e, 3);
                break;
        case P:
                archive_entry_set_filetype(e, AE_IFIFO);
                archive_entry_set_perm(e, 0600);
                break;
        case B:
                archive_entry_set_filetype(e, AE_IFBLK);
                archive_entry_set_perm(e, 0660);
                archive_entry_set_rdevmajor(e, 8);
                break;
        }
        assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
        if (t->type == F && t->zeros) {
                static const char z[65536];
                for (uint64_t left = t->zeros; left;) {
                        size_t n = left > sizeof(z) ? sizeof(z) : (size_t) left;
                        assert_int_equal(archive_write_data(a, z, n), (la_ssize_t) n);
                        left -= n;
                }
        } else if (size) {
                assert_int_equal(archive_write_data(a, t->data, size), (la_ssize_t) size);
        }
        archive_entry_free(e);
}

/* A pax tar writer; comp: 0 none, 1 gzip, 2 zstd; 3 a zip writer. */
static struct archive *new_writer(int comp) {
        struct archive *a = archive_write_new();
        if (comp == 3) {
                assert_int_equal(archive_write_set_format_zip(a), ARCHIVE_OK);
                return a;
        }
        assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
        if (comp == 1)
                assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
        else if (comp == 2)
                assert_int_equal(archive_write_add_filter_zstd(a), ARCHIVE_OK);
        return a;
}

/* comp as for new_writer(). Files named in fs (path, data) follow es. */
static void make_tar(const struct te *es, size_t n, int comp, struct buf *out) {
        memset(out, 0, sizeof(*out));
        struct archive *a = new_writer(comp);
        assert_int_equal(archive_write_set_bytes_in_last_block(a, 1), ARCHIVE_OK);
        assert_int_equal(archive_write_open(a, out, NULL, wcb, NULL), ARCHIVE_OK);
        for (size_t i = 0; i < n; i++)
                add_entry(a, &es[i]);
        assert_int_equal(archive_write_close(a), ARCHIVE_OK);
        archive_write_free(a);
}

