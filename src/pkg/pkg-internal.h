/* Helpers shared by the files of the pkg module; not part of its interface. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "pkg/pkg.h"

/* Prefix of every temporary name in a store's directories. */
#define LG_PKG_TMP_PREFIX ".tmp-"

/* Why a symlink whose parent directory is parent_depth components below the
 * root may not point at target, or NULL if it may. The target must be
 * relative, and of the form (../)*(name/)*: its leading `..` components may
 * climb at most to the root, and no `..` may follow a name (after a name
 * that is itself a symlink, a lexical `..` would not be the real one).
 * `.` and empty components are ignored. */
const char *lg_pkg_symlink_unsafe(size_t parent_depth, const char *target);

/* Copy of s fit for a one-line message that may end up in JSON: control
 * bytes, backquotes and bytes that are not UTF-8 become '?', and a long
 * name is cut with "...". */
void lg_pkg_printable(const char *s, char *buf, size_t cap);

/* mkstemp-like name: prefix + 16 random hex characters. */
int lg_pkg_tmp_name(char *buf, size_t cap, const char *what);


/* The names in directory dfd (not consumed) but `.` and `..`, sorted
 * bytewise, NULL-terminated (*n of them); free with lg_pkg_names_free. */
int lg_pkg_list_dir(int dfd, char ***ret, size_t *n);
void lg_pkg_names_free(char **v);
